//! Spool losses: gap records with a declared range, `before_hash` and
//! `last_hash` (docs/AUDIT.md, "Gaps: declared loss").

use serde_json::{Value, json};

use super::{Agent, human, key, one, verify};
use crate::verify::{Verdict, report::Ranges};

impl Agent {
    /// The chain hash of record `seq` (zero for 0), in hex.
    fn hash_hex(&self, seq: u64) -> String {
        match seq {
            0 => "00".repeat(32),
            n => hex::encode(self.hashes[n as usize - 1]),
        }
    }

    /// Removes the lines of the sequences of `first..=last` that `lost`
    /// picks, then appends a spool gap declaring the range (`count` lost)
    /// with both hashes; `tweak` edits the gap before it is sealed.
    fn spool_gap(
        &mut self,
        (first, last): (u64, u64),
        count: u64,
        lost: impl Fn(u64) -> bool,
        tweak: impl FnOnce(&mut Value),
    ) {
        let seq_of = |l: &String| {
            serde_json::from_str::<Value>(l).unwrap()["event"]["sequence"]
                .as_u64()
                .unwrap()
        };
        self.lines.retain(|l| {
            let s = seq_of(l);
            !((first..=last).contains(&s) && lost(s))
        });
        let mut v = self.base("gap");
        v["lbwitness"] = json!({"gap": {"before_hash": self.hash_hex(first - 1), "count": count,
            "first_sequence": first, "last_hash": self.hash_hex(last), "last_sequence": last,
            "reason": "spool_full", "source": "agent"}});
        tweak(&mut v);
        self.append(v);
    }
}

/// Removes the lines of `first..=last` and appends a spool gap declaring
/// them (`count` of them lost), with `before_hash` and `last_hash`.
fn spool_loss(a: &mut Agent, first: u64, last: u64, count: u64) {
    let written = a.lines.len();
    a.spool_gap((first, last), count, |_| true, |_| {});
    assert_eq!(a.lines.len() + (last - first + 1) as usize, written + 1);
}

/// 9 flows, a checkpoint at 10, 4 flows (11..14), then `loss` (the gap
/// record is 15) and a final checkpoint (16).
fn lossy(loss: impl FnOnce(&mut Agent)) -> Agent {
    let mut a = Agent::new("a1", key(1));
    a.flows(9);
    a.checkpoint(false);
    a.flows(4);
    loss(&mut a);
    a.checkpoint(true);
    a
}

fn ranges(r: &Ranges) -> Vec<[u64; 2]> {
    r.ranges.clone()
}

#[test]
fn a_spool_loss_declares_its_range() {
    let a = lossy(|a| spool_loss(a, 3, 6, 4));
    let r = one(a.lines.clone(), &[a.key.verifying_key()]);
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    let agent = &r.agents[0];
    assert_eq!(agent.declared_losses[0].reason, "spool_full");
    assert_eq!(agent.declared_losses[0].count, 4);
    assert_eq!(ranges(&agent.missing_declared), vec![[3, 6]]);
    assert!(agent.uncovered.is_empty() && agent.not_linked.is_empty());
    // In any order, and split.
    let mut reversed = a.lines.clone();
    reversed.reverse();
    assert_eq!(
        one(reversed, &[a.key.verifying_key()]).verdict,
        Verdict::Intact
    );
}

#[test]
fn without_its_hashes_a_spool_loss_leaves_its_edges_uncovered() {
    for field in ["before_hash", "last_hash"] {
        let a = lossy(|a| {
            a.spool_gap(
                (3, 6),
                4,
                |_| true,
                |v| {
                    v["lbwitness"]["gap"].as_object_mut().unwrap().remove(field);
                },
            )
        });
        let r = one(a.lines.clone(), &[a.key.verifying_key()]);
        let agent = &r.agents[0];
        assert_eq!(
            (r.verdict, r.exit_code),
            (Verdict::Incomplete, 4),
            "{}",
            human::render(&r)
        );
        assert!(agent.not_linked.is_empty());
        assert_eq!(ranges(&agent.missing_declared), vec![[3, 6]]);
        let want = if field == "before_hash" {
            [1, 2]
        } else {
            [7, 7]
        };
        assert_eq!(ranges(&agent.uncovered), vec![want], "{field}");
    }
}

