//! The writer and readers on a real directory: round trips across reopen,
//! acknowledgement and deletion, both full policies with exact counts,
//! renamed groups, damage found at open and by readers.

use std::path::{Path, PathBuf};

use super::*;

/// A temporary directory, removed on drop (panics included).
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random bytes");
        let p = std::env::temp_dir().join(format!("lbw-spool-{name}-{}", hex::encode(b)));
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(
    dir: &Path,
    groups: &[&str],
    max_bytes: u64,
    segment_bytes: u64,
    on_full: OnFull,
) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_owned(),
        max_bytes,
        segment_bytes,
        on_full,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        fsync: FsyncPolicy::Always,
    }
}

/// A stand-in for the chain hash of record `seq` (zeros for 0, as
/// `hash(0)` is).
pub(crate) fn chain(seq: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    for part in h.chunks_mut(8) {
        part.copy_from_slice(&seq.to_le_bytes());
    }
    h
}

/// A record line of exactly `len` bytes (or the shortest it can be) that
/// names its sequence and carries `chain(seq)` as its `event.hash`.
fn line(seq: u64, len: usize) -> Vec<u8> {
    let mut l = format!(
        "{{\"event\":{{\"hash\":\"{}\",\"sequence\":{seq}}},\"pad\":\"",
        hex::encode(chain(seq))
    )
    .into_bytes();
    l.resize(len.max(l.len() + 2) - 2, b'x');
    l.extend_from_slice(b"\"}");
    l
}

fn append(
    s: &mut Spool,
    seqs: impl IntoIterator<Item = u64>,
    routes: impl Fn(u64) -> u64,
    len: usize,
) -> Vec<Loss> {
    let lines: Vec<(u64, Vec<u8>)> = seqs.into_iter().map(|q| (q, line(q, len))).collect();
    let recs: Vec<SpoolRecord<'_>> = lines
        .iter()
        .map(|(q, l)| SpoolRecord {
            sequence: *q,
            routes: routes(*q),
            line: l,
            prev: chain(q - 1),
            essential: false,
        })
        .collect();
    s.append(&recs).expect("append").dropped
}

