//! Client requests a window gave up on while they were in flight (timed
//! out, or the window outgrew its bound), remembered so that their late
//! `client_done` is reported once, with the reason, instead of joining a
//! window it doesn't belong to.

use std::collections::{HashMap, VecDeque};

use super::mapping::Reason;

/// A bounded set of forgotten client ids; the oldest leave first. An id that
/// has left is reported as `start-unseen` when it is done: still honest.
#[derive(Debug, Default)]
pub(super) struct Forgotten {
    reasons: HashMap<u64, Reason>,
    order: VecDeque<u64>,
    cap: usize,
}

impl Forgotten {
    /// Remembers at most `cap` ids.
    pub(super) fn with_cap(cap: usize) -> Self {
        Forgotten {
            cap,
            ..Forgotten::default()
        }
    }

    /// Remembers `id`, evicting the oldest id if full.
    pub(super) fn insert(&mut self, id: u64, reason: Reason) {
        if self.reasons.insert(id, reason).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.reasons.remove(&old);
            }
        }
    }

    /// Why `id` was forgotten, forgetting it for good (it is done).
    pub(super) fn take(&mut self, id: u64) -> Option<Reason> {
        let reason = self.reasons.remove(&id)?;
        self.order.retain(|&o| o != id);
        Some(reason)
    }

    /// Number of ids remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.reasons.len()
    }
}
