//! The verifier's findings, their verdicts and exit codes.
//!
//! `lbwitness verify --json` prints one [`Report`] as one JSON object:
//!
//! ```text
//! {
//!   "verdict": "intact" | "tampered" | "incomplete",
//!   "exit_code": 0 | 3 | 4,
//!   "live": bool,
//!   "files": n, "lines": n, "blank_lines": n,
//!   "partial_lines": Listed<Line>,      // --live: unterminated last lines skipped
//!   "unparsable": Listed<Line>,         // with "error"
//!   "agents": [{
//!     "agent_id": "...",
//!     "verdict": "intact" | "tampered" | "incomplete",
//!     "first_sequence": n, "last_sequence": n,
//!     "records": n,                     // distinct sequences present
//!     "lines": n,                       // record lines, duplicates included
//!     "identical_duplicates": n,        // extra copies equal to another one
//!     "differing_duplicates": Listed<{"sequence", "copies": [{"file", "line", "hash"}]}>,
//!     "not_linked": Listed<Record>,     // stored hash ≠ SHA-256(hash(n-1) || body),
//!                                       // or a gap record's hash ≠ a present record's
//!     "missing_declared": Ranges,       // declared by a covered (--live: or pending) gap
//!     "missing_undeclared": Ranges,
//!     "checkpoints": {"total": n, "valid": n,
//!                     "invalid": Listed<Checkpoint>, "untrusted": Listed<Checkpoint>},
//!     "latest_valid_checkpoint": n | null,
//!     "uncovered": Ranges,              // present, not covered by a valid checkpoint
//!     "pending": Ranges,                // --live: after the latest valid checkpoint
//!     "open_end": bool,                 // latest record is not a final checkpoint
//!     "invalid_gaps": Listed<Record>,   // gap records with missing or wrong fields
//!     "declared_losses": [{"source", "reason", "count", "records"}]
//!   }]
//! }
//! Listed<T> = {"count": n, "items": [T, ...]}   (at most 20 items; count is exact)
//! Ranges    = {"count": n, "range_count": n, "ranges": [[first, last], ...]}
//!             (count: sequences; at most 20 ranges listed)
//! Line       = {"file", "line", "error"}, and "offset" (bytes) for a line
//!              over the length limit (`--max-line-bytes`)
//! Record     = {"sequence", "file", "line", "detail"}
//! Checkpoint = {"sequence", "file", "line", "status", "detail"}, status one of
//!              "malformed", "inconsistent", "bad-signature", "unknown-key",
//!              "rotated-out-key"
//! ```

use serde::Serialize;

/// Most items listed per category; counts stay exact.
pub const MAX_LISTED: usize = 20;

/// The outcome of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every record linked and covered, nothing undeclared missing.
    Intact,
    /// Incomplete, with no sign of tampering.
    Incomplete,
    /// Something was altered, forged or signed by the wrong key.
    Tampered,
}

impl Verdict {
    /// The exit code of docs/AUDIT.md.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Intact => 0,
            Self::Tampered => 3,
            Self::Incomplete => 4,
        }
    }
}

/// The first [`MAX_LISTED`] items of a category, and how many there are.
#[derive(Clone, Debug, Serialize)]
pub struct Listed<T> {
    /// How many in all.
    pub count: u64,
    /// The first ones.
    pub items: Vec<T>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Self {
            count: 0,
            items: Vec::new(),
        }
    }
}

