//! Turning lost records into [`Loss`] ranges, tying each into the hash
//! chain where the spool still shows its edges, and deciding whether a
//! damaged record was lost at all (it was not when every group it went to
//! had acknowledged it). Pure.

use super::{Loss, LossReason, frame::Header};

/// A chain hash (`hash(n)` in docs/AUDIT.md).
pub type ChainHash = [u8; 32];

/// Collects lost records in spool order into ranges: consecutive lost
/// records of one reason form one [`Loss`]; a record kept in between (intact,
/// or acknowledged) starts a new one.
///
/// Callers also pass every chain hash they learn along the way, in spool
/// order ([`Losses::frame`], [`Losses::hash`]): a loss takes the hash of
/// the record just before it as its `before_hash`, and the next hash learnt
/// for its last record as its `last_hash`. A hash is only ever matched by
/// sequence, so one learnt out of place is never used.
#[derive(Debug, Default)]
pub struct Losses {
    out: Vec<Loss>,
    open: bool,
    /// The latest `(n, hash(n))` learnt.
    known: Option<(u64, ChainHash)>,
    /// Declarations to make again ([`Losses::redeclare`]).
    again: Vec<Loss>,
}

impl Losses {
    /// `count` records within `first..=last` were lost.
    pub fn lose(&mut self, first: u64, last: u64, count: u64, reason: LossReason) {
        match self.out.last_mut() {
            Some(l) if self.open && l.reason == reason && l.last < first => {
                l.last = last;
                l.count += count;
                l.last_hash = None;
            }
            _ => {
                let before_hash = match self.known {
                    _ if first == 1 => Some([0; 32]),
                    Some((n, h)) if n + 1 == first => Some(h),
                    _ => None,
                };
                self.out.push(Loss {
                    first,
                    last,
                    count,
                    reason,
                    before_hash,
                    last_hash: None,
                });
            }
        }
        self.open = true;
    }

    /// `hash` is the chain hash of record `sequence`.
    pub fn hash(&mut self, sequence: u64, hash: ChainHash) {
        if let Some(l) = self.out.last_mut()
            && l.last == sequence
            && l.last_hash.is_none()
        {
            l.last_hash = Some(hash);
        }
        self.known = Some((sequence, hash));
    }

    /// A frame header, seen before the caller loses or keeps its record:
    /// its `prev` is the chain hash of the record before it.
    pub fn frame(&mut self, h: &Header) {
        if let Some(before) = h.sequence.checked_sub(1) {
            self.hash(before, h.prev);
        }
    }

    /// Whether the last record passed was lost (a loss may still grow or
    /// take its `last_hash`).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// A record between losses survived.
    pub fn keep(&mut self) {
        self.open = false;
    }

    /// Declares `loss` again: the gap record that declared it was lost
    /// undelivered. Re-declarations of one reason merge into one loss
    /// over all their ranges, counts added: each lost record is still
    /// counted once (the ranges may overlap other declarations, which
    /// docs/AUDIT.md allows), and one deleted segment gives at most one
    /// re-declaration per reason however many gap records it held, so the
    /// declarations in the spool do not grow with every segment dropped.
    pub fn redeclare(&mut self, loss: Loss) {
        match self.again.iter_mut().find(|l| l.reason == loss.reason) {
            Some(l) => {
                if loss.first < l.first {
                    l.first = loss.first;
                    l.before_hash = loss.before_hash;
                }
                if loss.last > l.last {
                    l.last = loss.last;
                    l.last_hash = loss.last_hash;
                }
                l.count += loss.count;
            }
            None => self.again.push(loss),
        }
        self.open = false;
    }

    /// Appends `other`'s losses (later in the spool) without merging.
    pub fn append(&mut self, other: Losses) {
        self.out.extend(other.out);
        self.again.extend(other.again);
        self.open = false;
    }

    /// The losses, in the order found, then the re-declarations.
    pub fn into_vec(mut self) -> Vec<Loss> {
        self.out.append(&mut self.again);
        self.out
    }
}

/// The `event.hash` of a record's line, if it has a well-formed one.
pub fn event_hash(line: &[u8]) -> Option<ChainHash> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        event: Event<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        hash: &'a str,
    }
    let l: Line<'_> = serde_json::from_slice(line).ok()?;
    let mut out = [0; 32];
    hex::decode_to_slice(l.event.hash, &mut out).ok()?;
    Some(out)
}

