//! The spool across crashes and damage, against a model of what was
//! appended, synced, acknowledged and damaged:
//!
//! - random sessions of appends, syncs, reads, acks and ack persists, each
//!   ended by a clean close or a crash that tears the unsynced end of the
//!   last segment at a random byte, followed by damage: bits flipped in
//!   random synced frames, the index deleted or replaced by an older copy,
//!   the ack file deleted. Then the spool is opened again and every group
//!   read to the durable end. Open never fails; every intact record a group
//!   had not acknowledged is read exactly once, in order; every damaged
//!   record some group had not acknowledged is reported once with exact
//!   counts, and nothing intact or torn is; the chain resumes after every
//!   sequence ever written; acknowledgements never go back past what was
//!   persisted;
//! - a small spool under random load with either full policy: never over
//!   `max_bytes`, and every record a group does not read is reported
//!   dropped (drop_newest: exactly those; drop_oldest: never one every group
//!   had acknowledged);
//! - a full disk (a 1 MiB tmpfs): reported, and the spool keeps working when
//!   space returns;
//! - a writer and two readers on a multi-thread runtime.
//!
//! Needs root for the tmpfs mount.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use lbwitness_delivery::spool::{
    FsyncPolicy, Loss, OnFull, Reader, Spool, SpoolRecord, SpoolSettings, frame,
    scan::{self, Item},
    segment,
};
use proptest::prelude::*;

const GROUPS: [&str; 2] = ["a", "b"];

/// A temporary directory, removed on drop; on tmpfs when there is one, so
/// the hundreds of fsyncs cost nothing.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random bytes");
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!("lbw-{name}-{}", hex::encode(b)));
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(dir: &Path, max_bytes: u64, segment_bytes: u64, on_full: OnFull) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_owned(),
        max_bytes,
        segment_bytes,
        on_full,
        groups: GROUPS.iter().map(|g| g.to_string()).collect(),
        fsync: FsyncPolicy::Always,
    }
}

/// A stand-in for the chain hash of record `seq` as written in `session`
/// (zeros for 0, as `hash(0)` is).
fn chain(seq: u64, session: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    if seq > 0 {
        h[..8].copy_from_slice(&seq.to_le_bytes());
        h[8..16].copy_from_slice(&session.to_le_bytes());
        h[16..].fill(0x5A);
    }
    h
}

/// A record: its text names its sequence and the session that wrote it, so
/// a torn record whose number is reused can never pass for the new one. Its
/// `event.hash` is `chain(seq, session)`.
fn record(seq: u64, session: u64) -> (u64, Vec<u8>) {
    let mix = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ session.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let routes = [0b01, 0b10, 0b11, 0b00, 0b11][(mix % 5) as usize];
    let pad = (mix >> 8) as usize % 600;
    let line = format!(
        "{{\"event\":{{\"hash\":\"{}\",\"sequence\":{seq}}},\"session\":{session},\"pad\":\"{}\"}}",
        hex::encode(chain(seq, session)),
        "x".repeat(pad)
    );
    (routes, line.into_bytes())
}

