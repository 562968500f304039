//! Unit tests of the verifier's verdicts on small hand-built trails.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Report, Verdict, Verifier, human, input, keys};
use crate::jcs;

mod spool;

/// One agent writing a trail the way docs/AUDIT.md says.
struct Agent {
    id: &'static str,
    key: SigningKey,
    seq: u64,
    head: [u8; 32],
    last_checkpoint: u64,
    lines: Vec<String>,
    /// `hashes[n - 1]`: the chain hash of record `n`, written or not.
    hashes: Vec<[u8; 32]>,
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn key_id(k: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(k.as_bytes()))
}

fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    jcs::to_canonical_vec(v, &mut out).unwrap();
    out
}

fn seal(v: &mut Value, prev: &[u8; 32]) -> [u8; 32] {
    v["event"].as_object_mut().unwrap().remove("hash");
    let hash: [u8; 32] = Sha256::new()
        .chain_update(prev)
        .chain_update(canonical(v))
        .finalize()
        .into();
    v["event"]["hash"] = json!(hex::encode(hash));
    hash
}

fn sign(v: &mut Value, key: &SigningKey) {
    let cp = v["lbwitness"]["checkpoint"].as_object_mut().unwrap();
    cp.remove("signature");
    cp.insert("key_id".into(), json!(key_id(&key.verifying_key())));
    let mut message = b"lbwitness-checkpoint-v1\n".to_vec();
    v["event"].as_object_mut().unwrap().remove("hash");
    message.extend(canonical(v));
    v["lbwitness"]["checkpoint"]["signature"] = json!(hex::encode(key.sign(&message).to_bytes()));
}

impl Agent {
    fn new(id: &'static str, key: SigningKey) -> Self {
        Self {
            id,
            key,
            seq: 0,
            head: [0; 32],
            last_checkpoint: 0,
            lines: Vec::new(),
            hashes: Vec::new(),
        }
    }

    fn base(&self, action: &str) -> Value {
        json!({"agent": {"id": self.id}, "event": {"action": action, "sequence": self.seq + 1}})
    }

    fn append(&mut self, mut v: Value) {
        self.seq += 1;
        self.head = seal(&mut v, &self.head);
        self.hashes.push(self.head);
        self.lines.push(String::from_utf8(canonical(&v)).unwrap());
    }

    fn flow(&mut self) {
        let mut v = self.base("flow");
        v["source"] = json!({"bytes": (self.seq + 1) * 1480, "ip": "192.0.2.1"});
        self.append(v);
    }

    fn flows(&mut self, n: usize) {
        for _ in 0..n {
            self.flow();
        }
    }

    /// A checkpoint from `first` (default: after the previous one).
    fn checkpoint_with(
        &mut self,
        first: Option<u64>,
        is_final: bool,
        next: Option<&VerifyingKey>,
        tweak: impl FnOnce(&mut Value),
    ) {
        let mut v = self.base("checkpoint");
        let first = first.unwrap_or(self.last_checkpoint + 1);
        v["lbwitness"] = json!({"checkpoint": {"count": self.seq + 1 - first, "final": is_final,
            "first_sequence": first, "head_hash": hex::encode(self.head), "last_sequence": self.seq}});
        if let Some(n) = next {
            v["lbwitness"]["checkpoint"]["next_key"] =
                json!({"key_id": key_id(n), "public_key": hex::encode(n.as_bytes())});
        }
        tweak(&mut v);
        sign(&mut v, &self.key);
        self.append(v);
        self.last_checkpoint = self.seq;
    }

    fn checkpoint(&mut self, is_final: bool) {
        self.checkpoint_with(None, is_final, None, |_| {});
    }

    fn gap(&mut self, source: &str, reason: &str, count: u64) {
        let mut v = self.base("gap");
        v["lbwitness"] = json!({"gap": {"count": count, "reason": reason, "source": source}});
        self.append(v);
    }

    /// A crash after `lost` records numbered but never written, then the
    /// restart record.
    fn crash(&mut self, lost: usize) {
        let durable = self.seq;
        let written = self.lines.len();
        self.flows(lost);
        self.lines.truncate(written);
        let mut v = self.base("gap");
        v["lbwitness"] = json!({"gap": {"count": lost, "first_sequence": durable + 1,
            "last_sequence": self.seq, "reason": "restart", "source": "agent",
            "previous_run": {"clean": false, "durable_sequence": durable,
                             "last_hash": hex::encode(self.head), "last_sequence": self.seq}}});
        self.append(v);
    }
}

