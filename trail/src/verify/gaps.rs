//! Gap records that declare a range (docs/AUDIT.md, "Gaps: declared
//! loss"): the hashes they give across a hole, the coverage they carry to
//! the records before it, and which missing sequences they declare.
//!
//! A gap record is trusted only once it is covered itself (or, with
//! `--live`, pending like every record after the latest valid checkpoint):
//! anyone can append a gap record, only the agent can sign a checkpoint
//! over it.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
};

use super::{
    chain::group_of,
    checkpoints::cover,
    index::{Entry, FileId, Link, Special, ZERO},
    line::Gap,
    report::{AgentReport, Loss, Ranges, RecordIssue},
};

/// `(L, last_hash)` of every spool gap declaring `..=L` with a `last_hash`,
/// sorted: record `L + 1` links through it when record `L` is absent.
pub(crate) fn bridges(gaps: &[Special<Gap>]) -> Vec<(u64, [u8; 32])> {
    let mut out: Vec<(u64, [u8; 32])> = gaps
        .iter()
        .filter_map(|g| {
            let f = g.fields.as_ref().ok()?;
            Some((f.declared?.1, f.last_hash?))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The `last_hash` values declared for record `seq`.
pub(crate) fn bridges_at(bridges: &[(u64, [u8; 32])], seq: u64) -> &[(u64, [u8; 32])] {
    let start = bridges.partition_point(|b| b.0 < seq);
    let end = bridges.partition_point(|b| b.0 <= seq);
    &bridges[start..end]
}

/// The entry of a gap record's line.
fn entry_of<'e>(entries: &'e [Entry], g: &Special<Gap>) -> Option<&'e Entry> {
    let key = g.key();
    entries
        .binary_search_by_key(&key, |e| (e.seq, e.file, e.line))
        .ok()
        .map(|i| &entries[i])
}

/// Whether a checkpoint vouches for the gap record: it is linked and
/// covered.
fn signed(entries: &[Entry], g: &Special<Gap>) -> bool {
    entry_of(entries, g).is_some_and(|e| e.covered && e.link == Link::Linked)
}

/// Declared losses by reason, malformed gaps, and gaps whose hashes
/// contradict a present record (reported as not linked: the agent never
/// writes one). One copy per sequence counts.
pub(crate) fn tally(
    gaps: &[Special<Gap>],
    entries: &[Entry],
    name: &impl Fn(FileId) -> String,
    report: &mut AgentReport,
) {
    let mut losses: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    let mut last_seq = None;
    for g in gaps {
        if last_seq == Some(g.seq) {
            continue;
        }
        last_seq = Some(g.seq);
        let issue = |detail: String| RecordIssue {
            sequence: g.seq,
            file: name(g.file),
            line: u64::from(g.line),
            detail,
        };
        let fields = match &g.fields {
            Ok(fields) => fields,
            Err(detail) => {
                report.invalid_gaps.push_with(|| issue(detail.clone()));
                continue;
            }
        };
        if let Some((first, last)) = fields.declared {
            let claims = [
                (first - 1, fields.before_hash, "before_hash"),
                (last, fields.last_hash, "last_hash"),
            ];
            for (seq, claim, field) in claims {
                let Some(claim) = claim else { continue };
                let copies = &entries[group_of(entries, seq)];
                let contradicts = if seq == 0 {
                    claim != ZERO
                } else {
                    !copies.is_empty() && !copies.iter().any(|e| e.hash == claim)
                };
                if contradicts {
                    report.not_linked.push_with(|| {
                        issue(if seq == 0 {
                            format!(
                                "lbwitness.gap.{field} is not the zero hash (first_sequence is 1)"
                            )
                        } else {
                            format!("lbwitness.gap.{field} is not the stored hash of record {seq}")
                        })
                    });
                }
            }
        }
        let loss = losses.entry((&fields.source, &fields.reason)).or_default();
        loss.0 = loss.0.saturating_add(fields.count);
        loss.1 += 1;
    }
    report.declared_losses = losses
        .into_iter()
        .map(|((source, reason), (count, records))| Loss {
            source: source.to_owned(),
            reason: reason.to_owned(),
            count,
            records,
        })
        .collect();
}

/// Covers the records before each declared hole whose `before_hash` a
/// signed gap gives: record `F - 1` and every record below it while they
/// are present and linked, like a checkpoint's head.
///
/// Highest hole first: a walk covers only records below its start, and a gap
/// record it covers declares a hole below itself, so that hole's turn comes
/// later. Walks never overlap: one that would start inside (or just below)
/// the previous one's stretch covers nothing new, so the whole pass is
/// O(records).
pub(crate) fn cover_before_holes(gaps: &[Special<Gap>], entries: &mut [Entry]) {
    let mut anchors: Vec<(u64, [u8; 32], usize)> = gaps
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let f = g.fields.as_ref().ok()?;
            let first = f.declared?.0;
            (first > 1).then_some((first - 1, f.before_hash?, i))
        })
        .collect();
    anchors.sort_unstable_by_key(|&(at, ..)| Reverse(at));
    let mut floor = u64::MAX;
    for (at, hash, i) in anchors {
        if at + 1 >= floor || !signed(entries, &gaps[i]) {
            continue;
        }
        if !entries[group_of(entries, at)]
            .iter()
            .any(|e| e.hash == hash)
        {
            continue;
        }
        if let Some(low) = cover(entries, 1, at) {
            floor = low;
        }
    }
}

/// A trusted declared range and how many missing sequences it may still
/// account for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Declared {
    pub first: u64,
    pub last: u64,
    pub count: u64,
}

