//! `lbwitness verify` throughput and memory on one core: 200 000 realistic
//! flow records (about 900 bytes each, the size of the agent's sample
//! record) with a signed checkpoint every 10 000, verified in order and
//! shuffled. Each measurement runs in a child process so that its peak RSS
//! (VmHWM) is the verifier's alone. Prints one line per figure.
//!
//! Target: ≥ 300 000 records/s, well under 100 bytes per record in order.

use std::{
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use ed25519_dalek::{Signer as _, SigningKey};
use lbwitness_trail::{
    jcs,
    verify::{Verdict, Verifier, input},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const RECORDS: u64 = 200_000;
const EVERY: u64 = 10_000;

fn record(seq: u64) -> Value {
    let t = format!(
        "2026-11-21T05:{:02}:{:02}.{:09}Z",
        (seq / 60) % 60,
        seq % 60,
        seq * 7919 % 1_000_000_000
    );
    json!({
        "@timestamp": t,
        "agent": {"id": "6f1c2a4e-8b9d-4c3e-9f10-2a3b4c5d6e7f", "type": "lbwitness", "version": "0.1.0"},
        "destination": {"ip": format!("192.0.2.{}", seq % 250 + 2), "port": 8080},
        "event": {"action": "flow", "category": ["network"], "dataset": "lbwitness.flow",
                  "duration": 1_500_000_000 + seq % 1000, "end": t, "kind": "event",
                  "module": "lbwitness", "reason": "idle-timeout", "sequence": seq, "start": t,
                  "type": ["connection", "end"]},
        "lbwitness": {"tcp_flags": ["ACK", "PSH", "SYN", "FIN"]},
        "network": {"bytes": 2960 + seq % 5000, "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
                    "iana_number": "6", "packets": 12, "transport": "tcp", "type": "ipv4"},
        "observer": {"hostname": "lb-1", "ingress": {"interface": {"id": "7", "name": "veth0"}},
                     "product": "lbwitness", "type": "sensor"},
        "source": {"bytes": 1480, "ip": "192.0.2.1", "packets": 6, "port": 40_000 + seq % 20_000},
    })
}

fn checkpoint(seq: u64, first: u64, head: &[u8; 32], key: &SigningKey, is_final: bool) -> Value {
    let mut v = record(seq);
    for flow_only in ["destination", "network", "source"] {
        v.as_object_mut().unwrap().remove(flow_only);
    }
    v["event"] = json!({"action": "checkpoint", "dataset": "lbwitness.audit", "kind": "state",
                        "module": "lbwitness", "reason": if is_final { "stop" } else { "records" },
                        "sequence": seq});
    v["lbwitness"] = json!({"checkpoint": {
        "count": seq - first, "final": is_final, "first_sequence": first,
        "head_hash": hex::encode(head),
        "key_id": hex::encode(Sha256::digest(key.verifying_key().as_bytes())),
        "last_sequence": seq - 1}});
    let mut message = b"lbwitness-checkpoint-v1\n".to_vec();
    jcs::to_canonical_vec(&v, &mut message).unwrap();
    v["lbwitness"]["checkpoint"]["signature"] = json!(hex::encode(key.sign(&message).to_bytes()));
    v
}

/// Writes the trail; returns the lines' total size.
fn generate(path: &Path, key: &SigningKey) -> u64 {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let (mut head, mut first, mut bytes) = ([0u8; 32], 1, 0);
    let mut body = Vec::with_capacity(1024);
    for seq in 1..=RECORDS {
        let mut v = if seq % EVERY == 0 || seq == RECORDS {
            let c = checkpoint(seq, first, &head, key, seq == RECORDS);
            first = seq + 1;
            c
        } else {
            record(seq)
        };
        body.clear();
        jcs::to_canonical_vec(&v, &mut body).unwrap();
        head = Sha256::new()
            .chain_update(head)
            .chain_update(&body)
            .finalize()
            .into();
        v["event"]["hash"] = json!(hex::encode(head));
        let line = serde_json::to_string(&v).unwrap();
        bytes += line.len() as u64 + 1;
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
    bytes
}

fn vm(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// In the child: verify `path`, print "seconds peak_rss baseline_rss".
fn measure(path: &Path, key_hex: &str) {
    let key = lbwitness_trail::verify::keys::read_trusted_key(key_hex).unwrap();
    let baseline = vm("VmRSS:");
    let start = Instant::now();
    let mut verifier = Verifier::new(&[key], false);
    input::feed_file(&mut verifier, path).unwrap();
    let report = verifier.finish();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(
        report.verdict,
        Verdict::Intact,
        "{}",
        lbwitness_trail::verify::human::render(&report)
    );
    println!("{seconds} {} {baseline}", vm("VmHWM:"));
}

fn run_child(label: &str, path: &Path, key_hex: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--measure", path.to_str().unwrap(), key_hex])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (seconds, peak, baseline) = (f[0], f[1], f[2]);
    println!(
        "verify {label}: {:.0} records/s ({RECORDS} records in {seconds:.3} s, one thread)",
        RECORDS as f64 / seconds
    );
    println!(
        "verify {label}: peak RSS {:.1} MiB ({:.1} MiB before reading, {:.0} bytes per record above that)",
        peak / 1048576.0,
        baseline / 1048576.0,
        (peak - baseline) / RECORDS as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        measure(Path::new(&args[i + 1]), &args[i + 2]);
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("lbw-verify-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let key_hex = hex::encode(key.verifying_key().as_bytes());
    let in_order = dir.join("in-order.ndjson");
    let bytes = generate(&in_order, &key);
    println!(
        "verify: {RECORDS} records, {} bytes per line on average",
        bytes / RECORDS
    );
    run_child("in order", &in_order, &key_hex);

    let text = fs::read_to_string(&in_order).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..lines.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        lines.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let shuffled = dir.join("shuffled.ndjson");
    fs::write(&shuffled, lines.join("\n") + "\n").unwrap();
    drop(text);
    run_child("shuffled", &shuffled, &key_hex);
    fs::remove_dir_all(&dir).unwrap();
}
