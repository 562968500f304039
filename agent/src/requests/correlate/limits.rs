//! The bounds on a thread's window: how many requests it may hold and how
//! long a request may stay in flight.

use std::time::Duration;

/// Bounds on every window, validated so an unusable one can't exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    max_requests: usize,
    timeout_ns: u64,
}

/// Why a [`WindowLimits`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A window must hold at least one request.
    #[error(
        "a window must hold at least 1 request; set the window bound to 1 or more (4096 by default)"
    )]
    NoRequests,
    /// A zero timeout would expire every request at once.
    #[error("the in-flight timeout must be at least 1 ns; set it to a duration such as 60s")]
    NoTimeout,
    /// The timeout doesn't fit in kernel nanoseconds (u64).
    #[error("the in-flight timeout {0:?} is longer than 584 years; set a shorter one such as 60s")]
    TimeoutTooLong(Duration),
}

impl WindowLimits {
    /// Bounds of `max_requests` requests (client and backend sides, counted
    /// together) per window and `timeout` in flight per request.
    pub fn try_new(max_requests: usize, timeout: Duration) -> Result<Self, LimitsError> {
        if max_requests == 0 {
            return Err(LimitsError::NoRequests);
        }
        let timeout_ns =
            u64::try_from(timeout.as_nanos()).map_err(|_| LimitsError::TimeoutTooLong(timeout))?;
        if timeout_ns == 0 {
            return Err(LimitsError::NoTimeout);
        }
        Ok(WindowLimits {
            max_requests,
            timeout_ns,
        })
    }

    /// Most requests one window holds before it is closed as too large.
    pub fn max_requests(&self) -> usize {
        self.max_requests
    }

    /// Longest a request may stay in flight, in ns.
    pub fn timeout_ns(&self) -> u64 {
        self.timeout_ns
    }
}

impl Default for WindowLimits {
    /// 4096 requests and 60 s: far above a healthy thread's concurrency and
    /// request time, and a 4096-request window correlates in milliseconds.
    fn default() -> Self {
        WindowLimits {
            max_requests: 4096,
            timeout_ns: 60_000_000_000,
        }
    }
}
