//! An incremental parser for what a NATS server sends: `INFO`, `MSG`,
//! `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`. Pure: it takes the bytes read so
//! far and consumes one complete operation at a time, never panicking and
//! never holding more than one operation's bytes.
//!
//! Protocol: <https://docs.nats.io/reference/reference-protocols/nats-protocol>.
//! Operation names are case-insensitive, fields are separated by any run of
//! spaces or tabs (nats-server 2.9 writes `MSG subj 1  23`), lines end in
//! CRLF.

use bytes::{Buf as _, Bytes, BytesMut};

/// Longest control line accepted, in bytes: an `INFO` of a large cluster
/// lists every server's address, a few KiB.
pub const MAX_LINE: usize = 64 * 1024;

/// Largest message accepted from the server, in bytes: JetStream replies
/// to this client are a few hundred bytes (a stream info a few KiB).
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// One operation from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`: the JSON text.
    Info(Bytes),
    /// `MSG` or `HMSG`.
    Msg(Message),
    /// `PING`: answer `PONG`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK` (only in verbose mode, which this client does not ask for).
    Ok,
    /// `-ERR 'text'`: the text without quotes.
    Err(String),
}

/// A message delivered to one of our subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published to (for us: a reply inbox).
    pub subject: String,
    /// Our subscription id.
    pub sid: String,
    /// Its reply subject, if any.
    pub reply: Option<String>,
    /// The header block (`NATS/1.0 ...\r\n...\r\n\r\n`) of an `HMSG`.
    pub headers: Option<Bytes>,
    /// The payload.
    pub payload: Bytes,
}

/// The server sent something that is not NATS protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No line end within [`MAX_LINE`] bytes.
    #[error("no line end within {limit} bytes; is this a NATS server's client port?")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// A message larger than [`MAX_MESSAGE`].
    #[error("a {size}-byte message exceeds the {limit}-byte limit for replies")]
    TooLarge {
        /// Its announced size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A line that starts with no known operation.
    #[error("unexpected `{0}`; is this a NATS server's client port?")]
    Unknown(String),
    /// A known operation with bad arguments or framing.
    #[error("malformed {op}: `{line}`")]
    Malformed {
        /// The operation.
        op: &'static str,
        /// The line (shortened).
        line: String,
    },
}

/// Parses one operation from the front of `buf` and removes its bytes.
/// `Ok(None)` means more bytes are needed. After an error the stream is
/// unusable: drop the connection.
pub fn next_op(buf: &mut BytesMut) -> Result<Option<ServerOp>, ParseError> {
    next_op_within(buf, MAX_LINE, MAX_MESSAGE)
}

/// [`next_op`] with explicit limits (for tests).
pub fn next_op_within(
    buf: &mut BytesMut,
    max_line: usize,
    max_message: usize,
) -> Result<Option<ServerOp>, ParseError> {
    let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(max_line + 1)]) else {
        if buf.len() > max_line {
            return Err(ParseError::LineTooLong { limit: max_line });
        }
        // Reject garbage as soon as its first word shows it is not NATS,
        // instead of waiting for a line end that may never come.
        if first_word(buf).is_some_and(|word| op_name(word).is_none()) {
            return Err(ParseError::Unknown(excerpt(buf)));
        }
        return Ok(None);
    };
    let line_len = nl + 1;
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (name, args) = split_op(line);
    let Some(op) = op_name(name) else {
        return Err(ParseError::Unknown(excerpt(line)));
    };
    let malformed = || ParseError::Malformed {
        op,
        line: excerpt(line),
    };
    let simple = |value: ServerOp| {
        if args.is_empty() {
            Ok(value)
        } else {
            Err(malformed())
        }
    };
    let op = match op {
        "INFO" => ServerOp::Info(Bytes::copy_from_slice(args)),
        "PING" => simple(ServerOp::Ping)?,
        "PONG" => simple(ServerOp::Pong)?,
        "+OK" => simple(ServerOp::Ok)?,
        "-ERR" => {
            let text = args.strip_prefix(b"'").unwrap_or(args);
            let text = text.strip_suffix(b"'").unwrap_or(text);
            ServerOp::Err(String::from_utf8_lossy(text).into_owned())
        }
        _ => {
            let head = msg_head(op, args).ok_or_else(malformed)?;
            if head.total > max_message {
                return Err(ParseError::TooLarge {
                    size: head.total,
                    limit: max_message,
                });
            }
            let needed = line_len + head.total + 2;
            if buf.len() < needed {
                buf.reserve(needed - buf.len());
                return Ok(None);
            }
            if &buf[needed - 2..needed] != b"\r\n" {
                return Err(malformed());
            }
            buf.advance(line_len);
            let mut body = buf.split_to(head.total).freeze();
            buf.advance(2);
            let headers = head.headers.map(|n| body.split_to(n));
            return Ok(Some(ServerOp::Msg(Message {
                subject: head.subject,
                sid: head.sid,
                reply: head.reply,
                headers,
                payload: body,
            })));
        }
    };
    buf.advance(line_len);
    Ok(Some(op))
}

/// The parsed control line of a `MSG` or `HMSG`.
struct MsgHead {
    subject: String,
    sid: String,
    reply: Option<String>,
    headers: Option<usize>,
    total: usize,
}

/// `MSG <subject> <sid> [reply] <#bytes>` or
/// `HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>`.
fn msg_head(op: &str, args: &[u8]) -> Option<MsgHead> {
    let args = std::str::from_utf8(args).ok()?;
    let fields: Vec<&str> = args.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
    let sizes = if op == "HMSG" { 2 } else { 1 };
    if fields.len() != 2 + sizes && fields.len() != 3 + sizes {
        return None;
    }
    let (names, sizes) = fields.split_at(fields.len() - sizes);
    let size = |s: &str| s.parse::<usize>().ok();
    let (headers, total) = match sizes {
        [total] => (None, size(total)?),
        [headers, total] => (Some(size(headers)?), size(total)?),
        _ => return None,
    };
    if headers.is_some_and(|h| h > total) {
        return None;
    }
    Some(MsgHead {
        subject: names[0].to_owned(),
        sid: names[1].to_owned(),
        reply: names.get(2).map(|r| (*r).to_owned()),
        headers,
        total,
    })
}

/// Splits a line into its operation name and the (trimmed) rest.
fn split_op(line: &[u8]) -> (&[u8], &[u8]) {
    let end = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(line.len());
    (&line[..end], line[end..].trim_ascii())
}

/// The first word of a partial line, once a separator shows it is complete.
fn first_word(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.iter().position(|b| b.is_ascii_whitespace())?;
    Some(&buf[..end])
}

/// The canonical name of an operation, if it is one the server may send.
fn op_name(word: &[u8]) -> Option<&'static str> {
    ["INFO", "MSG", "HMSG", "PING", "PONG", "+OK", "-ERR"]
        .into_iter()
        .find(|op| word.eq_ignore_ascii_case(op.as_bytes()))
}

/// At most 80 characters of `bytes` for an error message.
fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(80)];
    let text: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    if bytes.len() > cut.len() {
        format!("{text}...")
    } else {
        text
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