/// Splits the missing runs into declared and undeclared sequences, once
/// coverage is known: only trusted gaps declare.
pub(crate) fn declare(
    gaps: &[Special<Gap>],
    entries: &[Entry],
    holes: &[(u64, u64)],
    live: bool,
    report: &mut AgentReport,
) {
    let latest = report.latest_valid_checkpoint;
    let pending = |seq: u64| live && latest.is_none_or(|l| seq > l);
    let mut declared = Vec::new();
    let mut last_seq = None;
    for g in gaps {
        if last_seq == Some(g.seq) {
            continue;
        }
        last_seq = Some(g.seq);
        let Ok(f) = &g.fields else { continue };
        let range = f.restart.as_ref().and_then(|r| r.declared).or(f.declared);
        if let Some((first, last)) = range
            && (signed(entries, g) || pending(g.seq))
        {
            declared.push(Declared {
                first,
                last,
                count: f.count,
            });
        }
    }
    split(
        holes,
        declared,
        &mut report.missing_declared,
        &mut report.missing_undeclared,
    );
}

/// Assigns each missing sequence (runs, sorted) to a declared range that
/// contains it and has count left, the range ending first taking it (which
/// declares as many as any assignment can); the rest is undeclared.
/// O((runs + ranges) log ranges): it moves from event to event, never
/// sequence by sequence.
pub(crate) fn split(
    holes: &[(u64, u64)],
    mut ranges: Vec<Declared>,
    declared: &mut Ranges,
    undeclared: &mut Ranges,
) {
    ranges.retain(|r| r.count > 0);
    ranges.sort_unstable_by_key(|r| r.first);
    let mut next = 0;
    // Open ranges by their last sequence: (last, index).
    let mut open: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    for &(x, y) in holes {
        let mut p = x;
        while p <= y {
            while next < ranges.len() && ranges[next].first <= p {
                open.push(Reverse((ranges[next].last, next)));
                next += 1;
            }
            while open
                .peek()
                .is_some_and(|&Reverse((last, i))| last < p || ranges[i].count == 0)
            {
                open.pop();
            }
            // A range opening later in this run may end sooner: stop there.
            let stop = ranges.get(next).map_or(y, |r| y.min(r.first - 1));
            let end = match open.peek() {
                None => {
                    undeclared.push(p, stop);
                    stop
                }
                Some(&Reverse((last, i))) => {
                    let r = &mut ranges[i];
                    let end = stop.min(last).min(p.saturating_add(r.count - 1));
                    declared.push(p, end);
                    r.count -= end - p + 1;
                    end
                }
            };
            match end.checked_add(1) {
                Some(e) => p = e,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(holes: &[(u64, u64)], ranges: &[(u64, u64, u64)]) -> (Vec<[u64; 2]>, Vec<[u64; 2]>) {
        let ranges = ranges
            .iter()
            .map(|&(first, last, count)| Declared { first, last, count })
            .collect();
        let (mut d, mut u) = (Ranges::default(), Ranges::default());
        split(holes, ranges, &mut d, &mut u);
        (d.ranges, u.ranges)
    }

    #[test]
    fn a_range_declares_at_most_its_count() {
        // 3..=8 may hold 2 lost records: 3 and 4 are declared, 5 and 6 not.
        assert_eq!(run(&[(3, 6)], &[(3, 8, 2)]), (vec![[3, 4]], vec![[5, 6]]));
        assert_eq!(run(&[(3, 6)], &[(3, 6, 4)]), (vec![[3, 6]], vec![]));
        assert_eq!(run(&[(3, 6)], &[(3, 6, 0)]), (vec![], vec![[3, 6]]));
        assert_eq!(run(&[(3, 6)], &[]), (vec![], vec![[3, 6]]));
    }

    #[test]
    fn runs_outside_every_range_are_undeclared() {
        assert_eq!(
            run(&[(1, 2), (5, 9), (12, 12)], &[(6, 7, 2)]),
            (vec![[6, 7]], vec![[1, 2], [5, 5], [8, 9], [12, 12]])
        );
    }

    #[test]
    fn overlapping_ranges_share_the_missing_sequences() {
        // 3..=8 (2 lost) and 5..=10 (2 lost): 5, 6, 7, 8 missing. Taking the
        // range that ends first is what declares all four.
        assert_eq!(
            run(&[(5, 8)], &[(3, 8, 2), (5, 10, 2)]),
            (vec![[5, 8]], vec![])
        );
        assert_eq!(
            run(&[(5, 9)], &[(3, 8, 2), (5, 10, 2)]),
            (vec![[5, 8]], vec![[9, 9]])
        );
        // A narrower range opening inside the run is used before the wider
        // one, which keeps a count for 6.
        assert_eq!(
            run(&[(1, 6)], &[(1, 10, 4), (4, 5, 2)]),
            (vec![[1, 6]], vec![])
        );
        assert_eq!(
            run(&[(1, 10)], &[(1, 10, 3), (4, 5, 2)]),
            (vec![[1, 5]], vec![[6, 10]])
        );
    }

    #[test]
    fn adjacent_ranges_and_the_end_of_the_sequence_space() {
        assert_eq!(
            run(&[(3, 6)], &[(3, 4, 2), (5, 6, 2)]),
            (vec![[3, 6]], vec![])
        );
        assert_eq!(
            run(&[(u64::MAX - 1, u64::MAX)], &[(u64::MAX - 1, u64::MAX, 2)]),
            (vec![[u64::MAX - 1, u64::MAX]], vec![])
        );
        assert_eq!(
            run(&[(u64::MAX - 1, u64::MAX)], &[(1, u64::MAX, u64::MAX)]),
            (vec![[u64::MAX - 1, u64::MAX]], vec![])
        );
    }
}