fn verify(files: &[(&str, Vec<String>)], keys: &[VerifyingKey], live: bool) -> Report {
    let mut v = Verifier::new(keys, live);
    for (name, lines) in files {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        input::feed(&mut v, name, text.as_bytes()).unwrap();
    }
    v.finish()
}

fn one(lines: Vec<String>, keys: &[VerifyingKey]) -> Report {
    verify(&[("t.ndjson", lines)], keys, false)
}

fn trail() -> Agent {
    let mut a = Agent::new("a1", key(1));
    a.flows(9);
    a.checkpoint(false);
    a.flows(5);
    a.gap("kernel", "ringbuf_reserve_failed", 7);
    a.gap("kernel", "ringbuf_reserve_failed", 5);
    a.flows(3);
    a.checkpoint(true);
    a
}

#[test]
fn an_intact_trail_in_any_order_and_split() {
    let a = trail();
    let k = [a.key.verifying_key()];
    let r = one(a.lines.clone(), &k);
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    let agent = &r.agents[0];
    assert_eq!(
        (agent.first_sequence, agent.last_sequence, agent.records),
        (1, 21, 21)
    );
    assert_eq!((agent.checkpoints.total, agent.checkpoints.valid), (2, 2));
    assert_eq!(agent.declared_losses.len(), 1);
    assert_eq!(
        (
            agent.declared_losses[0].count,
            agent.declared_losses[0].records
        ),
        (12, 2)
    );

    let mut reversed = a.lines.clone();
    reversed.reverse();
    let (odd, even): (Vec<_>, Vec<_>) = a
        .lines
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 1);
    let strip = |v: Vec<(usize, String)>| v.into_iter().map(|(_, l)| l).collect::<Vec<_>>();
    for r2 in [
        one(reversed, &k),
        verify(&[("x", strip(odd)), ("y", strip(even))], &k, false),
    ] {
        assert_eq!(r2.verdict, Verdict::Intact, "{}", human::render(&r2));
        assert_eq!(
            serde_json::to_value(&r2.agents).unwrap(),
            serde_json::to_value(&r.agents).unwrap()
        );
    }
}

#[test]
fn lines_a_collector_reformatted_still_verify() {
    let a = trail();
    let reformatted: Vec<String> = a
        .lines
        .iter()
        .map(|l| {
            // Members in reverse order, spaces, a needless escape.
            let v: Value = serde_json::from_str(l).unwrap();
            let members: Vec<String> = v
                .as_object()
                .unwrap()
                .iter()
                .rev()
                .map(|(k, v)| {
                    format!(
                        "{} : {}",
                        serde_json::to_string(k).unwrap(),
                        serde_json::to_string(v).unwrap()
                    )
                })
                .collect();
            format!(" {{ {} }}\r", members.join(" , ")).replace("192.0.2.1", "192.0.2\\u002e1")
        })
        .collect();
    let r = one(reformatted, &[a.key.verifying_key()]);
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
}

