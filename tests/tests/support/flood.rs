//! The flood the flow-accounting tests and the memory benchmark share:
//! BPF_PROG_TEST_RUN runs the agent's own attached XDP program once on
//! each of many distinct SYN frames, faster than the agent reads.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use aya::{TestRun as _, TestRunOptions};
use integration_tests::{
    frames::{Frame, tcp_flags},
    lab::Lab,
    netns::{NetNs, in_netns},
};
use serde_json::Value;

/// Destination port of every flood frame: nothing else in the lab uses it.
pub const FLOOD_PORT: u16 = 4443;

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
pub fn flood(lab: &Lab, n: u32) -> Duration {
    let id = xdp_prog_id(&lab.lb, lab.iface());
    let prog = lbwitness::capture::sys::xdp_by_id(id).expect("the agent's program is loaded");
    let started = Instant::now();
    for i in 0..n {
        let [_, a, b, c] = (i / 50_000).to_be_bytes();
        let frame = Frame::ipv4([10, a, b, c], [198, 51, 100, 8])
            .tcp(10_000 + (i % 50_000) as u16, FLOOD_PORT)
            .tcp_flags(tcp_flags::SYN)
            .build();
        let run = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(run.return_value, 2, "XDP_PASS");
    }
    let took = started.elapsed();
    eprintln!(
        "flood: {n} new flows in {took:?} ({:.0}/s)",
        f64::from(n) / took.as_secs_f64()
    );
    took
}

/// Waits until the agent's output has not grown for `quiet` (it has read
/// every event and reported every idle flow), at most `limit`.
pub fn wait_quiet(path: &Path, quiet: Duration, limit: Duration) {
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
pub fn quiet_lab(tag: &str) -> Lab {
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