/// Checks that every chain hash a loss carries is the one the model gave
/// that record; returns how many losses carry both.
fn hashes_right(losses: &[Loss], hashes: &BTreeMap<u64, [u8; 32]>) -> Result<usize, TestCaseError> {
    let of = |q: u64| {
        if q == 0 {
            Some([0; 32])
        } else {
            hashes.get(&q).copied()
        }
    };
    for l in losses {
        if let Some(h) = l.before_hash {
            prop_assert_eq!(Some(h), of(l.first - 1), "before_hash of {:?}", l);
        }
        if let Some(h) = l.last_hash {
            prop_assert_eq!(Some(h), of(l.last), "last_hash of {:?}", l);
        }
    }
    Ok(losses
        .iter()
        .filter(|l| l.before_hash.is_some() && l.last_hash.is_some())
        .count())
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

/// The intact frames of a segment file: (sequence, offset, frame length).
fn frames(path: &Path) -> Vec<(u64, u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let Ok(h) = segment::decode(&bytes) else {
        return Vec::new();
    };
    scan::scan(&bytes, h.len)
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Intact { offset, header } => {
                Some((header.sequence, *offset as u64, header.frame_len() as u64))
            }
            Item::Damaged(_) => None,
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Step {
    Append { n: u64 },
    Sync,
    Read(usize),
    Ack(usize, u8),
    Persist,
    SaveIndex,
}

#[derive(Clone, Debug)]
enum Damage {
    /// Flips `bit` in `bytes` consecutive bytes from `byte` of a frame.
    Flip {
        pick: u32,
        byte: u32,
        bit: u8,
        bytes: u8,
    },
    DeleteIndex,
    RestoreIndex,
    /// Flips a bit of the index.
    SpoilIndex(u32),
    DeleteAcks,
    /// Flips a bit of the ack file: as good as deleting it.
    SpoilAcks(u32),
}

#[derive(Clone, Debug)]
struct Session {
    steps: Vec<Step>,
    /// `Some(x)`: crash, tearing the last segment at fraction `x` of its
    /// unsynced end; `None`: clean close.
    crash: Option<f64>,
    damage: Vec<Damage>,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..30).prop_map(|n| Step::Append { n }),
        3 => Just(Step::Sync),
        3 => (0usize..2).prop_map(Step::Read),
        2 => (0usize..2, 0u8..=100).prop_map(|(g, p)| Step::Ack(g, p)),
        2 => Just(Step::Persist),
        1 => Just(Step::SaveIndex),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => (any::<u32>(), any::<u32>(), 0u8..8, 1u8..4)
            .prop_map(|(pick, byte, bit, bytes)| Damage::Flip { pick, byte, bit, bytes }),
        1 => Just(Damage::DeleteIndex),
        1 => Just(Damage::RestoreIndex),
        1 => any::<u32>().prop_map(Damage::SpoilIndex),
        1 => Just(Damage::DeleteAcks),
        1 => any::<u32>().prop_map(Damage::SpoilAcks),
    ]
}

fn session() -> impl Strategy<Value = Session> {
    (
        prop::collection::vec(step(), 0..14),
        prop::option::weighted(0.6, 0.0..=1.0f64),
        prop::collection::vec(damage(), 0..3),
    )
        .prop_map(|(steps, crash, damage)| Session {
            steps,
            crash,
            damage,
        })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Intact,
    /// Damaged at `offset` of `path`; `header`: the flip hit the frame header.
    Damaged {
        header: bool,
        path: PathBuf,
        offset: u64,
    },
    /// Damaged and no longer in any file (cut off at open, or its segment
    /// deleted): its number stays used.
    Gone,
}

/// What the spool should hold.
#[derive(Default)]
struct Model {
    recs: BTreeMap<u64, (u64, Vec<u8>, State)>,
    persisted: [u64; 2],
    persisted_reported: BTreeSet<u64>,
    synced_len: BTreeMap<PathBuf, u64>,
    saved_index: Option<Vec<u8>>,
    /// The ack file was deleted since the highest record was written: a
    /// damaged last record cut off at open may be forgotten.
    acks_deleted: bool,
    /// The highest acknowledgement each group ever persisted (not reset when
    /// the ack file is deleted): what the spool may have deleted.
    passed: [u64; 2],
    /// The chain hash each sequence was last written with.
    hashes: BTreeMap<u64, [u8; 32]>,
}

impl Model {
    /// Whether damaged record `seq` is lost to some group behind it (with
    /// its header lost, any group may have had it).
    fn lost(&self, seq: u64, acked: &[u64; 2]) -> bool {
        let (routes, _, state) = &self.recs[&seq];
        match state {
            State::Damaged { header: true, .. } => acked.iter().any(|&a| a < seq),
            _ => (0..2).any(|k| routes & (1 << k) != 0 && acked[k] < seq),
        }
    }

    fn record_synced(&mut self, dir: &Path) {
        self.synced_len = segment_files(dir)
            .into_iter()
            .map(|p| {
                let len = std::fs::metadata(&p).unwrap().len();
                (p, len)
            })
            .collect();
    }
}

