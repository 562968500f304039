//! Property tests for `lbwitness verify` against a trail generator written
//! here from docs/AUDIT.md alone. The generator's JCS is serde_json's own
//! output of a `serde_json::Value` (members sorted by their UTF-8 bytes):
//! every member name here is ASCII and every number a small integer, where
//! that is RFC 8785. Strings with quotes, backslashes, tabs and non-ASCII
//! letters exercise escaping on both sides.
//!
//! Mutations and what they must give:
//! - a flipped byte anywhere in a record's JSON text: non-zero. A flip that
//!   leaves the same JSON value (possible in principle, e.g. `1e+21` →
//!   `1E+21`; this generator writes no such number) must stay intact; the
//!   test checks which case it is rather than assuming. The `\n` after a
//!   line is not part of the record: changing it to another whitespace byte
//!   at the end of a file changes nothing.
//! - a deleted line: 4 (undeclared missing), or 3 when it announced a key
//!   (later checkpoints are then signed by an unknown key); 0 when the line
//!   was an identical duplicate, or a record a gap (restart or spool)
//!   declared possibly lost, when the range may hold that many lost records
//!   and the records next to it stay covered — that loss is declared,
//!   which is what declaring is for.
//! - two lines exchanging their `event.sequence` values: 3.
//! - a differing duplicate (re-hashed or not): 3.
//! - whole lines cut off the end: 4, and intact under `--live`; a cut inside
//!   a line: 3, and intact under `--live` (a write in progress). A cut
//!   after a spool hole but before the checkpoint over its gap record: 4,
//!   and under `--live` too while the hole is undeclared or records before
//!   it can no longer be pending.
//! - a forged record appended after the final checkpoint: 4 (not covered,
//!   open end); inserted in the middle with the chain re-hashed after it: 3.
//! - an old checkpoint replayed in place of a later one: non-zero; with the
//!   chain re-hashed around it: 3.
//! - a checkpoint re-signed, with every later one, by another key and the
//!   chain re-hashed: 3, whether the key is fresh, another agent's rotated-in
//!   key, or this agent's rotated-out key. (A key given with `--key` is
//!   trusted for every agent, docs/AUDIT.md, so re-signing with another
//!   agent's `--key` key is not a detectable mutation.)

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use lbwitness_trail::verify::{Report, Verdict, Verifier, input};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// splitmix64: the generator's randomness, from one proptest seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Restart {
    None,
    Clean,
    /// A crash after a checkpoint; `lost` records numbered after it may be
    /// missing (declared); `kept`: they reached the output anyway.
    Crash {
        lost: u64,
        kept: bool,
    },
}

/// A spool loss inside one run: `len` records sealed, then lost before
/// any collector got them (`Lost`) or lost after this collector got them
/// (`Delivered`, `count` of them declared lost); the gap record follows
/// `delay` records later, with `before_hash` and `last_hash`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Spool {
    None,
    Lost { len: u64, delay: u64 },
    Delivered { len: u64, count: u64, delay: u64 },
}

#[derive(Clone, Debug)]
struct Shape {
    seed: u64,
    agents: usize,
    records: usize,
    every: u64,
    rotate: bool,
    restart: Restart,
    spool: Spool,
    duplicates: usize,
    shuffle: bool,
    files: usize,
}

fn shape() -> impl Strategy<Value = Shape> {
    let restart = prop_oneof![
        Just(Restart::None),
        Just(Restart::Clean),
        (1u64..4, any::<bool>()).prop_map(|(lost, kept)| Restart::Crash { lost, kept }),
    ];
    let spool = prop_oneof![
        Just(Spool::None),
        (1u64..6, 0u64..4).prop_map(|(len, delay)| Spool::Lost { len, delay }),
        (1u64..6, 1u64..6, 0u64..4).prop_map(|(len, count, delay)| Spool::Delivered {
            len,
            count: count.min(len),
            delay
        }),
    ];
    (
        (any::<u64>(), 1usize..=3, 3usize..30, 2u64..7, any::<bool>()),
        (restart, spool, 0usize..4, any::<bool>(), 1usize..=3),
    )
        .prop_map(
            |(
                (seed, agents, records, every, rotate),
                (restart, spool, duplicates, shuffle, files),
            )| Shape {
                seed,
                agents,
                records,
                every,
                rotate,
                restart,
                spool,
                duplicates,
                shuffle,
                files,
            },
        )
}

/// One record line of the trail.
#[derive(Clone, Debug)]
struct Rec {
    agent: usize,
    seq: u64,
    value: Value,
    checkpoint: bool,
    /// A checkpoint announcing `next_key`.
    rotation: bool,
    /// Inside a gap's declared range: `(first, last, count)`.
    declared: Option<(u64, u64, u64)>,
    /// Never reaches the output (a crash or a spool loss).
    lost: bool,
    /// An extra identical copy.
    dup: bool,
}

impl Rec {
    fn text(&self) -> String {
        serde_json::to_string(&self.value).unwrap()
    }
}

