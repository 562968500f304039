//! Why a connection's framing is lost.

use thiserror::Error;

/// Why framing is lost for good on a connection. Each reason is one the
/// correlator reports with the requests it declares ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum LostReason {
    /// A head was cut by uncaptured bytes (raise the capture size, up to
    /// 1024, if real heads are longer than it).
    #[error("a head did not fit in the captured bytes")]
    HeadTruncated,
    /// A chunk-size line, chunk terminator or trailer fell in uncaptured
    /// bytes, so the body's end is unknown.
    #[error("a chunked body's framing fell in uncaptured bytes")]
    ChunkUncaptured,
    /// The bytes are not a valid HTTP/1.x message.
    #[error("malformed HTTP/1.x: {0}")]
    Malformed(&'static str),
    /// A shape on which two parsers may disagree about the body's length.
    #[error("ambiguous message framing (request smuggling shape): {0}")]
    Smuggling(&'static str),
    /// The client speaks HTTP/2 (prior knowledge preface).
    #[error("HTTP/2 connection preface")]
    Http2Preface,
    /// A head or line longer than the limits, or too many fields.
    #[error("head or line longer than the limits")]
    TooLong,
    /// More requests awaiting a response than the limit.
    #[error("more pipelined requests than the limit")]
    TooManyPipelined,
    /// A response with no request awaiting it (e.g. one the load balancer
    /// generated, or a request that was never seen).
    #[error("a response with no request awaiting it")]
    UnsolicitedResponse,
    /// The connection switched protocols (101) or became a tunnel (CONNECT).
    #[error("the connection left HTTP/1.x (101 Switching Protocols or CONNECT)")]
    Upgraded,
    /// The connection closed in the middle of a message.
    #[error("the connection closed in the middle of a message")]
    ClosedMidMessage,
}
