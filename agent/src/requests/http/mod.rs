//! The HTTP/1.x framer: one [`Conn`] per TCP connection of the load balancer,
//! fed the kernel's syscall chunks in time order, giving back the requests and
//! responses it framed ([`Message`]).
//!
//! # What it sees
//!
//! For each read or write syscall the kernel reports the bytes moved
//! (`total`) and a copy of only the first N of them (`captured`, 256 by
//! default, at most 1024). So the framer knows every byte count exactly but
//! sees content only at the start of each syscall's chunk:
//!
//! ```text
//!  syscall 1                    syscall 2           syscall 3
//! |captured....|uncaptured.....|captured|uncapt..| |captured.........|
//!  GET /a HTTP/1.1\r\nHost: ..   body (by count)    GET /b HTTP/1.1 ...
//! ```
//!
//! - A head (start line and fields) must be seen whole. It may span several
//!   syscalls as long as each one was captured whole; a head cut by an
//!   uncaptured byte ends the connection's framing ([`LostReason::HeadTruncated`]).
//! - A `Content-Length` body is skipped by count, so it may be uncaptured.
//! - A chunked body needs every chunk-size line: one that falls in uncaptured
//!   bytes ends the framing ([`LostReason::ChunkUncaptured`]).
//! - A response without length ends at the connection's close.
//! - Once framing is lost, it is lost for good: the next byte's position in
//!   the protocol is unknown, so nothing later on the connection maps.
//!
//! # Parsing decisions
//!
//! - Strict where a load balancer and a backend could disagree on framing
//!   (request smuggling): `Content-Length` with `Transfer-Encoding`, differing
//!   `Content-Length` values, a request `Transfer-Encoding` whose last coding
//!   is not `chunked`, `Transfer-Encoding` in HTTP/1.0, a bad chunk size,
//!   whitespace before a field's colon, obs-fold, bare CR and NUL all end the
//!   framing with a reason. Identical duplicate `Content-Length` values
//!   (`5, 5`) are accepted, as RFC 9110 §8.6 allows.
//! - A bare LF ends a line (RFC 9112 §2.2 lets a recipient accept it; HAProxy
//!   and nginx both do, so the load balancer reads such a request and we must
//!   frame it too). A CR not followed by LF is malformed.
//! - Empty lines before a request line are skipped (RFC 9112 §2.2) and counted
//!   in the next request's bytes.
//! - The request line must be valid UTF-8 (non-ASCII targets are accepted as
//!   nginx does); field values are raw bytes, kept as lossy strings only for
//!   `Host`, `User-Agent` and `X-LBW`.
//! - `PRI * HTTP/2.0` is [`LostReason::Http2Preface`]; other versions than 1.0
//!   and 1.1 are malformed.
//!
//! # Messages and when they are emitted
//!
//! Per direction, messages come in order: `Request`, `RequestEnd`, `Request`,
//! ... and `Response` (or `Interim` for 1xx), `ResponseEnd`, ... A head is held
//! back until its body prefix is known (up to [`Limits::body_prefix`] bytes of
//! the body's data, chunk framing removed), the body ends, an uncaptured body
//! byte is met, the other direction moves, or the connection closes. Its
//! `ts_first` is always the time of the syscall that carried its first byte.
//! A request whose head starts while an earlier request on the connection
//! still awaits its final response is marked `pipelined`.
//!
//! # Exact mode
//!
//! Where identical requests are in flight on one thread at once, nothing the
//! kernel sees tells them apart. The operator can make each one unique on
//! the backend side with a header the load balancer adds, which the framer
//! reports as [`RequestHead::tag`] (and leaves out of the fingerprint, since
//! the client side lacks it):
//!
//! ```text
//! HAProxy:  http-request set-header X-LBW %ci:%cp:%rt
//! nginx:    proxy_set_header X-LBW "$remote_addr:$remote_port:$connection:$connection_requests";
//! ```
//!
//! # Memory
//!
//! A `Conn` holds, per direction, at most one head being gathered
//! ([`Limits::max_head`] bytes), one chunk-size or trailer line (bounded by
//! `max_head` too), one held-back head (its strings are bounded by the head
//! they came from) with a body prefix of at most [`Limits::body_prefix`]
//! bytes, and a queue of at most [`Limits::max_pipelined`] requests awaiting
//! a response (two flags each). With the defaults that is under 70 KiB in the
//! worst case, and a few hundred bytes for an idle connection.
//!
//! # Privacy
//!
//! No type here keeps the value of `Authorization`, `Proxy-Authorization`,
//! `Cookie` or `Set-Cookie`. They are part of the fingerprint (identical on
//! both sides, they help tell requests apart), which is a matching key held
//! in memory and must never be written to a record. [`url_path`] turns a raw
//! request-target into what a record may show.

mod chunked;
mod framer;
mod framing;
mod head;
mod limits;
mod lost;
mod message;
mod normalize;
mod privacy;

pub use framer::Conn;
pub use limits::Limits;
pub use lost::LostReason;
pub use message::{Dir, Message, RequestHead, ResponseHead, Version};
pub use normalize::DEFAULT_EXCLUDED;
pub use privacy::{QueryMode, is_secret_header, url_path};

#[cfg(test)]
mod tests;
