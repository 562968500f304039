//! Pacing the final flush against its deadline: the pure decision of when
//! to stop handing shutdown records to the pipeline so that those already
//! queued still reach the spool before the stop budget runs out.

use std::time::Duration;

/// Records that can sit between the flow task and the spool besides the
/// record channel: the audit stage's batch channel (16 batches of up to
/// 512 records, `run::BATCHES` and `audit::BATCH`).
pub const DOWNSTREAM: u64 = 16 * 512;

/// Whether `queued` more records fit in `left`, at the rate the pipeline
/// took `sent` records in `elapsed`. Once the record channel is full, a
/// send completes only when the audit stage takes a record, so that rate
/// is the pipeline's own.
pub fn fits(elapsed: Duration, sent: u64, queued: u64, left: Duration) -> bool {
    if left.is_zero() {
        return false;
    }
    if sent == 0 {
        return true;
    }
    let per = elapsed.as_nanos() / u128::from(sent);
    per * u128::from(queued) < left.as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_fast_pipeline_keeps_going() {
        // 100 000 records in 1 s: 10 µs each; 16 384 queued need 164 ms.
        assert!(fits(1000 * MS, 100_000, 16_384, 200 * MS));
        assert!(!fits(1000 * MS, 100_000, 16_384, 150 * MS));
    }

    #[test]
    fn a_slow_pipeline_stops_early() {
        // 200 µs a record: the queue alone needs 3.3 s.
        assert!(!fits(1000 * MS, 5_000, 16_384, 3000 * MS));
    }

    #[test]
    fn no_time_left_stops_and_no_rate_yet_goes_on() {
        assert!(!fits(MS, 1, 0, Duration::ZERO));
        assert!(fits(Duration::ZERO, 0, 16_384, MS));
    }
}
