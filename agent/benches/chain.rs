//! The audit chain's cost per record in the agent: canonical serialisation,
//! SHA-256 over the previous hash and the record, and writing the line with
//! `event.hash` in place, on one core. Prints one line per figure.
//!
//! Target (issue #3): chain cost ≤ 300 ns per record. The record is a
//! realistic TCP flow record (about 900 bytes as written).

use std::{hint::black_box, time::Instant};

use agent_common::flow::{FlowKey, IP_V4, proto, tcp_flag};
use lbwitness::{
    capture::attach::AttachedMode,
    clock::Clock,
    enrich::{Captured, Enricher},
    flows::table::{FlowReport, ReportReason},
};
use lbwitness_trail::{
    chain::{Chain, Head},
    jcs,
};
use sha2::{Digest as _, Sha256};

const RECORDS: u32 = 1_000_000;

fn flow_report(i: u32) -> FlowReport {
    let mut key = FlowKey {
        ifindex: 7,
        src_port: 40_000 + (i % 20_000) as u16,
        dst_port: 443,
        ip_version: IP_V4,
        protocol: proto::TCP,
        ..FlowKey::default()
    };
    key.src_addr[..4].copy_from_slice(&[198, 51, 100, (i % 250) as u8]);
    key.dst_addr[..4].copy_from_slice(&[192, 0, 2, 10]);
    FlowReport {
        key,
        start_ns: 1_000_000_000,
        end_ns: 2_500_000_000,
        packets: 12,
        bytes: 2_960,
        tcp_flags: tcp_flag::SYN | tcp_flag::ACK | tcp_flag::PSH | tcp_flag::FIN,
        reason: ReportReason::IdleTimeout,
    }
}

fn per_record(label: &str, n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{label:<46} {ns:>8.1} ns/record");
    ns
}

fn main() {
    let enricher = Enricher::new(
        "lb-1".into(),
        [(7, Captured::new("veth0", AttachedMode::Native))].into(),
    );
    let clock = Clock::from_offset(1_700_000_000_000_000_000);
    // Records are made outside the timed loops: the enrich stage makes them.
    let records: Vec<_> = (0..1024)
        .map(|i| enricher.flow_record(&clock, &flow_report(i)))
        .collect();
    let mut chain = Chain::new("6f1c2a4e-8b9d-4c3e-9f10-2a3b4c5d6e7f", Head::GENESIS);
    let mut out = Vec::with_capacity(1 << 20);
    let mut body = Vec::with_capacity(2048);
    let mut sample = records[0].clone();
    chain.seal(&mut sample, &mut out).unwrap();
    println!("flow record as written: {} bytes", out.len());

    let mut i = 0usize;
    let serialise = per_record("serialise only (canonical JSON)", RECORDS, || {
        body.clear();
        jcs::to_canonical_vec(&records[i % records.len()], &mut body).unwrap();
        black_box(&body);
        i += 1;
    });
    let digest_input = body.clone();
    let sha = per_record("SHA-256 only (previous hash + record)", RECORDS, || {
        let h = Sha256::new()
            .chain_update([0u8; 32])
            .chain_update(&digest_input)
            .finalize();
        black_box(h);
    });
    // The reference point: SHA-256 over a 256-byte record.
    let small = vec![b'x'; 256];
    let _ = per_record("SHA-256 only, 256-byte record (reference)", RECORDS, || {
        let h = Sha256::new()
            .chain_update([0u8; 32])
            .chain_update(&small)
            .finalize();
        black_box(h);
    });
    let mut copies = records.clone();
    let whole = per_record(
        "chain: serialise + hash + line (agent path)",
        RECORDS,
        || {
            if out.len() > (1 << 20) - 4096 {
                out.clear();
            }
            chain
                .seal(&mut copies[i % records.len()], &mut out)
                .unwrap();
            i += 1;
        },
    );
    // Serialising was the sink's cost before the chain existed; what the
    // chain adds is the hash and placing it in the line.
    println!(
        "{:<46} {:>8.1} ns/record (of which SHA-256 {sha:.1})",
        "chain cost (whole - serialise)",
        whole - serialise
    );
}
