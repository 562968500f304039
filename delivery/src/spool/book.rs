//! The acknowledgement book: per configured group, the sequence through
//! which it has everything routed to it, what of that (and of the damaged
//! regions reported) is durable in the ack state file, and the highest
//! sequence known written at open. The file's format is in [`super::acks`].

use std::path::Path;

use super::{
    SpoolError,
    acks::{self, AckState},
    index,
    live::Segment,
};

/// The groups' watermarks and their durable copy.
#[derive(Debug)]
pub(super) struct AckBook {
    groups: Vec<String>,
    /// Per group, in settings order: acknowledged through.
    acked: Vec<u64>,
    /// `acked` moved since the ack state was written.
    dirty: bool,
    /// The damaged regions the ack state file says were reported.
    persisted_reported: Vec<(u64, u64)>,
    /// The highest sequence known written at open (kept in the ack state).
    highest: u64,
}

impl AckBook {
    /// A book for `groups` at the watermarks `acked`.
    pub fn new(groups: Vec<String>, acked: Vec<u64>, highest: u64) -> Self {
        AckBook {
            groups,
            acked,
            dirty: false,
            persisted_reported: Vec::new(),
            highest,
        }
    }

    /// The index of `group` in the settings.
    pub fn position(&self, group: &str) -> Option<usize> {
        self.groups.iter().position(|g| g == group)
    }

    /// Per group, acknowledged through.
    pub fn acked(&self) -> &[u64] {
        &self.acked
    }

    /// Group names with their watermarks, in settings order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, u64)> {
        self.groups.iter().zip(self.acked.iter().copied())
    }

    /// Group `group` has everything routed to it through `through`.
    pub fn ack(&mut self, group: &str, through: u64) {
        match self.position(group) {
            Some(k) if through > self.acked[k] => {
                self.acked[k] = through;
                self.dirty = true;
            }
            Some(_) => {}
            None => tracing::warn!(
                group,
                "acknowledgement for a group the spool does not know; ignored"
            ),
        }
    }

    /// The ack state must be written again even though nothing moved.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether the ack state file is behind (with `reported` as the
    /// regions reported now).
    pub fn is_behind(&self, reported: &[(u64, u64)]) -> bool {
        self.dirty || reported != self.persisted_reported
    }

    /// Writes the ack state durably to `dir` with `reported` as the regions
    /// reported.
    pub fn write(&mut self, dir: &Path, reported: Vec<(u64, u64)>) -> Result<(), SpoolError> {
        let state = AckState {
            groups: self
                .groups
                .iter()
                .cloned()
                .zip(self.acked.iter().copied())
                .collect(),
            reported,
            highest: self.highest,
        };
        index::write_atomically(dir, "acks", &acks::encode(&state))?;
        self.dirty = false;
        self.persisted_reported = state.reported;
        Ok(())
    }

    /// Whether every configured group the segment routed records to has
    /// acknowledged through its last record. A segment whose header was lost
    /// was reported at open and holds nothing deliverable.
    pub fn passed(&self, s: &Segment) -> bool {
        !s.view().routable()
            || s.view()
                .masks
                .iter()
                .zip(&self.acked)
                .all(|(&m, &a)| s.routes() & m == 0 || a >= s.last())
    }
}