#[test]
fn a_spool_gap_hash_that_contradicts_the_chain_is_tampering() {
    let k = |a: &Agent| [a.key.verifying_key()];
    // last_hash wrong, record 6 absent: record 7 does not link through it.
    let a = lossy(|a| {
        a.spool_gap(
            (3, 6),
            4,
            |_| true,
            |v| v["lbwitness"]["gap"]["last_hash"] = json!("ab".repeat(32)),
        )
    });
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(r.verdict, Verdict::Tampered, "{}", human::render(&r));
    assert_eq!(r.agents[0].not_linked.items[0].sequence, 7);
    // Records 3..=6 delivered after all: the gap contradicts record 6, and
    // a wrong before_hash contradicts record 2.
    for field in ["last_hash", "before_hash"] {
        let a = lossy(|a| {
            a.spool_gap(
                (3, 6),
                4,
                |_| false,
                |v| v["lbwitness"]["gap"][field] = json!("ab".repeat(32)),
            )
        });
        let r = one(a.lines.clone(), &k(&a));
        let issue = &r.agents[0].not_linked.items[0];
        assert_eq!(r.verdict, Verdict::Tampered, "{}", human::render(&r));
        assert_eq!(issue.sequence, 15);
        let seq = if field == "last_hash" { 6 } else { 2 };
        assert!(
            issue
                .detail
                .contains(&format!("{field} is not the stored hash of record {seq}")),
            "{}",
            issue.detail
        );
    }
    // A hole from record 1 on: before_hash must be the zero hash.
    let a = lossy(|a| {
        a.spool_gap(
            (1, 2),
            2,
            |_| true,
            |v| v["lbwitness"]["gap"]["before_hash"] = json!("ab".repeat(32)),
        )
    });
    assert_eq!(one(a.lines.clone(), &k(&a)).verdict, Verdict::Tampered);
}

#[test]
fn a_gap_no_checkpoint_covers_declares_nothing() {
    let k = |a: &Agent| [a.key.verifying_key()];
    // The loss and its gap after the final checkpoint: nothing signs it.
    let mut a = lossy(|_| {});
    a.flows(3);
    spool_loss(&mut a, 17, 18, 2);
    let r = one(a.lines.clone(), &k(&a));
    let agent = &r.agents[0];
    assert_eq!(r.verdict, Verdict::Incomplete);
    assert_eq!(ranges(&agent.missing_undeclared), vec![[17, 18]]);
    assert!(agent.missing_declared.is_empty());
    // --live: the gap is pending, like every record after the latest
    // valid checkpoint, and declares provisionally.
    let r = verify(&[("t", a.lines.clone())], &k(&a), true);
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    assert_eq!(ranges(&r.agents[0].missing_declared), vec![[17, 18]]);

    // Records an earlier checkpoint covered, deleted, and a forged gap
    // appended: the records before the hole are not covered, even --live.
    let mut a = Agent::new("a1", key(1));
    a.flows(9);
    a.checkpoint(true);
    spool_loss(&mut a, 3, 6, 4);
    for live in [false, true] {
        let r = verify(&[("t", a.lines.clone())], &k(&a), live);
        let agent = &r.agents[0];
        assert_eq!(r.verdict, Verdict::Incomplete, "{}", human::render(&r));
        if live {
            assert_eq!(ranges(&agent.uncovered), vec![[1, 2]]);
            assert_eq!(ranges(&agent.pending), vec![[11, 11]]);
        } else {
            assert_eq!(ranges(&agent.uncovered), vec![[1, 2], [11, 11]]);
            assert_eq!(ranges(&agent.missing_undeclared), vec![[3, 6]]);
        }
    }

    // A restart record no checkpoint covers declares nothing either.
    let mut a = Agent::new("a1", key(1));
    a.flows(4);
    a.checkpoint(false);
    a.crash(3);
    a.flows(2);
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(ranges(&r.agents[0].missing_undeclared), vec![[6, 8]]);
    a.checkpoint(true);
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
}

