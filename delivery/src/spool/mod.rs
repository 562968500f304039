//! The durable spool: sealed records are appended here before anything is
//! sent, read back in order by one delivery task per collector group, and
//! deleted only when every group has acknowledged them.
//!
//! The writer ([`Spool`]) is owned by one task; [`Reader`]s run in other
//! tasks and see only what [`Spool::sync`] has made durable. The format, the
//! fsync policy, recovery and the full policies are described in
//! `docs/SPOOL.md`. The byte-level parts are pure and tested on buffers:
//! [`frame`] (one record), [`segment`] (a file's header), [`scan`] (a
//! segment's body after a crash), [`index`] and [`acks`] (the two small
//! state files).

pub mod acks;
mod active;
mod book;
mod catalog;
mod evict;
mod examine;
pub mod frame;
mod gap;
mod image;
pub mod index;
mod live;
mod loss;
mod reader;
mod recover;
pub mod scan;
pub mod segment;
mod settle;
mod shared;
mod space;
mod writer;

#[cfg(test)]
mod props;
#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;

pub use reader::{ReadBatch, Reader};
use serde::Deserialize;
pub use writer::Spool;

use crate::entry::Entry;

/// How the spool is set up. Checked by [`Spool::open`].
#[derive(Clone, Debug)]
pub struct SpoolSettings {
    /// The spool directory (created if missing; one agent per directory).
    pub dir: PathBuf,
    /// The most bytes the segment files may hold together.
    /// At least 2 × `segment_bytes`.
    pub max_bytes: u64,
    /// A segment is closed and a new one started when the next record would
    /// take it past this size. At least 4 KiB.
    pub segment_bytes: u64,
    /// What to drop when the spool is full.
    pub on_full: OnFull,
    /// Collector group names; index `i` is bit `i` of a record's route mask.
    /// 1 to 64 names, unique, 1 to 255 bytes each.
    pub groups: Vec<String>,
    /// When appended records reach the disk.
    pub fsync: FsyncPolicy,
}

impl SpoolSettings {
    /// Checks the settings.
    fn validate(&self) -> Result<(), SpoolError> {
        let bad = |m: String| Err(SpoolError::Settings(m));
        if self.groups.is_empty() || self.groups.len() > 64 {
            return bad(format!(
                "{} collector groups; the spool takes 1 to 64",
                self.groups.len()
            ));
        }
        for (i, g) in self.groups.iter().enumerate() {
            if g.is_empty() || g.len() > 255 {
                return bad(format!("group name {g:?} must be 1 to 255 bytes"));
            }
            if self.groups[..i].contains(g) {
                return bad(format!("group {g:?} is named twice"));
            }
        }
        let header = segment::encode(0, &self.groups).len() as u64;
        if self.segment_bytes < 4096 || self.segment_bytes < header + frame::OVERHEAD as u64 + 1024
        {
            return bad(format!(
                "segment_bytes {} is too small: at least 4 KiB and room for a 1 KiB record after the {header}-byte header",
                self.segment_bytes
            ));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return bad(format!(
                "max_bytes {} must be at least twice segment_bytes ({}): the segment being written is never dropped",
                self.max_bytes, self.segment_bytes
            ));
        }
        Ok(())
    }
}

/// What a full spool drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Delete the oldest segments to make room; what some group had not
    /// acknowledged in them is reported lost.
    DropOldest,
    /// Refuse the records that do not fit and report them lost.
    #[default]
    DropNewest,
}

/// When [`Spool::sync`] makes records durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// `fdatasync` the segments written since the last sync (and the
    /// directory when a segment was created) before readers may send them:
    /// nothing sent can be lost by a power failure.
    #[default]
    Always,
    /// Publish without fsync and let the kernel write back: survives the
    /// agent being killed, not a power failure or a kernel crash.
    Never,
}

/// One sealed record handed to [`Spool::append`].
#[derive(Clone, Copy, Debug)]
pub struct SpoolRecord<'a> {
    /// `event.sequence`; strictly ascending across appends.
    pub sequence: u64,
    /// Bit `i` set: route to `settings.groups[i]`.
    pub routes: u64,
    /// The canonical JSON line, without a newline.
    pub line: &'a [u8],
    /// The chain hash of record `sequence - 1`, which this record's hash
    /// was computed from. Kept in the frame header so that a loss next to
    /// this record can still be tied into the chain.
    pub prev: [u8; 32],
    /// A record the trail cannot do without while the spool is full: a
    /// spool gap record, the checkpoint that covers it, the start and stop
    /// records. It may use the reserve other records stop short of, and
    /// is written even while the spool refuses records (docs/SPOOL.md).
    pub essential: bool,
}

/// What an append could not keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records dropped by the full policy (or found corrupt while dropping
    /// the oldest segment), in ascending sequence; then the declarations
    /// of spool gap records that drop_oldest deleted undelivered, to
    /// declare again.
    pub dropped: Vec<Loss>,
    /// The highest sequence written by this append of a record that is not
    /// [`SpoolRecord::essential`]: the spool took ordinary records again,
    /// so a refused range before it has ended.
    pub kept_regular: Option<u64>,
}

