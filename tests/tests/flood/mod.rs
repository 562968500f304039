//! Filling the agent's flow map fast: BPF_PROG_TEST_RUN of the agent's own
//! attached XDP program (found by its id on the interface) over many
//! distinct UDP frames, and summing what the trail says about them.
//!
//! Flow `i` is `10.i₂.i₁.i₀:1000 -> 198.51.100.9:53`, so the flows are
//! told apart from any other traffic by their destination, and a flow's
//! packets are `PACKET_BYTES` each by the agent's accounting (the IPv4
//! total length). Shared by tests/flow_table.rs and benches/stop.rs.

#![allow(dead_code, reason = "the test and the benchmark each use a part")]

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
};

use aya::{TestRun as _, TestRunOptions, programs::Xdp};
use integration_tests::{frames::Frame, netns::NetNs};
use serde_json::Value;

/// Destination address of every flood flow.
pub const DST: [u8; 4] = [198, 51, 100, 9];
/// Destination port of every flood flow.
pub const DST_PORT: u16 = 53;
/// UDP payload of a flood packet.
const PAYLOAD: usize = 18;
/// What the agent counts per packet: IPv4 header + UDP header + payload.
pub const PACKET_BYTES: u64 = 20 + 8 + PAYLOAD as u64;

/// The frame of flow `i` (`i < 2^24`).
pub fn frame(i: u32) -> Vec<u8> {
    let [_, a, b, c] = i.to_be_bytes();
    Frame::ipv4([10, a, b, c], DST)
        .udp(1000, DST_PORT)
        .payload_len(PAYLOAD)
        .build()
}

/// Packets and bytes sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Distinct flows.
    pub flows: u64,
    /// Packets over all flows.
    pub packets: u64,
    /// Bytes over all flows (the agent's accounting).
    pub bytes: u64,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, other: Self) {
        // The same flow sent twice is one flow.
        self.flows = self.flows.max(other.flows);
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// A bpffs instance of the test's own, mounted in the host's mount
/// namespace so it outlives an agent killed inside `ip netns exec` (which
/// gives the agent a private /sys, so the agent's own /sys/fs/bpf mount
/// would die with it). Dropping it unmounts it, dropping whatever is
/// still pinned there.
pub struct Bpffs(std::path::PathBuf);

impl Bpffs {
    /// Mounts a fresh bpffs on a temporary directory.
    ///
    /// # Panics
    /// If mount(8) fails.
    pub fn mount() -> Self {
        let dir = integration_tests::temp_path("bpffs");
        std::fs::create_dir(&dir).expect("create the bpffs mount point");
        integration_tests::run_ok(
            std::process::Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(&dir),
        );
        Self(dir)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Every pinned object the agents made (below `lbwitness/`: the mount's
    /// root also holds the kernel's own `maps.debug` and `progs.debug`).
    pub fn pins(&self) -> Vec<std::path::PathBuf> {
        fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    files(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        files(&self.0.join("lbwitness"), &mut out);
        out
    }

    /// Whatever the agents left below the mount point, directories included.
    pub fn entries(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                out.push(e.path());
                if e.path().is_dir() {
                    walk(&e.path(), out);
                }
            }
        }
        let mut out: Vec<_> = std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n == "lbwitness"))
            .collect();
        walk(&self.0.join("lbwitness"), &mut out);
        out
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs `prog` on the frame of every flow in `flows`, `packets(i)` times
/// each (BPF_PROG_TEST_RUN's repeat), and returns what was sent.
///
/// # Panics
/// If a test run fails or the program does not return XDP_PASS.
pub fn fill(prog: &Xdp, flows: std::ops::Range<u32>, packets: impl Fn(u32) -> u32) -> Sent {
    let mut sent = Sent::default();
    for i in flows {
        let n = packets(i);
        let frame = frame(i);
        let run = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: n,
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(run.return_value, 2, "XDP_PASS");
        sent.flows += 1;
        sent.packets += u64::from(n);
        sent.bytes += u64::from(n) * PACKET_BYTES;
    }
    sent
}

/// A handle on the XDP program attached to `iface` in `ns` (the agent's),
/// by the id `ip -j link show` gives.
///
/// # Panics
/// If `iface` has no XDP program.
pub fn attached_program(ns: &NetNs, iface: &str) -> Xdp {
    let text = ns.ip(&["-j", "link", "show", "dev", iface]);
    let v: Value = serde_json::from_str(&text).expect("ip -j output");
    let id = v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no XDP program on {iface}: {text}")) as u32;
    lbwitness::capture::sys::xdp_by_id(id).expect("the agent's program is loaded")
}

/// What a trail says about the flood flows, read line by line (a large
/// table's trail is too big to hold as parsed JSON).
#[derive(Debug, Default)]
pub struct Tally {
    /// Flow records of flood flows, by `event.reason`.
    pub records: std::collections::BTreeMap<String, u64>,
    /// Distinct flood flows with at least one record.
    pub flows: u64,
    /// Packets over every flood flow record.
    pub packets: u64,
    /// Bytes over every flood flow record.
    pub bytes: u64,
    /// Gap counts by `lbwitness.gap.reason`.
    pub gaps: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    /// Reads an NDJSON trail. A record seen twice (same sequence, as after
    /// a restart re-sends) counts once.
    ///
    /// # Panics
    /// On a line that is not JSON.
    pub fn read(path: &Path) -> Self {
        let file = std::fs::File::open(path).expect("open the trail");
        let mut tally = Self::default();
        let mut seen = std::collections::HashSet::new();
        let mut flows = std::collections::HashSet::new();
        for line in BufReader::new(file).lines() {
            let line = line.expect("read the trail");
            let r: Value = serde_json::from_str(&line).expect("a JSON record");
            if !seen.insert(r["event"]["sequence"].as_u64()) {
                continue;
            }
            if r["event"]["action"] == "gap" {
                let gap = &r["lbwitness"]["gap"];
                *tally
                    .gaps
                    .entry(gap["reason"].as_str().unwrap_or("?").to_owned())
                    .or_default() += gap["count"].as_u64().unwrap_or(0);
                continue;
            }
            let dst = std::net::Ipv4Addr::from(DST).to_string();
            if r["event"]["action"] != "flow"
                || r["destination"]["ip"] != dst.as_str()
                || r["destination"]["port"] != DST_PORT
            {
                continue;
            }
            *tally
                .records
                .entry(r["event"]["reason"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
            flows.insert(r["source"]["ip"].as_str().unwrap_or("?").to_owned());
            tally.packets += r["network"]["packets"].as_u64().unwrap_or(0);
            tally.bytes += r["network"]["bytes"].as_u64().unwrap_or(0);
        }
        tally.flows = flows.len() as u64;
        tally
    }

    /// Flow records with `reason`.
    pub fn with_reason(&self, reason: &str) -> u64 {
        self.records.get(reason).copied().unwrap_or(0)
    }

    /// The count gap records declare for `reason`.
    pub fn gap(&self, reason: &str) -> u64 {
        self.gaps.get(reason).copied().unwrap_or(0)
    }
}
