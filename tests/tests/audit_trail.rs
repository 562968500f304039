//! The audit trail of the real agent on real traffic.
//!
//! * Killed twice: the agent runs on a test veth with UDP traffic flowing,
//!   is SIGKILLed mid-stream, restarted on the same output and state, killed
//!   again, restarted and stopped cleanly. `lbwitness verify` finds the whole
//!   output intact with both crashes declared, and an independent check
//!   written here from docs/AUDIT.md (serde_json for canonical JSON, the
//!   `openssl` command for Ed25519) agrees. One flipped byte makes verify
//!   fail.
//! * Ring-buffer flood: BPF_PROG_TEST_RUN runs the agent's own attached XDP
//!   program N times on a SYN frame against a one-page ring buffer; the SYN
//!   records in the trail plus the `ringbuf_reserve_failed` losses declared
//!   in gap records add up to exactly N.
//!
//! Needs root: `cargo test --release -p integration-tests --test audit_trail`.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use aya::{TestRun as _, TestRunOptions};
use integration_tests::{
    Scratch,
    agent::{Agent, binary, read_records},
    delivery::{Traffic, verify},
    frames::{Frame, tcp_flags},
    lab::Lab,
    netns::{NetNs, in_netns},
    run_output,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Recomputes the chain from docs/AUDIT.md with serde_json as the reader:
/// its map is sorted and the agent's member names are ASCII, so
/// `to_vec` is RFC 8785 for these records. Returns the records by sequence.
fn check_chain_independently(path: &Path) -> BTreeMap<u64, Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut by_seq = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    for line in text.lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let seq = v["event"]["sequence"].as_u64().unwrap();
        let stored = v["event"]["hash"].as_str().unwrap().to_owned();
        v["event"].as_object_mut().unwrap().remove("hash");
        // Delivery is at least once: a record re-sent after a crash comes
        // back as an identical copy, and only identical copies are allowed.
        if let Some((first, first_hash)) = by_seq.get(&seq) {
            assert_eq!(
                (first, first_hash),
                (&v, &stored),
                "sequence {seq} twice, and the copies differ"
            );
            continue;
        }
        by_seq.insert(seq, (v, stored));
    }
    let last = *by_seq.keys().last().unwrap();
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "sequences are 1..={last} with no hole"
    );
    let mut prev = [0u8; 32];
    for (seq, (v, stored)) in &by_seq {
        let h: [u8; 32] = Sha256::new()
            .chain_update(prev)
            .chain_update(serde_json::to_vec(v).unwrap())
            .finalize()
            .into();
        assert_eq!(&hex::encode(h), stored, "hash of record {seq}");
        hashes.insert(*seq, h);
        prev = h;
    }
    by_seq
        .into_iter()
        .map(|(seq, (mut v, stored))| {
            v["event"]["hash"] = Value::String(stored);
            (seq, v)
        })
        .collect()
}

/// Verifies a checkpoint's signature with the `openssl` command.
fn openssl_verifies(checkpoint: &Value, public_pem: &Path) -> bool {
    let mut v = checkpoint.clone();
    v["event"].as_object_mut().unwrap().remove("hash");
    let sig = v["lbwitness"]["checkpoint"]
        .as_object_mut()
        .unwrap()
        .remove("signature")
        .unwrap();
    let msg = Scratch::path("checkpoint.msg");
    let sig_file = Scratch::path("checkpoint.sig");
    let mut bytes = b"lbwitness-checkpoint-v1\n".to_vec();
    bytes.extend(serde_json::to_vec(&v).unwrap());
    std::fs::write(&msg.0, bytes).unwrap();
    std::fs::write(&sig_file.0, hex::decode(sig.as_str().unwrap()).unwrap()).unwrap();
    Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(public_pem)
        .arg("-in")
        .arg(&msg.0)
        .arg("-sigfile")
        .arg(&sig_file.0)
        .output()
        .expect("run openssl")
        .status
        .success()
}