#[test]
fn unparsable_lines_are_tampering_with_their_place() {
    let a = trail();
    let mut lines = a.lines.clone();
    let bad = [
        "not json",
        "[1,2]",
        r#"{"agent":{"id":"a1"},"agent":{"id":"a1"},"event":{"hash":"00","sequence":3}}"#,
        r#"{"event":{"hash":"0000000000000000000000000000000000000000000000000000000000000000","sequence":3}}"#,
        r#"{"agent":{"id":"a1"},"event":{"hash":"0000000000000000000000000000000000000000000000000000000000000000","sequence":0}}"#,
        r#"{"agent":{"id":"a1"},"event":{"hash":"00000000000000000000000000000000000000000000000000000000000000AA","sequence":3}}"#,
        r#"{"agent":{"id":"a1"},"event":{"sequence":3}}"#,
    ];
    lines.extend(bad.iter().map(|s| s.to_string()));
    lines.push("   ".into());
    let r = one(lines, &[a.key.verifying_key()]);
    assert_eq!(r.verdict, Verdict::Tampered);
    assert_eq!(r.unparsable.count, bad.len() as u64);
    assert_eq!(r.blank_lines, 1);
    assert_eq!(
        (
            r.unparsable.items[0].file.as_str(),
            r.unparsable.items[0].line
        ),
        ("t.ndjson", 22)
    );
    let errors: Vec<&str> = r
        .unparsable
        .items
        .iter()
        .map(|i| i.error.as_str())
        .collect();
    assert!(errors[0].starts_with("not valid JSON"), "{errors:?}");
    assert_eq!(errors[1], "not a JSON object");
    assert!(errors[2].contains("duplicate member name"), "{errors:?}");
    assert_eq!(errors[3], "agent.id is missing");
    assert!(errors[4].starts_with("event.sequence is not"), "{errors:?}");
    assert!(errors[5].starts_with("event.hash is not"), "{errors:?}");
    assert_eq!(errors[6], "event.hash is missing");
}

#[test]
fn a_modified_record_breaks_its_link_and_its_successor_s() {
    let a = trail();
    let mut lines = a.lines.clone();
    lines[4] = lines[4].replace("\"bytes\":7400", "\"bytes\":7401");
    let r = one(lines, &[a.key.verifying_key()]);
    let agent = &r.agents[0];
    assert_eq!(r.exit_code, 3);
    assert_eq!(agent.not_linked.count, 1);
    assert_eq!(
        (
            agent.not_linked.items[0].sequence,
            agent.not_linked.items[0].line
        ),
        (5, 5)
    );
    // Records 1..=5 are no longer bound to the checkpoint at 10.
    assert_eq!(agent.uncovered.ranges, vec![[1, 5]]);
}

#[test]
fn duplicates_identical_are_benign_differing_are_reported_with_both_places() {
    let a = trail();
    let mut lines = a.lines.clone();
    lines.push(lines[3].clone());
    lines.push(lines[12].clone());
    let k = [a.key.verifying_key()];
    let r = one(lines.clone(), &k);
    assert_eq!(
        (r.verdict, r.agents[0].identical_duplicates),
        (Verdict::Intact, 2)
    );

    // Same stored hash, different body: the copy does not link.
    lines.push(lines[6].replace("192.0.2.1", "192.0.2.9"));
    let r = one(lines, &k);
    let d = &r.agents[0].differing_duplicates;
    assert_eq!((r.verdict, d.count), (Verdict::Tampered, 1));
    let places: Vec<u64> = d.items[0].copies.iter().map(|c| c.line).collect();
    assert_eq!(places, vec![7, 24]);
}

#[test]
fn unlinkable_copies_are_compared_by_body() {
    let a = trail();
    let mut lines = a.lines.clone();
    let six = lines[5].clone();
    lines.remove(4); // record 5: now 6 has no predecessor
    lines.push(six.clone());
    let k = [a.key.verifying_key()];
    let r = one(lines.clone(), &k);
    let agent = &r.agents[0];
    assert_eq!(
        (r.verdict, agent.identical_duplicates),
        (Verdict::Incomplete, 1)
    );
    assert_eq!(agent.missing_undeclared.ranges, vec![[5, 5]]);
    assert_eq!(agent.uncovered.ranges, vec![[1, 4], [6, 6]]);
    lines.push(six.replace("192.0.2.1", "192.0.2.9"));
    let r = one(lines, &k);
    assert_eq!(
        (r.verdict, r.agents[0].differing_duplicates.count),
        (Verdict::Tampered, 1)
    );
}

#[test]
fn a_crash_declares_its_possible_loss_and_links_through_last_hash() {
    let mut a = Agent::new("a1", key(1));
    a.flows(4);
    a.checkpoint(false);
    a.crash(3);
    a.flows(2);
    a.checkpoint(true);
    let k = [a.key.verifying_key()];
    let r = one(a.lines.clone(), &k);
    let agent = &r.agents[0];
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    assert_eq!(agent.missing_declared.ranges, vec![[6, 8]]);
    assert_eq!(agent.declared_losses[0].reason, "restart");
    // Without its restart record, the loss is undeclared.
    let mut lines = a.lines.clone();
    lines.remove(5);
    let r = one(lines, &k);
    assert_eq!(r.verdict, Verdict::Incomplete);
    assert_eq!(r.agents[0].missing_undeclared.ranges, vec![[6, 9]]);
}

