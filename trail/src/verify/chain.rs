//! The second pass over one agent's entries, sorted by sequence: links the
//! records the first pass could not, tells identical duplicates from
//! differing ones, and finds the missing runs (which of them are declared
//! is decided once coverage is known, [`super::gaps::declare`]).

use std::ops::Range;

use super::{
    gaps,
    index::{AgentLog, Entry, FileId, Link, NO_BODY, Special, ZERO, chain_hash},
    report::{AgentReport, Copy, DuplicateIssue, Listed, Ranges, RecordIssue},
};

/// The entries from `start` on that share its sequence.
pub(crate) fn group_at(entries: &[Entry], start: usize) -> Range<usize> {
    let seq = entries[start].seq;
    start..start + entries[start..].iter().take_while(|e| e.seq == seq).count()
}

/// The entries of sequence `seq`.
pub(crate) fn group_of(entries: &[Entry], seq: u64) -> Range<usize> {
    let start = entries.partition_point(|e| e.seq < seq);
    let end = start + entries[start..].iter().take_while(|e| e.seq == seq).count();
    start..end
}

/// The gap record at this line, if it is one.
fn special_at<'s, T>(specials: &'s [Special<T>], e: &Entry) -> Option<&'s Special<T>> {
    let key = (e.seq, e.file, e.line);
    specials
        .binary_search_by_key(&key, Special::key)
        .ok()
        .map(|i| &specials[i])
}

/// Links, duplicates, declared losses and the missing runs
/// `(first, last)` of one agent. `entries` must be sorted by
/// `(sequence, file, line)`.
pub(crate) fn analyze(
    agent: &mut AgentLog,
    entries: &mut [Entry],
    name: &impl Fn(FileId) -> String,
) -> (AgentReport, Vec<(u64, u64)>) {
    agent.gaps.sort_unstable_by_key(Special::key);
    agent.checkpoints.sort_unstable_by_key(Special::key);
    let mut report = AgentReport {
        agent_id: agent.id.to_string(),
        verdict: super::report::Verdict::Intact,
        first_sequence: entries.first().map_or(0, |e| e.seq),
        last_sequence: entries.last().map_or(0, |e| e.seq),
        records: 0,
        lines: agent.lines,
        identical_duplicates: 0,
        differing_duplicates: Listed::default(),
        not_linked: Listed::default(),
        missing_declared: Ranges::default(),
        missing_undeclared: Ranges::default(),
        checkpoints: Default::default(),
        latest_valid_checkpoint: None,
        uncovered: Ranges::default(),
        pending: Ranges::default(),
        open_end: false,
        invalid_gaps: Listed::default(),
        declared_losses: Vec::new(),
    };
    let bridges = gaps::bridges(&agent.gaps);
    link(agent, entries, &bridges, name, &mut report.not_linked);
    gaps::tally(&agent.gaps, entries, name, &mut report);
    let mut holes = Vec::new();
    let mut previous: Option<u64> = None;
    let mut start = 0;
    while start < entries.len() {
        let group = group_at(entries, start);
        start = group.end;
        let seq = entries[group.start].seq;
        report.records += 1;
        let expected = previous.map_or(1, |p| p + 1);
        if seq > expected {
            holes.push((expected, seq - 1));
        }
        previous = Some(seq);
        duplicates(agent, &entries[group], name, &mut report);
    }
    (report, holes)
}

/// Decides every pending entry: linked, broken or unlinkable. `bridges`
/// are the spool gaps' `(L, last_hash)`, [`gaps::bridges`].
fn link(
    agent: &AgentLog,
    entries: &mut [Entry],
    bridges: &[(u64, [u8; 32])],
    name: &impl Fn(FileId) -> String,
    not_linked: &mut Listed<RecordIssue>,
) {
    let mut candidates: Vec<[u8; 32]> = Vec::new();
    let mut prev_group = 0..0;
    let mut start = 0;
    while start < entries.len() {
        let group = group_at(entries, start);
        start = group.end;
        let seq = entries[group.start].seq;
        let prev_present = !prev_group.is_empty() && entries[prev_group.start].seq + 1 == seq;
        for i in group.clone() {
            if entries[i].link != Link::Pending {
                continue;
            }
            candidates.clear();
            let from = if seq == 1 {
                candidates.push(ZERO);
                "the zero hash"
            } else if prev_present {
                for p in &entries[prev_group.clone()] {
                    if !candidates.contains(&p.hash) {
                        candidates.push(p.hash);
                    }
                }
                "the stored hash of record n-1"
            } else {
                // docs/AUDIT.md: with record n-1 absent, a restart record
                // links through its previous_run.last_hash, and any record
                // through the last_hash of a spool gap declaring ..=n-1.
                // Linking needs no trust: the hash that covers record n
                // binds its body whichever hash(n-1) it was computed from.
                let restart = special_at(&agent.gaps, &entries[i])
                    .and_then(|g| g.fields.as_ref().ok())
                    .and_then(|g| g.restart.as_ref())
                    .filter(|r| r.last_sequence.checked_add(1) == Some(seq));
                if let Some(r) = restart {
                    candidates.push(r.last_hash);
                }
                for &(_, h) in gaps::bridges_at(bridges, seq - 1) {
                    if !candidates.contains(&h) {
                        candidates.push(h);
                    }
                }
                if restart.is_some() {
                    "previous_run.last_hash"
                } else {
                    "the last_hash of a gap declaring n-1"
                }
            };
            let Entry {
                hash,
                file,
                line,
                body,
                ..
            } = entries[i];
            debug_assert_ne!(body, NO_BODY);
            let body = agent.body(body);
            entries[i].link = if candidates.is_empty() {
                Link::Unlinkable
            } else if candidates.iter().any(|c| chain_hash(c, body) == hash) {
                Link::Linked
            } else {
                not_linked.push_with(|| RecordIssue {
                    sequence: seq,
                    file: name(file),
                    line: u64::from(line),
                    detail: format!("event.hash is not SHA-256({from} || body)"),
                });
                Link::Broken
            };
        }
        prev_group = group;
    }
}

/// Counts identical copies; reports sequences whose copies differ. Two
/// copies are identical when their stored hashes are equal and both are
/// linked (then SHA-256 binds equal bodies), or neither is and their bodies
/// are equal.
fn duplicates(
    agent: &AgentLog,
    copies: &[Entry],
    name: &impl Fn(FileId) -> String,
    report: &mut AgentReport,
) {
    if copies.len() < 2 {
        return;
    }
    let same = |a: &Entry, b: &Entry| {
        a.hash == b.hash
            && match (a.link == Link::Linked, b.link == Link::Linked) {
                (true, true) => true,
                (false, false) => agent.body(a.body) == agent.body(b.body),
                _ => false,
            }
    };
    let mut distinct: Vec<&Entry> = Vec::new();
    for c in copies {
        if !distinct.iter().any(|d| same(d, c)) {
            distinct.push(c);
        }
    }
    report.identical_duplicates += (copies.len() - distinct.len()) as u64;
    if distinct.len() > 1 {
        report.differing_duplicates.push_with(|| DuplicateIssue {
            sequence: copies[0].seq,
            copies: copies
                .iter()
                .map(|c| Copy {
                    file: name(c.file),
                    line: u64::from(c.line),
                    hash: hex::encode(c.hash),
                })
                .collect(),
        });
    }
}
