//! Making acknowledgements durable, deleting what every group has, keeping
//! the index current, and the stats.

use super::{
    GroupStats, SpoolError, SpoolStats,
    acks::{self, AckState},
    index,
    live::Segment,
    writer::Spool,
};

impl Spool {
    /// Writes the ack state durably (checksummed, through a renamed
    /// temporary file), then deletes the oldest segments every group has
    /// passed, then writes the index. Cheap when nothing changed. A crash
    /// in between loses only ack progress (duplicates later), never records.
    ///
    /// On a full disk the ack file cannot be written (it needs a new file):
    /// the segments are deleted first (every group has their records, so
    /// only ack progress is at risk), which frees space, and the write is
    /// tried again. The index is a cache: on a full disk it waits.
    pub fn persist_acks(&mut self) -> Result<(), SpoolError> {
        let reported: Vec<(u64, u64)> = self
            .shared
            .reported
            .lock()
            .expect("reported set poisoned")
            .iter()
            .copied()
            .collect();
        let mut pending = None;
        if self.acks_dirty || reported != self.persisted_reported {
            match self.write_acks(reported.clone()) {
                Err(e) if e.is_no_space() => pending = Some(reported),
                other => other?,
            }
        }
        // Oldest first, and never from `keep_from` on.
        let keep = self.keep_from();
        while self
            .segments
            .front()
            .is_some_and(|s| s.id() < keep && passed(s, &self.acked))
        {
            self.delete_front()?;
        }
        if let Some(reported) = pending {
            match self.write_acks(reported) {
                Err(e) if e.is_no_space() => {
                    tracing::warn!("spool: disk full, acknowledgements not persisted")
                }
                other => other?,
            }
        }
        if self.index_dirty {
            match self.write_index() {
                Err(e) if e.is_no_space() => tracing::warn!("spool: disk full, index not written"),
                other => other?,
            }
        }
        Ok(())
    }

    /// Writes the ack state with `reported` as the regions reported.
    pub(super) fn write_acks(&mut self, reported: Vec<(u64, u64)>) -> Result<(), SpoolError> {
        let state = AckState {
            groups: self
                .settings
                .groups
                .iter()
                .cloned()
                .zip(self.acked.iter().copied())
                .collect(),
            reported,
            highest: self.highest,
        };
        index::write_atomically(&self.settings.dir, "acks", &acks::encode(&state))?;
        self.acks_dirty = false;
        self.persisted_reported = state.reported;
        Ok(())
    }

    /// Writes the index of what is durable.
    pub(super) fn write_index(&mut self) -> Result<(), SpoolError> {
        // Only what is durable: a segment never synced is not listed yet.
        let entries: Vec<_> = self.segments.iter().filter_map(|s| s.synced).collect();
        index::write_atomically(&self.settings.dir, "index", &index::encode(&entries))?;
        self.index_dirty = false;
        Ok(())
    }

    /// Sizes, counts and per-group progress.
    pub fn stats(&self) -> SpoolStats {
        let first = self.segments.iter().map(|s| s.first).find(|&f| f > 0);
        let groups = self
            .settings
            .groups
            .iter()
            .zip(&self.acked)
            .map(|(name, &acked)| GroupStats {
                name: name.clone(),
                acked_through: acked,
                oldest_unacked: self
                    .segments
                    .iter()
                    .find(|s| s.last > acked)
                    .map(|s| if s.first > acked { s.first } else { acked + 1 }),
            })
            .collect();
        SpoolStats {
            bytes: self.held(),
            segments: self.segments.len(),
            records: self.segments.iter().map(|s| s.records).sum(),
            first_sequence: first,
            last_sequence: Some(self.last_sequence).filter(|&s| s > 0),
            durable_sequence: self.durable_sequence,
            groups,
            dropped_full: self.dropped_full,
            dropped_no_space: self.dropped_no_space,
            refusing: self.refusing.is_some(),
        }
    }
}

/// Whether every configured group the segment routed records to has
/// acknowledged through its last record. A segment whose header was lost
/// was reported at open and holds nothing deliverable.
fn passed(s: &Segment, acked: &[u64]) -> bool {
    !s.view.routable()
        || s.view
            .masks
            .iter()
            .zip(acked)
            .all(|(&m, &a)| s.routes & m == 0 || a >= s.last)
}
