//! Every record kind the agent builds, one of each with every optional field
//! set somewhere, and the checks over them that need the agent's builders:
//! each serialises in canonical (RFC 8785) form, and the trail's list of
//! field paths (`lbwitness_trail::record::fields::PATHS`) is exactly what
//! the records carry.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use agent_common::{
    event::EventHeader,
    flow::{FlowEvent, proto, reason},
};
use lbwitness_delivery::route::Field;
use lbwitness_trail::{
    chain::Head,
    jcs,
    record::{
        CounterValue, Record,
        audit::*,
        fields::{PATHS, is_field},
        samples,
    },
};
use serde_json::Value;

use crate::{
    audit::{records::AuditRecords, state::PreviousRun as Prev},
    clock::Clock,
    enrich,
    watch::{ChangeKind, Evidence, FileChange, FileState, Writer},
};

/// One record of every kind, with every optional field set somewhere.
fn every_kind() -> Vec<Record> {
    let e = enrich::tests::enricher();
    let clock = Clock::from_offset(1_700_000_000_000_000_000);
    let key = enrich::tests::v4_key();
    let report = enrich::tests::flow_report(key);
    let mut icmp = report;
    icmp.key.protocol = proto::ICMP;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let a = AuditRecords::new("lb1".into());
    let state = FileState {
        sha256: "ab".repeat(32),
        size: 10,
        mtime: Some(now),
    };
    let change = FileChange {
        path: "/etc/haproxy/haproxy.cfg".into(),
        kind: ChangeKind::Modified,
        previous: Some(state.clone()),
        current: Some(state),
        unreadable: None,
        observed: now,
        writer: Some(Writer {
            pid: 42,
            process_name: Some("vi".into()),
            executable: Some("/usr/bin/vi".into()),
            uid: Some(0),
            user_name: Some("root".into()),
            evidence: Evidence::Path,
        }),
    };
    let counters = [("x", CounterValue { delta: 1, total: 2 })].into();
    let mut checkpoint = a.checkpoint(now, "records");
    checkpoint.lbwitness.checkpoint = Some(Checkpoint {
        count: 1,
        is_final: true,
        first_sequence: 1,
        head_hash: "00".repeat(32),
        key_id: "11".repeat(32),
        last_sequence: 1,
        next_key: Some(NextKey {
            key_id: "22".repeat(32),
            public_key: "33".repeat(32),
        }),
        signature: Some("44".repeat(64)),
    });
    let mut records = vec![
        e.flow_record(&clock, &report),
        e.flow_record(&clock, &icmp),
        e.counters_record(
            now,
            counters,
            [("y", CounterValue { delta: 0, total: 0 })].into(),
            true,
        ),
        e.gap_record(now, now, "kernel", "ringbuf_reserve_failed", "loss", 7),
        a.restart(
            now,
            Head::GENESIS,
            Prev {
                clean: false,
                durable: 3,
                unconfirmed: Some((4, 9)),
            },
        ),
        a.start(
            now,
            Start {
                capture: vec![CaptureInterface {
                    fallback: Some("native XDP refused".into()),
                    interface: "veth0".into(),
                    xdp_mode: "generic",
                }],
                config_sha256: "55".repeat(32),
                hooks: vec!["xdp/veth0/native".into()],
                interfaces: vec!["veth0".into()],
                key_id: "66".repeat(32),
                previous_chain: Some(PreviousChain {
                    agent_id: "0c988380-51f7-4f0b-9894-7275e8fd63f0".into(),
                    reason: "head-lost",
                }),
                pseudonyms: Some(StartPseudonyms {
                    keep_networks: vec!["198.51.100.0/24".into()],
                    key_id: "88".repeat(8),
                    local_addresses: vec!["192.0.2.1".into()],
                }),
                version: "0.1.0",
                watch_problems: vec![WatchProblem {
                    path: "/etc/y".into(),
                    problem: "not watched".into(),
                }],
                watched_files: vec![WatchedFile {
                    path: "/etc/x".into(),
                    sha256: Some("77".repeat(32)),
                    size: Some(1),
                }],
            },
        ),
        a.stop(
            now,
            Stop {
                records: 9,
                signal: "SIGTERM",
            },
        ),
        a.hook(
            now,
            true,
            Hook {
                ifindex: 3,
                interface: "veth0".into(),
                kind: "xdp",
                mode: "native",
            },
        ),
        a.config_reload(
            now,
            ConfigReload {
                applied: vec!["audit.checkpoint"],
                error: Some("bad".into()),
                path: "/etc/lbwitness.toml".into(),
                previous_sha256: "88".repeat(32),
                restart_required: vec!["capture.interfaces"],
                sha256: "99".repeat(32),
            },
        ),
        a.key_rotation(now, "aa", "bb"),
        a.watch_stopped(now, &["/etc/x".into()], "inotify failed".into()),
        a.file_change(&change),
        checkpoint,
    ];
    let detach = Hook {
        ifindex: 3,
        interface: "veth0".into(),
        kind: "xdp",
        mode: "native",
    };
    records.push(a.hook(now, false, detach));
    records.extend([0, reason::SYN, reason::FIN, reason::RST].map(lifecycle));
    records.extend(crate::requests::records::samples());
    records
}