fn key_id(k: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(k.as_bytes()))
}

/// Sets `event.hash` to SHA-256(prev || JCS(record without it)).
fn seal(v: &mut Value, prev: &[u8; 32]) -> [u8; 32] {
    v["event"].as_object_mut().unwrap().remove("hash");
    let mut h = Sha256::new();
    h.update(prev);
    h.update(serde_json::to_string(v).unwrap());
    let hash: [u8; 32] = h.finalize().into();
    v["event"]["hash"] = json!(hex::encode(hash));
    hash
}

/// Signs a checkpoint with `key` (sets key_id and signature; unsealed).
fn sign(v: &mut Value, key: &SigningKey) {
    v["event"].as_object_mut().unwrap().remove("hash");
    let cp = v["lbwitness"]["checkpoint"].as_object_mut().unwrap();
    cp.remove("signature");
    cp.insert("key_id".into(), json!(key_id(&key.verifying_key())));
    let mut message = b"lbwitness-checkpoint-v1\n".to_vec();
    message.extend(serde_json::to_vec(v).unwrap());
    let signature = key.sign(&message);
    v["lbwitness"]["checkpoint"]["signature"] = json!(hex::encode(signature.to_bytes()));
}

fn stored_hash(v: &Value) -> [u8; 32] {
    hex::decode(v["event"]["hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

struct AgentGen<'r> {
    index: usize,
    id: String,
    key: SigningKey,
    seq: u64,
    head: [u8; 32],
    last_checkpoint: u64,
    /// Declared ranges `(first, last, count)`.
    declared: Vec<(u64, u64, u64)>,
    /// The records appended now are lost.
    losing: bool,
    /// Where the spool loss is: `(first, last, gap record)`.
    spool: Option<(u64, u64, u64)>,
    rng: &'r mut Rng,
    out: Vec<Rec>,
}

const NAMES: [&str; 4] = ["veth0", "eth\"0\\", "wan-é", "tab\tname"];

impl AgentGen<'_> {
    fn time(&self) -> String {
        let s = self.seq + 1;
        format!(
            "2026-11-21T05:{:02}:{:02}.123456789Z",
            (s / 60) % 60,
            s % 60
        )
    }

    fn base(&self, action: &str, dataset: &str) -> Value {
        json!({
            "@timestamp": self.time(),
            "agent": {"id": self.id, "type": "lbwitness", "version": "0.1.0"},
            "event": {"action": action, "dataset": dataset, "kind": "event",
                      "module": "lbwitness", "sequence": self.seq + 1},
            "observer": {"hostname": "lb-1", "product": "lbwitness", "type": "sensor"},
        })
    }

    fn append(&mut self, mut value: Value, checkpoint: bool, rotation: bool) {
        self.seq += 1;
        value["event"]["sequence"] = json!(self.seq);
        self.head = seal(&mut value, &self.head);
        let seq = self.seq;
        self.out.push(Rec {
            agent: self.index,
            seq: self.seq,
            value,
            checkpoint,
            rotation,
            declared: self
                .declared
                .iter()
                .copied()
                .find(|&(a, b, _)| (a..=b).contains(&seq)),
            lost: self.losing,
            dup: false,
        });
    }

    fn flow(&mut self) {
        let r = self.rng.next();
        let (packets, bytes) = (r % 40 + 1, (r % 40 + 1) * 1480);
        let mut v = self.base("flow", "lbwitness.flow");
        let e = v["event"].as_object_mut().unwrap();
        e.insert("category".into(), json!(["network"]));
        e.insert("duration".into(), json!(r % 3_000_000_000));
        e.insert("end".into(), json!(self.time()));
        e.insert("reason".into(), json!("idle-timeout"));
        e.insert("start".into(), json!(self.time()));
        e.insert("type".into(), json!(["connection", "end"]));
        let o = v.as_object_mut().unwrap();
        o.insert(
            "destination".into(),
            json!({"ip": format!("192.0.2.{}", r % 254 + 1), "port": 8080}),
        );
        o.insert(
            "lbwitness".into(),
            json!({"tcp_flags": ["ACK", "PSH", "SYN", "FIN"]}),
        );
        o.insert(
            "network".into(),
            json!({"bytes": bytes, "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
                   "iana_number": "6", "packets": packets, "transport": "tcp", "type": "ipv4"}),
        );
        o.insert(
            "source".into(),
            json!({"bytes": bytes / 2, "ip": "192.0.2.1", "packets": packets / 2 + 1,
                   "port": 1024 + r % 60000}),
        );
        v["observer"]["ingress"] =
            json!({"interface": {"id": "7", "name": NAMES[(r % 4) as usize]}});
        self.append(v, false, false);
    }

    fn kernel_gap(&mut self) {
        let mut v = self.base("gap", "lbwitness.audit");
        let reason = [
            "ringbuf_reserve_failed",
            "flow_insert_failed",
            "malformed_tcp",
        ][self.rng.below(3)];
        v["lbwitness"] = json!({"gap": {"class": "loss", "count": self.rng.below(50) + 1,
                                         "reason": reason, "source": "kernel"}});
        self.append(v, false, false);
    }

    fn simple(&mut self, action: &str) {
        let mut v = self.base(action, "lbwitness.audit");
        v["lbwitness"] = json!({"note": format!("{action} \u{1f600} \"quoted\"")});
        self.append(v, false, false);
    }

    fn checkpoint(&mut self, reason: &str, is_final: bool, next: Option<&VerifyingKey>) {
        let mut v = self.base("checkpoint", "lbwitness.audit");
        v["event"]["reason"] = json!(reason);
        let (first, last) = (self.last_checkpoint + 1, self.seq);
        v["lbwitness"] = json!({"checkpoint": {
            "count": last + 1 - first, "final": is_final, "first_sequence": first,
            "head_hash": hex::encode(self.head), "last_sequence": last}});
        if let Some(n) = next {
            v["lbwitness"]["checkpoint"]["next_key"] =
                json!({"key_id": key_id(n), "public_key": hex::encode(n.as_bytes())});
        }
        sign(&mut v, &self.key);
        self.append(v, true, next.is_some());
        self.last_checkpoint = self.seq;
    }

    fn restart(&mut self, clean: bool, lost: u64, kept: bool) {
        let durable = self.seq;
        let mut prev = json!({"clean": clean, "durable_sequence": durable,
                              "last_hash": "", "last_sequence": 0});
        if !clean {
            // Crash right after a checkpoint; `lost` more were numbered.
            let durable = self.seq;
            self.declared.push((durable + 1, durable + lost, lost));
            self.losing = !kept;
            for _ in 0..lost {
                self.flow();
            }
            self.losing = false;
            prev["durable_sequence"] = json!(durable);
        }
        prev["last_hash"] = json!(hex::encode(self.head));
        prev["last_sequence"] = json!(self.seq);
        let mut v = self.base("gap", "lbwitness.audit");
        v["event"]["reason"] = json!(if clean {
            "restart"
        } else {
            "restart-after-crash"
        });
        let mut gap = json!({"class": "restart", "count": 0, "previous_run": prev,
                             "reason": "restart", "source": "agent"});
        if !clean {
            gap["count"] = json!(lost);
            gap["first_sequence"] = json!(durable + 1);
            gap["last_sequence"] = json!(durable + lost);
        }
        v["lbwitness"] = json!({"gap": gap});
        self.append(v, false, false);
    }

    /// A flow, or a kernel gap now and then; a checkpoint when due.
    fn step(&mut self, every: u64) {
        if self.rng.chance(15) {
            self.kernel_gap();
        } else {
            self.flow();
        }
        if self.seq - self.last_checkpoint >= every {
            self.checkpoint("records", false, None);
        }
    }

    /// `spool` (not `Spool::None`): the records it loses, then its gap.
    fn spool_loss(&mut self, spool: Spool, every: u64) {
        let (len, count, delay, lost) = match spool {
            Spool::None => return,
            Spool::Lost { len, delay } => (len, len, delay, true),
            Spool::Delivered { len, count, delay } => (len, count, delay, false),
        };
        let (first, before) = (self.seq + 1, self.head);
        self.declared.push((first, first + len - 1, count));
        self.losing = lost;
        while self.seq < first + len - 1 {
            // Checkpoints are lost too; a rotation never falls here.
            if self.seq - self.last_checkpoint >= every {
                self.checkpoint("records", false, None);
            } else {
                self.flow();
            }
        }
        self.losing = false;
        let (last, last_hash) = (self.seq, self.head);
        for _ in 0..delay {
            self.step(every);
        }
        let mut v = self.base("gap", "lbwitness.audit");
        let reason = ["spool_full", "spool_corrupt"][self.rng.below(2)];
        v["lbwitness"] = json!({"gap": {"before_hash": hex::encode(before), "count": count,
            "first_sequence": first, "last_hash": hex::encode(last_hash), "last_sequence": last,
            "reason": reason, "source": "agent"}});
        self.spool = Some((first, last, self.seq + 1));
        self.append(v, false, false);
    }
}

/// A generated trail: lines in a global order, and what verifies them.
struct Trail {
    recs: Vec<Rec>,
    trusted: Vec<VerifyingKey>,
    /// Per agent: its initial key and the key it rotated to.
    keys: Vec<(SigningKey, Option<SigningKey>)>,
    /// Per agent: its spool loss `(first, last, gap record)`.
    spools: Vec<Option<(u64, u64, u64)>>,
}

fn signing_key(rng: &mut Rng) -> SigningKey {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    SigningKey::from_bytes(&seed)
}

fn generate(shape: &Shape) -> Trail {
    let mut rng = Rng(shape.seed);
    let mut per_agent = Vec::new();
    let mut keys = Vec::new();
    let mut spools = Vec::new();
    for index in 0..shape.agents {
        let key = signing_key(&mut rng);
        let rotated = shape.rotate.then(|| signing_key(&mut rng));
        let id = format!("6f1c2a4e-8b9d-4c3e-9f10-{:012x}", rng.next() >> 16);
        let restart_at = rng.below(shape.records);
        let rotate_at = rng.below(shape.records);
        let spool_at = rng.below(shape.records);
        let mut g = AgentGen {
            index,
            id,
            key: key.clone(),
            seq: 0,
            head: [0; 32],
            last_checkpoint: 0,
            declared: Vec::new(),
            losing: false,
            spool: None,
            rng: &mut rng,
            out: Vec::new(),
        };
        g.simple("agent-start");
        for i in 0..shape.records {
            if i == restart_at {
                match shape.restart {
                    Restart::None => {}
                    Restart::Clean => {
                        g.simple("agent-stop");
                        g.checkpoint("stop", true, None);
                        g.restart(true, 0, true);
                        g.simple("agent-start");
                    }
                    Restart::Crash { lost, kept } => {
                        if g.last_checkpoint != g.seq {
                            g.checkpoint("interval", false, None);
                        }
                        g.restart(false, lost, kept);
                        g.simple("agent-start");
                    }
                }
            }
            if i == rotate_at
                && let Some(new) = &rotated
            {
                g.checkpoint("rotation", false, Some(&new.verifying_key()));
                g.simple("key-rotation");
                g.key = new.clone();
            }
            if i == spool_at {
                g.spool_loss(shape.spool, shape.every);
            }
            g.step(shape.every);
        }
        g.simple("agent-stop");
        g.checkpoint("stop", true, None);
        spools.push(g.spool);
        let mut out = g.out;
        out.retain(|r| !r.lost);
        per_agent.push(out);
        keys.push((key, rotated));
    }
    // Interleave the agents, each in order.
    let mut recs = Vec::new();
    let mut next = vec![0; shape.agents];
    loop {
        let open: Vec<usize> = (0..shape.agents)
            .filter(|&a| next[a] < per_agent[a].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let a = open[rng.below(open.len())];
        recs.push(per_agent[a][next[a]].clone());
        next[a] += 1;
    }
    for _ in 0..shape.duplicates {
        let mut copy = recs[rng.below(recs.len())].clone();
        copy.dup = true;
        let at = rng.below(recs.len() + 1);
        recs.insert(at, copy);
    }
    Trail {
        recs,
        trusted: keys.iter().map(|(k, _)| k.verifying_key()).collect(),
        keys,
        spools,
    }
}

/// Lines to files: shuffled or not, split across `shape.files` files.
fn layout(lines: Vec<String>, shape: &Shape) -> Vec<(String, String)> {
    let mut rng = Rng(shape.seed ^ 0x5eed);
    let mut lines = lines;
    if shape.shuffle {
        for i in (1..lines.len()).rev() {
            lines.swap(i, rng.below(i + 1));
        }
    }
    let mut files = vec![String::new(); shape.files];
    for line in lines {
        let f = &mut files[rng.below(shape.files)];
        f.push_str(&line);
        f.push('\n');
    }
    files
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("part-{i}.ndjson"), c))
        .collect()
}

