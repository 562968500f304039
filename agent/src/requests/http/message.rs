//! What the framer gives back: heads, ends and the loss of framing.

use std::fmt;

use super::LostReason;

/// Which way bytes flow on this connection, relative to HTTP: requests go
/// from the HTTP client to the HTTP server, responses back. (On the load
/// balancer's client side the LB reads requests; on its backend side it
/// writes them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// The HTTP version of a start line. Only HTTP/1.0 and HTTP/1.1 are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

impl Version {
    /// The version as ECS `http.version` writes it: `1.0` or `1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the framer found, in the order of the bytes on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request head parsed; the request's body follows (or not).
    Request(RequestHead),
    /// The request ended: `ts_last` is the time of the syscall that carried
    /// its last byte, `bytes` the whole request on the wire, head included.
    RequestEnd {
        /// Kernel ns of the syscall with the request's last byte.
        ts_last: u64,
        /// Bytes of the request, head and body (with chunk framing).
        bytes: u64,
    },
    /// A final (non-1xx) response head parsed; its body follows (or not).
    Response(ResponseHead),
    /// The final response ended.
    ResponseEnd {
        /// Kernel ns of the syscall with the response's last byte.
        ts_last: u64,
        /// Bytes of the response, head and body (with chunk framing).
        bytes: u64,
    },
    /// An interim 1xx response (100 Continue, 102, 103), whole: it precedes
    /// the final response to the same request and has no body.
    Interim {
        /// Kernel ns of the syscall with its first byte.
        ts_first: u64,
        /// Kernel ns of the syscall with its last byte.
        ts_last: u64,
        /// The 1xx status.
        status: u16,
        /// Its bytes on the wire.
        bytes: u64,
    },
    /// Framing is lost for good on this connection: no later message maps.
    Lost(LostReason),
}

/// A request's head, as far as the correlator and the records need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Kernel ns of the syscall that carried the head's first byte.
    pub ts_first: u64,
    /// The method, e.g. `GET`.
    pub method: String,
    /// The raw request-target. It may carry a query with secrets: a record
    /// shows it only through [`super::url_path`].
    pub target: String,
    /// The request line's version.
    pub version: Version,
    /// The `Host` field, lossy UTF-8.
    pub host: Option<String>,
    /// The `User-Agent` field, lossy UTF-8.
    pub user_agent: Option<String>,
    /// The `X-LBW` field (the operator's exact-mode tag), lossy UTF-8.
    pub tag: Option<String>,
    /// SHA-256 over the normalized request (see [`super::DEFAULT_EXCLUDED`]
    /// and `normalize.rs`): equal for the request as the client sent it and
    /// as the load balancer forwarded it. All zero when `complete` is false.
    pub fingerprint: [u8; 32],
    /// Up to [`super::Limits::body_prefix`] bytes of the body's data that
    /// were captured, from its start. It may be shorter on one side than on
    /// the other: compare with [`RequestHead::same_request`].
    pub body_prefix: Vec<u8>,
    /// False when the head did not fit in the captured bytes: then only the
    /// request line (and fields before the cut) are known, the fingerprint is
    /// zero, and [`Message::Lost`] follows.
    pub complete: bool,
    /// The head started while an earlier request on this connection still
    /// awaited its final response (HTTP pipelining).
    pub pipelined: bool,
}

impl RequestHead {
    /// Whether `self` and `other` can be the same request seen on two
    /// connections: both complete, equal fingerprints, and body prefixes
    /// equal over their common length.
    pub fn same_request(&self, other: &RequestHead) -> bool {
        self.complete
            && other.complete
            && self.fingerprint == other.fingerprint
            && common_prefix_equal(&self.body_prefix, &other.body_prefix)
    }
}

/// A final response's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Kernel ns of the syscall that carried the head's first byte.
    pub ts_first: u64,
    /// The status code, 200..=999.
    pub status: u16,
    /// The status line's version.
    pub version: Version,
    /// Up to [`super::Limits::body_prefix`] bytes of the body's data that
    /// were captured, from its start.
    pub body_prefix: Vec<u8>,
    /// False when the head did not fit in the captured bytes: only the status
    /// line is known and [`Message::Lost`] follows.
    pub complete: bool,
}

impl ResponseHead {
    /// Whether `self` and `other` can be the same response seen on two
    /// connections: equal status, and body prefixes equal over their common
    /// length.
    pub fn same_response(&self, other: &ResponseHead) -> bool {
        self.status == other.status && common_prefix_equal(&self.body_prefix, &other.body_prefix)
    }
}

fn common_prefix_equal(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_compares_only_the_shorter_length() {
        assert!(common_prefix_equal(b"", b"abc"));
        assert!(common_prefix_equal(b"ab", b"abc"));
        assert!(!common_prefix_equal(b"ax", b"abc"));
    }

    #[test]
    fn version_strings_are_ecs() {
        assert_eq!(Version::Http10.to_string(), "1.0");
        assert_eq!(Version::Http11.as_str(), "1.1");
    }
}
