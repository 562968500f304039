//! Counting the flows the kernel's LRU evicted, from counts alone.
//!
//! Every flow instance the XDP program inserts into its LRU flow map leaves
//! it one of two ways: the agent removes it (lookup-and-delete, with its
//! final report), or the LRU evicts it to make room and its unreported
//! packets are lost. So at any moment
//!
//! ```text
//! evicted = inserted - removed - present
//! ```
//!
//! where `inserted` is the kernel's `flows_inserted` counter, `removed` the
//! agent's own count and `present` what a sweep finds in the map. No
//! ring-buffer event takes part, so a late event cannot invent an eviction
//! (issue #10: 48 482 declared, none real) and a lost one cannot hide one.
//!
//! While the program runs, the three are not read at one instant. The
//! caller reads `inserted` before the sweep walks the map, and the kernel
//! counts an insert only after it happened, so a flow can be present
//! without being counted as inserted but never the other way round: the
//! result is a lower bound of the evictions so far. The declared total only
//! grows, catches up at the next sweep, and is exact once the program is
//! detached (nothing inserts or evicts any more).

/// The eviction ledger of one run.
#[derive(Debug, Default)]
pub struct Evictions {
    /// Instances inserted before this run that were gone when it started
    /// (a map carried over from an earlier run); zero for a fresh map.
    before: u64,
    /// Instances the agent removed.
    removed: u64,
    /// Evictions declared so far.
    declared: u64,
}

impl Evictions {
    /// A ledger for a map that held `present` flows when the run started,
    /// with the kernel's insert counter at `inserted` (read after counting
    /// `present`, so `before` is never overstated).
    pub fn starting_from(present: u64, inserted: u64) -> Self {
        Self {
            before: inserted.saturating_sub(present),
            ..Self::default()
        }
    }

    /// The agent removed one instance from the map.
    pub fn removed(&mut self) {
        self.removed += 1;
    }

    /// A sweep found `present` flows, with the insert counter at `inserted`
    /// read before it began. Returns how many evictions are newly known.
    pub fn observe(&mut self, inserted: u64, present: u64) -> u64 {
        let evicted = inserted.saturating_sub(self.before + self.removed + present);
        let new = evicted.saturating_sub(self.declared);
        self.declared += new;
        new
    }

    /// Evictions declared so far.
    pub fn declared(&self) -> u64 {
        self.declared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_the_agent_removed_are_not_evictions() {
        let mut e = Evictions::default();
        // 500 flows inserted, all still present.
        assert_eq!(e.observe(500, 500), 0);
        // The agent ends all of them, whenever their events arrive.
        for _ in 0..500 {
            e.removed();
        }
        assert_eq!(e.observe(500, 0), 0);
        assert_eq!(e.declared(), 0);
    }

    #[test]
    fn flows_that_vanished_are_evictions_counted_once() {
        let mut e = Evictions::default();
        assert_eq!(e.observe(100, 100), 0);
        // 40 more inserted; the LRU made room by evicting 40 of the first.
        assert_eq!(e.observe(140, 100), 40);
        // Same state at the next sweep: nothing new.
        assert_eq!(e.observe(140, 100), 0);
        e.removed();
        assert_eq!(e.observe(140, 99), 0);
        assert_eq!(e.observe(150, 99), 10);
        assert_eq!(e.declared(), 50);
    }

    #[test]
    fn inserts_during_a_sweep_never_make_evictions() {
        let mut e = Evictions::default();
        // Counter read at 10, then 5 more flows arrive while the sweep
        // walks the map and it meets all 15.
        assert_eq!(e.observe(10, 15), 0);
        // A lower bound never undoes what was declared: an eviction of 3
        // shows up late, once the counter covers the newcomers.
        assert_eq!(e.observe(15, 12), 3);
    }

    #[test]
    fn a_carried_over_map_starts_from_its_contents() {
        // 1000 inserted by an earlier run, 200 still in the map.
        let mut e = Evictions::starting_from(200, 1000);
        assert_eq!(e.observe(1000, 200), 0);
        for _ in 0..200 {
            e.removed();
        }
        assert_eq!(e.observe(1000, 0), 0);
        assert_eq!(e.observe(1010, 5), 5);
    }
}