fn texts(recs: &[Rec]) -> Vec<String> {
    recs.iter().map(Rec::text).collect()
}

fn verify_files(files: &[(String, String)], trusted: &[VerifyingKey], live: bool) -> Report {
    let mut v = Verifier::new(trusted, live);
    for (name, content) in files {
        input::feed(&mut v, name, content.as_bytes()).unwrap();
    }
    v.finish()
}

fn verify(lines: Vec<String>, shape: &Shape, trusted: &[VerifyingKey], live: bool) -> Report {
    verify_files(&layout(lines, shape), trusted, live)
}

fn summary(r: &Report) -> String {
    let mut s = lbwitness_trail::verify::human::render(r);
    s.truncate(4000);
    s
}

/// The agent's distinct lines in chain order (duplicates dropped), as
/// indices into `recs`.
fn chain_of(recs: &[Rec], agent: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..recs.len())
        .filter(|&i| recs[i].agent == agent && !recs[i].dup)
        .collect();
    idx.sort_by_key(|&i| recs[i].seq);
    idx
}

/// What an attacker without the agent's key can do after changing the
/// record at `chain[from]`: recompute every hash from there on. Checkpoints
/// are re-signed with `resign` if given (and their head_hash updated).
fn rechain(recs: &mut [Rec], chain: &[usize], from: usize, resign: Option<&SigningKey>) {
    for (k, &i) in chain.iter().enumerate().skip(from) {
        let seq = recs[i].value["event"]["sequence"].as_u64().unwrap();
        let prev: [u8; 32] = if seq == 1 {
            [0; 32]
        } else if k > 0 && recs[chain[k - 1]].value["event"]["sequence"].as_u64() == Some(seq - 1) {
            stored_hash(&recs[chain[k - 1]].value)
        } else if let Some(last) = declared_prev(recs, i) {
            last
        } else {
            stored_hash(&recs[chain[k - 1]].value)
        };
        if let Some(key) = resign.filter(|_| recs[i].checkpoint) {
            recs[i].value["lbwitness"]["checkpoint"]["head_hash"] = json!(hex::encode(prev));
            sign(&mut recs[i].value, key);
        }
        seal(&mut recs[i].value, &prev);
    }
}