#[test]
fn adjacent_and_nearby_holes_each_bridge_their_own() {
    let k = |a: &Agent| [a.key.verifying_key()];
    // 3..=4 and 5..=6, two gap records: record 4 is absent, so the second
    // gap's before_hash binds nothing; the first covers 1..=2.
    let a = lossy(|a| {
        spool_loss(a, 3, 4, 2);
        spool_loss(a, 5, 6, 2);
    });
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    assert_eq!(ranges(&r.agents[0].missing_declared), vec![[3, 6]]);
    // 3 and 5..=6 lost, 4 delivered between them: 4 links through the
    // first gap's last_hash and is covered through the second's
    // before_hash.
    let a = lossy(|a| {
        spool_loss(a, 5, 6, 2);
        spool_loss(a, 3, 3, 1);
    });
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    assert_eq!(ranges(&r.agents[0].missing_declared), vec![[3, 3], [5, 6]]);
}

#[test]
fn a_spool_loss_from_the_first_record_on() {
    let a = lossy(|a| spool_loss(a, 1, 3, 3));
    let r = one(a.lines.clone(), &[a.key.verifying_key()]);
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    let agent = &r.agents[0];
    assert_eq!(ranges(&agent.missing_declared), vec![[1, 3]]);
    assert_eq!(agent.first_sequence, 4);
}

#[test]
fn a_spool_loss_of_a_checkpoint() {
    // The checkpoint at 10 is lost with 9..=11: the gap vouches for 1..=8.
    let a = lossy(|a| spool_loss(a, 9, 11, 3));
    let r = one(a.lines.clone(), &[a.key.verifying_key()]);
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    assert_eq!(r.agents[0].checkpoints.total, 1);
}

#[test]
fn delivered_records_inside_a_declared_range() {
    let k = |a: &Agent| [a.key.verifying_key()];
    // All delivered to this collector: nothing missing, intact.
    let a = lossy(|a| a.spool_gap((3, 8), 2, |_| false, |_| {}));
    let r = one(a.lines.clone(), &k(&a));
    assert_eq!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    assert!(r.agents[0].missing_declared.is_empty());
    // 5..=6 lost, 3, 4, 7, 8 present: nothing signs hash(4) or hash(6), so
    // 3, 4 and 7 cannot be covered (8 is, through 9).
    let a = lossy(|a| a.spool_gap((3, 8), 2, |s| s == 5 || s == 6, |_| {}));
    let r = one(a.lines.clone(), &k(&a));
    let agent = &r.agents[0];
    assert_eq!(r.verdict, Verdict::Incomplete, "{}", human::render(&r));
    assert_eq!(ranges(&agent.missing_declared), vec![[5, 6]]);
    assert_eq!(ranges(&agent.uncovered), vec![[3, 4], [7, 7]]);
    assert!(agent.not_linked.is_empty());
    // All of 3..=8 missing while only 2 were lost: 4 deleted by someone.
    let a = lossy(|a| a.spool_gap((3, 8), 2, |_| true, |_| {}));
    let r = one(a.lines.clone(), &k(&a));
    let agent = &r.agents[0];
    assert_eq!(r.verdict, Verdict::Incomplete, "{}", human::render(&r));
    assert_eq!(ranges(&agent.missing_declared), vec![[3, 4]]);
    assert_eq!(ranges(&agent.missing_undeclared), vec![[5, 8]]);
}

#[test]
fn a_spool_gap_cannot_declare_itself_or_later_records() {
    let mut a = Agent::new("a1", key(1));
    a.flows(5);
    // Record 6 is the gap: it may not declare 6 or beyond.
    let mut v = a.base("gap");
    v["lbwitness"] = json!({"gap": {"count": 2, "first_sequence": 5,
        "last_sequence": 6, "reason": "spool_full", "source": "agent"}});
    a.append(v);
    a.checkpoint(true);
    a.lines.remove(4);
    let r = one(a.lines.clone(), &[a.key.verifying_key()]);
    assert_ne!(r.verdict, Verdict::Intact, "{}", human::render(&r));
    assert_eq!(r.agents[0].invalid_gaps.count, 1);
}