/// What [`Spool::open`] found.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// The last intact record: the chain resumes from its `event.hash`.
    pub last: Option<Entry>,
    /// Records that were durable and are now damaged or missing.
    pub losses: Vec<Loss>,
    /// Bytes cut from the end that were never durable (a write torn by a
    /// crash). Not a loss: those records were never sent.
    pub torn_bytes: u64,
    /// The index was missing, unreadable or behind and was rebuilt by
    /// scanning segments from their start.
    pub index_rebuilt: bool,
    /// The highest sequence known to have been written, intact or not
    /// (a damaged record cut off the end, even one every group had, still
    /// used its number).
    pub highest: Option<u64>,
    /// Notes for the log.
    pub problems: Vec<String>,
}

impl Recovery {
    /// The highest sequence the spool knows was written: the chain must not
    /// number at or below it again, even when the records above `last` were
    /// lost.
    pub fn highest_sequence(&self) -> Option<u64> {
        let lost = self.losses.iter().map(|l| l.last).max();
        self.last
            .as_ref()
            .map(|e| e.sequence)
            .max(lost)
            .max(self.highest)
    }
}

/// Records lost: `count` of the sequences `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    /// The lowest sequence that may be lost.
    pub first: u64,
    /// The highest sequence that may be lost.
    pub last: u64,
    /// How many were lost; less than `last - first + 1` when some sequences
    /// in the range were intact, acknowledged, or never spooled.
    pub count: u64,
    /// Why.
    pub reason: LossReason,
    /// The chain hash of record `first - 1`, when the spool still shows it
    /// (the frame at `first`, or the intact record before it): the gap
    /// record's `before_hash`.
    pub before_hash: Option<[u8; 32]>,
    /// The chain hash of record `last`, when the spool still shows it (the
    /// frame at `last + 1`): the gap record's `last_hash`.
    pub last_hash: Option<[u8; 32]>,
}

/// Why records were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The spool (or the disk) was full.
    Full,
    /// The records were durable and are now damaged or missing.
    Corrupt,
}

impl LossReason {
    /// The gap record's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Full => "spool_full",
            LossReason::Corrupt => "spool_corrupt",
        }
    }
}

/// The spool's state for logs and the demo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes in segment files.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Intact records held (acknowledged ones included until their segment
    /// is deleted).
    pub records: u64,
    /// The lowest sequence held.
    pub first_sequence: Option<u64>,
    /// The last sequence appended.
    pub last_sequence: Option<u64>,
    /// The last sequence readers may see.
    pub durable_sequence: Option<u64>,
    /// Per group, in settings order.
    pub groups: Vec<GroupStats>,
    /// Records dropped because the spool was at `max_bytes`, since open.
    pub dropped_full: u64,
    /// Records dropped because the disk was full (ENOSPC), since open.
    pub dropped_no_space: u64,
    /// The spool refuses records until space returns (drop_newest).
    pub refusing: bool,
}

/// One group's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// The group.
    pub name: String,
    /// Everything routed to it up to here was acknowledged.
    pub acked_through: u64,
    /// The lowest sequence held above `acked_through`, if any.
    pub oldest_unacked: Option<u64>,
}

/// Why the spool failed. Full disks and damage are not errors: they are
/// reported as [`Loss`]es.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The settings cannot work.
    #[error("spool settings: {0}")]
    Settings(String),
    /// An I/O error other than a full disk.
    #[error("spool {path}: {source}; check the spool directory and the disk")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the spool directory.
    #[error(
        "spool directory {0} is in use by another agent: each agent needs its own state directory (--state-dir) and its own spool directory ([spool] dir)"
    )]
    Locked(PathBuf),
    /// A reader was asked for a group the settings do not name.
    #[error("no collector group {0:?} in the spool settings")]
    UnknownGroup(String),
    /// Records were not appended in ascending sequence (a bug in the caller).
    #[error(
        "record {sequence} appended after {last}: the spool takes records in ascending sequence"
    )]
    OutOfOrder {
        /// The record.
        sequence: u64,
        /// The last sequence appended.
        last: u64,
    },
    /// A route mask names a group bit beyond the configured groups.
    #[error("record {sequence} has route mask {routes:#x} but only {groups} groups are configured")]
    Routes {
        /// The record.
        sequence: u64,
        /// Its mask.
        routes: u64,
        /// `settings.groups.len()`.
        groups: usize,
    },
    /// The writer was dropped.
    #[error("the spool was closed")]
    Closed,
}

impl SpoolError {
    /// Whether this is a full disk (ENOSPC or EDQUOT).
    pub fn is_no_space(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if is_no_space(source))
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SpoolError {
        let path = path.into();
        move |source| SpoolError::Io { path, source }
    }
}

/// ENOSPC or EDQUOT.
fn is_no_space(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let raw = e.raw_os_error();
    raw == Some(Errno::NOSPC.raw_os_error()) || raw == Some(Errno::DQUOT.raw_os_error())
}
