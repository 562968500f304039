//! A minimal HTTP/1.1 client codec for the load generator: a request writer
//! and a response reader that frames bodies by `Content-Length`, chunked
//! transfer coding or the connection's close, and skips `1xx` interim
//! responses. Pure over `BufRead`/`Vec<u8>`, so it is tested on bytes.
//!
//! Written by hand because the lab needs exact control of the bytes on the
//! wire (byte-identical requests, no extra headers), which HTTP client
//! crates do not give.

use std::fmt;
use std::io::{self, BufRead, Read};

/// Longest status or header line accepted, in bytes.
pub const MAX_LINE: usize = 8 * 1024;
/// Most header lines accepted in one response.
pub const MAX_HEADERS: usize = 100;
/// Largest body accepted, in bytes.
pub const MAX_BODY: usize = 1 << 20;

/// A request to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target, e.g. `/r/1?x=2`.
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Sends `Connection: close` when false.
    pub keep_alive: bool,
    /// A body, sent with `Content-Length` when not empty.
    pub body: Vec<u8>,
}

impl Request {
    /// The request's bytes: request line, `Host`, `User-Agent`, `Accept`,
    /// `Connection: close` unless keep-alive, `Content-Length` with a body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\n",
            self.method, self.path, self.host, self.user_agent
        );
        if !self.keep_alive {
            out.push_str("Connection: close\r\n");
        }
        if !self.body.is_empty() {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A response as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lowercased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the server will close the connection after this response
    /// (`Connection: close`, HTTP/1.0 without keep-alive, or a
    /// close-delimited body).
    pub closes: bool,
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum HttpError {
    /// The socket failed (including a read timeout or a reset).
    Io(io::Error),
    /// The connection closed before a status line began.
    Closed,
    /// The connection closed inside the response.
    Truncated(&'static str),
    /// A line longer than [`MAX_LINE`], more than [`MAX_HEADERS`] headers,
    /// or a body over [`MAX_BODY`].
    TooLarge(&'static str),
    /// Not an HTTP/1.x status line.
    StatusLine(String),
    /// A header line without a colon, or a bad length or chunk size.
    Framing(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Closed => f.write_str("connection closed before a response"),
            Self::Truncated(at) => write!(f, "connection closed inside the response's {at}"),
            Self::TooLarge(what) => write!(f, "response {what} over this reader's limit"),
            Self::StatusLine(line) => write!(f, "not an HTTP/1.x status line: {line:?}"),
            Self::Framing(what) => write!(f, "bad response framing: {what}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads one final response (skipping `1xx`) to a request with `method`.
pub fn read_response<R: BufRead>(reader: &mut R, method: &str) -> Result<Response, HttpError> {
    let mut first = true;
    loop {
        let line = match read_line(reader, "status line")? {
            Some(line) => line,
            None if first => return Err(HttpError::Closed),
            None => return Err(HttpError::Truncated("status line")),
        };
        first = false;
        let (version, status) = parse_status_line(&line)?;
        let headers = read_headers(reader)?;
        if (100..200).contains(&status) {
            continue;
        }
        return read_body(reader, method, version, status, headers);
    }
}

fn read_body<R: BufRead>(
    reader: &mut R,
    method: &str,
    version: u8,
    status: u16,
    headers: Vec<(String, String)>,
) -> Result<Response, HttpError> {
    let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let connection = value("connection").map(|v| v.to_ascii_lowercase());
    let mut closes = match connection.as_deref() {
        Some(v) if v.contains("close") => true,
        Some(v) if v.contains("keep-alive") => false,
        _ => version == 0,
    };
    let no_body = method == "HEAD" || status == 204 || status == 304;
    let chunked =
        value("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if no_body {
        Vec::new()
    } else if chunked {
        read_chunked(reader)?
    } else if let Some(length) = value("content-length") {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| HttpError::Framing(format!("Content-Length {length:?}")))?;
        if length > MAX_BODY {
            return Err(HttpError::TooLarge("body"));
        }
        read_exact(reader, length)?
    } else {
        closes = true;
        let mut body = Vec::new();
        reader.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(HttpError::TooLarge("body"));
        }
        body
    };
    Ok(Response {
        status,
        headers,
        body,
        closes,
    })
}

/// `HTTP/1.x NNN reason` into (x, NNN).
fn parse_status_line(line: &str) -> Result<(u8, u16), HttpError> {
    let bad = || HttpError::StatusLine(line.to_owned());
    let mut parts = line.splitn(3, ' ');
    let version = match parts.next() {
        Some("HTTP/1.1") => 1,
        Some("HTTP/1.0") => 0,
        _ => return Err(bad()),
    };
    let code = parts.next().ok_or_else(bad)?;
    if code.len() != 3 {
        return Err(bad());
    }
    let status = code.parse::<u16>().map_err(|_| bad())?;
    if !(100..=999).contains(&status) {
        return Err(bad());
    }
    Ok((version, status))
}

fn read_headers<R: BufRead>(reader: &mut R) -> Result<Vec<(String, String)>, HttpError> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, "headers")?.ok_or(HttpError::Truncated("headers"))?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::TooLarge("header count"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Framing(format!("header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader, "chunk size")?.ok_or(HttpError::Truncated("chunk size"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| HttpError::Framing(format!("chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            read_headers(reader)?;
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::TooLarge("body"));
        }
        body.extend(read_exact(reader, size)?);
        let end = read_line(reader, "chunk")?.ok_or(HttpError::Truncated("chunk"))?;
        if !end.is_empty() {
            return Err(HttpError::Framing("chunk not followed by CRLF".into()));
        }
    }
}

fn read_exact<R: BufRead>(reader: &mut R, length: usize) -> Result<Vec<u8>, HttpError> {
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            HttpError::Truncated("body")
        } else {
            HttpError::Io(e)
        }
    })?;
    Ok(body)
}