#[test]
fn killed_twice_mid_stream_the_trail_verifies() {
    let lab = Lab::new("audk");
    let output = Scratch::path("trail.ndjson");
    let state = Scratch::path("state");
    let watched = Scratch::path("haproxy.cfg");
    std::fs::write(&watched.0, "global\n  maxconn 100\n").unwrap();
    let config = Scratch::path("audit.toml");
    std::fs::write(
        &config.0,
        format!(
            "[flows]\nidle_timeout_secs = 1\nclosed_timeout_secs = 1\nsweep_interval_ms = 100\n\
             [audit]\ncheckpoint_interval_secs = 1\ncheckpoint_records = 40\nwatch_files = [\"{}\"]\n",
            watched.0.display()
        ),
    )
    .unwrap();
    let args = ["--config", config.0.to_str().unwrap()];
    for round in 0..3 {
        let mut agent = Agent::start_with(&lab.lb, lab.iface(), &output.0, &state.0, &args);
        let traffic = Traffic::start(&lab);
        std::thread::sleep(Duration::from_millis(1500));
        if round == 1 {
            std::fs::write(&watched.0, "global\n  maxconn 200\n").unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }
        if round < 2 {
            // Mid-stream: traffic still flowing, records in flight.
            agent.stop_with(libc::SIGKILL);
            traffic.stop();
        } else {
            traffic.stop();
            std::thread::sleep(Duration::from_millis(300));
            let exit = agent.stop_with(libc::SIGTERM);
            assert!(exit.status.success(), "clean stop: {}", agent.log_text());
        }
    }

    let public = state.0.join("signing.key.pub");
    let (code, stdout, stderr) = verify(&[
        "--key",
        public.to_str().unwrap(),
        output.0.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "verify: {stdout}\n{stderr}");

    // The independent check.
    let records = check_chain_independently(&output.0);
    let restarts: Vec<&Value> = records
        .values()
        .filter(|r| r["event"]["action"] == "gap" && r["lbwitness"]["gap"]["reason"] == "restart")
        .collect();
    assert_eq!(restarts.len(), 2, "two restarts declared");
    for r in &restarts {
        let prev = &r["lbwitness"]["gap"]["previous_run"];
        assert_eq!(prev["clean"], false, "the previous run was killed: {r}");
        let seq = r["event"]["sequence"].as_u64().unwrap();
        assert_eq!(prev["last_sequence"].as_u64().unwrap(), seq - 1);
        assert_eq!(prev["last_hash"], records[&(seq - 1)]["event"]["hash"]);
    }
    let starts = records
        .values()
        .filter(|r| r["event"]["action"] == "agent-start")
        .count();
    assert_eq!(starts, 3);
    let flows = records
        .values()
        .filter(|r| r["event"]["dataset"] == "lbwitness.lifecycle")
        .count();
    assert!(
        flows > 50,
        "traffic was recorded in every run ({flows} lifecycle records)"
    );
    let last = records.values().last().unwrap();
    assert_eq!(last["event"]["action"], "checkpoint");
    assert_eq!(last["lbwitness"]["checkpoint"]["final"], true);
    let checkpoints: Vec<&Value> = records
        .values()
        .filter(|r| r["event"]["action"] == "checkpoint")
        .collect();
    assert!(checkpoints.len() >= 4);
    for cp in [checkpoints[0], checkpoints[checkpoints.len() / 2], last] {
        assert!(openssl_verifies(cp, &public), "openssl rejects {cp}");
    }
    // Coverage is contiguous across the restarts.
    let mut expected_first = 1;
    for cp in &checkpoints {
        let c = &cp["lbwitness"]["checkpoint"];
        assert!(
            c["first_sequence"].as_u64().unwrap() <= expected_first,
            "{cp}"
        );
        expected_first = cp["event"]["sequence"].as_u64().unwrap() + 1;
    }
    // The config change, with hashes computed by sha256sum.
    let change = records
        .values()
        .find(|r| r["event"]["action"] == "file-change")
        .expect("a file-change record");
    let new_hash = hex::encode(Sha256::digest(b"global\n  maxconn 200\n"));
    let old_hash = hex::encode(Sha256::digest(b"global\n  maxconn 100\n"));
    assert_eq!(change["file"]["hash"]["sha256"], new_hash.as_str());
    assert_eq!(
        change["lbwitness"]["file"]["previous_sha256"],
        old_hash.as_str()
    );

    // One flipped byte in a record's content is tampering (exit 3). The
    // byte is a port digit of a record in the middle: a flip that lands in
    // agent.id instead moves the record to another agent, which verify
    // rightly reads as a removal (exit 4), not as an altered record.
    let text = std::fs::read(&output.0).unwrap();
    let tampered = Scratch::path("tampered.ndjson");
    let mut bytes = text.clone();
    let at = port_digit_after(&bytes, bytes.len() / 2);
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&tampered.0, bytes).unwrap();
    let (code, stdout, _) = verify(&[
        "--key",
        public.to_str().unwrap(),
        tampered.0.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{stdout}");
}

/// The offset of the first digit of the first `"port":` value at or after
/// `from` in an NDJSON trail.
fn port_digit_after(trail: &[u8], from: usize) -> usize {
    const KEY: &[u8] = b"\"port\":";
    let at = trail[from..]
        .windows(KEY.len())
        .position(|w| w == KEY)
        .expect("a record with a port after the middle of the trail");
    let digit = from + at + KEY.len();
    assert!(trail[digit].is_ascii_digit(), "a numeric port at {digit}");
    digit
}

/// `ip -j link show`'s XDP program id on `iface`.
fn xdp_prog_id(ns: &NetNs, iface: &str) -> u32 {
    let text = ns.ip(&["-j", "link", "show", "dev", iface]);
    let v: Value = serde_json::from_str(&text).unwrap();
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no XDP program on {iface}: {text}")) as u32
}

#[test]
fn ring_buffer_flood_loss_is_declared_exactly() {
    const N: u32 = 200_000;
    let lab = Lab::new("audf");
    // Only the flood may reach the one-page ring. The client end's IPv6
    // multicast listener reports, sent for a second or two after link-up,
    // are events too, and their reservation failures would count with the
    // SYNs' (one did, once: 200 001 = seen + declared).
    let client_end = lab.veth.a.name.clone();
    in_netns(&lab.client, || {
        std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{client_end}/disable_ipv6"),
            "1",
        )
    })
    .expect("turn IPv6 off on the client end");
    let config = Scratch::path("flood.toml");
    std::fs::write(
        &config.0,
        "[capture]\nring_buffer_bytes = 4096\n[audit]\nwatch_files = []\n",
    )
    .unwrap();
    let mut agent = Agent::start(
        &lab.lb,
        lab.iface(),
        &["--config", config.0.to_str().unwrap()],
    );
    let id = xdp_prog_id(&lab.lb, lab.iface());
    let prog = lbwitness::capture::sys::xdp_by_id(id).expect("the agent's program is loaded");
    // A SYN makes one lifecycle event per packet; the run's source port is
    // unique to this test.
    let syn = Frame::ipv4([198, 51, 100, 7], [198, 51, 100, 8])
        .tcp(47_111, 443)
        .tcp_flags(tcp_flags::SYN)
        .build();
    let run = prog
        .test_run(TestRunOptions {
            data_in: Some(&syn),
            repeat: N,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(run.return_value, 2, "XDP_PASS");
    std::thread::sleep(Duration::from_millis(1500));
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "{}", agent.log_text());

    let records = read_records(&agent.output);
    let seen = records
        .iter()
        .filter(|r| r["event"]["action"] == "tcp-syn" && r["source"]["port"] == 47_111)
        .count() as u64;
    let declared: u64 = records
        .iter()
        .filter(|r| {
            r["event"]["action"] == "gap"
                && r["lbwitness"]["gap"]["reason"] == "ringbuf_reserve_failed"
        })
        .map(|r| r["lbwitness"]["gap"]["count"].as_u64().unwrap())
        .sum();
    eprintln!("flood: {N} SYN events, {seen} recorded, {declared} declared lost");
    assert!(declared > 0, "a one-page ring must overflow");
    assert_eq!(
        seen + declared,
        u64::from(N),
        "seen {seen} + declared {declared}"
    );

    let public = agent.state_dir.join("signing.key.pub");
    let (code, stdout, stderr) = verify(&[
        "--json",
        "--key",
        public.to_str().unwrap(),
        agent.output.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&declared.to_string()),
        "verify reports the declared loss {declared}: {stdout}"
    );
}

#[test]
fn sighup_rotates_the_signing_key_in_band() {
    let lab = Lab::new("audr");
    let output = Scratch::path("rotate.ndjson");
    let state = Scratch::path("state");
    let config = Scratch::path("rotate.toml");
    std::fs::write(
        &config.0,
        "[audit]\ncheckpoint_interval_secs = 1\nwatch_files = []\n",
    )
    .unwrap();
    let mut agent = Agent::start_with(
        &lab.lb,
        lab.iface(),
        &output.0,
        &state.0,
        &["--config", config.0.to_str().unwrap()],
    );
    let key = state.0.join("signing.key");
    let old_pub = Scratch::path("old.pub");
    std::fs::copy(state.0.join("signing.key.pub"), &old_pub.0).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // The operator's rotation: a new key in place, then SIGHUP.
    let out = run_output(
        Command::new(binary())
            .args(["keygen", "--force", "--out"])
            .arg(&key),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("key id:").map(|s| s.trim().to_owned()))
        .expect("keygen prints the key id");
    agent.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        agent.stop_with(libc::SIGTERM).status.success(),
        "{}",
        agent.log_text()
    );

    let records = read_records(&output.0);
    let reload = records
        .iter()
        .find(|r| r["event"]["action"] == "config-reload")
        .expect("a config-reload record");
    assert_eq!(
        reload["lbwitness"]["config"]["sha256"],
        hex::encode(Sha256::digest(std::fs::read(&config.0).unwrap()))
    );
    let rotation = records
        .iter()
        .find(|r| r["event"]["reason"] == "rotation")
        .expect("a rotation checkpoint");
    let old_id = rotation["lbwitness"]["checkpoint"]["key_id"]
        .as_str()
        .unwrap();
    assert_ne!(old_id, new_id);
    assert_eq!(
        rotation["lbwitness"]["checkpoint"]["next_key"]["key_id"],
        new_id.as_str()
    );
    assert!(
        openssl_verifies(rotation, &old_pub.0),
        "the rotation is signed with the old key"
    );
    let after: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["event"]["action"] == "checkpoint"
                && r["event"]["sequence"].as_u64() > rotation["event"]["sequence"].as_u64()
        })
        .collect();
    assert!(!after.is_empty());
    for cp in &after {
        assert_eq!(
            cp["lbwitness"]["checkpoint"]["key_id"],
            new_id.as_str(),
            "{cp}"
        );
    }
    assert!(
        records
            .iter()
            .any(|r| r["event"]["action"] == "key-rotation")
    );

    // The old key alone proves the whole trail: the new one is introduced in-band.
    let path = output.0.to_str().unwrap();
    let (code, stdout, _) = verify(&["--key", old_pub.0.to_str().unwrap(), path]);
    assert_eq!(code, 0, "{stdout}");
    // The new key alone cannot vouch for what came before the rotation.
    let new_pub = state.0.join("signing.key.pub");
    let (code, stdout, _) = verify(&["--key", new_pub.to_str().unwrap(), path]);
    assert_eq!(code, 3, "{stdout}");
}

#[test]
fn a_signing_key_others_can_read_is_refused() {
    let lab = Lab::new("audp");
    let state = Scratch::path("state");
    let key = state.0.join("signing.key");
    let out = run_output(Command::new(binary()).args(["keygen", "--out"]).arg(&key)).unwrap();
    assert!(out.status.success());
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let output = Scratch::path("refused.ndjson");
    let (status, stderr) = integration_tests::agent::run_to_exit(
        &lab.lb,
        &[
            "run",
            "--iface",
            lab.iface(),
            "--output",
            output.0.to_str().unwrap(),
            "--state-dir",
            state.0.to_str().unwrap(),
        ],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!integration_tests::agent::has_xdp(&lab.lb, lab.iface()));
}
