//! Endpoint health: passive detection from send results, and when to probe
//! a down endpoint again (exponential backoff with full jitter, as in
//! "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
//!
//! Pure: the caller passes the time and a random number, so tests are
//! deterministic and the delivery stage owns the clock and the RNG.

use std::time::{Duration, Instant};

use super::BalanceError;

/// When an endpoint counts as down and how often to probe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    threshold: u32,
    base: Duration,
    cap: Duration,
}

impl Default for HealthPolicy {
    /// 3 consecutive failures; probes 250 ms after going down at most,
    /// doubling to at most 30 s.
    fn default() -> Self {
        Self {
            threshold: 3,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

impl HealthPolicy {
    /// Down after `threshold` consecutive failures (≥ 1); probe delays grow
    /// from `base` (> 0) doubling up to `cap` (≥ `base`).
    pub fn try_new(threshold: u32, base: Duration, cap: Duration) -> Result<Self, BalanceError> {
        if threshold == 0 {
            return Err(BalanceError::Threshold);
        }
        if base.is_zero() || cap < base {
            return Err(BalanceError::Backoff { base, cap });
        }
        Ok(Self {
            threshold,
            base,
            cap,
        })
    }

    /// The delay before probe number `attempt` (0 = the first after going
    /// down): uniform in `[0, min(cap, base · 2^attempt)]`, from `random`.
    pub fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let doubled = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        let ceiling = self.base.saturating_mul(doubled).min(self.cap);
        // Nanoseconds fit u64 for any cap below 584 years.
        let span = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        // Scales `random` onto 0..=span without the bias of `%`.
        let ns = (u128::from(random) * (u128::from(span) + 1)) >> 64;
        Duration::from_nanos(ns as u64)
    }
}

/// What an event did to an endpoint's state, so the caller logs each
/// transition once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// No transition.
    Same,
    /// It just went down: stop sending, re-route its outstanding batches.
    WentDown,
    /// It is healthy again.
    CameUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up {
        failures: u32,
    },
    Down {
        attempt: u32,
        next_probe: Instant,
    },
    /// Gone for the rest of the run (standard output whose reader exited):
    /// never probed, never sent to again.
    Ended,
}

/// One endpoint's health.
#[derive(Clone, Copy, Debug)]
pub struct Health {
    policy: HealthPolicy,
    state: State,
}

impl Health {
    /// A healthy endpoint (endpoints start up; the first failures tell).
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            state: State::Up { failures: 0 },
        }
    }

    /// Whether the balancer may send to it.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    /// Consecutive failures while up (0 when down).
    pub fn failures(&self) -> u32 {
        match self.state {
            State::Up { failures } => failures,
            State::Down { .. } | State::Ended => 0,
        }
    }

    /// The endpoint cannot come back in this run (its connector said so):
    /// it stays down and is never probed.
    pub fn end(&mut self) -> Change {
        let was_up = self.is_up();
        self.state = State::Ended;
        if was_up {
            Change::WentDown
        } else {
            Change::Same
        }
    }

    /// Whether [`end`](Self::end) was called.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// A send succeeded. Resets the failure count; a late success from a
    /// down endpoint (a batch in flight when it went down) is proof enough
    /// that it works again, like a probe.
    pub fn on_success(&mut self) -> Change {
        if self.is_ended() {
            return Change::Same;
        }
        let was_up = self.is_up();
        self.state = State::Up { failures: 0 };
        if was_up { Change::Same } else { Change::CameUp }
    }

    /// A send or connect failed at `now`. After `threshold` in a row the
    /// endpoint goes down and its first probe is scheduled.
    pub fn on_failure(&mut self, now: Instant, random: u64) -> Change {
        match self.state {
            State::Up { failures } if failures + 1 >= self.policy.threshold => {
                self.state = State::Down {
                    attempt: 0,
                    next_probe: now + self.policy.backoff(0, random),
                };
                Change::WentDown
            }
            State::Up { failures } => {
                self.state = State::Up {
                    failures: failures + 1,
                };
                Change::Same
            }
            // Late failures of batches sent before it went down: the probe
            // schedule already accounts for the outage.
            State::Down { .. } | State::Ended => Change::Same,
        }
    }

    /// When the next active probe is due, while down.
    pub fn next_probe(&self) -> Option<Instant> {
        match self.state {
            State::Down { next_probe, .. } => Some(next_probe),
            State::Up { .. } | State::Ended => None,
        }
    }

    /// Whether a probe should start now.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.next_probe().is_some_and(|at| now >= at)
    }

    /// A probe finished at `now`: success brings the endpoint back, failure
    /// schedules the next probe with a doubled ceiling. Ignored while up.
    pub fn on_probe(&mut self, now: Instant, ok: bool, random: u64) -> Change {
        match (self.state, ok) {
            (State::Up { .. } | State::Ended, _) => Change::Same,
            (State::Down { .. }, true) => self.on_success(),
            (State::Down { attempt, .. }, false) => {
                let attempt = attempt.saturating_add(1);
                self.state = State::Down {
                    attempt,
                    next_probe: now + self.policy.backoff(attempt, random),
                };
                Change::Same
            }
        }
    }
}