fn drain(r: &mut Reader, got: &mut Vec<u64>, losses: &mut Vec<Loss>, scanned: &mut u64) {
    while let Some(b) = r.try_next(17, 8 << 10).expect("read") {
        got.extend(b.entries.iter().map(|e| e.sequence));
        losses.extend(b.losses);
        *scanned = b.scanned_through;
    }
}

/// Intact records present in the files.
fn intact_present(dir: &Path) -> BTreeSet<u64> {
    segment_files(dir)
        .iter()
        .flat_map(|p| frames(p).into_iter().map(|f| f.0))
        .collect()
}

/// Damaged regions present in the files: (path, offset).
fn damaged_regions(dir: &Path) -> BTreeSet<(PathBuf, u64)> {
    let mut out = BTreeSet::new();
    for p in segment_files(dir) {
        let bytes = std::fs::read(&p).unwrap();
        let Ok(h) = segment::decode(&bytes) else {
            continue;
        };
        for i in scan::scan(&bytes, h.len).items {
            if let Item::Damaged(d) = i {
                out.insert((p.clone(), d.start as u64));
            }
        }
    }
    out
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Runs one session and checks the invariants.
fn run_session(
    dir: &Path,
    model: &mut Model,
    number: u64,
    s: &Session,
) -> Result<(), TestCaseError> {
    let (mut spool, rec) = Spool::open(settings(dir, 1 << 20, 4096, OnFull::DropNewest))
        .map_err(|e| fail(format!("open failed: {e}")))?;
    model.record_synced(dir);
    // Intact records gone from the files were deleted: only allowed once
    // every group they were routed to had them.
    let on_disk = intact_present(dir);
    let gone: Vec<u64> = model
        .recs
        .iter()
        .filter(|(q, r)| r.2 == State::Intact && !on_disk.contains(q))
        .map(|(q, _)| *q)
        .collect();
    for q in gone {
        let routes = model.recs[&q].0;
        prop_assert!(
            (0..2).all(|k| routes & (1 << k) == 0 || model.passed[k] >= q),
            "record {} vanished before every group had it (passed {:?})",
            q,
            model.passed
        );
        model.recs.get_mut(&q).unwrap().2 = State::Gone;
    }
    let reported_before = model.persisted_reported.clone();
    let wm = model.persisted;
    for (k, g) in spool.stats().groups.iter().enumerate() {
        prop_assert_eq!(
            g.acked_through,
            wm[k],
            "acks went back past what was persisted"
        );
    }
    // The last intact record, and the resume point past everything written.
    let last_intact = model.recs.iter().rev().find(|(_, r)| r.2 == State::Intact);
    prop_assert_eq!(
        rec.last.as_ref().map(|e| (e.sequence, e.line.to_vec())),
        last_intact.map(|(q, r)| (*q, r.1.clone()))
    );
    let written = model.recs.keys().next_back().copied();
    if model.acks_deleted {
        prop_assert!(rec.highest_sequence() <= written, "resume point: {:?}", rec);
    } else {
        prop_assert_eq!(rec.highest_sequence(), written, "resume point: {:?}", rec);
    }
    let mut next = rec.highest_sequence().unwrap_or(0) + 1;
    let mut losses = rec.losses.clone();

    let mut readers = [spool.reader("a").unwrap(), spool.reader("b").unwrap()];
    let mut got = [Vec::new(), Vec::new()];
    let mut scanned = wm;
    let mut acked = wm;
    let mut durable = next - 1;
    for st in &s.steps {
        match st {
            Step::Append { n } => {
                let recs: Vec<_> = (next..next + n).map(|q| (q, record(q, number))).collect();
                let before = model.hashes.get(&(next - 1)).copied().unwrap_or([0; 32]);
                let batch: Vec<_> = recs
                    .iter()
                    .map(|(q, (routes, line))| SpoolRecord {
                        sequence: *q,
                        routes: *routes,
                        line,
                        prev: if *q == next {
                            before
                        } else {
                            chain(q - 1, number)
                        },
                        essential: false,
                    })
                    .collect();
                model
                    .hashes
                    .extend(recs.iter().map(|(q, _)| (*q, chain(*q, number))));
                let appended = spool.append(&batch).map_err(fail)?;
                prop_assert!(appended.dropped.is_empty());
                model.acks_deleted = false;
                for (q, (routes, line)) in recs {
                    model.recs.insert(q, (routes, line, State::Intact));
                }
                next += n;
            }
            Step::Sync => {
                spool.sync().map_err(fail)?;
                durable = next - 1;
                model.record_synced(dir);
            }
            Step::Read(k) => drain(
                &mut readers[*k],
                &mut got[*k],
                &mut losses,
                &mut scanned[*k],
            ),
            Step::Ack(k, pct) => {
                let through =
                    acked[*k] + (scanned[*k].saturating_sub(acked[*k])) * u64::from(*pct) / 100;
                spool.ack(GROUPS[*k], through);
                acked[*k] = acked[*k].max(through);
            }
            Step::Persist => {
                spool.persist_acks().map_err(fail)?;
                model.persisted = acked;
                model.passed = [model.passed[0].max(acked[0]), model.passed[1].max(acked[1])];
                model.persisted_reported.extend(covered(&losses, model));
            }
            Step::SaveIndex => model.saved_index = std::fs::read(dir.join("index")).ok(),
        }
    }
    for k in 0..2 {
        drain(&mut readers[k], &mut got[k], &mut losses, &mut scanned[k]);
        prop_assert!(wm[k] <= durable.max(wm[k]), "unreachable");
        let want: Vec<u64> = model
            .recs
            .range(wm[k] + 1..)
            .take_while(|(q, _)| **q <= durable)
            .filter(|(_, r)| r.2 == State::Intact && r.0 & (1 << k) != 0)
            .map(|(q, _)| *q)
            .collect();
        prop_assert_eq!(
            &got[k],
            &want,
            "group {} reads every intact record once, in order",
            GROUPS[k]
        );
    }
    // Losses: exactly the damaged records some group was behind on, not
    // reported (and remembered) before; each once, with its count.
    let expected: BTreeSet<u64> = model
        .recs
        .iter()
        .filter(|(q, r)| {
            matches!(r.2, State::Damaged { .. })
                && !reported_before.contains(q)
                && model.lost(**q, &wm)
        })
        .map(|(q, _)| *q)
        .collect();
    let mut seen = BTreeSet::new();
    for l in &losses {
        let inside: Vec<u64> = expected.range(l.first..=l.last).copied().collect();
        prop_assert_eq!(
            l.count,
            inside.len() as u64,
            "loss {:?} counts the damaged records in it: {:?} (model {:?}, reported {:?})",
            l,
            inside,
            model
                .recs
                .iter()
                .map(|(q, r)| (*q, r.0, r.2.clone()))
                .collect::<Vec<_>>(),
            model.persisted_reported
        );
        for q in inside {
            prop_assert!(seen.insert(q), "record {} reported twice", q);
        }
    }
    prop_assert_eq!(&seen, &expected, "every lost record is reported");
    hashes_right(&losses, &model.hashes)?;
    // The end of the session.
    match s.crash {
        None => {
            spool.persist_acks().map_err(fail)?;
            model.persisted = acked;
            model.passed = [model.passed[0].max(acked[0]), model.passed[1].max(acked[1])];
            model.persisted_reported.extend(seen);
            drop(spool);
        }
        Some(x) => {
            drop(spool);
            let last = segment_files(dir).pop().expect("a segment");
            let len = std::fs::metadata(&last).unwrap().len();
            let synced = model.synced_len.get(&last).copied().unwrap_or(0).min(len);
            let cut = synced + ((len - synced) as f64 * x) as u64;
            for (q, off, flen) in frames(&last) {
                if off + flen > cut {
                    model.recs.remove(&q);
                }
            }
            std::fs::OpenOptions::new()
                .write(true)
                .open(&last)
                .unwrap()
                .set_len(cut)
                .unwrap();
        }
    }
    // Damaged records no longer in a file (cut off at open, or deleted with
    // their segment once every group was past them) are never reported again.
    let present = damaged_regions(dir);
    for r in model.recs.values_mut() {
        if let State::Damaged { path, offset, .. } = &r.2
            && !present.contains(&(path.clone(), *offset))
        {
            r.2 = State::Gone;
        }
    }
    for d in &s.damage {
        apply(dir, model, d);
    }
    model.saved_index = None;
    Ok(())
}

/// Flips one bit of `path` (if it exists and is not empty).
fn flip_file(path: &Path, at: u32) {
    if let Ok(mut b) = std::fs::read(path)
        && !b.is_empty()
    {
        let i = at as usize % (b.len() * 8);
        b[i / 8] ^= 1 << (i % 8);
        std::fs::write(path, b).unwrap();
    }
}

/// Damaged records inside reported losses.
fn covered(losses: &[Loss], model: &Model) -> Vec<u64> {
    losses
        .iter()
        .flat_map(|l| {
            model
                .recs
                .range(l.first..=l.last)
                .filter(|(_, r)| matches!(r.2, State::Damaged { .. }))
                .map(|(q, _)| *q)
        })
        .collect()
}

fn apply(dir: &Path, model: &mut Model, d: &Damage) {
    match d {
        Damage::DeleteIndex => {
            let _ = std::fs::remove_file(dir.join("index"));
        }
        Damage::RestoreIndex => {
            if let Some(b) = &model.saved_index {
                std::fs::write(dir.join("index"), b).unwrap();
            }
        }
        Damage::SpoilIndex(at) => flip_file(&dir.join("index"), *at),
        Damage::DeleteAcks | Damage::SpoilAcks(_) => {
            match d {
                Damage::SpoilAcks(at) => flip_file(&dir.join("acks"), *at),
                _ => {
                    let _ = std::fs::remove_file(dir.join("acks"));
                }
            }
            model.persisted = [0, 0];
            model.persisted_reported.clear();
            model.acks_deleted = true;
        }
        Damage::Flip {
            pick,
            byte,
            bit,
            bytes,
        } => {
            // Synced intact frames with no damaged neighbour (so each damaged
            // region is one record, bounded by intact ones).
            let damaged = |q: u64| model.recs.get(&q).is_some_and(|r| r.2 != State::Intact);
            let candidates: Vec<(PathBuf, u64, u64, u64)> = segment_files(dir)
                .into_iter()
                .flat_map(|p| {
                    let synced = model.synced_len.get(&p).copied().unwrap_or(0);
                    frames(&p)
                        .into_iter()
                        .filter(move |(_, off, len)| off + len <= synced)
                        .map(move |(q, off, len)| (p.clone(), q, off, len))
                })
                .filter(|(_, q, _, _)| {
                    model.recs.contains_key(q) && !damaged(*q) && !damaged(q - 1) && !damaged(q + 1)
                })
                .collect();
            if candidates.is_empty() {
                return;
            }
            let (path, q, off, len) = &candidates[*pick as usize % candidates.len()];
            let at = u64::from(*byte) % len;
            let n = u64::from(*bytes).min(len - at);
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut b = vec![0u8; n as usize];
            f.read_exact_at(&mut b, off + at).unwrap();
            b.iter_mut().for_each(|x| *x ^= 1 << bit);
            f.write_all_at(&b, off + at).unwrap();
            model.recs.get_mut(q).unwrap().2 = State::Damaged {
                header: at < frame::HEADER as u64,
                path: path.clone(),
                offset: *off,
            };
        }
    }
}

proptest! {
    // At least 256 cases; more with PROPTEST_CASES.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256).max(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovers_everything_intact_and_reports_exactly_what_was_lost(
        sessions in prop::collection::vec(session(), 1..6)
    ) {
        let dir = Scratch::new("prop");
        let mut model = Model::default();
        for (n, s) in sessions.iter().enumerate() {
            run_session(&dir.0, &mut model, n as u64, s).map_err(|e| fail(format!("session {n}: {e}")))?;
        }
        // A last open after the last damage.
        run_session(&dir.0, &mut model, sessions.len() as u64, &Session { steps: vec![], crash: None, damage: vec![] })
            .map_err(|e| fail(format!("final open: {e}")))?;
    }
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted and removed on
/// drop (panics included).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random bytes");
        let dir = std::env::temp_dir().join(format!("lbw-enospc-{}", hex::encode(b)));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            panic!(
                "mounting a {size} tmpfs on {} failed: this test needs root",
                dir.display()
            );
        }
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Appends records `seqs` (routed to both groups, `len` bytes each).
fn append_both(s: &mut Spool, seqs: std::ops::RangeInclusive<u64>, len: usize) -> Vec<Loss> {
    let lines: Vec<(u64, Vec<u8>)> = seqs
        .map(|q| {
            let mut l = format!("{{\"event\":{{\"sequence\":{q}}},\"pad\":\"").into_bytes();
            l.resize(len - 2, b'x');
            l.extend_from_slice(b"\"}");
            (q, l)
        })
        .collect();
    let recs: Vec<_> = lines
        .iter()
        .map(|(q, l)| SpoolRecord {
            sequence: *q,
            routes: 0b11,
            line: l,
            prev: chain(q - 1, 0),
            essential: false,
        })
        .collect();
    s.append(&recs)
        .expect("a full disk is not an error")
        .dropped
}