/// One CRLF- (or LF-) terminated line without its terminator; `None` at a
/// clean end of stream. Lossy UTF-8: the reader only needs ASCII parts.
fn read_line<R: BufRead>(reader: &mut R, at: &'static str) -> Result<Option<String>, HttpError> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_LINE {
            HttpError::TooLarge("line")
        } else {
            HttpError::Truncated(at)
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], method: &str) -> Result<Response, HttpError> {
        read_response(&mut &bytes[..], method)
    }

    #[test]
    fn request_bytes() {
        let mut req = Request {
            method: "GET".into(),
            path: "/r/1".into(),
            host: "shop.example".into(),
            user_agent: "lbw-lab/1".into(),
            keep_alive: true,
            body: Vec::new(),
        };
        assert_eq!(
            req.to_bytes(),
            b"GET /r/1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: lbw-lab/1\r\nAccept: */*\r\n\r\n"
        );
        req.keep_alive = false;
        req.method = "POST".into();
        req.body = b"x=1".to_vec();
        let text = String::from_utf8(req.to_bytes()).unwrap();
        assert!(text.starts_with("POST /r/1 HTTP/1.1\r\n"));
        assert!(text.contains("Connection: close\r\nContent-Length: 3\r\n\r\nx=1"));
    }

    #[test]
    fn content_length_then_next_response() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Peer: 1.2.3.4:5\r\n\r\nhello\
                      HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let mut reader = &bytes[..];
        let first = read_response(&mut reader, "GET").unwrap();
        assert_eq!(first.status, 200);
        assert_eq!(first.body, b"hello");
        assert_eq!(first.header("x-peer"), Some("1.2.3.4:5"));
        assert!(!first.closes);
        let second = read_response(&mut reader, "GET").unwrap();
        assert_eq!(second.status, 404);
        assert!(second.body.is_empty());
        assert!(matches!(
            read_response(&mut reader, "GET"),
            Err(HttpError::Closed)
        ));
    }

    #[test]
    fn chunked_with_extension_and_trailer() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n";
        let response = read(bytes, "GET").unwrap();
        assert_eq!(response.body, b"abcde");
        let broken = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(read(broken, "GET"), Err(HttpError::Framing(_))));
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert!(matches!(read(cut, "GET"), Err(HttpError::Truncated(_))));
    }

    #[test]
    fn close_delimited_interim_and_bodyless() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nall of it";
        let response = read(bytes, "POST").unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"all of it");
        assert!(response.closes);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        assert!(read(head, "HEAD").unwrap().body.is_empty());
        let no_content = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        let response = read(no_content, "GET").unwrap();
        assert!(response.closes && response.body.is_empty());
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(matches!(
            read(b"SSH-2.0-OpenSSH\r\n", "GET"),
            Err(HttpError::StatusLine(_))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 20 OK\r\n\r\n", "GET"),
            Err(HttpError::StatusLine(_))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "GET"),
            Err(HttpError::Truncated("body"))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "GET"),
            Err(HttpError::Framing(_))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "GET"),
            Err(HttpError::Framing(_))
        ));
        let long = format!(
            "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_LINE + 10)
        );
        assert!(matches!(
            read(long.as_bytes(), "GET"),
            Err(HttpError::TooLarge("line"))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nX: 1", "GET"),
            Err(HttpError::Truncated("headers"))
        ));
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = read(&bytes, "GET");
            }

            #[test]
            fn chunked_and_length_bodies_round_trip(
                body in proptest::collection::vec(any::<u8>(), 0..2000),
                cuts in proptest::collection::vec(1usize..300, 0..20),
            ) {
                let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                let mut rest = &body[..];
                for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                    let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                    if !chunk.is_empty() {
                        chunked.extend(format!("{:x}\r\n", chunk.len()).bytes());
                        chunked.extend(chunk);
                        chunked.extend(b"\r\n");
                    }
                    rest = tail;
                }
                chunked.extend(b"0\r\n\r\n");
                prop_assert_eq!(&read(&chunked, "GET").unwrap().body, &body);
                let mut sized = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                sized.extend(&body);
                prop_assert_eq!(&read(&sized, "GET").unwrap().body, &body);
                // Any cut inside the body is a truncation, never a short body.
                if !body.is_empty() {
                    let cut = sized.len() - 1;
                    prop_assert!(matches!(read(&sized[..cut], "GET"), Err(HttpError::Truncated("body"))));
                }
            }
        }
    }
}