/// Everything readable now: sequences, losses, last scanned.
fn drain(r: &mut Reader) -> (Vec<u64>, Vec<Loss>, u64) {
    let (mut seqs, mut losses, mut scanned) = (Vec::new(), Vec::new(), 0);
    while let Some(b) = r.try_next(100, 1 << 20).expect("read") {
        for e in &b.entries {
            assert_eq!(
                e.line,
                line(e.sequence, e.line.len()),
                "record {} read back intact",
                e.sequence
            );
        }
        seqs.extend(b.entries.iter().map(|e| e.sequence));
        losses.extend(b.losses);
        scanned = b.scanned_through;
    }
    (seqs, losses, scanned)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

const A: u64 = 0b01;
const B: u64 = 0b10;

#[test]
fn round_trip_across_reopen() {
    let dir = Scratch::new("roundtrip");
    let cfg = settings(&dir.0, &["a", "b"], 1 << 20, 8 << 10, OnFull::DropNewest);
    let routes = |q: u64| [A, B, A | B, 0][q as usize % 4];
    {
        let (mut s, rec) = Spool::open(cfg.clone()).unwrap();
        assert!(rec.last.is_none() && rec.losses.is_empty());
        assert!(append(&mut s, 1..=100, routes, 300).is_empty());
        let mut a = s.reader("a").unwrap();
        assert_eq!(drain(&mut a).0, Vec::<u64>::new(), "nothing before sync");
        s.sync().unwrap();
        let (got, losses, scanned) = drain(&mut a);
        assert_eq!(
            got,
            (1..=100)
                .filter(|q| routes(*q) & A != 0)
                .collect::<Vec<_>>()
        );
        assert!(losses.is_empty());
        assert_eq!(scanned, 100);
        s.ack("a", 50);
        s.persist_acks().unwrap();
        assert!(s.stats().segments > 2);
    }
    let (s, rec) = Spool::open(cfg).unwrap();
    assert_eq!(
        rec.last.as_ref().map(|e| (e.sequence, e.line.to_vec())),
        Some((100, line(100, 300)))
    );
    assert_eq!(
        (rec.losses.len(), rec.torn_bytes, rec.index_rebuilt),
        (0, 0, false),
        "{:?}",
        rec.problems
    );
    assert_eq!(
        drain(&mut s.reader("a").unwrap()).0,
        (51..=100)
            .filter(|q| routes(*q) & A != 0)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        drain(&mut s.reader("b").unwrap()).0,
        (1..=100)
            .filter(|q| routes(*q) & B != 0)
            .collect::<Vec<_>>()
    );
    assert_eq!(s.stats().groups[0].acked_through, 50);
}

#[test]
fn segments_go_only_when_every_group_has_them() {
    let dir = Scratch::new("delete");
    let (mut s, _) = Spool::open(settings(
        &dir.0,
        &["a", "b"],
        1 << 20,
        8 << 10,
        OnFull::DropNewest,
    ))
    .unwrap();
    append(&mut s, 1..=200, |_| A | B, 300);
    s.sync().unwrap();
    let before = segment_files(&dir.0).len();
    s.ack("a", 200);
    s.persist_acks().unwrap();
    assert_eq!(
        segment_files(&dir.0).len(),
        before,
        "b has acknowledged nothing"
    );
    s.ack("b", 150);
    s.persist_acks().unwrap();
    let stats = s.stats();
    assert!(stats.first_sequence.unwrap() <= 151 && segment_files(&dir.0).len() < before);
    s.ack("b", 200);
    s.persist_acks().unwrap();
    // The active segment stays, and with it the last record.
    assert_eq!(segment_files(&dir.0).len(), 1);
    drop(s);
    let (_, rec) = Spool::open(settings(
        &dir.0,
        &["a", "b"],
        1 << 20,
        8 << 10,
        OnFull::DropNewest,
    ))
    .unwrap();
    assert_eq!(rec.last.map(|e| e.sequence), Some(200));
}

#[test]
fn drop_newest_keeps_the_oldest_and_reports_exactly_the_rest() {
    let dir = Scratch::new("newest");
    let (max, seg) = (64 << 10, 16 << 10);
    let (mut s, _) = Spool::open(settings(&dir.0, &["a"], max, seg, OnFull::DropNewest)).unwrap();
    let mut dropped = Vec::new();
    for batch in 0..20u64 {
        dropped.extend(append(&mut s, batch * 50 + 1..=batch * 50 + 50, |_| A, 200));
        s.sync().unwrap();
    }
    let stored = drain(&mut s.reader("a").unwrap()).0;
    let n = stored.len() as u64;
    assert_eq!(stored, (1..=n).collect::<Vec<_>>(), "the oldest are kept");
    // One loss range with the exact count of what is not stored.
    assert_eq!(dropped.iter().map(|l| l.count).sum::<u64>(), 1000 - n);
    assert_eq!(
        (dropped[0].first, dropped.last().unwrap().last),
        (n + 1, 1000)
    );
    let held = s.stats().bytes;
    assert!(
        held <= max && held + 232 > max - seg,
        "full: {held} of {max}"
    );
    assert_eq!(s.stats().dropped_full, 1000 - n);
    // Space returns once every group has the records: the next batch (the
    // gap record first) is taken whole.
    s.ack("a", 1000);
    s.persist_acks().unwrap();
    assert!(append(&mut s, 1001..=1010, |_| A, 200).is_empty());
    s.sync().unwrap();
    let mut r = s.reader("a").unwrap();
    assert_eq!(drain(&mut r).0, (1001..=1010).collect::<Vec<_>>());
}

#[test]
fn drop_oldest_reports_what_some_group_had_not_acknowledged() {
    let dir = Scratch::new("oldest");
    let (max, seg) = (64 << 10, 16 << 10);
    let (mut s, _) =
        Spool::open(settings(&dir.0, &["a", "b"], max, seg, OnFull::DropOldest)).unwrap();
    let routes = |q: u64| if q.is_multiple_of(2) { A } else { B };
    append(&mut s, 1..=200, routes, 200);
    s.sync().unwrap();
    let mut slow = s.reader("b").unwrap();
    // a has everything; b has nothing: only b's (odd) records are lost.
    s.ack("a", 200);
    let mut dropped = Vec::new();
    for batch in 0..4u64 {
        dropped.extend(append(
            &mut s,
            201 + batch * 100..=300 + batch * 100,
            routes,
            200,
        ));
        s.sync().unwrap();
    }
    let held = s.stats();
    assert!(held.bytes <= max);
    let first = held.first_sequence.unwrap();
    // b's (odd) records, and a's after 200.
    let lost: Vec<u64> = (1..first).filter(|q| q % 2 == 1 || *q > 200).collect();
    assert_eq!(
        dropped.iter().map(|l| l.count).sum::<u64>(),
        lost.len() as u64
    );
    assert!(dropped.iter().all(|l| l.reason == LossReason::Full));
    assert_eq!(
        (dropped[0].first, dropped.last().unwrap().last),
        (1, *lost.last().unwrap())
    );
    // Every lost sequence is inside a reported range.
    for q in &lost {
        assert!(
            dropped.iter().any(|l| l.first <= *q && *q <= l.last),
            "{q} reported"
        );
    }
    // The reader that was behind resumes at the oldest surviving record.
    let (got, _, _) = drain(&mut slow);
    assert_eq!(
        got,
        (first..=600).filter(|q| q % 2 == 1).collect::<Vec<_>>()
    );
    assert_eq!(s.stats().dropped_full, 0, "drop_oldest never refuses");
}

#[test]
fn a_record_larger_than_a_segment_is_dropped_alone() {
    let dir = Scratch::new("large");
    let (mut s, _) = Spool::open(settings(
        &dir.0,
        &["a"],
        64 << 10,
        8 << 10,
        OnFull::DropNewest,
    ))
    .unwrap();
    let big = line(2, 9 << 10);
    let (l1, l3) = (line(1, 100), line(3, 100));
    let recs = [
        SpoolRecord {
            sequence: 1,
            routes: A,
            line: &l1,
            prev: chain(0),
            essential: false,
        },
        SpoolRecord {
            sequence: 2,
            routes: A,
            line: &big,
            prev: chain(1),
            essential: false,
        },
        SpoolRecord {
            sequence: 3,
            routes: A,
            line: &l3,
            prev: chain(2),
            essential: false,
        },
    ];
    let d = s.append(&recs).unwrap().dropped;
    assert_eq!(
        d,
        vec![Loss {
            first: 2,
            last: 2,
            count: 1,
            reason: LossReason::Full,
            before_hash: Some(chain(1)),
            last_hash: Some(chain(2)),
        }]
    );
    s.sync().unwrap();
    assert_eq!(drain(&mut s.reader("a").unwrap()).0, vec![1, 3]);
}

#[test]
fn misuse_is_an_error_and_nothing_is_written() {
    let dir = Scratch::new("misuse");
    let cfg = settings(&dir.0, &["a"], 64 << 10, 8 << 10, OnFull::DropNewest);
    let (mut s, _) = Spool::open(cfg.clone()).unwrap();
    append(&mut s, [5], |_| A, 50);
    let l = line(5, 50);
    let again = [SpoolRecord {
        sequence: 5,
        routes: A,
        line: &l,
        prev: chain(4),
        essential: false,
    }];
    assert!(matches!(
        s.append(&again),
        Err(SpoolError::OutOfOrder {
            sequence: 5,
            last: 5
        })
    ));
    let bad = [SpoolRecord {
        sequence: 6,
        routes: B,
        line: &l,
        prev: chain(5),
        essential: false,
    }];
    assert!(matches!(s.append(&bad), Err(SpoolError::Routes { .. })));
    assert!(matches!(s.reader("nope"), Err(SpoolError::UnknownGroup(_))));
    assert!(matches!(Spool::open(cfg), Err(SpoolError::Locked(_))));
    let tiny = settings(&dir.0, &["a"], 8 << 10, 8 << 10, OnFull::DropNewest);
    assert!(matches!(Spool::open(tiny), Err(SpoolError::Settings(_))));
    let twice = settings(&dir.0, &["a", "a"], 64 << 10, 8 << 10, OnFull::DropNewest);
    assert!(matches!(Spool::open(twice), Err(SpoolError::Settings(_))));
}

#[test]
fn groups_are_matched_by_name_across_a_config_change() {
    let dir = Scratch::new("rename");
    {
        let (mut s, _) = Spool::open(settings(
            &dir.0,
            &["a", "b"],
            1 << 20,
            8 << 10,
            OnFull::DropNewest,
        ))
        .unwrap();
        append(&mut s, 1..=30, |q| if q % 3 == 0 { A } else { B }, 100);
        s.sync().unwrap();
    }
    // "a" is gone; "b" moved to bit 0; "c" is new.
    let (mut s, rec) = Spool::open(settings(
        &dir.0,
        &["b", "c"],
        1 << 20,
        8 << 10,
        OnFull::DropNewest,
    ))
    .unwrap();
    assert!(
        rec.problems
            .iter()
            .any(|p| p.contains("no longer configured")),
        "{:?}",
        rec.problems
    );
    assert!(rec.losses.is_empty());
    let b_old: Vec<u64> = (1..=30).filter(|q| q % 3 != 0).collect();
    assert_eq!(drain(&mut s.reader("b").unwrap()).0, b_old);
    assert!(drain(&mut s.reader("c").unwrap()).0.is_empty());
    // New records use today's bits.
    append(&mut s, [31, 32], |q| if q == 31 { A } else { B }, 100);
    s.sync().unwrap();
    let mut b = s.reader("b").unwrap();
    assert_eq!(drain(&mut b).0.last(), Some(&31));
    assert_eq!(drain(&mut s.reader("c").unwrap()).0, vec![32]);
}

/// Flips one bit at `at` in `path`.
fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x04;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn a_lost_segment_header_reports_its_unacknowledged_records() {
    let dir = Scratch::new("header");
    let cfg = settings(&dir.0, &["a", "b"], 1 << 20, 8 << 10, OnFull::DropNewest);
    let per_first;
    {
        let (mut s, _) = Spool::open(cfg.clone()).unwrap();
        append(&mut s, 1..=100, |_| A | B, 300);
        s.sync().unwrap();
        per_first = s.oldest_segment_last();
        s.ack("a", 10);
        s.ack("b", 5);
        s.persist_acks().unwrap();
    }
    flip(&segment_files(&dir.0)[0], 20);
    let (mut s, rec) = Spool::open(cfg.clone()).unwrap();
    // Records 6..=per_first: b had not acknowledged them.
    let lost: u64 = rec.losses.iter().map(|l| l.count).sum();
    assert_eq!(lost, per_first - 5, "{:?}", rec.losses);
    assert_eq!(
        (rec.losses[0].first, rec.losses[0].reason),
        (6, LossReason::Corrupt)
    );
    assert_eq!(
        drain(&mut s.reader("b").unwrap()).0,
        (per_first + 1..=100).collect::<Vec<_>>()
    );
    // Reported regions are remembered with the acknowledgements.
    s.persist_acks().unwrap();
    drop(s);
    let (_, again) = Spool::open(cfg).unwrap();
    assert!(again.losses.is_empty(), "reported once: {:?}", again.losses);
}

#[test]
fn damage_behind_the_index_is_found_by_the_first_reader_only() {
    let dir = Scratch::new("readerdamage");
    let cfg = settings(&dir.0, &["a", "b"], 1 << 20, 64 << 10, OnFull::DropNewest);
    {
        let (mut s, _) = Spool::open(cfg.clone()).unwrap();
        append(&mut s, 1..=20, |_| A | B, 300);
        s.sync().unwrap();
        s.persist_acks().unwrap();
    }
    // Record 10's payload.
    let header = segment::encode(1, &cfg.groups).len() as u64;
    let frame = (frame::OVERHEAD + line(10, 300).len()) as u64;
    flip(&segment_files(&dir.0)[0], header + 9 * frame + 100);
    let (s, rec) = Spool::open(cfg.clone()).unwrap();
    assert!(
        rec.losses.is_empty(),
        "the index vouches for that part: not scanned"
    );
    let (got, losses, _) = drain(&mut s.reader("a").unwrap());
    assert_eq!(got, (1..=20).filter(|&q| q != 10).collect::<Vec<_>>());
    assert_eq!(
        losses,
        vec![Loss {
            first: 10,
            last: 10,
            count: 1,
            reason: LossReason::Corrupt,
            before_hash: Some(chain(9)),
            last_hash: Some(chain(10)),
        }]
    );
    let (got, losses, _) = drain(&mut s.reader("b").unwrap());
    assert_eq!(
        (got.len(), losses.len()),
        (19, 0),
        "already reported by a's reader"
    );
}

#[test]
fn records_larger_than_the_read_window_and_across_its_end() {
    let dir = Scratch::new("window");
    let (mut s, _) = Spool::open(settings(
        &dir.0,
        &["a"],
        64 << 20,
        8 << 20,
        OnFull::DropNewest,
    ))
    .unwrap();
    // 300 KiB and 1.5 MiB records: windows of 1 MiB end inside frames, and
    // some frames are longer than a window.
    let sizes = |q: u64| {
        if q.is_multiple_of(3) {
            1536 << 10
        } else {
            300 << 10
        }
    };
    for q in 1..=12u64 {
        assert!(append(&mut s, [q], |_| A, sizes(q)).is_empty());
    }
    s.sync().unwrap();
    let mut r = s.reader("a").unwrap();
    let mut got = Vec::new();
    while let Some(b) = r.try_next(1, 1).unwrap() {
        assert!(b.entries.len() <= 1 && b.losses.is_empty());
        for e in &b.entries {
            assert_eq!(e.line.len(), sizes(e.sequence));
            assert_eq!(e.line, line(e.sequence, sizes(e.sequence)));
            got.push(e.sequence);
        }
    }
    assert_eq!(got, (1..=12).collect::<Vec<_>>());
}

/// Appends `(sequence, line, essential)` records routed to group a.
fn append_lines(s: &mut Spool, recs: &[(u64, Vec<u8>, bool)]) -> Appended {
    let recs: Vec<SpoolRecord<'_>> = recs
        .iter()
        .map(|(q, l, essential)| SpoolRecord {
            sequence: *q,
            routes: A,
            line: l,
            prev: chain(q - 1),
            essential: *essential,
        })
        .collect();
    s.append(&recs).expect("append")
}

#[test]
fn essential_records_are_written_while_the_spool_refuses() {
    let dir = Scratch::new("essential");
    let (max, seg) = (64 << 10, 16 << 10);
    let (mut s, _) = Spool::open(settings(&dir.0, &["a"], max, seg, OnFull::DropNewest)).unwrap();
    let mut q = 0;
    while !s.stats().refusing {
        q += 1;
        append(&mut s, [q], |_| A, 200);
    }
    let held = s.stats().bytes;
    assert!(
        held <= max - space::reserve(max),
        "ordinary records stop at the reserve"
    );
    // Refused, written, refused: two ranges, and no ordinary record kept.
    let out = append_lines(
        &mut s,
        &[
            (q + 1, line(q + 1, 200), false),
            (q + 2, line(q + 2, 200), true),
            (q + 3, line(q + 3, 200), false),
        ],
    );
    assert_eq!(
        out.dropped
            .iter()
            .map(|l| (l.first, l.last, l.count))
            .collect::<Vec<_>>(),
        vec![(q + 1, q + 1, 1), (q + 3, q + 3, 1)]
    );
    assert_eq!(out.kept_regular, None);
    // The reserve is finite: essential records alone fill it, then are
    // refused too.
    let mut next = q + 4;
    let mut written = 1;
    loop {
        let out = append_lines(&mut s, &[(next, line(next, 200), true)]);
        next += 1;
        if !out.dropped.is_empty() {
            break;
        }
        written += 1;
    }
    assert!(s.stats().bytes <= max);
    assert!(
        written * 264 >= space::reserve(max) - 264,
        "{written} fit the reserve"
    );
    s.sync().unwrap();
    let stored = drain(&mut s.reader("a").unwrap()).0;
    assert!(stored.contains(&(q + 2)) && !stored.contains(&(q + 1)));
    // Space returns: an ordinary record is written, and says so.
    s.ack("a", next);
    s.persist_acks().unwrap();
    let out = append_lines(&mut s, &[(next, line(next, 200), false)]);
    assert!(out.dropped.is_empty());
    assert_eq!(out.kept_regular, Some(next));
}

#[test]
fn drop_oldest_declares_again_what_a_deleted_gap_record_declared() {
    let dir = Scratch::new("redeclare");
    let (max, seg) = (64 << 10, 16 << 10);
    let (mut s, _) = Spool::open(settings(&dir.0, &["a"], max, seg, OnFull::DropOldest)).unwrap();
    // Record 5 is a gap record declaring 1..3 lost (say from an earlier
    // drop); nothing is ever acknowledged.
    let gap = format!(
        "{{\"event\":{{\"action\":\"gap\",\"hash\":\"{}\",\"sequence\":5}},\"lbwitness\":{{\"gap\":{{\"before_hash\":\"{}\",\"count\":3,\"first_sequence\":1,\"last_hash\":\"{}\",\"last_sequence\":3,\"reason\":\"spool_full\"}}}}}}",
        hex::encode(chain(5)),
        hex::encode(chain(0)),
        hex::encode(chain(3))
    );
    append_lines(
        &mut s,
        &[(4, line(4, 200), false), (5, gap.into_bytes(), false)],
    );
    s.sync().unwrap();
    let mut dropped = Vec::new();
    for q in 6..600 {
        dropped.extend(append(&mut s, [q], |_| A, 200));
        s.sync().unwrap();
    }
    assert_eq!(s.stats().dropped_full, 0);
    let again: Vec<_> = dropped.iter().filter(|l| l.first == 1).collect();
    assert_eq!(again.len(), 1, "declared again once");
    assert_eq!((again[0].last, again[0].count), (3, 3));
    assert_eq!(again[0].before_hash, Some(chain(0)));
    assert_eq!(again[0].last_hash, Some(chain(3)));
    // The gap record itself is among the lost.
    assert!(
        dropped
            .iter()
            .any(|l| l.first <= 5 && 5 <= l.last && l.first > 3)
    );
}
