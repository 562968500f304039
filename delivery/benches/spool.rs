//! The spool's throughput on this machine's disk: appending ~900-byte
//! records in batches of 512 with one sync per batch (group commit,
//! fdatasync), then one group's reader reading them all back. Prints one
//! line per figure.
//!
//! The directory is under the system temporary directory, which must be on
//! a real disk for the fsync figure to mean anything.

use std::time::Instant;

use lbwitness_delivery::spool::{FsyncPolicy, OnFull, Spool, SpoolRecord, SpoolSettings};

mod common;

use common::{LEN, Scratch, line};

const RECORDS: u64 = 200_000;
const BATCH: u64 = 512;

fn run(label: &str, fsync: FsyncPolicy, syncs_every: u64) {
    let dir = Scratch::new("spool");
    let settings = SpoolSettings {
        dir: dir.0.clone(),
        max_bytes: 1 << 30,
        segment_bytes: 64 << 20,
        on_full: OnFull::DropNewest,
        groups: vec!["siem".into(), "archive".into()],
        fsync,
    };
    let (mut spool, _) = Spool::open(settings).expect("open");
    let lines: Vec<Vec<u8>> = (1..=BATCH).map(line).collect();
    let start = Instant::now();
    let mut q = 1;
    let mut batches = 0;
    while q <= RECORDS {
        let recs: Vec<SpoolRecord<'_>> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| SpoolRecord {
                sequence: q + i as u64,
                routes: 0b11,
                line: l,
                prev: [0; 32],
                essential: false,
            })
            .collect();
        assert!(spool.append(&recs).expect("append").dropped.is_empty());
        q += BATCH;
        batches += 1;
        if batches % syncs_every == 0 {
            spool.sync().expect("sync");
        }
    }
    spool.sync().expect("sync");
    let secs = start.elapsed().as_secs_f64();
    let n = q - 1;
    let mib = (n as f64 * LEN as f64) / f64::from(1 << 20);
    println!(
        "{label:<44} {:>8.0} MiB/s {:>10.0} records/s ({} syncs)",
        mib / secs,
        n as f64 / secs,
        batches / syncs_every
    );

    let mut reader = spool.reader("siem").expect("reader");
    let start = Instant::now();
    let mut read = 0u64;
    while let Some(b) = reader.try_next(512, 1 << 20).expect("read") {
        read += b.entries.len() as u64;
    }
    assert_eq!(read, n);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:<44} {:>8.0} MiB/s {:>10.0} records/s",
        "  reader (page cache)",
        mib / secs,
        n as f64 / secs
    );
}

fn main() {
    println!(
        "{RECORDS} records of {LEN} bytes, batches of {BATCH}, in {}",
        std::env::temp_dir().display()
    );
    run(
        "append + fdatasync per batch (default)",
        FsyncPolicy::Always,
        1,
    );
    run("append + fdatasync per 8 batches", FsyncPolicy::Always, 8);
    run("append, no fsync (fsync = never)", FsyncPolicy::Never, 1);
}
