//! The XDP mode that measured a flow is part of the record: native and
//! generic XDP count differently (generic sees GRO/GSO super-packets as one
//! packet). The real agent on a veth in test namespaces:
//!
//! * native (veth at MTU 1500): `agent-start`, `hook-attach` and every flow
//!   and lifecycle record say `native`;
//! * a jumbo MTU (9000) on the veth: `--xdp-mode native` fails with a
//!   message naming the MTU and the ways out, and leaves nothing attached;
//!   `auto` falls back to generic with a WARN saying what generic counts
//!   mean, and the records say `generic` and why.
//!
//! Needs root.

use std::{net::UdpSocket, thread, time::Duration};

use integration_tests::{Scratch, agent::run_to_exit, lab::Lab, netns::in_netns};
use serde_json::Value;

/// Sends a few UDP datagrams from the client to the load balancer.
fn udp_traffic(lab: &Lab) {
    in_netns(&lab.client, || {
        let socket = UdpSocket::bind("192.0.2.1:0").expect("bind");
        for i in 0..5u8 {
            socket.send_to(&[i; 100], "192.0.2.2:9999").expect("send");
        }
    });
    thread::sleep(Duration::from_millis(300));
}

/// Runs the agent in `mode` over some traffic and returns its records and
/// its log.
fn capture_in(lab: &Lab, mode: &str) -> (Vec<Value>, String) {
    let mut agent = lab.start_agent(&["--xdp-mode", mode]);
    udp_traffic(lab);
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "{}", agent.log_text());
    (agent.records(), agent.log_text())
}

fn by_action<'a>(records: &'a [Value], action: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["event"]["action"] == action)
        .collect()
}

/// Every flow and lifecycle record carries `mode`, and the client's UDP flow
/// is among them.
fn assert_flows_measured_in(records: &[Value], mode: &str) {
    let measured: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("network").is_some())
        .collect();
    assert!(
        measured
            .iter()
            .any(|r| r["event"]["action"] == "flow" && r["destination"]["port"] == 9999),
        "no record of the UDP flow: {records:#?}"
    );
    for r in measured {
        assert_eq!(r["lbwitness"]["capture"]["xdp_mode"], mode, "{r}");
    }
}

fn set_mtu(lab: &Lab, mtu: &str) {
    lab.client
        .ip(&["link", "set", "dev", &lab.veth.a.name, "mtu", mtu]);
    lab.lb.ip(&["link", "set", "dev", lab.iface(), "mtu", mtu]);
}

#[test]
fn native_mode_is_in_every_record() {
    let lab = Lab::new("xmn");
    let (records, log) = capture_in(&lab, "auto");
    let start = by_action(&records, "agent-start");
    assert_eq!(
        start[0]["lbwitness"]["start"]["capture"],
        serde_json::json!([{ "interface": lab.iface(), "xdp_mode": "native" }])
    );
    assert_eq!(
        by_action(&records, "hook-attach")[0]["lbwitness"]["hook"]["mode"],
        "native"
    );
    assert_flows_measured_in(&records, "native");
    assert!(!log.contains("GENERIC"), "no fallback warning:\n{log}");
}

#[test]
fn jumbo_mtu_native_is_a_clear_error_and_auto_warns_generic() {
    let lab = Lab::new("xmj");
    set_mtu(&lab, "9000");

    let output = Scratch::path("jumbo.ndjson");
    let (status, stderr) = run_to_exit(
        &lab.lb,
        &[
            "run",
            "--iface",
            lab.iface(),
            "--xdp-mode",
            "native",
            "--output",
            output.as_str(),
        ],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    for needle in [
        &format!("native XDP on `{}` was refused", lab.iface()),
        "MTU (9000)",
        "Lower the MTU",
        "--xdp-mode generic",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("os error 34"), "a bare errno:\n{stderr}");
    assert!(!lab.has_xdp(), "a failed start left XDP attached");

    let (records, log) = capture_in(&lab, "auto");
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("GENERIC XDP"))
        .unwrap_or_else(|| panic!("no fallback warning:\n{log}"));
    assert!(warning.contains("super-packet"), "{warning}");
    assert!(warning.contains("MTU (9000)"), "{warning}");
    let start = by_action(&records, "agent-start");
    let capture = &start[0]["lbwitness"]["start"]["capture"][0];
    assert_eq!(capture["interface"], lab.iface());
    assert_eq!(capture["xdp_mode"], "generic");
    assert!(
        capture["fallback"]
            .as_str()
            .is_some_and(|f| f.contains("MTU (9000)")),
        "{capture}"
    );
    assert_eq!(
        by_action(&records, "hook-attach")[0]["lbwitness"]["hook"]["mode"],
        "generic"
    );
    assert_flows_measured_in(&records, "generic");
}