/// The lifecycle record of the default flow with `reasons`, at 5 ns.
fn lifecycle(reasons: u32) -> Record {
    let ev = FlowEvent {
        header: EventHeader {
            kind: 0,
            len: 0,
            ktime_ns: 5,
        },
        key: enrich::tests::v4_key(),
        reasons,
        tcp_flags: 0,
        _pad: 0,
        ip_len: 60,
        _pad2: 0,
    };
    enrich::tests::enricher().lifecycle_record(&Clock::from_offset(0), &ev)
}

#[test]
fn records_serialise_canonically() {
    for record in every_kind() {
        let mut written = Vec::new();
        jcs::to_canonical_vec(&record, &mut written).unwrap();
        let mut canonical = Vec::new();
        jcs::parse(&written)
            .unwrap()
            .write_canonical(&mut canonical);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(canonical).unwrap(),
            "{}: struct fields must be declared in JSON-name order",
            record.event.action
        );
    }
}

/// The leaf paths of a record's JSON, counter maps left out.
fn leaves(v: &Value, path: String, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(_) if path == "lbwitness.agent" || path == "lbwitness.kernel" => {}
        Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(v, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

#[test]
fn the_list_is_what_records_carry() {
    assert!(PATHS.windows(2).all(|w| w[0] < w[1]), "keep PATHS sorted");
    let mut seen = BTreeSet::new();
    for r in every_kind() {
        leaves(&serde_json::to_value(&r).unwrap(), String::new(), &mut seen);
    }
    let unlisted: Vec<_> = seen.iter().filter(|p| !is_field(p)).collect();
    assert!(unlisted.is_empty(), "add to PATHS: {unlisted:?}");
    // Listed but absent from the sample records, each for a reason.
    let unseen: Vec<&str> = PATHS
        .iter()
        .copied()
        .filter(|p| !seen.contains(*p))
        .collect();
    assert_eq!(
        unseen,
        [
            "event.hash",                // the chain adds it to the line
            "lbwitness.file.unreadable", // a watched file that cannot be read
            "lbwitness.gap.before_hash", // spool-loss gaps
            "lbwitness.gap.last_hash",
        ]
    );
}

#[test]
fn route_vocabularies_are_what_the_agent_writes() {
    let records = every_kind();
    for f in [Field::EventAction, Field::EventDataset, Field::EventKind] {
        let vocabulary = f.vocabulary().unwrap();
        let mut seen: Vec<String> = records
            .iter()
            .flat_map(|r| f.values(r))
            .map(|v| v.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        let mut listed: Vec<String> = vocabulary.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(
            seen, listed,
            "{f}: the list must be exactly what the builders write"
        );
    }
}

#[test]
fn route_fields_read_the_serialised_values() {
    for r in &every_kind() {
        for f in Field::all() {
            let ours: Vec<String> = f.values(r).map(|v| v.to_string()).collect();
            assert_eq!(
                ours,
                samples::json_values(r, f.name()),
                "{f} of {}",
                r.event.action
            );
        }
    }
}

/// The trail's sample records, which delivery's tests route and balance,
/// are the agent's own records of the same flow.
#[test]
fn the_trail_samples_are_agent_records() {
    let json = |r: &Record| serde_json::to_value(r).unwrap();
    let e = enrich::tests::enricher();
    let real = e.flow_record(
        &Clock::from_offset(0),
        &enrich::tests::flow_report(enrich::tests::v4_key()),
    );
    assert_eq!(
        json(&samples::flow(samples::SOURCE.into(), 80)),
        json(&real)
    );
    for (action, reasons) in [
        ("flow-start", 0),
        ("tcp-syn", reason::SYN),
        ("tcp-fin", reason::FIN),
        ("tcp-rst", reason::RST),
    ] {
        assert_eq!(
            json(&samples::lifecycle(action)),
            json(&lifecycle(reasons)),
            "{action}"
        );
    }
}
