//! What the spool lost, on its way into gap records.
//!
//! A full spool refuses records until space returns. Declaring each refused
//! batch at once would feed a loop: the gap record, sealed after more
//! refused records, ends one refused range and starts the next, which needs
//! its own gap record, and so on at the speed of the chain. So a refused
//! range stays open while the spool refuses, and is declared once it has
//! ended: when the spool takes an ordinary record again, or at the stop.
//! The gap records and the checkpoint after them are essential records the
//! spool does not refuse (docs/SPOOL.md). Losses of records already in the
//! spool (drop_oldest, damage) are declared at once.
//!
//! [`Declarations`] is the pure core; [`LossBook`] shares it between the
//! spooler, which fills it, and the audit stage, which seals what it holds.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::spool::Loss;

/// Losses waiting for their gap records. Pure.
#[derive(Debug, Default)]
pub struct Declarations {
    /// Refused ranges that may still grow, in ascending sequence.
    open: Vec<Loss>,
    /// Losses that are complete, in the order found.
    ready: Vec<Loss>,
}

impl Declarations {
    /// Records of the current append were refused. Extends the open range
    /// it continues (consecutive sequences, so nothing was written between
    /// them); true when it starts a new range.
    pub fn refused(&mut self, loss: Loss) -> bool {
        match self.open.last_mut() {
            Some(l) if l.reason == loss.reason && l.last + 1 == loss.first => {
                l.last = loss.last;
                l.count += loss.count;
                l.last_hash = loss.last_hash;
                false
            }
            _ => {
                self.open.push(loss);
                true
            }
        }
    }

    /// Records already in the spool were lost: complete as it is.
    pub fn lost(&mut self, loss: Loss) {
        self.ready.push(loss);
    }

    /// An ordinary record `sequence` was written: every refused range
    /// before it has ended. Returns how many ended.
    pub fn kept(&mut self, sequence: u64) -> usize {
        let ended = self.open.partition_point(|l| l.last < sequence);
        self.ready.extend(self.open.drain(..ended));
        ended
    }

    /// Whether something is complete.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The complete losses.
    pub fn take_ready(&mut self) -> Vec<Loss> {
        std::mem::take(&mut self.ready)
    }

    /// Everything, open ranges included: for the stop, when nothing more
    /// can be refused before the gap records.
    pub fn take_all(&mut self) -> Vec<Loss> {
        let mut all = std::mem::take(&mut self.ready);
        all.append(&mut self.open);
        all
    }
}

/// At most one log line per `every`; the next one says how many were
/// left out. Pure.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// One line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            next: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; `Some(n)`: yes, after `n` left out.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|n| now < n) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + self.every);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// How often each kind of spool-loss line may be logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// [`Declarations`] shared by the spooler and the audit stage, which is
/// woken when something is complete. Logs at a bounded rate.
#[derive(Debug)]
pub struct LossBook {
    inner: Mutex<Book>,
    ready: Notify,
}

#[derive(Debug)]
struct Book {
    declarations: Declarations,
    refusing: RateLimit,
    declaring: RateLimit,
}

impl LossBook {
    /// An empty book.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Book {
                declarations: Declarations::default(),
                refusing: RateLimit::new(LOG_EVERY),
                declaring: RateLimit::new(LOG_EVERY),
            }),
            ready: Notify::new(),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().expect("loss book poisoned")
    }

    /// See [`Declarations::refused`].
    pub fn refused(&self, loss: Loss) {
        let mut b = self.book();
        if b.declarations.refused(loss)
            && let Some(left_out) = b.refusing.allow(Instant::now())
        {
            tracing::error!(
                reason = loss.reason.as_str(),
                first = loss.first,
                earlier_ranges_not_logged = left_out,
                "the spool is full and refuses records until space returns; \
                 each refused range is declared in one gap record when it ends \
                 (check the collectors and the spool's max_bytes and disk)"
            );
        }
    }

    /// See [`Declarations::lost`].
    pub fn lost(&self, loss: Loss) {
        self.book().declarations.lost(loss);
        self.ready.notify_one();
    }

    /// See [`Declarations::kept`].
    pub fn kept(&self, sequence: u64) {
        if self.book().declarations.kept(sequence) > 0 {
            self.ready.notify_one();
        }
    }

    /// Waits until something may be complete.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The complete losses (logged).
    pub fn take_ready(&self) -> Vec<Loss> {
        let mut b = self.book();
        let out = b.declarations.take_ready();
        b.log(&out);
        out
    }

    /// Everything, open ranges included (logged).
    pub fn take_all(&self) -> Vec<Loss> {
        let mut b = self.book();
        let out = b.declarations.take_all();
        b.log(&out);
        out
    }
}

impl Book {
    fn log(&mut self, losses: &[Loss]) {
        for l in losses {
            if let Some(left_out) = self.declaring.allow(Instant::now()) {
                tracing::error!(
                    reason = l.reason.as_str(),
                    first = l.first,
                    last = l.last,
                    count = l.count,
                    earlier_not_logged = left_out,
                    "the spool lost records; declaring them in a gap record"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::LossReason;

    fn loss(first: u64, last: u64) -> Loss {
        Loss {
            first,
            last,
            count: last - first + 1,
            reason: LossReason::Full,
            before_hash: Some([first as u8; 32]),
            last_hash: Some([last as u8; 32]),
        }
    }

    fn ranges(v: &[Loss]) -> Vec<(u64, u64, u64)> {
        v.iter().map(|l| (l.first, l.last, l.count)).collect()
    }

    #[test]
    fn a_refused_range_grows_until_an_ordinary_record_is_kept() {
        let mut d = Declarations::default();
        assert!(d.refused(loss(10, 20)));
        assert!(!d.refused(loss(21, 30)), "consecutive: one range");
        assert!(!d.has_ready(), "still refusing");
        // 31 was an essential record (a gap record or its checkpoint),
        // which ends no range: the next refusal is a new one, and neither
        // is declared while the spool refuses.
        assert!(d.refused(loss(32, 40)));
        assert!(!d.has_ready());
        assert_eq!(d.kept(45), 2, "an ordinary record ends both");
        let ready = d.take_ready();
        assert_eq!(ranges(&ready), vec![(10, 30, 21), (32, 40, 9)]);
        assert_eq!(ready[1].before_hash, Some([32; 32]));
        assert_eq!(ready[1].last_hash, Some([40; 32]));
        assert_eq!(d.kept(50), 0);
    }

    #[test]
    fn merged_ranges_keep_the_outer_hashes() {
        let mut d = Declarations::default();
        d.refused(loss(5, 6));
        d.refused(loss(7, 9));
        let all = d.take_all();
        assert_eq!(ranges(&all), vec![(5, 9, 5)]);
        assert_eq!(all[0].before_hash, Some([5; 32]));
        assert_eq!(all[0].last_hash, Some([9; 32]));
    }

    #[test]
    fn losses_in_the_spool_are_ready_at_once_and_the_stop_takes_all() {
        let mut d = Declarations::default();
        d.refused(loss(50, 60));
        d.lost(loss(1, 3));
        assert!(d.has_ready());
        assert_eq!(ranges(&d.take_all()), vec![(1, 3, 3), (50, 60, 11)]);
        assert!(d.take_all().is_empty());
    }

    #[test]
    fn rate_limit_logs_the_first_and_then_once_per_period() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(10));
        assert_eq!(r.allow(t0), Some(0));
        for s in 1..10 {
            assert_eq!(r.allow(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(9));
        assert_eq!(r.allow(t0 + Duration::from_secs(11)), None);
    }
}
