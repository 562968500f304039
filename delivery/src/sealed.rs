//! Sealed records: what the audit stage hands to delivery. Each record is
//! already numbered and chained; delivery spools it and sends it on, and
//! never changes a byte of it.

use lbwitness_trail::chain::Hash;

/// Sealed NDJSON lines for the spool.
#[derive(Debug)]
pub struct Batch {
    /// Complete lines, each ending in `\n`.
    pub lines: Vec<u8>,
    /// One per line, in order.
    pub records: Vec<Sealed>,
    /// The sequence of the last line.
    pub last_sequence: u64,
}

/// Where one sealed record is in [`Batch::lines`], and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// `event.sequence`.
    pub sequence: u64,
    /// `event.hash`.
    pub hash: Hash,
    /// The chain hash of the record before it, which `hash` was computed
    /// from.
    pub prev: Hash,
    /// The collector groups it is routed to (bit i: group i).
    pub routes: u64,
    /// The line is `lines[start..end]`, without its newline.
    pub start: usize,
    /// See `start`.
    pub end: usize,
    /// The spool must not refuse it (`SpoolRecord::essential`).
    pub essential: bool,
}

impl Batch {
    /// The line of `r`, without its newline.
    pub fn line(&self, r: &Sealed) -> &[u8] {
        &self.lines[r.start..r.end]
    }

    /// A batch of `lines` (at least one, without newlines) numbered from
    /// `first`, every one routed to `routes`, with zero hashes: not a
    /// chain. For tests and benchmarks that feed the spooler directly.
    pub fn unchained(first: u64, lines: &[impl AsRef<[u8]>], routes: u64) -> Self {
        let mut batch = Self {
            lines: Vec::with_capacity(lines.iter().map(|l| l.as_ref().len() + 1).sum()),
            records: Vec::with_capacity(lines.len()),
            last_sequence: first + lines.len() as u64 - 1,
        };
        for (sequence, line) in (first..).zip(lines) {
            let start = batch.lines.len();
            batch.lines.extend_from_slice(line.as_ref());
            batch.records.push(Sealed {
                sequence,
                hash: [0; 32],
                prev: [0; 32],
                routes,
                start,
                end: batch.lines.len(),
                essential: false,
            });
            batch.lines.push(b'\n');
        }
        batch
    }
}