impl<T> Listed<T> {
    /// Counts one more; builds it only if it is listed.
    pub(crate) fn push_with(&mut self, item: impl FnOnce() -> T) {
        self.count += 1;
        if self.items.len() < MAX_LISTED {
            self.items.push(item());
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Sequence ranges, merged when adjacent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ranges {
    /// Sequences in all.
    pub count: u64,
    /// Ranges in all.
    pub range_count: u64,
    /// The first ranges, `[first, last]`.
    pub ranges: Vec<[u64; 2]>,
    #[serde(skip)]
    last: Option<u64>,
}

impl Ranges {
    /// Adds `first..=last`, after every range added so far.
    pub(crate) fn push(&mut self, first: u64, last: u64) {
        debug_assert!(first <= last && self.last.is_none_or(|l| l < first));
        self.count = self.count.saturating_add(last - first + 1);
        if self.last.is_some_and(|l| l.checked_add(1) == Some(first)) {
            if self.range_count == self.ranges.len() as u64
                && let Some(r) = self.ranges.last_mut()
            {
                r[1] = last;
            }
        } else {
            self.range_count += 1;
            if self.ranges.len() < MAX_LISTED {
                self.ranges.push([first, last]);
            }
        }
        self.last = Some(last);
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A line that is not a record.
#[derive(Clone, Debug, Serialize)]
pub struct LineIssue {
    /// The file.
    pub file: String,
    /// The line number, from 1.
    pub line: u64,
    /// Where the line starts in the file, in bytes; given for a line over
    /// the length limit, where a line number alone is hard to find.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Why.
    pub error: String,
}

/// A problem with one record line.
#[derive(Clone, Debug, Serialize)]
pub struct RecordIssue {
    /// `event.sequence`.
    pub sequence: u64,
    /// The file.
    pub file: String,
    /// The line number.
    pub line: u64,
    /// What is wrong.
    pub detail: String,
}

/// One copy of a sequence that has differing copies.
#[derive(Clone, Debug, Serialize)]
pub struct Copy {
    /// The file.
    pub file: String,
    /// The line number.
    pub line: u64,
    /// Its stored `event.hash`.
    pub hash: String,
}

/// A sequence present in copies that differ.
#[derive(Clone, Debug, Serialize)]
pub struct DuplicateIssue {
    /// `event.sequence`.
    pub sequence: u64,
    /// Every copy.
    pub copies: Vec<Copy>,
}

/// A checkpoint that is not valid.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointIssue {
    /// The checkpoint's `event.sequence`.
    pub sequence: u64,
    /// The file.
    pub file: String,
    /// The line number.
    pub line: u64,
    /// `malformed`, `inconsistent`, `bad-signature`, `unknown-key` or
    /// `rotated-out-key`.
    pub status: &'static str,
    /// What is wrong.
    pub detail: String,
}

/// Checkpoint counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Checkpoints {
    /// Distinct checkpoint records.
    pub total: u64,
    /// Valid ones.
    pub valid: u64,
    /// Malformed, inconsistent or with a bad signature.
    pub invalid: Listed<CheckpointIssue>,
    /// Signed by a key not trusted for the agent at that sequence.
    pub untrusted: Listed<CheckpointIssue>,
}

/// Losses the agent declared for one `(source, reason)`.
#[derive(Clone, Debug, Serialize)]
pub struct Loss {
    /// `kernel` or `agent`.
    pub source: String,
    /// The counter's name, or `restart`.
    pub reason: String,
    /// Sum of the gap records' `count`.
    pub count: u64,
    /// How many gap records.
    pub records: u64,
}

/// Everything found about one agent's chain.
#[derive(Clone, Debug, Serialize)]
pub struct AgentReport {
    /// `agent.id`.
    pub agent_id: String,
    /// This agent's verdict.
    pub verdict: Verdict,
    /// Lowest sequence seen.
    pub first_sequence: u64,
    /// Highest sequence seen.
    pub last_sequence: u64,
    /// Distinct sequences present.
    pub records: u64,
    /// Record lines, duplicates included.
    pub lines: u64,
    /// Extra copies identical to another copy (benign).
    pub identical_duplicates: u64,
    /// Sequences whose copies differ.
    pub differing_duplicates: Listed<DuplicateIssue>,
    /// Records whose stored hash does not chain from their predecessor,
    /// and gap records whose `before_hash` or `last_hash` contradicts the
    /// stored hash of a present record.
    pub not_linked: Listed<RecordIssue>,
    /// Missing sequences a gap record (restart or spool loss) declared,
    /// within its `count`; the gap record covered (or, `--live`, pending).
    pub missing_declared: Ranges,
    /// Missing sequences nobody declared.
    pub missing_undeclared: Ranges,
    /// Checkpoint counts and problems.
    pub checkpoints: Checkpoints,
    /// The sequence of the latest valid checkpoint.
    pub latest_valid_checkpoint: Option<u64>,
    /// Present records not covered by a valid checkpoint.
    pub uncovered: Ranges,
    /// With `--live`: records after the latest valid checkpoint.
    pub pending: Ranges,
    /// The latest record is not a final checkpoint.
    pub open_end: bool,
    /// Gap records with missing or malformed fields.
    pub invalid_gaps: Listed<RecordIssue>,
    /// Declared losses by `(source, reason)`.
    pub declared_losses: Vec<Loss>,
}

impl AgentReport {
    /// This agent's verdict, from its findings.
    pub(crate) fn judge(&self, live: bool) -> Verdict {
        if !self.not_linked.is_empty()
            || !self.differing_duplicates.is_empty()
            || !self.checkpoints.invalid.is_empty()
            || !self.checkpoints.untrusted.is_empty()
        {
            Verdict::Tampered
        } else if !self.missing_undeclared.is_empty()
            || !self.uncovered.is_empty()
            || (self.open_end && !live)
            || !self.invalid_gaps.is_empty()
        {
            Verdict::Incomplete
        } else {
            Verdict::Intact
        }
    }
}

/// The whole verification.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The overall verdict.
    pub verdict: Verdict,
    /// The process exit code for it.
    pub exit_code: u8,
    /// Whether `--live` was given.
    pub live: bool,
    /// Files read.
    pub files: u64,
    /// Lines read.
    pub lines: u64,
    /// Blank lines (ignored).
    pub blank_lines: u64,
    /// With `--live`: unterminated last lines that did not parse (a write
    /// in progress), skipped.
    pub partial_lines: Listed<LineIssue>,
    /// Lines that are not records.
    pub unparsable: Listed<LineIssue>,
    /// One report per agent, by `agent.id`.
    pub agents: Vec<AgentReport>,
}

impl Report {
    /// Assembles the report and its verdict.
    pub(crate) fn new(
        live: bool,
        (files, lines, blank_lines): (u64, u64, u64),
        partial_lines: Listed<LineIssue>,
        unparsable: Listed<LineIssue>,
        agents: Vec<AgentReport>,
    ) -> Self {
        let worst = agents.iter().map(|a| a.verdict).max();
        let verdict = if !unparsable.is_empty() {
            Verdict::Tampered
        } else {
            // No record at all proves nothing.
            worst.unwrap_or(Verdict::Incomplete)
        };
        Self {
            verdict,
            exit_code: verdict.exit_code(),
            live,
            files,
            lines,
            blank_lines,
            partial_lines,
            unparsable,
            agents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_cap() {
        let mut r = Ranges::default();
        r.push(1, 1);
        r.push(2, 5);
        r.push(7, 7);
        assert_eq!(
            (r.count, r.range_count, r.ranges.clone()),
            (6, 2, vec![[1, 5], [7, 7]])
        );
        for i in 0..100 {
            r.push(10 + 2 * i, 10 + 2 * i);
        }
        r.push(209, 209); // adjacent to the last, unlisted range
        assert_eq!(
            (r.count, r.range_count, r.ranges.len()),
            (107, 102, MAX_LISTED)
        );
        assert_eq!(r.ranges[MAX_LISTED - 1], [44, 44]);
    }

    #[test]
    fn listed_counts_everything_lists_the_first() {
        let mut l = Listed::default();
        let mut built = 0;
        for i in 0..50 {
            l.push_with(|| {
                built += 1;
                i
            });
        }
        assert_eq!(
            (l.count, l.items.len(), built),
            (50, MAX_LISTED, MAX_LISTED)
        );
        assert_eq!(l.items[0], 0);
    }

    #[test]
    fn tampering_outranks_incompleteness() {
        assert!(Verdict::Tampered > Verdict::Incomplete && Verdict::Incomplete > Verdict::Intact);
        assert_eq!(
            [Verdict::Intact, Verdict::Tampered, Verdict::Incomplete].map(Verdict::exit_code),
            [0, 3, 4]
        );
    }
}
