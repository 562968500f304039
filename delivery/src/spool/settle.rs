//! The last step of recovery: walking what the scans found, in spool order,
//! and deciding which damaged records were lost and with which sequence
//! range. Pure.

use std::collections::BTreeSet;

use super::{
    Loss, LossReason,
    frame::Header,
    loss::{ChainHash, Losses, bounds, lost},
};

/// Something recovery found, in spool order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// An intact record.
    Intact {
        /// Its sequence.
        sequence: u64,
        /// (segment index, offset) when known: where to read it back.
        at: Option<(usize, u64)>,
        /// The id of its segment when that segment's header was lost: the
        /// record cannot be routed and is lost to every group behind it.
        unroutable: Option<u64>,
        /// The chain hash of the record before it (its frame's `prev`),
        /// when read.
        prev: Option<ChainHash>,
        /// Its own chain hash (`event.hash`), when read: only for a record
        /// right before damage without a header, whose `before_hash` it is.
        hash: Option<ChainHash>,
    },
    /// A damaged region.
    Damaged {
        /// Index of its segment (for its route masks).
        segment: usize,
        /// (segment id, offset): its identity in the reported set.
        key: (u64, u64),
        /// Its header, when that survived.
        header: Option<Header>,
        /// Records it held.
        frames: u64,
        /// With nothing intact after it: a sequence known to have been
        /// written (from the index), raising the range's upper bound.
        hint: u64,
        /// Cut off the file at open: reported now or never.
        cut: bool,
    },
    /// Records the index knew of that are gone (a segment deleted, or cut
    /// shorter, outside the agent).
    Missing {
        /// The first, when known (else: after the record before).
        first: Option<u64>,
        /// The last.
        last: u64,
        /// How many.
        count: u64,
    },
}

/// The outcome.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Settled {
    /// Losses in spool order.
    pub losses: Vec<Loss>,
    /// Damaged regions skipped because an earlier run reported them.
    pub already: u64,
    /// Where the last intact record is: (segment index, offset).
    pub last: Option<(usize, u64)>,
    /// The highest sequence known written, lost or not.
    pub highest: Option<u64>,
}

