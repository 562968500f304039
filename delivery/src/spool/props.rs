//! Property tests of recovery's decisions on segment images held in memory
//! ([`Recovering`] over [`SegmentImage`]s read from byte buffers): random
//! spools, then truncations, bit flips, torn and zero-filled tails, and
//! segments missing or not yet in the index.
//!
//! Ground truth is what was written. For every written record one of these
//! holds: it is kept (its frame, read back from the image, is
//! byte-identical to what was written, and no loss names it), or it lies in
//! a loss, or it was torn off the end of the last segment (never durable:
//! not a loss), or it was deleted with the oldest segments (what deleting
//! does), or it sits before the first frame marker of a segment that also
//! lost its header (nothing tells it from the header). With one mutation a
//! lost record lies in exactly one loss and the counts are exact; with
//! several, damages bounded by the same intact neighbours give overlapping
//! ranges (docs/AUDIT.md allows that), so a record lies in at least one.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{
    acks::AckState,
    frame,
    image::SegmentImage,
    index::IndexEntry,
    recover::{Decided, Recovering},
    segment,
    settle::Piece,
    tests::chain,
};

/// A record as written: where, and its frame's bytes.
#[derive(Clone, Debug)]
struct Written {
    sequence: u64,
    segment: usize,
    offset: usize,
    frame: Vec<u8>,
}

/// A spool as written: segment files (ids 1..), their records, and an
/// index entry per segment for the first `vouched[i]` records (None: not
/// in the index).
#[derive(Clone, Debug)]
struct Spool {
    files: Vec<Vec<u8>>,
    written: Vec<Written>,
    index: Vec<Option<IndexEntry>>,
}

fn groups() -> Vec<String> {
    vec!["a".into()]
}

fn line(seq: u64, pad: usize) -> Vec<u8> {
    format!(
        "{{\"event\":{{\"hash\":\"{}\",\"sequence\":{seq}}},\"pad\":\"{}\"}}",
        hex::encode(chain(seq)),
        "x".repeat(pad)
    )
    .into_bytes()
}

fn write(shape: &[(Vec<usize>, Option<usize>)]) -> Spool {
    let groups = groups();
    let mut seq = 0;
    let mut s = Spool {
        files: Vec::new(),
        written: Vec::new(),
        index: Vec::new(),
    };
    for (k, (pads, vouched)) in shape.iter().enumerate() {
        let id = k as u64 + 1;
        let mut file = segment::encode(id, &groups);
        let header_len = file.len();
        let first = s.written.len();
        for &pad in pads {
            seq += 1;
            let offset = file.len();
            frame::encode(&mut file, seq, 1, &chain(seq - 1), &line(seq, pad));
            s.written.push(Written {
                sequence: seq,
                segment: k,
                offset,
                frame: file[offset..].to_vec(),
            });
        }
        s.index.push(vouched.map(|n| {
            let n = n.min(pads.len());
            let mine = &s.written[first..first + n];
            match (mine.first(), mine.last()) {
                (Some(a), Some(b)) => IndexEntry {
                    id,
                    first: a.sequence,
                    last: b.sequence,
                    records: n as u64,
                    good: (b.offset + b.frame.len()) as u64,
                    last_frame: b.offset as u64,
                    routes: 1,
                },
                _ => IndexEntry {
                    id,
                    good: header_len as u64,
                    ..IndexEntry::default()
                },
            }
        }));
        s.files.push(file);
    }
    s
}

/// Damage done after the writing.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit at a point past what the index vouches for (or in the
    /// segment header).
    Flip { segment: usize, at: f64, bit: u8 },
    /// Cut the last segment short anywhere past what the index vouches for.
    TearLast { at: f64 },
    /// Cut a segment short inside its last record.
    CutLastRecord { segment: usize, at: f64 },
    /// Delete a segment (not the oldest) that the index lists in full.
    Delete { segment: usize },
    /// Zeros after the last segment's end (a file extended by a crash).
    ZeroTail { len: usize },
}

fn mutation(segments: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..segments, 0.0..1.0f64, 0..8u8).prop_map(|(segment, at, bit)| Mutation::Flip {
            segment,
            at,
            bit
        }),
        (0.0..1.0f64).prop_map(|at| Mutation::TearLast { at }),
        (0..segments, 0.0..1.0f64)
            .prop_map(|(segment, at)| Mutation::CutLastRecord { segment, at }),
        (0..segments).prop_map(|segment| Mutation::Delete { segment }),
        (1..200usize).prop_map(|len| Mutation::ZeroTail { len }),
    ]
}

/// What the mutations did to the files (None: deleted), and the records
/// allowed to vanish without a loss: those torn off the last segment.
struct Damaged {
    files: Vec<Option<Vec<u8>>>,
    torn_from: Option<(usize, usize)>,
}

fn vouched_end(s: &Spool, k: usize) -> usize {
    s.index[k].map_or(0, |e| e.good as usize)
}