/// The loss a spool gap record (`spool_full` or `spool_corrupt`) declares,
/// read from its line; `None` for any other record. drop_oldest uses it to
/// declare again what a gap record it deletes undelivered declared.
pub fn declaration(line: &[u8]) -> Option<Loss> {
    // Cheap filter first: this runs on every record drop_oldest deletes.
    const GAP: &[u8] = b"\"action\":\"gap\"";
    if !line.windows(GAP.len()).any(|w| w == GAP) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        lbwitness: Lbw<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Lbw<'a> {
        #[serde(borrow)]
        gap: Gap<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Gap<'a> {
        reason: &'a str,
        first_sequence: u64,
        last_sequence: u64,
        count: u64,
        before_hash: Option<&'a str>,
        last_hash: Option<&'a str>,
    }
    let g = serde_json::from_slice::<Line<'_>>(line).ok()?.lbwitness.gap;
    let reason = match g.reason {
        "spool_full" => LossReason::Full,
        "spool_corrupt" => LossReason::Corrupt,
        _ => return None,
    };
    let hash = |h: Option<&str>| {
        let mut out = [0; 32];
        hex::decode_to_slice(h?, &mut out).ok()?;
        Some(out)
    };
    Some(Loss {
        first: g.first_sequence,
        last: g.last_sequence,
        count: g.count,
        reason,
        before_hash: hash(g.before_hash),
        last_hash: hash(g.last_hash),
    })
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

    fn h(n: u8) -> ChainHash {
        [n; 32]
    }

    fn header(sequence: u64) -> Header {
        Header {
            len: 0,
            sequence,
            routes: 1,
            prev: h(sequence as u8 - 1),
        }
    }

    fn hashes(l: &Losses) -> Vec<(Option<ChainHash>, Option<ChainHash>)> {
        l.out.iter().map(|l| (l.before_hash, l.last_hash)).collect()
    }

    #[test]
    fn losses_take_the_chain_hashes_on_either_side() {
        let mut l = Losses::default();
        // 1 is lost: before it is hash(0), zeros.
        l.frame(&header(1));
        l.lose(1, 1, 1, LossReason::Corrupt);
        l.frame(&header(2));
        l.keep();
        // 3 and 4 lost together: one loss from hash(2) to hash(4).
        for q in 3..=4 {
            l.frame(&header(q));
            l.lose(q, q, 1, LossReason::Full);
        }
        l.frame(&header(5));
        l.keep();
        // 6..=7 without headers, after 5's own hash was read; nothing
        // after it.
        l.hash(5, h(5));
        l.lose(6, 7, 2, LossReason::Corrupt);
        assert_eq!(
            hashes(&l),
            vec![
                (Some([0; 32]), Some(h(1))),
                (Some(h(2)), Some(h(4))),
                (Some(h(5)), None)
            ]
        );
        // A hash for another sequence never fills a gap: 9's header after
        // 7's loss says nothing about 7.
        l.keep();
        l.frame(&header(9));
        l.lose(10, 10, 1, LossReason::Corrupt);
        assert_eq!(hashes(&l)[2], (Some(h(5)), None));
        assert_eq!(hashes(&l)[3], (None, None));
    }

    #[test]
    fn a_spool_gap_record_gives_its_declaration() {
        let line = br#"{"event":{"action":"gap","sequence":9},"lbwitness":{"gap":{"before_hash":"0101010101010101010101010101010101010101010101010101010101010101","class":"loss","count":2,"first_sequence":3,"last_sequence":5,"reason":"spool_full","source":"agent"}}}"#;
        assert_eq!(
            declaration(line),
            Some(Loss {
                first: 3,
                last: 5,
                count: 2,
                reason: LossReason::Full,
                before_hash: Some(h(1)),
                last_hash: None,
            })
        );
        // A restart gap and other records declare nothing here.
        let restart = br#"{"event":{"action":"gap"},"lbwitness":{"gap":{"count":1,"first_sequence":3,"last_sequence":3,"reason":"restart"}}}"#;
        assert_eq!(declaration(restart), None);
        assert_eq!(declaration(br#"{"event":{"action":"flow"}}"#), None);
    }

    #[test]
    fn redeclarations_of_one_reason_merge() {
        let loss = |first: u64, last: u64, count, reason| Loss {
            first,
            last,
            count,
            reason,
            before_hash: Some(h(first as u8 - 1)),
            last_hash: Some(h(last as u8)),
        };
        let mut l = Losses::default();
        l.lose(40, 41, 2, LossReason::Full);
        l.redeclare(loss(12, 14, 3, LossReason::Full));
        l.redeclare(loss(1, 5, 5, LossReason::Full));
        l.redeclare(loss(7, 7, 1, LossReason::Corrupt));
        l.redeclare(loss(6, 9, 3, LossReason::Full));
        let v = l.into_vec();
        assert_eq!(
            v.iter()
                .map(|l| (l.first, l.last, l.count, l.before_hash, l.last_hash))
                .collect::<Vec<_>>(),
            vec![
                (40, 41, 2, None, None),
                (1, 14, 11, Some(h(0)), Some(h(14))),
                (7, 7, 1, Some(h(6)), Some(h(7)))
            ]
        );
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
            prev: [0; 32],
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