/// Decides losses. `masks[s][k]`: group `k`'s bits in segment `s` (all ones
/// when its header was lost); `acked[k]`: group `k`'s watermark. Adds newly
/// reported regions to `reported`.
pub(super) fn settle(
    pieces: &[Piece],
    masks: &[Vec<u64>],
    acked: &[u64],
    reported: &mut BTreeSet<(u64, u64)>,
) -> Settled {
    let mut next = vec![None; pieces.len()];
    let mut after = None;
    for (i, p) in pieces.iter().enumerate().rev() {
        next[i] = after;
        if let Piece::Intact { sequence, .. } = p {
            after = Some(*sequence);
        }
    }
    let before = reported.clone();
    let mut out = Losses::default();
    let mut settled = Settled::default();
    let mut prev: Option<u64> = None;
    for (i, p) in pieces.iter().enumerate() {
        match p {
            Piece::Intact {
                sequence,
                at,
                unroutable,
                prev: prev_hash,
                hash,
            } => {
                if let (Some(h), Some(n)) = (prev_hash, sequence.checked_sub(1)) {
                    out.hash(n, *h);
                }
                prev = Some(*sequence);
                settled.highest = settled.highest.max(Some(*sequence));
                if at.is_some() {
                    settled.last = *at;
                }
                match unroutable {
                    Some(id)
                        if !before.contains(&(*id, 0)) && acked.iter().any(|&a| a < *sequence) =>
                    {
                        out.lose(*sequence, *sequence, 1, LossReason::Corrupt);
                        reported.insert((*id, 0));
                    }
                    _ => out.keep(),
                }
                if let Some(h) = hash {
                    out.hash(*sequence, *h);
                }
            }
            Piece::Damaged {
                segment,
                key,
                header,
                frames,
                hint,
                cut,
            } => {
                if let Some(h) = header {
                    out.frame(h);
                }
                let (first, last) = match header {
                    Some(h) => (h.sequence, h.sequence),
                    None => {
                        let (f, l) = bounds(prev, next[i], *frames);
                        (f, if next[i].is_none() { l.max(*hint) } else { l })
                    }
                };
                prev = Some(prev.map_or(last, |p| p.max(last)));
                settled.highest = settled.highest.max(Some(last.max(*hint)));
                if !cut && before.contains(key) {
                    settled.already += 1;
                    out.keep();
                } else if lost(header.as_ref(), last, &masks[*segment], acked) {
                    out.lose(first, last, *frames, LossReason::Corrupt);
                    if !cut {
                        reported.insert(*key);
                    }
                } else {
                    out.keep();
                }
            }
            Piece::Missing { first, last, count } => {
                let first = first.unwrap_or(prev.map_or(1, |p| p + 1)).min(*last);
                prev = Some(*last);
                settled.highest = settled.highest.max(Some(*last));
                if acked.iter().any(|&a| a < *last) {
                    out.lose(first, *last, *count, LossReason::Corrupt);
                } else {
                    out.keep();
                }
            }
        }
    }
    settled.losses = out.into_vec();
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::chain;

    fn intact(s: u64) -> Piece {
        Piece::Intact {
            sequence: s,
            at: Some((0, s * 100)),
            unroutable: None,
            prev: Some(chain(s - 1)),
            hash: Some(chain(s)),
        }
    }

    fn damaged(off: u64, header: Option<(u64, u64)>, frames: u64) -> Piece {
        Piece::Damaged {
            segment: 0,
            key: (1, off),
            header: header.map(|(sequence, routes)| Header {
                len: 10,
                sequence,
                routes,
                prev: chain(sequence - 1),
            }),
            frames,
            hint: 0,
            cut: false,
        }
    }

    fn ranges(s: &Settled) -> Vec<(u64, u64, u64)> {
        s.losses
            .iter()
            .map(|l| (l.first, l.last, l.count))
            .collect()
    }

    /// Every hash a loss carries is right.
    fn linked(s: &Settled) -> Vec<(bool, bool)> {
        s.losses
            .iter()
            .map(|l| {
                assert!(
                    l.before_hash.is_none_or(|h| h == chain(l.first - 1)),
                    "{l:?}"
                );
                assert!(l.last_hash.is_none_or(|h| h == chain(l.last)), "{l:?}");
                (l.before_hash.is_some(), l.last_hash.is_some())
            })
            .collect()
    }

    #[test]
    fn damage_is_bounded_by_intact_neighbours_and_reported_once() {
        let pieces = [
            intact(1),
            damaged(200, None, 2),
            intact(4),
            damaged(500, Some((5, 1)), 1),
            intact(6),
        ];
        let mut reported = BTreeSet::new();
        let s = settle(&pieces, &[vec![1, 2]], &[0, 0], &mut reported);
        assert_eq!(ranges(&s), vec![(2, 3, 2), (5, 5, 1)]);
        assert_eq!(linked(&s), vec![(true, true), (true, true)]);
        assert_eq!(s.last, Some((0, 600)));
        assert_eq!(reported.len(), 2);
        let again = settle(&pieces, &[vec![1, 2]], &[0, 0], &mut reported);
        assert_eq!((ranges(&again), again.already), (vec![], 2));
    }

    #[test]
    fn acknowledged_damage_is_not_a_loss() {
        // Record 5 went to group 0 only, which has it.
        let pieces = [intact(4), damaged(500, Some((5, 0b01)), 1), intact(6)];
        let s = settle(&pieces, &[vec![0b01, 0b10]], &[5, 0], &mut BTreeSet::new());
        assert!(s.losses.is_empty());
        // Header lost: group 1 is named by the segment and behind.
        let pieces = [intact(4), damaged(500, None, 1), intact(6)];
        let s = settle(&pieces, &[vec![0b01, 0b10]], &[5, 0], &mut BTreeSet::new());
        assert_eq!(ranges(&s), vec![(5, 5, 1)]);
        let s = settle(&pieces, &[vec![0b01, 0b10]], &[5, 5], &mut BTreeSet::new());
        assert!(s.losses.is_empty());
    }

    #[test]
    fn damage_at_the_end_uses_what_is_known() {
        let mut tail = damaged(300, None, 2);
        if let Piece::Damaged { hint, cut, .. } = &mut tail {
            (*hint, *cut) = (9, true);
        }
        let mut reported = BTreeSet::new();
        let s = settle(&[intact(3), tail.clone()], &[vec![1]], &[0], &mut reported);
        assert_eq!(ranges(&s), vec![(4, 9, 2)]);
        assert_eq!(linked(&s), vec![(true, false)], "nothing after it");
        assert!(
            reported.is_empty(),
            "a cut region is gone: nothing to remember"
        );
        // Acknowledged by everyone: not a loss, but its numbers stay used.
        let s = settle(&[intact(3), tail], &[vec![1]], &[9], &mut BTreeSet::new());
        assert_eq!((s.losses.len(), s.highest), (0, Some(9)));
    }

    #[test]
    fn unroutable_and_missing_records() {
        let pieces = [
            Piece::Intact {
                sequence: 1,
                at: None,
                unroutable: Some(7),
                prev: None,
                hash: None,
            },
            Piece::Intact {
                sequence: 2,
                at: None,
                unroutable: Some(7),
                prev: None,
                hash: None,
            },
            Piece::Missing {
                first: None,
                last: 10,
                count: 8,
            },
            intact(11),
        ];
        let mut reported = BTreeSet::new();
        let s = settle(&pieces, &[vec![u64::MAX]], &[1], &mut reported);
        // Record 1 was acknowledged; 2 was not; then 3..=10 are missing.
        assert_eq!(ranges(&s), vec![(2, 10, 9)]);
        assert_eq!(linked(&s), vec![(false, true)], "11's header ends it");
        assert!(reported.contains(&(7, 0)));
    }
}