#[test]
fn last_hash_links_only_the_record_after_s() {
    let mut a = Agent::new("a1", key(1));
    a.flows(2);
    a.checkpoint(false);
    a.seq += 1; // record 4 never written
    let mut v = a.base("gap");
    // Claims S = 7 while it is record 5: no bridge over the hole.
    v["lbwitness"] = json!({"gap": {"count": 0, "reason": "restart", "source": "agent",
        "previous_run": {"clean": true, "durable_sequence": 7, "last_hash": hex::encode(a.head), "last_sequence": 7}}});
    a.append(v);
    a.flows(1);
    a.checkpoint(true);
    let r = one(a.lines.clone(), &[a.key.verifying_key()]);
    assert_eq!(r.agents[0].missing_undeclared.ranges, vec![[4, 4]]);
    assert_eq!(r.agents[0].uncovered.ranges, vec![[5, 5]]);
    assert_eq!(r.verdict, Verdict::Incomplete);
}

#[test]
fn checkpoint_consistency() {
    let k = |a: &Agent| [a.key.verifying_key()];
    let status = |r: &Report| {
        r.agents[0]
            .checkpoints
            .invalid
            .items
            .iter()
            .map(|i| i.status)
            .collect::<Vec<_>>()
    };

    // head_hash of another record.
    let mut a = Agent::new("a1", key(1));
    a.flows(3);
    a.checkpoint_with(None, true, None, |v| {
        v["lbwitness"]["checkpoint"]["head_hash"] = json!("ab".repeat(32))
    });
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(
        (r.verdict, status(&r)),
        (Verdict::Tampered, vec!["inconsistent"])
    );

    // count that does not match.
    let mut a = Agent::new("a1", key(1));
    a.flows(3);
    a.checkpoint_with(None, true, None, |v| {
        v["lbwitness"]["checkpoint"]["count"] = json!(2)
    });
    assert_eq!(status(&one(a.lines.clone(), &k(&a))), vec!["inconsistent"]);

    // A hole after the previous checkpoint; an overlap is fine (a crash).
    let mut a = Agent::new("a1", key(1));
    a.flows(3);
    a.checkpoint(false);
    a.flows(3);
    a.checkpoint_with(Some(6), true, None, |_| {});
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(status(&r), vec!["inconsistent"]);
    assert!(
        r.agents[0].checkpoints.invalid.items[0]
            .detail
            .contains("hole")
    );
    let mut a = Agent::new("a1", key(1));
    a.flows(3);
    a.checkpoint(false);
    a.flows(3);
    a.checkpoint_with(Some(2), true, None, |_| {});
    assert_eq!(one(a.lines.clone(), &k(&a)).verdict, Verdict::Intact);

    // An interval checkpoint with nothing new: count 0.
    let mut a = Agent::new("a1", key(1));
    a.flows(3);
    a.checkpoint(false);
    a.checkpoint(false);
    a.checkpoint(true);
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(
        (r.verdict, r.agents[0].checkpoints.valid),
        (Verdict::Intact, 3)
    );

    // A signature over other bytes; a malformed checkpoint.
    let mut a = Agent::new("a1", key(1));
    a.flows(3);
    a.checkpoint(true);
    let mut lines = a.lines.clone();
    let last: Value = serde_json::from_str(&lines[3]).unwrap();
    let mut forged = last.clone();
    forged["lbwitness"]["checkpoint"]["final"] = json!(false);
    seal(&mut forged, &a.head_before_last());
    lines[3] = String::from_utf8(canonical(&forged)).unwrap();
    let r = one(lines.clone(), &k(&a));
    assert_eq!(status(&r), vec!["bad-signature"]);
    let mut bad = last;
    bad["lbwitness"]["checkpoint"]["count"] = json!("three");
    seal(&mut bad, &a.head_before_last());
    lines[3] = String::from_utf8(canonical(&bad)).unwrap();
    assert_eq!(status(&one(lines, &k(&a))), vec!["malformed"]);
}

