//! The second pass over one agent's entries, sorted by sequence: links the
//! records the first pass could not, tells identical duplicates from
//! differing ones, and finds the missing ranges.

use std::{collections::BTreeMap, ops::Range};

use super::{
    index::{AgentLog, Entry, FileId, Link, NO_BODY, Special, ZERO, chain_hash},
    line::Gap,
    report::{AgentReport, Copy, DuplicateIssue, Listed, Loss, Ranges, RecordIssue},
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

/// Links, duplicates, missing ranges and declared losses of one agent.
/// `entries` must be sorted by `(sequence, file, line)`.
pub(crate) fn analyze(
    agent: &mut AgentLog,
    entries: &mut [Entry],
    name: &impl Fn(FileId) -> String,
) -> AgentReport {
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
    link(agent, entries, name, &mut report.not_linked);
    let declared = gaps(&agent.gaps, name, &mut report);
    let mut previous: Option<u64> = None;
    let mut start = 0;
    while start < entries.len() {
        let group = group_at(entries, start);
        start = group.end;
        let seq = entries[group.start].seq;
        report.records += 1;
        let expected = previous.map_or(1, |p| p + 1);
        if seq > expected {
            missing(expected, seq - 1, &declared, &mut report);
        }
        previous = Some(seq);
        duplicates(agent, &entries[group], name, &mut report);
    }
    report
}

/// Decides every pending entry: linked, broken or unlinkable.
fn link(
    agent: &AgentLog,
    entries: &mut [Entry],
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
                // docs/AUDIT.md: a restart record links through
                // previous_run.last_hash when record S is absent.
                let restart = special_at(&agent.gaps, &entries[i])
                    .and_then(|g| g.fields.as_ref().ok())
                    .and_then(|g| g.restart.as_ref())
                    .filter(|r| r.last_sequence.checked_add(1) == Some(seq));
                if let Some(r) = restart {
                    candidates.push(r.last_hash);
                }
                "previous_run.last_hash"
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

/// Splits the missing `first..=last` into declared and undeclared parts.
fn missing(first: u64, last: u64, declared: &[(u64, u64)], report: &mut AgentReport) {
    let mut at = first;
    for &(a, b) in declared {
        if b < at || a > last {
            continue;
        }
        if a > at {
            report.missing_undeclared.push(at, a - 1);
        }
        let end = b.min(last);
        report.missing_declared.push(a.max(at), end);
        at = end + 1;
        if at > last {
            return;
        }
    }
    report.missing_undeclared.push(at, last);
}

/// Declared ranges (merged, sorted), declared losses and malformed gaps.
fn gaps(
    gaps: &[Special<Gap>],
    name: &impl Fn(FileId) -> String,
    report: &mut AgentReport,
) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut losses: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    let mut last_seq = None;
    for g in gaps {
        // One copy per sequence counts.
        if last_seq == Some(g.seq) {
            continue;
        }
        last_seq = Some(g.seq);
        let fields = match &g.fields {
            Ok(fields) => fields,
            Err(detail) => {
                report.invalid_gaps.push_with(|| RecordIssue {
                    sequence: g.seq,
                    file: name(g.file),
                    line: u64::from(g.line),
                    detail: detail.clone(),
                });
                continue;
            }
        };
        if let Some((a, b)) = fields.restart.as_ref().and_then(|r| r.declared) {
            ranges.push((a, b));
        }
        if let Some((a, b)) = fields.declared {
            // A gap can only declare records numbered before it.
            if b >= g.seq {
                report.invalid_gaps.push_with(|| RecordIssue {
                    sequence: g.seq,
                    file: name(g.file),
                    line: u64::from(g.line),
                    detail: format!("declares {a}..{b}, which is not before the gap record itself"),
                });
                continue;
            }
            ranges.push((a, b));
        }
        let loss = losses.entry((&fields.source, &fields.reason)).or_default();
        loss.0 = loss.0.saturating_add(fields.count);
        loss.1 += 1;
    }
    report.declared_losses = losses
        .into_iter()
        .map(|((source, reason), (count, records))| Loss {
            source: source.to_owned(),
            reason: reason.to_owned(),
            count,
            records,
        })
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(m) if a <= m.1.saturating_add(1) => m.1 = m.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}
