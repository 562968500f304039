//! Declared losses are real losses (issue #10, item 5), checked on the real
//! agent: BPF_PROG_TEST_RUN runs its attached XDP program once on each of
//! many distinct SYN frames, far faster than the agent reads, and the trail
//! is tallied against what was sent.
//!
//! * A lagging reader: the ring holds every event, but the sweep ends flows
//!   (1 s idle timeout) before their NEW events are read. Every flow is
//!   reported once with its packet, and no eviction is declared.
//! * No lifecycle records and a one-page ring: nothing is declared lost
//!   (the kernel sends no events), and every flow is reported.
//! * An overflowing table: the flows reported plus the evictions declared
//!   are exactly the flows sent.
//!
//! Needs root: `cargo test --release -p integration-tests --test flow_accounting`.

#[path = "support/flood.rs"]
mod flood;

use std::{
    collections::{BTreeMap, HashMap},
    io::BufRead as _,
    path::Path,
    time::Duration,
};

use integration_tests::{Scratch, delivery::verify_files};
use serde_json::Value;

use self::flood::{FLOOD_PORT, flood, quiet_lab, wait_quiet};

/// What a trail says about the flood.
#[derive(Debug, Default)]
struct Tally {
    /// Packets reported per flood flow (source address, source port).
    flows: HashMap<(String, u64), u64>,
    /// Flow records of flood flows (several per flow would be a bug).
    flow_records: u64,
    /// Lifecycle records of flood flows' first packets (`tcp-syn` with
    /// `event.reason: "new-flow"`).
    starts: u64,
    /// Declared counts by gap reason.
    gaps: BTreeMap<String, u64>,
}

impl Tally {
    fn gap(&self, reason: &str) -> u64 {
        self.gaps.get(reason).copied().unwrap_or(0)
    }
}

/// Reads the trail line by line (it is hundreds of MB; the records are not
/// kept).
fn tally(path: &Path) -> Tally {
    let file = std::fs::File::open(path).expect("the agent's output");
    let mut t = Tally::default();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.expect("a line of the trail");
        let r: Value = serde_json::from_str(&line).expect("a JSON record");
        let flood = r["destination"]["port"] == FLOOD_PORT;
        match r["event"]["action"].as_str() {
            Some("flow") if flood => {
                let src = (
                    r["source"]["ip"].as_str().unwrap().to_owned(),
                    r["source"]["port"].as_u64().unwrap(),
                );
                *t.flows.entry(src).or_default() += r["network"]["packets"].as_u64().unwrap();
                t.flow_records += 1;
            }
            Some(_) if flood && r["event"]["reason"] == "new-flow" => t.starts += 1,
            Some("gap") => {
                let gap = &r["lbwitness"]["gap"];
                *t.gaps
                    .entry(gap["reason"].as_str().unwrap().to_owned())
                    .or_default() += gap["count"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
    t
}

/// Starts the agent with `config`, floods `n` flows, lets it catch up,
/// stops it cleanly, checks the trail verifies and tallies it.
fn run_flood(tag: &str, config: &str, n: u32) -> Tally {
    let lab = quiet_lab(tag);
    let file = Scratch::path(&format!("{tag}.toml"));
    std::fs::write(&file.0, config).unwrap();
    let mut agent = lab.start_agent(&["--config", file.as_str()]);
    flood(&lab, n);
    wait_quiet(
        &agent.output,
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "{}", agent.log_text());
    let t = tally(&agent.output);
    eprintln!(
        "{tag}: {} flows in {} flow records, {} flow-start records, gaps {:?}",
        t.flows.len(),
        t.flow_records,
        t.starts,
        t.gaps
    );
    let (code, _, out) = verify_files(&agent.state_dir, &[&agent.output]);
    assert_eq!(code, 0, "{out}");
    t
}

/// Every flood flow reported exactly once, with its one packet.
fn assert_each_flow_once(t: &Tally, n: u32) {
    assert_eq!(t.flows.len(), n as usize, "every flow is reported");
    assert_eq!(t.flow_records, u64::from(n), "once each");
    assert!(t.flows.values().all(|&p| p == 1), "with its one packet");
}

#[test]
fn a_lagging_reader_declares_no_phantom_evictions() {
    const N: u32 = 100_000;
    // A 16 MiB ring holds all 100 000 events (88 bytes each with the ring's
    // header), and the table all flows: nothing can be lost. The flows end
    // after 1 s idle, well before the agent has read their events.
    let t = run_flood(
        "acclag",
        "[capture]\nring_buffer_bytes = 16777216\nflow_table_entries = 262144\n\
         [flows]\nidle_timeout_secs = 1\nclosed_timeout_secs = 1\nsweep_interval_ms = 200\n\
         [audit]\nwatch_files = []\n",
        N,
    );
    assert_each_flow_once(&t, N);
    assert_eq!(t.gap("flows_evicted"), 0, "no flow was evicted");
    assert_eq!(
        t.gap("ringbuf_reserve_failed"),
        0,
        "the ring held every event"
    );
    assert_eq!(t.starts, u64::from(N), "a new-flow record per flow");
}

#[test]
fn without_lifecycle_records_a_full_ring_declares_nothing() {
    const N: u32 = 30_000;
    let t = run_flood(
        "accnolc",
        "[capture]\nring_buffer_bytes = 4096\nflow_table_entries = 65536\n\
         [flows]\nlifecycle_records = false\nidle_timeout_secs = 1\nclosed_timeout_secs = 1\n\
         [audit]\nwatch_files = []\n",
        N,
    );
    assert_each_flow_once(&t, N);
    assert_eq!(t.starts, 0, "no lifecycle records");
    assert!(t.gaps.is_empty(), "nothing was lost: {:?}", t.gaps);
}

#[test]
fn an_overflowing_table_declares_exactly_the_evicted_flows() {
    const N: u32 = 30_000;
    // 4096 entries for 30 000 flows arriving within about a second: most
    // are evicted before any sweep meets them (and without lifecycle
    // records no event names them either).
    let t = run_flood(
        "accovf",
        "[capture]\nflow_table_entries = 4096\n\
         [flows]\nlifecycle_records = false\n\
         [audit]\nwatch_files = []\n",
        N,
    );
    let evicted = t.gap("flows_evicted");
    assert!(evicted > 0, "a 4096-entry table must overflow");
    assert!(t.flows.values().all(|&p| p == 1));
    assert_eq!(
        t.flows.len() as u64 + evicted,
        u64::from(N),
        "reported {} + declared evicted {evicted}",
        t.flows.len()
    );
}