fn apply(s: &Spool, muts: &[Mutation]) -> Damaged {
    let mut files: Vec<Option<Vec<u8>>> = s.files.iter().cloned().map(Some).collect();
    let n = files.len();
    let header_len = segment::encode(1, &groups()).len();
    let mut torn_from: Option<(usize, usize)> = None;
    for m in muts {
        match *m {
            Mutation::Flip { segment, at, bit } => {
                let Some(f) = files[segment].as_mut() else {
                    continue;
                };
                let lo = vouched_end(s, segment);
                // The header, or past the vouched part.
                let span = header_len + f.len().saturating_sub(lo);
                if span == 0 {
                    continue;
                }
                let p = (at * span as f64) as usize % span;
                let p = if p < header_len {
                    p
                } else {
                    lo + p - header_len
                };
                if p < f.len() {
                    f[p] ^= 1 << bit;
                }
            }
            Mutation::TearLast { at } => {
                let Some(k) = (0..n).rev().find(|&k| files[k].is_some()) else {
                    continue;
                };
                let f = files[k].as_mut().expect("a file");
                let lo = vouched_end(s, k).max(header_len).min(f.len());
                let p = lo + (at * (f.len() - lo) as f64) as usize;
                f.truncate(p.min(f.len()));
                let p = p.min(f.len());
                torn_from = match torn_from {
                    Some((tk, from)) if tk == k => Some((k, from.min(p))),
                    _ => Some((k, p)),
                };
            }
            Mutation::CutLastRecord { segment, at } => {
                let Some(w) = s.written.iter().rev().find(|w| w.segment == segment) else {
                    continue;
                };
                let Some(f) = files[segment].as_mut() else {
                    continue;
                };
                if w.offset < vouched_end(s, segment) || f.len() != s.files[segment].len() {
                    continue;
                }
                // Strictly inside it: a cut at a frame's edge leaves nothing
                // to find (only the index or the chain can tell).
                let p = w.offset + 1 + (at * (w.frame.len() - 1) as f64) as usize;
                f.truncate(p.min(f.len()));
                if segment + 1 == n {
                    torn_from = Some((segment, w.offset));
                }
            }
            Mutation::Delete { segment } => {
                let full = s.index[segment].is_some_and(|e| {
                    e.records == s.written.iter().filter(|w| w.segment == segment).count() as u64
                });
                if segment > 0 && full && files[..segment].iter().any(Option::is_some) {
                    files[segment] = None;
                }
            }
            Mutation::ZeroTail { len } => {
                if let Some(f) = files.iter_mut().rev().flatten().next() {
                    f.extend(std::iter::repeat_n(0, len));
                }
            }
        }
    }
    Damaged { files, torn_from }
}

/// Recovery over the images, as `recover` drives it.
fn recover(s: &Spool, d: &Damaged, state: &AckState) -> (Decided, Vec<SegmentImage>) {
    let groups = groups();
    let index: BTreeMap<u64, IndexEntry> = s.index.iter().flatten().map(|e| (e.id, *e)).collect();
    let mut r = Recovering::new(&groups, state, index, super::Recovery::default());
    let live: Vec<(u64, &Vec<u8>)> = d
        .files
        .iter()
        .enumerate()
        .filter_map(|(k, f)| Some((k as u64 + 1, f.as_ref()?)))
        .collect();
    let mut images = Vec::new();
    for (i, (id, bytes)) in live.iter().enumerate() {
        let image = SegmentImage::read(bytes.as_slice(), *id, r.entry(*id)).expect("in memory");
        let last = i + 1 == live.len();
        let cut = r.segment(&image, last, segment::file_name(*id).into());
        assert!(cut.keep <= image.len);
        images.push(image);
    }
    (r.finish(), images)
}

/// The bytes of the frame at `offset` in `image`, when it read them.
fn frame_at(image: &SegmentImage, offset: u64) -> Option<&[u8]> {
    let at = offset.checked_sub(image.body_start)? as usize;
    let h = frame::header(image.body.get(at..)?)?;
    image.body.get(at..at + h.frame_len())
}

