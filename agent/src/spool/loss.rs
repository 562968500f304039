//! Turning lost records into [`Loss`] ranges, and deciding whether a damaged
//! record was lost at all (it was not when every group it went to had
//! acknowledged it). Pure.

use super::{Loss, LossReason, frame::Header};

/// Collects lost records in spool order into ranges: consecutive lost
/// records of one reason form one [`Loss`]; a record kept in between (intact,
/// or acknowledged) starts a new one.
#[derive(Debug, Default)]
pub struct Losses {
    out: Vec<Loss>,
    open: bool,
}

impl Losses {
    /// `count` records within `first..=last` were lost.
    pub fn lose(&mut self, first: u64, last: u64, count: u64, reason: LossReason) {
        match self.out.last_mut() {
            Some(l) if self.open && l.reason == reason && l.last < first => {
                l.last = last;
                l.count += count;
            }
            _ => self.out.push(Loss {
                first,
                last,
                count,
                reason,
            }),
        }
        self.open = true;
    }

    /// A record between losses survived.
    pub fn keep(&mut self) {
        self.open = false;
    }

    /// Appends `other`'s losses (later in the spool) without merging.
    pub fn append(&mut self, other: Losses) {
        self.out.extend(other.out);
        self.open = false;
    }

    /// The losses, in the order found.
    pub fn into_vec(self) -> Vec<Loss> {
        self.out
    }
}

/// The sequences a damaged region of `frames` records can hold: above the
/// intact record before it (`prev`) and below the one after it (`next`).
/// With no record after it, the range is as short as `frames` allows: a
/// lower bound on the real last sequence (exact when sequences in the spool
/// are consecutive, which they are unless drop_newest refused some).
pub fn bounds(prev: Option<u64>, next: Option<u64>, frames: u64) -> (u64, u64) {
    let first = match (prev, next) {
        (Some(p), _) => p + 1,
        (None, Some(n)) => n.saturating_sub(frames).max(1),
        (None, None) => 1,
    };
    let last = next.map_or(first + frames - 1, |n| n.saturating_sub(1).max(first));
    (first, last)
}

/// Whether a damaged record (or region) was lost: some group it may have
/// gone to had not acknowledged it. With its header, exactly its groups and
/// sequence count; without, every group the segment names may have had it,
/// and the highest sequence the region can hold decides.
///
/// `masks[k]` is group `k`'s bits in the segment's route masks, `acked[k]`
/// its watermark.
pub fn lost(header: Option<&Header>, last: u64, masks: &[u64], acked: &[u64]) -> bool {
    masks.iter().zip(acked).any(|(&m, &a)| match header {
        Some(h) => h.routes & m != 0 && a < h.sequence,
        None => m != 0 && a < last,
    })
}

/// Whether an intact record is still owed to some group.
pub fn unacked(sequence: u64, routes: u64, masks: &[u64], acked: &[u64]) -> bool {
    masks
        .iter()
        .zip(acked)
        .any(|(&m, &a)| routes & m != 0 && a < sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_losses_merge_until_something_is_kept() {
        let mut l = Losses::default();
        l.lose(1, 1, 1, LossReason::Full);
        l.lose(2, 4, 2, LossReason::Full);
        l.keep();
        l.lose(6, 6, 1, LossReason::Full);
        l.lose(7, 7, 1, LossReason::Corrupt);
        let v = l.into_vec();
        assert_eq!(
            v.iter()
                .map(|l| (l.first, l.last, l.count))
                .collect::<Vec<_>>(),
            vec![(1, 4, 3), (6, 6, 1), (7, 7, 1)]
        );
        assert_eq!(v[2].reason.as_str(), "spool_corrupt");
    }

    #[test]
    fn bounds_from_neighbours() {
        assert_eq!(bounds(Some(10), Some(12), 1), (11, 11));
        // A hole left by drop_newest widens the range, not the count.
        assert_eq!(bounds(Some(10), Some(20), 1), (11, 19));
        // At the end: as many as there were frames.
        assert_eq!(bounds(Some(10), None, 3), (11, 13));
        assert_eq!(bounds(None, Some(5), 2), (3, 4));
        assert_eq!(bounds(None, None, 2), (1, 2));
    }

    #[test]
    fn lost_only_when_some_group_had_not_acknowledged() {
        let h = Header {
            len: 0,
            sequence: 10,
            routes: 0b01,
        };
        // Group 0 (bit 0) acked through 10: delivered, not lost.
        assert!(!lost(Some(&h), 10, &[0b01, 0b10], &[10, 0]));
        assert!(lost(Some(&h), 10, &[0b01, 0b10], &[9, 100]));
        // Header lost: any group named by the segment that is behind.
        assert!(lost(None, 10, &[0b01, 0b10], &[10, 9]));
        assert!(!lost(None, 10, &[0b01, 0], &[10, 0]));
        assert!(unacked(5, 0b10, &[0b01, 0b10], &[9, 4]));
        assert!(!unacked(5, 0, &[0b01, 0b10], &[0, 0]));
    }
}