fn read_now(s: &Spool, group: &str) -> Vec<u64> {
    let mut r = s.reader(group).unwrap();
    let (mut got, mut losses, mut scanned) = (Vec::new(), Vec::new(), 0);
    drain(&mut r, &mut got, &mut losses, &mut scanned);
    assert!(losses.is_empty(), "{losses:?}");
    got
}

#[test]
fn a_full_disk_is_reported_as_loss_and_the_spool_goes_on_when_space_returns() {
    let fs = Tmpfs::mount("1m");
    let dir = fs.0.join("spool");
    // The spool's own bound (4 MiB) is above the disk's (1 MiB): the disk
    // fills first.
    let cfg = settings(&dir, 4 << 20, 64 << 10, OnFull::DropNewest);
    let (mut s, _) = Spool::open(cfg.clone()).unwrap();
    let mut next = 1;
    let mut dropped = Vec::new();
    while dropped.is_empty() {
        assert!(next < 5_000, "the disk never filled");
        dropped = append_both(&mut s, next..=next + 63, 900);
        s.sync().unwrap();
        next += 64;
    }
    let stored = read_now(&s, "a");
    let kept = stored.len() as u64;
    assert_eq!(
        stored,
        (1..=kept).collect::<Vec<_>>(),
        "what fit is kept, in order"
    );
    // Exactly what is not stored is reported, as one range.
    assert_eq!(
        dropped,
        vec![Loss {
            first: kept + 1,
            last: next - 1,
            count: next - 1 - kept,
            reason: lbwitness_delivery::spool::LossReason::Full,
            before_hash: Some(chain(kept, 0)),
            last_hash: None,
        }]
    );
    assert_eq!(s.stats().dropped_no_space, next - 1 - kept);
    assert!(s.stats().refusing);
    // Still full: the next batch is refused whole, and counted.
    let again = append_both(&mut s, next..=next + 9, 900);
    assert_eq!(again.iter().map(|l| l.count).sum::<u64>(), 10);
    assert_eq!(s.stats().dropped_no_space, next + 9 - kept);
    next += 10;
    // The collectors catch up: segments go, space returns, and the next
    // batch (the gap record first) is taken.
    s.ack("a", kept);
    s.ack("b", kept);
    s.persist_acks().unwrap();
    assert!(append_both(&mut s, next..=next + 9, 900).is_empty());
    s.sync().unwrap();
    assert_eq!(read_now(&s, "b"), (next..=next + 9).collect::<Vec<_>>());
    assert!(!s.stats().refusing);
    // The trimmed writes left nothing half-written behind.
    drop(s);
    let (_, rec) = Spool::open(cfg).unwrap();
    assert_eq!((rec.losses.len(), rec.torn_bytes), (0, 0), "{rec:?}");
    assert_eq!(rec.last.map(|e| e.sequence), Some(next + 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_and_two_readers_on_other_threads_see_every_record_once_in_order() {
    const N: u64 = 30_000;
    let routes = |q: u64| [0b01, 0b10, 0b11, 0b00][q as usize % 4];
    let dir = Scratch::new("concurrent");
    let (mut spool, _) =
        Spool::open(settings(&dir.0, 256 << 20, 256 << 10, OnFull::DropNewest)).unwrap();
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    let mut tasks = Vec::new();
    for (k, g) in GROUPS.iter().enumerate() {
        let mut r = spool.reader(g).unwrap();
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let b = r.next(200, 128 << 10).await.expect("read");
                got.extend(b.entries.iter().map(|e| e.sequence));
                let _ = acks.send((k, b.scanned_through));
                if b.scanned_through == N {
                    return got;
                }
            }
        }));
    }
    drop(acks);
    let mut persisted_deletions = 0;
    let mut done = [0u64; 2];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut q = 1;
    while done != [N, N] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readers stalled at {done:?}"
        );
        if q <= N {
            let lines: Vec<_> = (q..(q + 100).min(N + 1))
                .map(|s| (s, record(s, 0).1))
                .collect();
            let recs: Vec<_> = lines
                .iter()
                .map(|(s, l)| SpoolRecord {
                    sequence: *s,
                    routes: routes(*s),
                    line: l,
                    prev: chain(s - 1, 0),
                    essential: false,
                })
                .collect();
            assert!(spool.append(&recs).unwrap().dropped.is_empty());
            spool.sync().unwrap();
            q += recs.len() as u64;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while let Ok((k, through)) = acked.try_recv() {
            spool.ack(GROUPS[k], through);
            done[k] = done[k].max(through);
        }
        let before = spool.stats().segments;
        spool.persist_acks().unwrap();
        persisted_deletions += before - spool.stats().segments;
        tokio::task::yield_now().await;
    }
    for (k, t) in tasks.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("reader finished")
            .unwrap();
        let want: Vec<u64> = (1..=N).filter(|s| routes(*s) & (1 << k) != 0).collect();
        assert_eq!(got.len(), want.len(), "group {}", GROUPS[k]);
        assert!(
            got == want,
            "group {} got every record once, in order",
            GROUPS[k]
        );
    }
    assert!(
        persisted_deletions > 10,
        "segments were deleted while the readers ran"
    );
}

