//! The index state: the live segments, oldest first (the last is the
//! active one), what each holds, what of it is durable, and whether the
//! index file (format in [`super::index`]) is behind.

use std::{collections::VecDeque, path::Path};

use super::{GroupStats, SpoolError, index, live::Segment};

/// The live segments and the index that describes them.
#[derive(Debug)]
pub(super) struct Catalog {
    segments: VecDeque<Segment>,
    /// The index file is behind.
    dirty: bool,
}

impl Catalog {
    /// The segments found at open (at least one: the active one). The index
    /// is written again at open.
    pub fn new(segments: VecDeque<Segment>) -> Self {
        assert!(!segments.is_empty(), "an active segment");
        Catalog {
            segments,
            dirty: true,
        }
    }

    /// The segment being written.
    pub fn active(&self) -> &Segment {
        self.segments.back().expect("an active segment")
    }

    /// The segment being written.
    pub fn active_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("an active segment")
    }

    /// The segment at position `i` (0: the oldest).
    pub fn get(&self, i: usize) -> Option<&Segment> {
        self.segments.get(i)
    }

    /// How many segments there are.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Bytes in segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(Segment::len).sum()
    }

    /// Segments from this id on are never deleted: `durable` (the one
    /// readers are at the durable end of), and the last one holding a
    /// record (a restart resumes the chain from it).
    pub fn keep_from(&self, durable: u64) -> u64 {
        let last_record = self
            .segments
            .iter()
            .rev()
            .find(|s| s.last() > 0)
            .map_or(durable, Segment::id);
        durable.min(last_record)
    }

    /// The oldest segment, if it may be deleted (it is before `keep`).
    pub fn oldest_before(&self, keep: u64) -> Option<&Segment> {
        self.segments.front().filter(|s| s.id() < keep)
    }

    /// Forgets the oldest segment.
    pub fn pop_oldest(&mut self) -> Segment {
        self.dirty = true;
        self.segments.pop_front().expect("a segment to delete")
    }

    /// Closes the active segment (readers learn its last record) and
    /// makes `seg` the active one.
    pub fn roll(&mut self, seg: Segment) {
        self.active().close();
        self.segments.push_back(seg);
        self.dirty = true;
    }

    /// Everything written is durable now.
    pub fn mark_synced(&mut self) {
        for s in self.segments.iter_mut().rev() {
            if s.is_synced() {
                break;
            }
            s.mark_synced();
            self.dirty = true;
        }
    }

    /// The last record held (after a sync: the last durable one).
    pub fn last_record(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .map(Segment::last)
            .find(|&l| l > 0)
    }

    /// Where a reader of a group acknowledged through `acked` starts:
    /// the position of the first segment it is not wholly past (closed
    /// segments before `durable` only), and the last record before it.
    pub fn reader_start(&self, durable: u64, acked: u64) -> (usize, Option<u64>) {
        let start = self
            .segments
            .iter()
            .position(|s| s.id() >= durable || s.last() == 0 || s.last() > acked)
            .expect("the active segment qualifies");
        let prev = start
            .checked_sub(1)
            .map(|p| self.segments[p].last())
            .filter(|&l| l > 0);
        (start, prev)
    }

    /// Whether the index file is behind.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the index of what is durable to `dir`.
    pub fn write(&mut self, dir: &Path) -> Result<(), SpoolError> {
        // Only what is durable: a segment never synced is not listed yet.
        let entries: Vec<_> = self.segments.iter().filter_map(Segment::synced).collect();
        index::write_atomically(dir, "index", &index::encode(&entries))?;
        self.dirty = false;
        Ok(())
    }

    /// The lowest sequence held.
    pub fn first_sequence(&self) -> Option<u64> {
        self.segments.iter().map(Segment::first).find(|&f| f > 0)
    }

    /// Intact records held.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(Segment::records).sum()
    }

    /// A group's progress, acknowledged through `acked`.
    pub fn group_stats(&self, name: &str, acked: u64) -> GroupStats {
        GroupStats {
            name: name.to_owned(),
            acked_through: acked,
            oldest_unacked: self.segments.iter().find(|s| s.last() > acked).map(|s| {
                if s.first() > acked {
                    s.first()
                } else {
                    acked + 1
                }
            }),
        }
    }
}