impl Agent {
    /// The stored hash of the record before the last line.
    fn head_before_last(&self) -> [u8; 32] {
        let v: Value = serde_json::from_str(&self.lines[self.lines.len() - 2]).unwrap();
        hex::decode(v["event"]["hash"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }
}

#[test]
fn keys_rotate_and_the_old_key_is_then_refused() {
    let (k1, k2) = (key(1), key(2));
    let mut a = Agent::new("a1", k1.clone());
    a.flows(3);
    a.checkpoint_with(None, false, Some(&k2.verifying_key()), |_| {});
    a.key = k2.clone();
    a.flows(3);
    a.checkpoint(false);
    let intact = a.lines.clone();
    let trusted = [k1.verifying_key()];
    let r = one(intact.clone(), &trusted);
    assert_eq!(r.agents[0].checkpoints.valid, 2, "{}", human::render(&r));

    // A later checkpoint signed with the rotated-out key.
    a.key = k1.clone();
    a.flows(1);
    a.checkpoint(true);
    let r = one(a.lines.clone(), &trusted);
    let u = &r.agents[0].checkpoints.untrusted;
    assert_eq!(
        (r.verdict, u.count, u.items[0].status),
        (Verdict::Tampered, 1, "rotated-out-key")
    );

    // Without the first key nothing is trusted; with only the second, the
    // checkpoints before the rotation are not.
    let r = one(intact.clone(), &[]);
    assert_eq!(r.agents[0].checkpoints.untrusted.count, 2);
    let r = one(intact, &[k2.verifying_key()]);
    assert_eq!(r.agents[0].checkpoints.untrusted.count, 1);
    assert_eq!(
        r.agents[0].checkpoints.untrusted.items[0].status,
        "unknown-key"
    );

    // next_key whose key_id is not its key's.
    let mut b = Agent::new("b", k1.clone());
    b.flows(1);
    b.checkpoint_with(None, true, Some(&k2.verifying_key()), |v| {
        v["lbwitness"]["checkpoint"]["next_key"]["key_id"] = json!("00".repeat(32));
    });
    let r = one(b.lines, &trusted);
    assert_eq!(r.agents[0].checkpoints.invalid.items[0].status, "malformed");
}

#[test]
fn an_open_end_is_incomplete_unless_live() {
    let mut a = trail();
    a.flows(2);
    let k = [a.key.verifying_key()];
    let r = one(a.lines.clone(), &k);
    let agent = &r.agents[0];
    assert_eq!((r.verdict, agent.open_end), (Verdict::Incomplete, true));
    assert_eq!(agent.uncovered.ranges, vec![[22, 23]]);
    let mut lines = a.lines.clone();
    let partial = lines.pop().unwrap();
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    text.push_str(&partial[..40]);
    let mut v = Verifier::new(&k, true);
    input::feed(&mut v, "live.ndjson", text.as_bytes()).unwrap();
    let r = v.finish();
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    assert_eq!(r.agents[0].pending.ranges, vec![[22, 22]]);
    assert_eq!(
        (r.partial_lines.count, r.partial_lines.items[0].line),
        (1, 23)
    );
    // Without --live the cut line is damage.
    let mut v = Verifier::new(&k, false);
    input::feed(&mut v, "t", text.as_bytes()).unwrap();
    assert_eq!(v.finish().verdict, Verdict::Tampered);
}

#[test]
fn agents_are_judged_apart() {
    let a = trail();
    let mut b = Agent::new("b2", key(2));
    b.flows(2);
    let mut lines = a.lines.clone();
    lines.extend(b.lines);
    let r = one(lines, &[a.key.verifying_key(), key(2).verifying_key()]);
    let verdicts: Vec<(&str, Verdict)> = r
        .agents
        .iter()
        .map(|x| (x.agent_id.as_str(), x.verdict))
        .collect();
    assert_eq!(
        verdicts,
        vec![("a1", Verdict::Intact), ("b2", Verdict::Incomplete)]
    );
    assert_eq!(r.verdict, Verdict::Incomplete);
}

#[test]
fn no_records_proves_nothing() {
    let r = verify(&[("empty", vec![])], &[], false);
    assert_eq!((r.verdict, r.exit_code), (Verdict::Incomplete, 4));
    assert!(human::render(&r).contains("no records found"));
}

#[test]
fn the_json_report_has_the_documented_shape() {
    let a = trail();
    let r = one(a.lines.clone(), &[a.key.verifying_key()]);
    let v = serde_json::to_value(&r).unwrap();
    for field in [
        "verdict",
        "exit_code",
        "live",
        "files",
        "lines",
        "blank_lines",
        "partial_lines",
        "unparsable",
        "agents",
    ] {
        assert!(v.get(field).is_some(), "{field}");
    }
    let agent = &v["agents"][0];
    for field in [
        "agent_id",
        "verdict",
        "first_sequence",
        "last_sequence",
        "records",
        "lines",
        "identical_duplicates",
        "differing_duplicates",
        "not_linked",
        "missing_declared",
        "missing_undeclared",
        "checkpoints",
        "latest_valid_checkpoint",
        "uncovered",
        "pending",
        "open_end",
        "invalid_gaps",
        "declared_losses",
    ] {
        assert!(agent.get(field).is_some(), "{field}");
    }
    assert_eq!(agent.as_object().unwrap().len(), 18);
    assert_eq!(v["verdict"], "intact");
    assert_eq!(
        agent["checkpoints"],
        json!({"total": 2, "valid": 2,
        "invalid": {"count": 0, "items": []}, "untrusted": {"count": 0, "items": []}})
    );
    assert_eq!(
        agent["missing_declared"],
        json!({"count": 0, "range_count": 0, "ranges": []})
    );
}

#[test]
fn a_gap_record_that_contradicts_itself_is_reported() {
    let mut a = Agent::new("a1", key(1));
    a.flows(2);
    let mut v = a.base("gap");
    v["lbwitness"] = json!({"gap": {"count": 5, "first_sequence": 1, "last_sequence": 2,
        "reason": "restart", "source": "agent",
        "previous_run": {"clean": false, "durable_sequence": 0, "last_hash": hex::encode(a.head), "last_sequence": 2}}});
    a.append(v);
    a.gap("kernel", "flow_insert_failed", 1);
    a.checkpoint(true);
    let r = one(a.lines.clone(), &[a.key.verifying_key()]);
    let agent = &r.agents[0];
    assert_eq!(
        (r.verdict, agent.invalid_gaps.count),
        (Verdict::Incomplete, 1)
    );
    assert!(
        agent.invalid_gaps.items[0]
            .detail
            .contains("declares 1..2 (count 5)")
    );
    assert_eq!(agent.declared_losses.len(), 1);
}

#[test]
fn keys_bound_to_an_agent_are_trusted_for_it_only() {
    let (k1, k2) = (key(1), key(2));
    let run = |a2_key: &SigningKey| {
        let mut a = Agent::new("a1", k1.clone());
        a.flows(3);
        a.checkpoint(true);
        let mut b = Agent::new("a2", a2_key.clone());
        b.flows(3);
        b.checkpoint(true);
        let mut v = Verifier::new(&[], false);
        v.trust_for("a1", k1.verifying_key());
        v.trust_for("a2", k2.verifying_key());
        let text: String = a
            .lines
            .iter()
            .chain(&b.lines)
            .map(|l| format!("{l}\n"))
            .collect();
        input::feed(&mut v, "t.ndjson", text.as_bytes()).unwrap();
        v.finish()
    };
    assert_eq!(run(&k2).verdict, Verdict::Intact);
    // a2's checkpoints signed with a1's key: valid signatures, wrong agent.
    let r = run(&k1);
    assert_eq!(r.verdict, Verdict::Tampered, "{}", human::render(&r));
    let a2 = r.agents.iter().find(|a| a.agent_id == "a2").unwrap();
    assert_eq!(a2.checkpoints.untrusted.count, 1);
}

#[test]
fn agent_key_arguments() {
    let id = "0c988380-51f7-4f0b-9894-7275e8fd63f0";
    assert_eq!(
        keys::split_agent(&format!("{id}=/k.pub")),
        Some((id, "/k.pub"))
    );
    assert_eq!(keys::split_agent("/a=b/k.pub"), None);
    assert_eq!(keys::split_agent("/k.pub"), None);
}
