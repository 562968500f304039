//! The bounds a connection's framer keeps to.

use std::sync::Arc;

/// Bounds and settings of a [`super::Conn`]. Cheap to clone (one `Arc`), so
/// one value serves every connection. [`super::Conn::new`] clamps each bound
/// into its range: `max_head` 256 B..=1 MiB, `max_fields` 1..=10 000,
/// `body_prefix` 0..=1024, `max_pipelined` 1..=1024.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest head (start line and fields, with line ends), in bytes; a
    /// longer one is [`super::LostReason::TooLong`]. Default 16 KiB, HAProxy's
    /// default `tune.bufsize` and twice nginx's `large_client_header_buffers`
    /// line. Also bounds a chunk-size line and a trailer section.
    pub max_head: usize,
    /// Most fields in one head. Default 100, as HAProxy's `tune.http.maxhdr`.
    pub max_fields: usize,
    /// Most body bytes kept in a head's `body_prefix`. Default 64.
    pub body_prefix: usize,
    /// Most requests awaiting a response on one connection. Default 32.
    pub max_pipelined: usize,
    /// Field names (any case) left out of the fingerprint besides
    /// [`super::DEFAULT_EXCLUDED`]: what this site's load balancer adds,
    /// removes or rewrites.
    pub exclude_fields: Arc<[String]>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_fields: 100,
            body_prefix: 64,
            max_pipelined: 32,
            exclude_fields: Arc::from(Vec::new()),
        }
    }
}

impl Limits {
    /// The limits with every bound in its range.
    pub(super) fn clamped(self) -> Self {
        Limits {
            max_head: self.max_head.clamp(256, 1 << 20),
            max_fields: self.max_fields.clamp(1, 10_000),
            body_prefix: self.body_prefix.min(1024),
            max_pipelined: self.max_pipelined.clamp(1, 1024),
            exclude_fields: self.exclude_fields,
        }
    }
}