/// `hash(n-1)` for record `recs[i]` (numbered `n`) as the trail declares
/// it: its own `previous_run.last_hash` (a restart), or the `last_hash` of
/// a spool gap of its agent declaring `..=n-1`.
fn declared_prev(recs: &[Rec], i: usize) -> Option<[u8; 32]> {
    let hash = |v: &Value| -> Option<[u8; 32]> { hex::decode(v.as_str()?).ok()?.try_into().ok() };
    let seq = recs[i].value["event"]["sequence"].as_u64()?;
    hash(&recs[i].value["lbwitness"]["gap"]["previous_run"]["last_hash"]).or_else(|| {
        recs.iter()
            .filter(|r| r.agent == recs[i].agent)
            .map(|r| &r.value["lbwitness"]["gap"])
            .find(|g| g["last_sequence"].as_u64() == Some(seq - 1) && g.get("last_hash").is_some())
            .and_then(|g| hash(&g["last_hash"]))
    })
}

/// Whether the first `n` lines leave agent `a`'s spool hole (F..=L, gap
/// record G) with records after it but no checkpoint over its gap record:
/// then the trail is incomplete; and under `--live`, whether it still is.
/// With `--live` the hole is undeclared while the gap record is not there
/// yet; once it is, it declares (pending), but a checkpoint after the hole
/// leaves the records from the checkpoint before the hole to F-1
/// uncovered (no longer pending).
fn unsigned_hole(t: &Trail, n: usize, a: usize) -> (bool, bool) {
    let Some((first, last, gap)) = t.spools[a] else {
        return (false, false);
    };
    let cut: Vec<&Rec> = t.recs[..n].iter().filter(|r| r.agent == a).collect();
    let checkpoint_after = |s: u64| cut.iter().any(|r| r.checkpoint && r.seq > s);
    if !cut.iter().any(|r| r.seq > last) || checkpoint_after(gap) {
        return (false, false);
    }
    let gap_there = cut.iter().any(|r| r.seq == gap);
    let before = cut
        .iter()
        .filter(|r| r.checkpoint && r.seq < first)
        .map(|r| r.seq)
        .max();
    let uncovered_before = checkpoint_after(last) && before.is_none_or(|c| c < first - 1);
    (true, !gap_there || uncovered_before)
}