/// Checks recovery after `muts`. With `exact`, after several damages too:
/// a record neither kept nor torn off the end is in a loss, and no loss
/// counts a kept record. One damage is always checked exactly.
fn check(s: &Spool, muts: &[Mutation], exact: bool) {
    let d = apply(s, muts);
    let state = AckState::default();
    let (decided, images) = recover(s, &d, &state);
    let ids: Vec<u64> = images.iter().map(|i| i.id).collect();
    // Kept: intact pieces the scan read, and the vouched parts.
    let mut kept = BTreeSet::new();
    for p in &decided.pieces {
        if let Piece::Intact {
            sequence,
            at: Some((k, offset)),
            unroutable: None,
            ..
        } = *p
        {
            let image = &images[k];
            let w = &s.written[sequence as usize - 1];
            assert_eq!(ids[k], w.segment as u64 + 1, "record {sequence} moved");
            if let Some(bytes) = frame_at(image, offset) {
                assert_eq!(bytes, &w.frame[..], "record {sequence} changed");
            }
            kept.insert(sequence);
        }
    }
    for (k, image) in images.iter().enumerate() {
        if image.body_start > image.header_len() {
            let e = image.entry.expect("vouched by an entry");
            for q in e.first..=e.last {
                assert_eq!(s.written[q as usize - 1].segment as u64 + 1, ids[k]);
                kept.insert(q);
            }
        }
    }
    let losses = &decided.recovery.losses;
    let oldest = ids.first().copied().unwrap_or(u64::MAX);
    for w in &s.written {
        let id = w.segment as u64 + 1;
        let ranges = losses
            .iter()
            .filter(|l| (l.first..=l.last).contains(&w.sequence))
            .count();
        if kept.contains(&w.sequence) {
            // One damage never puts a kept record in a loss. Several may
            // bound one loss by the same intact neighbours, so a range can
            // span a kept record; the loss's count must then leave it out
            // (a `Loss`'s count is below its range's length when some of
            // the range is intact), checked below.
            if muts.len() <= 1 {
                assert_eq!(ranges, 0, "record {} kept and lost: {losses:?}", w.sequence);
            }
            continue;
        }
        if id < oldest {
            continue; // a front segment deleted: what deleting does
        }
        let torn = d
            .torn_from
            .is_some_and(|(k, from)| k == w.segment && w.offset + w.frame.len() > from)
            || d.files[w.segment].as_ref().is_some_and(|f| {
                ids.last() == Some(&id)
                    && w.offset >= f.len().saturating_sub(decided.recovery.torn_bytes as usize)
            });
        if torn && ranges == 0 {
            continue;
        }
        // A segment that lost its header is read from its first frame
        // marker on: what is before it cannot be told from the header.
        let hidden = ids.iter().position(|&i| i == id).is_some_and(|k| {
            let image = &images[k];
            image.header_len() == 0
                && (w.offset as u64) < frame::resync(&image.body, 0).map_or(image.len, |p| p as u64)
        });
        if hidden && ranges == 0 {
            continue;
        }
        // Several damages may each bound a loss by the same intact
        // neighbours, so their ranges overlap; one damage is in one loss.
        if muts.len() <= 1 {
            assert_eq!(
                ranges, 1,
                "record {} in {ranges} losses: {losses:?}",
                w.sequence
            );
        } else if exact {
            assert!(ranges >= 1, "record {} in no loss: {losses:?}", w.sequence);
        }
    }
    for l in losses.iter().filter(|_| exact || muts.len() <= 1) {
        let kept_in_range = kept.range(l.first..=l.last).count() as u64;
        assert!(
            l.count + kept_in_range <= l.last - l.first + 1,
            "{l:?} counts records that were kept"
        );
    }
    if muts.len() == 1 {
        let lost: u64 = losses.iter().map(|l| l.count).sum();
        let in_ranges = s
            .written
            .iter()
            .filter(|w| {
                losses
                    .iter()
                    .any(|l| (l.first..=l.last).contains(&w.sequence))
            })
            .count() as u64;
        assert_eq!(lost, in_ranges, "counts: {losses:?}");
    }
}

fn shape() -> impl Strategy<Value = Vec<(Vec<usize>, Option<usize>)>> {
    prop::collection::vec(
        (
            prop::collection::vec(0..300usize, 0..6),
            prop::option::of(0..7usize),
        ),
        1..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn one_mutation_is_accounted_exactly(
        (shape, m) in shape().prop_flat_map(|s| {
            let n = s.len();
            (Just(s), mutation(n))
        })
    ) {
        check(&write(&shape), &[m], true);
    }

    #[test]
    fn any_mutations_never_panic(
        (shape, muts) in shape().prop_flat_map(|s| {
            let n = s.len();
            (Just(s), prop::collection::vec(mutation(n), 0..5))
        })
    ) {
        check(&write(&shape), &muts, false);
    }

    /// Fails today: with several damages in one segment (e.g. a lost
    /// header and a cut at a frame edge), recovery can miss a lost record
    /// in no loss at all (the chain still shows the hole to `verify`, but
    /// no gap record declares it), or count a record it kept in a loss.
    /// Known since issue #11; kept as the reproduction for the fix.
    #[test]
    #[ignore = "known defect: several damages can hide a lost record or count a kept one"]
    fn several_damages_are_accounted_exactly(
        (shape, muts) in shape().prop_flat_map(|s| {
            let n = s.len();
            (Just(s), prop::collection::vec(mutation(n), 2..5))
        })
    ) {
        check(&write(&shape), &muts, true);
    }

    #[test]
    fn random_bytes_never_panic(
        files in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..4),
    ) {
        let groups = groups();
        let state = AckState::default();
        let mut r = Recovering::new(&groups, &state, BTreeMap::new(), super::Recovery::default());
        for (k, f) in files.iter().enumerate() {
            let id = k as u64 + 1;
            let image = SegmentImage::read(f.as_slice(), id, None).expect("in memory");
            let cut = r.segment(&image, k + 1 == files.len(), segment::file_name(id).into());
            prop_assert!(cut.keep <= image.len);
        }
        let _ = r.finish();
    }
}
