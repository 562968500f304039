//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::time::{ClockId, clock_gettime};

/// Smallest change of offset taken as a clock step, in ns (1 ms).
pub const STEP_NS: u64 = 1_000_000;

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC, taken at one moment.
///
/// One offset is kept and reused, so a kernel time always renders to the same
/// wall time (adjacent flow reports share a boundary). [`Clock::refresh`]
/// adopts a new sample only when the clocks really stepped apart.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Realtime minus monotonic, in ns.
    offset_ns: i128,
}

fn clock_ns(id: ClockId) -> i128 {
    // Both clocks always exist on Linux, so rustix's infallible call applies.
    let ts = clock_gettime(id);
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(ClockId::Monotonic)).unwrap_or(0)
}

impl Clock {
    /// Samples both clocks now.
    pub fn sample() -> Self {
        let mono = clock_ns(ClockId::Monotonic);
        let real = clock_ns(ClockId::Realtime);
        Self::from_offset(real - mono)
    }

    /// Re-samples, and adopts the sample only if the offset moved by more
    /// than [`STEP_NS`]. NTP slewing moves both clocks together; only a step
    /// (settimeofday, an NTP jump) changes the offset. Sampling noise (the
    /// two reads are not simultaneous) is a few ns and must not leak into
    /// records.
    pub fn refresh(&mut self) {
        let fresh = Self::sample();
        if (fresh.offset_ns - self.offset_ns).abs() > i128::from(STEP_NS) {
            *self = fresh;
        }
    }

    /// A clock with a fixed offset (tests).
    pub const fn from_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Wall time of a monotonic kernel timestamp.
    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = (i128::from(ktime_ns) + self.offset_ns).max(0);
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// RFC 3339 UTC with nanoseconds, as ECS dates are written.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_with_offset() {
        let c = Clock::from_offset(1_700_000_000_000_000_000);
        assert_eq!(rfc3339(c.wall(5)), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn refresh_ignores_sampling_noise_and_follows_steps() {
        let sampled = Clock::sample();
        let mut c = Clock::from_offset(sampled.offset_ns + 500);
        c.refresh();
        assert_eq!(
            c.offset_ns,
            sampled.offset_ns + 500,
            "noise must not move it"
        );
        let mut c = Clock::from_offset(sampled.offset_ns - 5_000_000_000);
        c.refresh();
        assert!(
            (c.offset_ns - sampled.offset_ns).abs() < 1_000_000,
            "a step is followed"
        );
    }

    #[test]
    fn sample_matches_system_time() {
        let c = Clock::sample();
        let wall = c.wall(monotonic_ns());
        let now = SystemTime::now();
        let diff = now.duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(1), "{diff:?}");
    }
}
