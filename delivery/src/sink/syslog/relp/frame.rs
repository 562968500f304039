//! RELP frames (librelp's doc/relp.md), pure: encoding the client's frames
//! and parsing the server's, incrementally, from bytes that may stop
//! anywhere.
//!
//! ```text
//! RELP-FRAME = TXNR SP COMMAND SP DATALEN [SP DATA] LF
//! TXNR = 1*9DIGIT   COMMAND = 1*32ALPHA   DATALEN = 1*9DIGIT
//! ```
//! With DATALEN 0 there is no SP and no DATA (`3 rsp 0\n`).

use std::io::Write as _;

/// The largest transaction number; the next one is 1 again.
pub const MAX_TXNR: u32 = 999_999_999;
/// Digits in TXNR and DATALEN.
const MAX_DIGITS: usize = 9;
/// Letters in COMMAND.
const MAX_COMMAND: usize = 32;

/// One frame, borrowing from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Transaction number (0 for server hints such as `serverclose`).
    pub txnr: u32,
    /// The command, e.g. `rsp`.
    pub command: &'a [u8],
    /// DATALEN bytes of data.
    pub data: &'a [u8],
}

/// Why received bytes are not a RELP frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A byte the grammar does not allow there.
    #[error("expected {expected} at byte {at} of the frame, got {got:?}")]
    Unexpected {
        /// Offset in the frame.
        at: usize,
        /// What the grammar wants.
        expected: &'static str,
        /// What came, escaped.
        got: String,
    },
    /// A field longer than the grammar allows.
    #[error("{field} is longer than {max} characters")]
    TooLong {
        /// `TXNR`, `COMMAND` or `DATALEN`.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// DATALEN above what the client accepts.
    #[error("DATALEN {len} exceeds the {max}-byte limit for server frames")]
    DataTooLong {
        /// Announced.
        len: usize,
        /// Accepted.
        max: usize,
    },
}

/// The transaction number after `txnr` (latched at [`MAX_TXNR`], then 1).
pub fn next_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_TXNR { 1 } else { txnr + 1 }
}

/// Appends a frame whose data is `parts` concatenated.
pub fn encode(txnr: u32, command: &str, parts: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{txnr} {command} {len}");
    if len > 0 {
        out.push(b' ');
        for part in parts {
            out.extend_from_slice(part);
        }
    }
    out.push(b'\n');
}

/// Parses the frame at the start of `buf`: `Ok(None)` when `buf` ends
/// before the frame does, else the frame and how many bytes it took. Errors
/// are reported as soon as the offending byte is seen, so garbage fails fast
/// instead of waiting for more input. Never panics.
pub fn parse(buf: &[u8], max_data: usize) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some((txnr, at)) = number(buf, 0, "TXNR")? else {
        return Ok(None);
    };
    let Some(at) = expect(buf, at, b' ', "SP after TXNR")? else {
        return Ok(None);
    };
    let letters = buf[at..]
        .iter()
        .take(MAX_COMMAND + 1)
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if letters > MAX_COMMAND {
        return Err(FrameError::TooLong {
            field: "COMMAND",
            max: MAX_COMMAND,
        });
    }
    let command = &buf[at..at + letters];
    let at = at + letters;
    if letters == 0 && at < buf.len() {
        return Err(unexpected(buf, at, "COMMAND letters"));
    }
    let Some(at) = expect(buf, at, b' ', "SP after COMMAND")? else {
        return Ok(None);
    };
    let Some((len, at)) = number(buf, at, "DATALEN")? else {
        return Ok(None);
    };
    let len = len as usize;
    if len > max_data {
        return Err(FrameError::DataTooLong { len, max: max_data });
    }
    let data_start = if len == 0 {
        at
    } else {
        match expect(buf, at, b' ', "SP after DATALEN")? {
            Some(at) => at,
            None => return Ok(None),
        }
    };
    let data_end = data_start + len;
    if buf.len() <= data_end {
        return Ok(None);
    }
    let Some(end) = expect(buf, data_end, b'\n', "LF after DATA")? else {
        return Ok(None);
    };
    let frame = Frame {
        txnr,
        command,
        data: &buf[data_start..data_end],
    };
    Ok(Some((frame, end)))
}

/// 1..=9 digits at `at`, followed by a non-digit; `Ok(None)` if `buf` ends
/// first. Returns the value and the offset after it.
fn number(buf: &[u8], at: usize, field: &'static str) -> Result<Option<(u32, usize)>, FrameError> {
    let digits = buf[at.min(buf.len())..]
        .iter()
        .take(MAX_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > MAX_DIGITS {
        return Err(FrameError::TooLong {
            field,
            max: MAX_DIGITS,
        });
    }
    if at + digits >= buf.len() {
        return Ok(None);
    }
    if digits == 0 {
        return Err(unexpected(buf, at, field));
    }
    let value = buf[at..at + digits]
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    Ok(Some((value, at + digits)))
}

/// `byte` at `at`; `Ok(None)` if `buf` ends first. Returns the offset after.
fn expect(
    buf: &[u8],
    at: usize,
    byte: u8,
    expected: &'static str,
) -> Result<Option<usize>, FrameError> {
    match buf.get(at) {
        None => Ok(None),
        Some(&b) if b == byte => Ok(Some(at + 1)),
        Some(_) => Err(unexpected(buf, at, expected)),
    }
}

fn unexpected(buf: &[u8], at: usize, expected: &'static str) -> FrameError {
    FrameError::Unexpected {
        at,
        expected,
        got: buf[at..at + 1].escape_ascii().to_string(),
    }
}

/// The data of an `rsp` frame: `STATUS [SP HUMAN-TEXT] [LF DATA]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsp<'a> {
    /// The status code (200 is OK), `None` for an empty rsp (librelp answers
    /// `close` with one).
    pub status: Option<u16>,
    /// The human-readable text.
    pub text: &'a [u8],
    /// What follows the first LF (the offers, for `open`).
    pub data: &'a [u8],
}

impl<'a> Rsp<'a> {
    /// Parses rsp data; `None` when it does not start with 3 digits.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.is_empty() {
            return Some(Self {
                status: None,
                text: b"",
                data: b"",
            });
        }
        let (line, rest) = match data.iter().position(|&b| b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &data[data.len()..]),
        };
        let code = line.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit))?;
        let text = match &line[3..] {
            [] => &[][..],
            [b' ', text @ ..] => text,
            _ => return None,
        };
        let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        Some(Self {
            status: Some(status),
            text,
            data: rest,
        })
    }
}

/// The offers of an `open` response: `name[=value,value...]` per line.
pub fn offers(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    data.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| match line.iter().position(|&b| b == b'=') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        })
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
