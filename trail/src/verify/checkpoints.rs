//! Checkpoints: signatures, key trust and rotation, consistency, and the
//! coverage they give (docs/AUDIT.md, "Checkpoints").

use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{
    chain::{group_at, group_of},
    index::{AgentLog, Entry, FileId, Link, Special, ZERO},
    line::Checkpoint,
    report::{AgentReport, CheckpointIssue},
};

/// Keys an agent's checkpoints may be signed with, beyond `--key`.
#[derive(Default)]
struct KeyState {
    /// Announced by a valid checkpoint's `next_key`.
    announced: HashMap<[u8; 32], VerifyingKey>,
    /// Rotated out, with the sequence of the checkpoint that did it.
    revoked: HashMap<[u8; 32], u64>,
}

/// A valid checkpoint's effects.
struct Valid {
    key_id: [u8; 32],
    next: Option<([u8; 32], VerifyingKey)>,
    /// Record `last_sequence` is present and `head_hash` is its hash.
    head_present: bool,
}

type Invalid = (&'static str, String);

fn present(entries: &[Entry], seq: u64) -> bool {
    !group_of(entries, seq).is_empty()
}

fn validate(
    c: &Special<Checkpoint>,
    prev: Option<u64>,
    entries: &[Entry],
    trusted: &HashMap<[u8; 32], VerifyingKey>,
    keys: &KeyState,
) -> Result<Valid, Invalid> {
    let f = c.fields.as_ref().map_err(|e| ("malformed", e.clone()))?;
    if let Some(at) = keys.revoked.get(&f.key_id) {
        return Err((
            "rotated-out-key",
            format!(
                "key {} was rotated out at checkpoint {at}",
                hex::encode(f.key_id)
            ),
        ));
    }
    let key = keys
        .announced
        .get(&f.key_id)
        .or_else(|| trusted.get(&f.key_id))
        .ok_or_else(|| {
            (
                "unknown-key",
                format!(
                    "key {} was neither given with --key nor announced by a valid checkpoint",
                    hex::encode(f.key_id)
                ),
            )
        })?;
    key.verify_strict(&f.message, &Signature::from_bytes(&f.signature))
        .map_err(|_| ("bad-signature", "the signature does not verify".to_owned()))?;
    let inconsistent = |detail: String| ("inconsistent", detail);
    if f.last.checked_add(1) != Some(c.seq) {
        return Err(inconsistent(format!(
            "last_sequence {} is not the checkpoint's sequence minus one",
            f.last
        )));
    }
    if f.first == 0 || f.first > c.seq || f.count != c.seq - f.first {
        return Err(inconsistent(format!(
            "first_sequence {}, last_sequence {} and count {} do not agree",
            f.first, f.last, f.count
        )));
    }
    // Coverage may overlap the previous checkpoint's, never skip past it;
    // a start further on is fine only if the checkpoint it follows is lost.
    let allowed = prev.map_or(1, |p| p + 1);
    if f.first > allowed && present(entries, f.first - 1) {
        return Err(inconsistent(format!(
            "first_sequence {} leaves a hole after {}",
            f.first,
            prev.map_or("the start".to_owned(), |p| format!("the checkpoint at {p}"))
        )));
    }
    let next = match &f.next_key {
        None => None,
        Some(nk) => {
            let id: [u8; 32] = Sha256::digest(nk.public_key).into();
            let key = VerifyingKey::from_bytes(&nk.public_key)
                .ok()
                .filter(|_| id == nk.key_id);
            let key = key.ok_or((
                "malformed",
                "next_key.key_id is not the SHA-256 of a valid next_key.public_key".to_owned(),
            ))?;
            Some((nk.key_id, key))
        }
    };
    let head_present = if f.last == 0 {
        if f.head_hash != ZERO {
            return Err(inconsistent(
                "head_hash of an empty chain is not zero".into(),
            ));
        }
        false
    } else {
        let copies = &entries[group_of(entries, f.last)];
        if !copies.is_empty() && !copies.iter().any(|e| e.hash == f.head_hash) {
            return Err(inconsistent(format!(
                "head_hash is not the stored hash of record {}",
                f.last
            )));
        }
        !copies.is_empty()
    };
    Ok(Valid {
        key_id: f.key_id,
        next,
        head_present,
    })
}

/// Validates the agent's checkpoints in sequence order, tracking the keys
/// trusted for it, and marks the records each valid one covers.
pub(crate) fn check(
    agent: &AgentLog,
    entries: &mut [Entry],
    trusted: &HashMap<[u8; 32], VerifyingKey>,
    name: &impl Fn(FileId) -> String,
    report: &mut AgentReport,
) {
    let mut keys = KeyState::default();
    let (mut prev, mut current) = (None, None);
    let checkpoints = &agent.checkpoints;
    for (i, c) in checkpoints.iter().enumerate() {
        let copy_of_earlier = checkpoints[..i]
            .iter()
            .rev()
            .take_while(|d| d.seq == c.seq)
            .any(|d| {
                d.hash == c.hash
                    && match (&d.fields, &c.fields) {
                        (Ok(a), Ok(b)) => a.message == b.message,
                        (Err(a), Err(b)) => a == b,
                        _ => false,
                    }
            });
        if copy_of_earlier {
            continue;
        }
        if current != Some(c.seq) {
            prev = current;
            current = Some(c.seq);
        }
        report.checkpoints.total += 1;
        match validate(c, prev, entries, trusted, &keys) {
            Ok(valid) => {
                report.checkpoints.valid += 1;
                report.latest_valid_checkpoint = Some(c.seq);
                if let Some((id, key)) = valid.next.filter(|(id, _)| *id != valid.key_id) {
                    keys.revoked.remove(&id);
                    keys.announced.insert(id, key);
                    keys.announced.remove(&valid.key_id);
                    keys.revoked.insert(valid.key_id, c.seq);
                }
                let f = c.fields.as_ref().expect("valid checkpoints have fields");
                if valid.head_present {
                    cover(entries, f.first, f.last);
                }
                // A valid checkpoint is covered by its own signature.
                let own = group_of(entries, c.seq);
                for e in &mut entries[own] {
                    e.covered |= e.hash == c.hash;
                }
            }
            Err((status, detail)) => {
                let list = if status.ends_with("-key") {
                    &mut report.checkpoints.untrusted
                } else {
                    &mut report.checkpoints.invalid
                };
                list.push_with(|| CheckpointIssue {
                    sequence: c.seq,
                    file: name(c.file),
                    line: u64::from(c.line),
                    status,
                    detail,
                });
            }
        }
    }
    report.open_end = !agent.checkpoints.last().is_some_and(|c| {
        c.seq == report.last_sequence && c.fields.as_ref().is_ok_and(|f| f.is_final)
    });
}

/// Marks the records `r` of `first..=last` such that every record `r..=last`
/// is present and linked (docs/AUDIT.md, "covered"); returns the lowest.
pub(crate) fn cover(entries: &mut [Entry], first: u64, last: u64) -> Option<u64> {
    let mut end = group_of(entries, last).end;
    let mut expected = last;
    let mut lowest = None;
    while end > 0 && expected >= first {
        let start = entries[..end]
            .iter()
            .rev()
            .take_while(|e| e.seq == expected)
            .count();
        let group = end - start..end;
        if group.is_empty()
            || !entries[group.clone()]
                .iter()
                .any(|e| e.link == Link::Linked)
        {
            break;
        }
        for e in &mut entries[group.clone()] {
            e.covered = true;
        }
        lowest = Some(expected);
        end = group.start;
        expected -= 1;
    }
    lowest
}

/// Uncovered and pending ranges, once every checkpoint has been checked.
pub(crate) fn coverage(entries: &[Entry], live: bool, report: &mut AgentReport) {
    let latest = report.latest_valid_checkpoint;
    let mut start = 0;
    while start < entries.len() {
        let group = group_at(entries, start);
        start = group.end;
        let seq = entries[group.start].seq;
        if entries[group].iter().any(|e| e.covered) {
            continue;
        }
        if live && latest.is_none_or(|l| seq > l) {
            report.pending.push(seq, seq);
        } else {
            report.uncovered.push(seq, seq);
        }
    }
}
