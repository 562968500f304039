//! Which records of a group are delivered: reads are split into jobs, jobs
//! finish in any order, and the group's acknowledgement watermark advances
//! only over reads whose every job is done. Pure.

use std::collections::VecDeque;

/// One read from the spool.
#[derive(Debug)]
struct Chunk {
    /// The last sequence the read passed (routed to the group or not).
    through: u64,
    /// Jobs of this read not yet delivered.
    open: usize,
}

/// The acknowledgement watermark of one group.
#[derive(Debug)]
pub struct Ledger {
    chunks: VecDeque<Chunk>,
    /// The id of `chunks[0]`.
    first_id: u64,
    acked: u64,
}

impl Ledger {
    /// Everything up to `acked` is delivered already.
    pub fn new(acked: u64) -> Self {
        Self {
            chunks: VecDeque::new(),
            first_id: 0,
            acked,
        }
    }

    /// The group has every record routed to it up to here.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Reads not fully delivered.
    pub fn open_reads(&self) -> usize {
        self.chunks.len()
    }

    /// Records a read that passed sequences up to `through` and was split
    /// into `jobs` jobs; returns the read's id for [`done`](Self::done).
    /// A read with no jobs (nothing routed to the group) is done at once.
    pub fn read(&mut self, through: u64, jobs: usize) -> (u64, Option<u64>) {
        let id = self.first_id + self.chunks.len() as u64;
        self.chunks.push_back(Chunk {
            through,
            open: jobs,
        });
        (id, self.advance())
    }

    /// Read `id` was re-split: it has `extra` more jobs than it had.
    pub fn add_jobs(&mut self, id: u64, extra: usize) {
        if let Some(c) = id
            .checked_sub(self.first_id)
            .and_then(|i| self.chunks.get_mut(i as usize))
        {
            c.open += extra;
        }
    }

    /// One job of read `id` was delivered. Returns the new watermark when it
    /// moved.
    pub fn done(&mut self, id: u64) -> Option<u64> {
        let i = id.checked_sub(self.first_id)? as usize;
        let chunk = self.chunks.get_mut(i)?;
        chunk.open = chunk.open.checked_sub(1)?;
        self.advance()
    }

    fn advance(&mut self) -> Option<u64> {
        let before = self.acked;
        while self.chunks.front().is_some_and(|c| c.open == 0) {
            let c = self.chunks.pop_front().expect("checked");
            self.first_id += 1;
            self.acked = self.acked.max(c.through);
        }
        (self.acked != before).then_some(self.acked)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn advances_only_over_finished_reads() {
        let mut l = Ledger::new(5);
        let (a, _) = l.read(10, 2);
        let (b, _) = l.read(20, 1);
        assert_eq!(l.done(b), None);
        assert_eq!(l.done(a), None);
        assert_eq!(l.done(a), Some(20));
        let (_, moved) = l.read(25, 0);
        assert_eq!(moved, Some(25));
        assert_eq!(l.open_reads(), 0);
        // Unknown or finished ids are ignored.
        assert_eq!(l.done(a), None);
        assert_eq!(l.done(99), None);
    }

    proptest! {
        /// In any completion order, the watermark is the end of the longest
        /// prefix of finished reads, and never goes back.
        #[test]
        fn watermark_is_the_finished_prefix(
            jobs in prop::collection::vec(0usize..4, 1..30),
            order_seed in any::<u64>(),
        ) {
            let mut l = Ledger::new(0);
            let mut ids = Vec::new();
            for (i, &n) in jobs.iter().enumerate() {
                let (id, _) = l.read((i as u64 + 1) * 10, n);
                ids.extend(std::iter::repeat_n((id, i), n));
            }
            let mut rng = order_seed;
            let mut left = vec![0usize; jobs.len()];
            left.copy_from_slice(&jobs);
            let mut last = l.acked();
            while !ids.is_empty() {
                rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
                let (id, i) = ids.swap_remove((rng % ids.len() as u64) as usize);
                left[i] -= 1;
                l.done(id);
                let prefix = left.iter().take_while(|&&n| n == 0).count();
                prop_assert_eq!(l.acked(), prefix as u64 * 10);
                prop_assert!(l.acked() >= last);
                last = l.acked();
            }
        }
    }
}