fn no_dups(t: &mut Trail) {
    t.recs.retain(|r| !r.dup);
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn generated_trails_are_intact(shape in shape()) {
        let t = generate(&shape);
        let r = verify(texts(&t.recs), &shape, &t.trusted, false);
        prop_assert_eq!(r.verdict, Verdict::Intact, "{}", summary(&r));
        prop_assert_eq!(r.exit_code, 0);
        prop_assert_eq!(r.agents.len(), shape.agents);
        let dups: u64 = r.agents.iter().map(|a| a.identical_duplicates).sum();
        prop_assert_eq!(dups, shape.duplicates as u64);
        let (crashed, crash_missing) = match shape.restart {
            Restart::Crash { lost, kept } => (lost, if kept { 0 } else { lost }),
            _ => (0, 0),
        };
        let (spooled, spool_missing) = match shape.spool {
            Spool::None => (0, 0),
            Spool::Lost { len, .. } => (len, len),
            Spool::Delivered { count, .. } => (count, 0),
        };
        for a in &r.agents {
            prop_assert_eq!(a.missing_declared.count, crash_missing + spool_missing);
            let declared = |reason: &str| -> u64 {
                a.declared_losses.iter().filter(|l| l.reason == reason).map(|l| l.count).sum()
            };
            prop_assert_eq!(declared("restart"), crashed);
            prop_assert_eq!(declared("spool_full") + declared("spool_corrupt"), spooled);
        }
        let kernel: u64 = r.agents.iter().flat_map(|a| &a.declared_losses)
            .filter(|l| l.source == "kernel").map(|l| l.count).sum();
        let want: u64 = t.recs.iter().filter(|r| !r.dup && r.value["lbwitness"]["gap"]["source"] == "kernel")
            .map(|r| r.value["lbwitness"]["gap"]["count"].as_u64().unwrap()).sum();
        prop_assert_eq!(kernel, want);
        // Under --live too.
        prop_assert_eq!(verify(texts(&t.recs), &shape, &t.trusted, true).verdict, Verdict::Intact);
    }

    #[test]
    fn line_order_carries_no_meaning(shape in shape(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let t = generate(&shape);
        let mut lines = texts(&t.recs);
        let (i, j) = (a.index(lines.len()), b.index(lines.len()));
        lines.swap(i, j);
        let r = verify(lines, &Shape { shuffle: false, ..shape.clone() }, &t.trusted, false);
        prop_assert_eq!(r.verdict, Verdict::Intact, "{}", summary(&r));
    }

    #[test]
    fn a_flipped_byte_is_detected(shape in shape(), line in any::<prop::sample::Index>(),
                                  at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let t = generate(&shape);
        let mut lines = texts(&t.recs);
        let i = line.index(lines.len());
        let mut bytes = lines[i].clone().into_bytes();
        let k = at.index(bytes.len());
        bytes[k] ^= mask;
        // The same JSON value written differently is not a mutation.
        let same_value = serde_json::from_slice::<Value>(&bytes)
            .is_ok_and(|v| v == t.recs[i].value);
        lines[i] = String::from_utf8_lossy(&bytes).into_owned();
        let mutated_is_utf8 = std::str::from_utf8(&bytes).is_ok();
        let files: Vec<(String, String)> = if mutated_is_utf8 {
            layout(lines, &shape)
        } else {
            // Keep the invalid bytes: feed raw.
            let mut content = Vec::new();
            for (n, l) in texts(&t.recs).iter().enumerate() {
                if n == i { content.extend_from_slice(&bytes) } else { content.extend_from_slice(l.as_bytes()) }
                content.push(b'\n');
            }
            let mut v = Verifier::new(&t.trusted, false);
            input::feed(&mut v, "raw.ndjson", &content[..]).unwrap();
            let r = v.finish();
            prop_assert_ne!(r.exit_code, 0, "flip {:#x} at {} of line {}: {}", mask, k, i, summary(&r));
            return Ok(());
        };
        let r = verify_files(&files, &t.trusted, false);
        if same_value {
            prop_assert_eq!(r.exit_code, 0, "{}", summary(&r));
        } else {
            prop_assert_ne!(r.exit_code, 0, "flip {:#x} at {} of line {}: {}", mask, k, i, summary(&r));
        }
    }

    #[test]
    fn a_deleted_line_is_detected(shape in shape(), line in any::<prop::sample::Index>()) {
        let t = generate(&shape);
        let mut recs = t.recs.clone();
        let i = line.index(recs.len());
        let gone = recs.remove(i);
        let still_there = recs.iter().any(|r| r.agent == gone.agent && r.seq == gone.seq);
        // A record inside a declared range is indistinguishable from a
        // declared loss when the range may hold that many lost records and
        // its neighbours stay covered: they are the range's ends (bridged
        // by the gap's hashes) or checkpoints (covered by their signature).
        let undetectable = gone.declared.is_some_and(|(first, last, count)| {
            let (agent, seq) = (gone.agent, gone.seq);
            let at = |s: u64| recs.iter().find(|r| r.agent == agent && r.seq == s);
            let missing = (first..=last).filter(|&s| at(s).is_none()).count() as u64;
            missing <= count
                && (seq == first || at(seq - 1).is_some_and(|r| r.checkpoint))
                && (seq == last || at(seq + 1).is_some_and(|r| r.checkpoint))
        });
        let r = verify(texts(&recs), &shape, &t.trusted, false);
        let want = if still_there || undetectable {
            0
        } else if gone.rotation {
            3
        } else {
            4
        };
        prop_assert_eq!(r.exit_code, want, "deleted {} of agent {}: {}", gone.seq, gone.agent, summary(&r));
    }

    #[test]
    fn exchanged_sequences_are_detected(shape in shape(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let mut t = generate(&shape);
        no_dups(&mut t);
        let chain = chain_of(&t.recs, 0);
        let (i, j) = (chain[a.index(chain.len())], chain[b.index(chain.len())]);
        prop_assume!(i != j);
        let (si, sj) = (t.recs[i].seq, t.recs[j].seq);
        t.recs[i].value["event"]["sequence"] = json!(sj);
        t.recs[j].value["event"]["sequence"] = json!(si);
        let r = verify(texts(&t.recs), &shape, &t.trusted, false);
        prop_assert_eq!(r.exit_code, 3, "{}", summary(&r));
    }

    #[test]
    fn a_differing_duplicate_is_detected(shape in shape(), pick in any::<prop::sample::Index>(), rehash in any::<bool>()) {
        let t = generate(&shape);
        let mut recs = t.recs.clone();
        let chain = chain_of(&recs, 0);
        let k = pick.index(chain.len());
        let mut forged = recs[chain[k]].clone();
        forged.value["@timestamp"] = json!("2030-01-01T00:00:00Z");
        if rehash {
            let prev = if k == 0 || recs[chain[k - 1]].seq + 1 != forged.seq {
                if forged.seq == 1 { [0; 32] } else {
                    // after a loss: chain from the last_hash declared
                    declared_prev(&recs, chain[k]).unwrap()
                }
            } else {
                stored_hash(&recs[chain[k - 1]].value)
            };
            if forged.checkpoint {
                sign(&mut forged.value, &SigningKey::from_bytes(&[9; 32]));
            }
            seal(&mut forged.value, &prev);
        }
        recs.push(forged);
        let r = verify(texts(&recs), &shape, &t.trusted, false);
        prop_assert_eq!(r.exit_code, 3, "{}", summary(&r));
    }

    #[test]
    fn truncation_is_detected(shape in shape(), cut in any::<prop::sample::Index>(), mid_line in any::<bool>()) {
        let mut t = generate(&shape);
        no_dups(&mut t);
        let lines = texts(&t.recs);
        let n = cut.index(lines.len());
        let mut content: String = lines[..n].iter().map(|l| format!("{l}\n")).collect();
        if mid_line {
            let l = &lines[n];
            let mut half = l.len() / 2;
            while !l.is_char_boundary(half) {
                half -= 1;
            }
            content.push_str(&l[..half]);
        }
        // An agent cut right after a clean stop's final checkpoint has a
        // complete trail: that of a run that stopped and never restarted.
        let open = (0..shape.agents).any(|a| {
            t.recs[..n].iter().rev().find(|r| r.agent == a).is_some_and(|last| {
                !(last.checkpoint && last.value["lbwitness"]["checkpoint"]["final"] == true)
            })
        });
        let (hole, hole_live) = if matches!(shape.spool, Spool::Lost { .. }) {
            (0..shape.agents).map(|a| unsigned_hole(&t, n, a)).fold((false, false), |x, y| (x.0 | y.0, x.1 | y.1))
        } else {
            (false, false)
        };
        let files = [("trail.ndjson".to_owned(), content)];
        let r = verify_files(&files, &t.trusted, false);
        let want = if mid_line { 3 } else if n == 0 || open || hole { 4 } else { 0 };
        prop_assert_eq!(r.exit_code, want, "{}", summary(&r));
        // Under --live an open end, and a line still being written, are fine.
        let live = verify_files(&files, &t.trusted, true);
        prop_assert_eq!(live.exit_code, if n == 0 || hole_live { 4 } else { 0 }, "{}", summary(&live));
    }

    #[test]
    fn forged_records_are_detected(shape in shape(), pick in any::<prop::sample::Index>(), append in any::<bool>()) {
        let mut t = generate(&shape);
        no_dups(&mut t);
        let chain = chain_of(&t.recs, 0);
        // The agent-start record, turned into a flow from elsewhere.
        let mut forged = t.recs[chain[0]].clone();
        forged.value["event"]["action"] = json!("flow");
        forged.value["source"] = json!({"ip": "198.51.100.7", "port": 4444});
        if append {
            let last = &t.recs[*chain.last().unwrap()];
            forged.seq = last.seq + 1;
            forged.value["event"]["sequence"] = json!(forged.seq);
            seal(&mut forged.value, &stored_hash(&last.value));
            t.recs.push(forged);
            let r = verify(texts(&t.recs), &shape, &t.trusted, false);
            prop_assert_eq!(r.exit_code, 4, "{}", summary(&r));
        } else {
            // Insert at position k of the chain, renumber and re-hash after.
            let k = 1 + pick.index(chain.len() - 1);
            let seq = t.recs[chain[k]].seq;
            forged.seq = seq;
            forged.value["event"]["sequence"] = json!(seq);
            for &i in &chain[k..] {
                t.recs[i].seq += 1;
                let s = t.recs[i].seq;
                t.recs[i].value["event"]["sequence"] = json!(s);
            }
            t.recs.push(forged);
            let mut new_chain = chain[..k].to_vec();
            new_chain.push(t.recs.len() - 1);
            new_chain.extend_from_slice(&chain[k..]);
            rechain(&mut t.recs, &new_chain, k, None);
            let r = verify(texts(&t.recs), &shape, &t.trusted, false);
            prop_assert_eq!(r.exit_code, 3, "{}", summary(&r));
        }
    }

    #[test]
    fn a_replayed_checkpoint_is_detected(shape in shape(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(), rehash in any::<bool>()) {
        let mut t = generate(&shape);
        no_dups(&mut t);
        let chain = chain_of(&t.recs, 0);
        let cps: Vec<usize> = (0..chain.len()).filter(|&k| t.recs[chain[k]].checkpoint).collect();
        if cps.len() < 2 {
            return Ok(());
        }
        let x = a.index(cps.len() - 1);
        let y = x + 1 + b.index(cps.len() - 1 - x);
        let (old, later) = (cps[x], cps[y]);
        if rehash {
            // The old checkpoint object in the later record, chain re-hashed.
            let cp = t.recs[chain[old]].value["lbwitness"]["checkpoint"].clone();
            t.recs[chain[later]].value["lbwitness"]["checkpoint"] = cp;
            rechain(&mut t.recs, &chain, later, None);
            let r = verify(texts(&t.recs), &shape, &t.trusted, false);
            prop_assert_eq!(r.exit_code, 3, "{}", summary(&r));
        } else {
            // The old line verbatim where the later one was.
            t.recs[chain[later]] = t.recs[chain[old]].clone();
            let r = verify(texts(&t.recs), &shape, &t.trusted, false);
            prop_assert_ne!(r.exit_code, 0, "{}", summary(&r));
        }
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_detected(shape in shape(), pick in any::<prop::sample::Index>(), which in 0usize..3) {
        let mut t = generate(&shape);
        no_dups(&mut t);
        let chain = chain_of(&t.recs, 0);
        let cps: Vec<usize> = (0..chain.len()).filter(|&k| t.recs[chain[k]].checkpoint).collect();
        let first_cp = cps[pick.index(cps.len())];
        let rotated_at = (0..chain.len()).find(|&k| t.recs[chain[k]].rotation);
        let key = match which {
            // Another agent's rotated-in key: trusted for that agent only.
            0 if shape.agents > 1 && shape.rotate => t.keys[1].1.clone().unwrap(),
            // This agent's own rotated-out key, after the rotation.
            1 if rotated_at.is_some_and(|r| first_cp > r) => t.keys[0].0.clone(),
            _ => SigningKey::from_bytes(&[42; 32]),
        };
        rechain(&mut t.recs, &chain, first_cp, Some(&key));
        let r = verify(texts(&t.recs), &shape, &t.trusted, false);
        prop_assert_eq!(r.exit_code, 3, "{}", summary(&r));
        prop_assert!(r.agents.iter().any(|a| a.checkpoints.untrusted.count > 0), "{}", summary(&r));
    }
}

// ---- the command line ----

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lbw-verify-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `lbwitness-verify` (the same command as `lbwitness verify`).
fn verifier(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lbwitness-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn write_trail(dir: &Path, shape: &Shape, recs: &[Rec]) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    for (i, (name, content)) in layout(texts(recs), shape).into_iter().enumerate() {
        let path = if i % 2 == 0 {
            dir.join(name)
        } else {
            dir.join("sub").join(name)
        };
        fs::write(path, content).unwrap();
    }
}

#[test]
fn the_command_line_uses_the_documented_exit_codes() {
    use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};

    let shape = Shape {
        seed: 7,
        agents: 2,
        records: 20,
        every: 4,
        rotate: true,
        restart: Restart::Crash {
            lost: 2,
            kept: false,
        },
        spool: Spool::Lost { len: 3, delay: 1 },
        duplicates: 2,
        shuffle: true,
        files: 3,
    };
    let t = generate(&shape);
    let tmp = TempDir::new("cli");
    let trail = tmp.0.join("trail");
    write_trail(&trail, &shape, &t.recs);
    let pem = tmp.0.join("a.pem");
    fs::write(
        &pem,
        t.trusted[0].to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    let hex_b = hex::encode(t.trusted[1].as_bytes());
    let (pem, trail_s) = (pem.to_str().unwrap(), trail.to_str().unwrap());

    let (code, out) = verifier(&["--key", pem, "--key", &hex_b, trail_s]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: INTACT"), "{out}");

    let (code, out) = verifier(&["--json", "--key", pem, "--key", &hex_b, trail_s]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["verdict"], "intact");
    assert_eq!(report["agents"].as_array().unwrap().len(), 2);
    assert_eq!(report["agents"][0]["missing_declared"]["count"], 5);

    // One agent's key only: the other's checkpoints are untrusted.
    let (code, out) = verifier(&["--key", pem, trail_s]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("UNTRUSTED CHECKPOINTS"), "{out}");

    // An open end: 4, or 0 with --live.
    let tail = TempDir::new("cli-tail");
    let mut recs = t.recs.clone();
    let last = recs.iter().filter(|r| r.agent == 0).map(|r| r.seq).max();
    recs.retain(|r| !(r.agent == 0 && Some(r.seq) == last));
    write_trail(&tail.0, &shape, &recs);
    let tail_s = tail.0.to_str().unwrap();
    assert_eq!(verifier(&["--key", pem, "--key", &hex_b, tail_s]).0, 4);
    assert_eq!(
        verifier(&["--live", "--key", pem, "--key", &hex_b, tail_s]).0,
        0
    );

    // Unreadable input or key: 1; bad command line: 2.
    assert_eq!(verifier(&["--key", pem, "/nonexistent/trail"]).0, 1);
    assert_eq!(verifier(&["--key", "/nonexistent/key.pem", trail_s]).0, 1);
    assert_eq!(verifier(&[]).0, 2);
    assert_eq!(verifier(&["--bogus", trail_s]).0, 2);
}

#[test]
fn a_badly_broken_trail_lists_a_capped_number_of_problems() {
    let shape = Shape {
        seed: 3,
        agents: 1,
        records: 200,
        every: 1000,
        rotate: false,
        restart: Restart::None,
        spool: Spool::None,
        duplicates: 0,
        shuffle: false,
        files: 1,
    };
    let mut t = generate(&shape);
    for r in t.recs.iter_mut().filter(|r| !r.checkpoint) {
        r.value["@timestamp"] = json!("tampered");
    }
    let r = verify(texts(&t.recs), &shape, &t.trusted, false);
    let a = &r.agents[0];
    assert_eq!(r.exit_code, 3);
    assert!(a.not_linked.count > 150);
    assert_eq!(a.not_linked.items.len(), 20);
    assert!(summary(&r).contains("... and"));
}
