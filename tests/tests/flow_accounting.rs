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

use std::{
    collections::{BTreeMap, HashMap},
    io::BufRead as _,
    os::fd::AsFd as _,
    path::Path,
    time::{Duration, Instant},
};

use integration_tests::{
    Scratch,
    delivery::verify,
    frames::{Frame, tcp_flags},
    lab::Lab,
    netns::{NetNs, in_netns},
};
use serde_json::Value;

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

/// Destination port of every flood frame: nothing else in the lab uses it.
const FLOOD_PORT: u16 = 4443;

/// `ip -j link show`'s XDP program id on `iface`.
fn xdp_prog_id(ns: &NetNs, iface: &str) -> u32 {
    let text = ns.ip(&["-j", "link", "show", "dev", iface]);
    let v: Value = serde_json::from_str(&text).unwrap();
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no XDP program on {iface}: {text}")) as u32
}

/// Runs the agent's attached program once on each of `n` SYN frames of
/// distinct flows (10.x.y.z:port -> 198.51.100.8:FLOOD_PORT).
fn flood(lab: &Lab, n: u32) {
    let id = xdp_prog_id(&lab.lb, lab.iface());
    let prog = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .expect("the agent's program is loaded");
    let fd = prog.fd().expect("a descriptor for the agent's program");
    let started = Instant::now();
    for i in 0..n {
        let [_, a, b, c] = (i / 50_000).to_be_bytes();
        let frame = Frame::ipv4([10, a, b, c], [198, 51, 100, 8])
            .tcp(10_000 + (i % 50_000) as u16, FLOOD_PORT)
            .tcp_flags(tcp_flags::SYN)
            .build();
        let run =
            lbwitness::capture::sys::test_run(fd.as_fd(), &frame, 1).expect("BPF_PROG_TEST_RUN");
        assert_eq!(run.retval, 2, "XDP_PASS");
    }
    let took = started.elapsed();
    eprintln!(
        "flood: {n} new flows in {took:?} ({:.0}/s)",
        f64::from(n) / took.as_secs_f64()
    );
}

/// Waits until the agent's output has not grown for `quiet` (it has read
/// every event and reported every idle flow), at most `limit`.
fn wait_quiet(path: &Path, quiet: Duration, limit: Duration) {
    let start = Instant::now();
    let mut last = (0, Instant::now());
    while start.elapsed() < limit {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        if len != last.0 {
            last = (len, Instant::now());
        } else if last.1.elapsed() >= quiet {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the agent's output kept growing for {limit:?}");
}

/// A lab whose client end sends nothing on its own (IPv6 multicast listener
/// reports would be flows and events too).
fn quiet_lab(tag: &str) -> Lab {
    let lab = Lab::new(tag);
    let client_end = lab.veth.a.name.clone();
    in_netns(&lab.client, || {
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{client_end}/disable_ipv6"),
            "1",
        )
    })
    .expect("turn IPv6 off on the client end");
    lab
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
    let public = agent.state_dir.join("signing.key.pub");
    let (code, stdout, stderr) = verify(&[
        "--key",
        public.to_str().unwrap(),
        agent.output.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
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
