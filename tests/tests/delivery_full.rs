//! A full spool, end to end: the real agent under real traffic, its only
//! RELP collector (rsyslogd) down until the spool is full, then back. For
//! each way to be full, the loss is declared in a bounded number of gap
//! records (not one per refused batch, and never a gap record declaring the
//! previous gap record), the log stays small, and `lbwitness verify` over
//! what the collector stored declares every missing record and proves every
//! record kept (exit 0; exit 4 only for records that were in flight when the
//! collector died, which docs/AUDIT.md allows to stay uncovered).
//!
//! * `drop_newest` (the default) at `max_bytes`.
//! * `drop_oldest` at `max_bytes`, long enough that the segments holding
//!   the first gap records are dropped too.
//! * A full disk: the spool on a 4 MiB tmpfs.
//!
//! Needs root: `cargo test --release -p integration-tests --test delivery_full`.

use std::time::{Duration, Instant};

use integration_tests::delivery::{
    Outage, Tmpfs, assert_gaps_tied, declared, plain, verify_stored, wait_final, wait_log_line,
};

/// The smallest spool the config allows: 16 segments of 64 KiB.
const SMALL: &str = "[spool]\nmax_bytes = 1048576\nsegment_bytes = 65536\n";

/// What one run showed.
struct Full {
    gaps: usize,
    missing: u64,
    last: u64,
    log_lines: usize,
}

/// Starts the outage with `spool` as the `[spool]` table, waits until the
/// spool is full, keeps the traffic going for `full_for`, brings the
/// collector back, stops the agent and checks the stored trail.
fn full(tag: &str, spool: &str, full_for: Duration) -> Full {
    let started = Instant::now();
    let Outage {
        lab: _lab,
        mut cs,
        conf: _conf,
        state,
        mut agent,
        traffic,
    } = Outage::begin(tag, spool);
    wait_log_line(
        || agent.log_text(),
        &["spool_full"],
        Duration::from_secs(90),
    );
    std::thread::sleep(full_for);
    // Measured while the spool is still full: that is when the loop ran.
    let log = plain(&agent.log_text());
    let log_lines = log.lines().count();
    // Back under traffic: space returns in steps while the backlog drains
    // and new records keep coming, so ranges end and are declared while
    // the audit stage is busy.
    cs[0].rsyslog.restart().expect("restart rsyslogd");
    std::thread::sleep(Duration::from_secs(3));
    traffic.stop();
    // Until the backlog is delivered: nothing new stored for 2 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored = (0, Instant::now());
    while stored.1.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let n = cs[0].lines().len();
        if n != stored.0 {
            stored = (n, Instant::now());
        }
    }
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "clean stop: {}", agent.log_text());
    let records = wait_final(&cs, Duration::from_secs(30));

    let (code, report, text) = verify_stored(&state.0, &cs);
    let agent_report = &report["agents"][0];
    let last = *records.keys().last().unwrap();
    let missing = (1..=last).filter(|s| !records.contains_key(s)).count() as u64;
    let declared = declared(&report, "spool_full");
    let ranges: Vec<(u64, u64, u64)> = records
        .values()
        .map(|(v, _)| &v["lbwitness"]["gap"])
        .filter(|g| g["reason"] == "spool_full")
        .map(|g| {
            let n = |k: &str| g[k].as_u64().expect("a declared range");
            (n("first_sequence"), n("last_sequence"), n("count"))
        })
        .collect();
    // Records the spool dropped unacknowledged that had reached the
    // collector anyway (in flight when it died, or while it came back):
    // declared lost, present.
    let in_flight: Vec<u64> = records
        .keys()
        .copied()
        .filter(|s| ranges.iter().any(|(f, l, _)| (f..=l).contains(&s)))
        .collect();
    // A gap record among them had its declaration made again when its
    // segment was dropped: that loss is declared twice.
    let twice: u64 = in_flight
        .iter()
        .map(|s| &records[s].0["lbwitness"]["gap"])
        .filter(|g| g["reason"] == "spool_full")
        .map(|g| g["count"].as_u64().unwrap())
        .sum();
    eprintln!(
        "{tag}: {last} records, {missing} missing, {declared} declared spool_full in {} gap \
         records {ranges:?}, present inside: {in_flight:?} (declared twice: {twice}), log {log_lines} lines \
         ({} bytes) after {full_for:?} full, {:?}",
        ranges.len(),
        log.len(),
        started.elapsed()
    );
    assert!(missing > 0, "the spool lost records");
    assert!(
        log_lines < 400 && log.len() < 128 << 10,
        "the log stays small: {log_lines} lines, {} bytes:\n{}",
        log.len(),
        &log[..log.len().min(4000)]
    );
    assert_eq!(agent_report["missing_undeclared"]["count"], 0, "{text}");
    assert_eq!(agent_report["not_linked"]["count"], 0, "{text}");
    assert_eq!(agent_report["differing_duplicates"]["count"], 0, "{text}");
    assert_eq!(agent_report["checkpoints"]["invalid"]["count"], 0, "{text}");
    assert_gaps_tied(&records, "spool_full");
    // Exact: every declared record is really missing (or in flight), and
    // every missing one is declared.
    assert_eq!(declared, missing + in_flight.len() as u64 + twice, "{text}");
    // Every record kept is proven but those in flight: a present record
    // whose successor was dropped is bound by nothing signed
    // (docs/AUDIT.md, rule 4).
    let uncovered: Vec<u64> = agent_report["uncovered"]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r[0].as_u64().unwrap()..=r[1].as_u64().unwrap())
        .collect();
    assert!(
        uncovered.iter().all(|s| in_flight.contains(s)),
        "only records in flight are uncovered: {uncovered:?}\n{text}"
    );
    assert_eq!(code == 0, uncovered.is_empty(), "{text}");
    Full {
        gaps: ranges.len(),
        missing,
        last,
        log_lines,
    }
}

#[test]
fn a_full_spool_refusing_the_newest_declares_each_refused_range_once() {
    let f = full("dlfn", SMALL, Duration::from_secs(5));
    // Refusing stops only when the collector is back: one range while it
    // is down, and a few more while the backlog drains and space returns
    // in steps.
    assert!(f.gaps <= 16, "{} gap records", f.gaps);
    // No sequence numbers burnt: the chain holds what the traffic made.
    assert!(
        f.last < 100_000,
        "{} sequences for {} missing",
        f.last,
        f.missing
    );
}

#[test]
fn a_full_spool_dropping_the_oldest_keeps_every_declaration() {
    // Long enough for the spool to turn over a few times: the segments
    // holding the first gap records are dropped too, undelivered.
    let spool = format!("{SMALL}on_full = \"drop_oldest\"\n");
    let f = full("dlfo", &spool, Duration::from_secs(10));
    assert!(f.log_lines > 0);
}

#[test]
fn a_full_disk_declares_each_refused_range_once() {
    let disk = Tmpfs::mount(4 << 20);
    // The default max_bytes (1 GiB) is far more than the disk. Segments
    // smaller than the disk, so acknowledged ones can be deleted to make
    // room when the collector is back.
    let spool = format!(
        "[spool]\ndir = \"{}/spool\"\nsegment_bytes = 65536\n",
        disk.0.display()
    );
    let f = full("dlfd", &spool, Duration::from_secs(5));
    assert!(f.gaps <= 16, "{} gap records", f.gaps);
    assert!(f.last < 100_000, "{} sequences", f.last);
}
