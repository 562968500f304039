//! One sealed record as the spool keeps it and a sink sends it: the unit
//! every delivery stage passes on, so it sits below them all.

use bytes::Bytes;

/// One sealed record as spooled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `event.sequence`.
    pub sequence: u64,
    /// The record's canonical JSON, without a trailing newline.
    pub line: Bytes,
}