#[derive(Clone, Debug)]
enum Load {
    Append { n: u64, len: u16 },
    Sync,
    Read(usize),
    Ack(usize),
    Persist,
}

fn load() -> impl Strategy<Value = Load> {
    prop_oneof![
        4 => (1u64..40, 50u16..1500).prop_map(|(n, len)| Load::Append { n, len }),
        2 => Just(Load::Sync),
        2 => (0usize..2).prop_map(Load::Read),
        2 => (0usize..2).prop_map(Load::Ack),
        1 => Just(Load::Persist),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256).max(256),
        ..ProptestConfig::default()
    })]

    /// A small spool under random load, with either policy: it never holds
    /// more than `max_bytes`, never fails, and every record a group does not
    /// read is reported dropped (drop_newest: exactly those).
    #[test]
    fn nothing_is_dropped_silently_when_full(oldest in any::<bool>(), steps in prop::collection::vec(load(), 1..60)) {
        let dir = Scratch::new("full");
        let policy = if oldest { OnFull::DropOldest } else { OnFull::DropNewest };
        let (max, seg) = (48 << 10, 8 << 10);
        let (mut spool, _) = Spool::open(settings(&dir.0, max, seg, policy)).unwrap();
        let mut readers = [spool.reader("a").unwrap(), spool.reader("b").unwrap()];
        let (mut got, mut scanned): ([Vec<u64>; 2], [u64; 2]) = Default::default();
        let mut routes = BTreeMap::new();
        let mut dropped: Vec<Loss> = Vec::new();
        let mut acked = [0u64; 2];
        let mut next = 1;
        let mut no_losses = Vec::new();
        for st in steps.iter().chain([&Load::Sync, &Load::Read(0), &Load::Read(1)]) {
            match st {
                Load::Append { n, len } => {
                    let recs: Vec<_> = (next..next + n)
                        .map(|q| (q, [0b01, 0b10, 0b11][(q % 3) as usize], vec![b'x'; *len as usize]))
                        .collect();
                    let batch: Vec<_> = recs.iter().map(|(q, r, l)| SpoolRecord { sequence: *q, routes: *r, line: l, prev: chain(q - 1, 0), essential: false }).collect();
                    routes.extend(recs.iter().map(|(q, r, _)| (*q, *r)));
                    for l in spool.append(&batch).unwrap().dropped {
                        // Never counts a record every group it went to had
                        // acknowledged when it was dropped.
                        let owed = routes
                            .range(l.first..=l.last)
                            .filter(|(q, r)| (0..2).any(|k| *r & (1 << k) != 0 && acked[k] < **q))
                            .count() as u64;
                        prop_assert!(l.count <= owed, "{:?} counts acknowledged records (acked {:?})", l, acked);
                        dropped.push(l);
                    }
                    next += n;
                }
                Load::Sync => spool.sync().unwrap(),
                Load::Read(k) => drain(&mut readers[*k], &mut got[*k], &mut no_losses, &mut scanned[*k]),
                Load::Ack(k) => {
                    spool.ack(GROUPS[*k], scanned[*k]);
                    acked[*k] = acked[*k].max(scanned[*k]);
                }
                Load::Persist => spool.persist_acks().unwrap(),
            }
            prop_assert!(spool.stats().bytes <= max, "{} bytes held", spool.stats().bytes);
        }
        prop_assert!(no_losses.is_empty());
        let covered = |q: u64| dropped.iter().any(|l| l.first <= q && q <= l.last);
        for (k, read) in got.iter().enumerate() {
            prop_assert!(read.windows(2).all(|w| w[0] < w[1]), "group {} in order, once", k);
            for (q, r) in &routes {
                if r & (1 << k) != 0 {
                    prop_assert!(read.binary_search(q).is_ok() || covered(*q), "record {} for group {} vanished", q, k);
                }
            }
        }
        let unread = |q: u64| (0..2).any(|k| routes[&q] & (1 << k) != 0 && got[k].binary_search(&q).is_err());
        let all_unread = routes.keys().filter(|q| unread(**q)).count() as u64;
        for l in &dropped {
            let range: Vec<u64> = routes.range(l.first..=l.last).map(|(q, _)| *q).collect();
            let lost = range.iter().filter(|q| unread(**q)).count() as u64;
            if oldest {
                // A dropped segment's range may hold a record refused earlier
                // (reported on its own), and records read by a group that had
                // not yet acknowledged them: bounds per range, total below.
                prop_assert!(l.count <= range.len() as u64, "{:?} counts more than its range", l);
            } else {
                prop_assert_eq!(l.count, lost, "{:?} counts exactly the records refused", l);
            }
        }
        let hashes: BTreeMap<u64, [u8; 32]> = routes.keys().map(|q| (*q, chain(*q, 0))).collect();
        hashes_right(&dropped, &hashes)?;
        let dropped_total: u64 = dropped.iter().map(|l| l.count).sum();
        prop_assert!(dropped_total >= all_unread, "{} reported, {} never read", dropped_total, all_unread);
        let stats = spool.stats();
        let refused = stats.dropped_full + stats.dropped_no_space;
        // drop_oldest refuses too when nothing may be dropped yet (every
        // segment is past the last sync); those are counted, the rest not.
        let counted = if oldest { refused <= dropped_total } else { refused == dropped_total };
        prop_assert!(counted, "{} refused, {} reported", refused, dropped_total);
    }
}
