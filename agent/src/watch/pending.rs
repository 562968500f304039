//! When to hash a path after events: once it has been quiet for the settle
//! time, so one change made of several events (create, write, close, or
//! write-temp-and-rename) is hashed once, with its final content; and no
//! later than the longest delay after its first event, so a file written
//! continuously is still reported.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug)]
struct Slot {
    first: Instant,
    deadline: Instant,
}

/// Paths (by index) waiting to be hashed.
#[derive(Debug)]
pub(crate) struct Pending {
    settle: Duration,
    max_delay: Duration,
    slots: BTreeMap<usize, Slot>,
}

impl Pending {
    pub(crate) fn new(settle: Duration, max_delay: Duration) -> Self {
        Self {
            settle,
            max_delay: max_delay.max(settle),
            slots: BTreeMap::new(),
        }
    }

    /// An event concerning `path` happened at `now`.
    pub(crate) fn touch(&mut self, path: usize, now: Instant) {
        let slot = self.slots.entry(path).or_insert(Slot {
            first: now,
            deadline: now,
        });
        slot.deadline = (now + self.settle).min(slot.first + self.max_delay);
    }

    /// The earliest deadline, if anything is waiting.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.slots.values().map(|s| s.deadline).min()
    }

    /// Removes and returns the paths due at `now`, in index order.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let due: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in &due {
            self.slots.remove(i);
        }
        due
    }

    /// Removes and returns every waiting path, in index order.
    pub(crate) fn take_all(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.slots).into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_for_quiet_then_fires_once() {
        let t0 = Instant::now();
        let mut p = Pending::new(100 * MS, 1000 * MS);
        assert_eq!(p.next_deadline(), None);
        p.touch(2, t0);
        p.touch(2, t0 + 50 * MS);
        assert_eq!(p.next_deadline(), Some(t0 + 150 * MS));
        assert!(p.take_due(t0 + 149 * MS).is_empty());
        assert_eq!(p.take_due(t0 + 150 * MS), vec![2]);
        assert!(p.take_due(t0 + 10_000 * MS).is_empty());
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn continuous_events_fire_at_the_longest_delay() {
        let t0 = Instant::now();
        let mut p = Pending::new(100 * MS, 300 * MS);
        for k in 0..10 {
            p.touch(0, t0 + k * 50 * MS);
        }
        assert_eq!(p.next_deadline(), Some(t0 + 300 * MS));
        assert_eq!(p.take_due(t0 + 500 * MS), vec![0]);
    }

    #[test]
    fn paths_are_independent_and_take_all_empties() {
        let t0 = Instant::now();
        let mut p = Pending::new(100 * MS, 1000 * MS);
        p.touch(5, t0);
        p.touch(1, t0 + 80 * MS);
        assert_eq!(p.take_due(t0 + 120 * MS), vec![5]);
        p.touch(3, t0 + 120 * MS);
        assert_eq!(p.take_all(), vec![1, 3]);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn a_delay_shorter_than_the_settle_time_is_raised_to_it() {
        let t0 = Instant::now();
        let mut p = Pending::new(100 * MS, 10 * MS);
        p.touch(0, t0);
        assert_eq!(p.next_deadline(), Some(t0 + 100 * MS));
    }
}
