//! Balancing: which endpoint of a collector group takes the next batch (or
//! record, for `consistent_hash`), and when an endpoint is down.
//!
//! [`Balancer::pick`] is pure: the delivery stage passes each endpoint's
//! health (from [`Health`]) and outstanding count and sends where it is
//! told.

pub mod health;
pub mod key;
mod ring;
#[cfg(test)]
mod tests;

use serde::Deserialize;

use self::ring::Ring;
pub use self::{
    health::{Change, Health, HealthPolicy},
    key::{field_of_line, hash_key},
    ring::VNODES,
};

/// How a group spreads work over its endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each healthy endpoint in turn.
    #[default]
    RoundRobin,
    /// The healthy endpoint with the fewest unacknowledged batches; ties in
    /// turn.
    LeastOutstanding,
    /// By a hash of a record field, so one key (a flow, a client) sticks to
    /// one endpoint, with loads bounded by the load factor.
    ConsistentHash,
    /// The first healthy endpoint in config order.
    Failover,
}

/// Why a group's balancing settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// A group without endpoints.
    #[error("the group has no endpoints; list at least one")]
    NoEndpoints,
    /// Two endpoints with the same name.
    #[error("endpoint `{name}` is listed twice in the group; list each endpoint once")]
    DuplicateEndpoint {
        /// The name.
        name: String,
    },
    /// A load factor below 1 or not a number.
    #[error(
        "load factor {value} is invalid: use a number ≥ 1.0 (1.25 is usual; lower balances tighter but moves more keys)"
    )]
    LoadFactor {
        /// The value.
        value: f64,
    },
    /// A failure threshold of 0.
    #[error("failure threshold 0 is invalid: use at least 1 consecutive failure")]
    Threshold,
    /// A backoff base of zero or a cap below it.
    #[error(
        "probe backoff base {base:?} and cap {cap:?} are invalid: the base must be above zero and the cap at least the base"
    )]
    Backoff {
        /// The base delay.
        base: std::time::Duration,
        /// The longest delay.
        cap: std::time::Duration,
    },
}

/// Chooses endpoints for one group.
#[derive(Clone, Debug)]
pub struct Balancer {
    strategy: Strategy,
    endpoints: usize,
    /// Where the next round-robin scan starts (round_robin and the tie
    /// break of least_outstanding).
    next: usize,
    ring: Option<Ring>,
    load_factor: f64,
}

impl Balancer {
    /// A balancer over `endpoints` (by name; endpoint `i` is `endpoints[i]`
    /// in every later call). `load_factor` is the bound `c` of
    /// consistent_hash: no endpoint holds more than `ceil(c × average)`.
    pub fn try_new<S: AsRef<str>>(
        strategy: Strategy,
        endpoints: &[S],
        load_factor: f64,
    ) -> Result<Balancer, BalanceError> {
        if endpoints.is_empty() {
            return Err(BalanceError::NoEndpoints);
        }
        for (i, e) in endpoints.iter().enumerate() {
            if endpoints[..i].iter().any(|o| o.as_ref() == e.as_ref()) {
                return Err(BalanceError::DuplicateEndpoint {
                    name: e.as_ref().to_owned(),
                });
            }
        }
        // NaN is not finite, so it is refused too.
        if !load_factor.is_finite() || load_factor < 1.0 {
            return Err(BalanceError::LoadFactor { value: load_factor });
        }
        Ok(Balancer {
            strategy,
            endpoints: endpoints.len(),
            next: 0,
            ring: (strategy == Strategy::ConsistentHash).then(|| Ring::new(endpoints)),
            load_factor,
        })
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// How many endpoints.
    pub fn len(&self) -> usize {
        self.endpoints
    }

    /// Always false: a balancer has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// An endpoint with `healthy[i]`, or `None` when none is healthy.
    /// `outstanding[i]` is what endpoint `i` holds unacknowledged (batches,
    /// or records for consistent_hash); `key` is the record's
    /// [`hash_key`], used by consistent_hash only. Missing entries count as
    /// unhealthy and empty.
    pub fn pick(&mut self, key: u64, healthy: &[bool], outstanding: &[u64]) -> Option<usize> {
        let up = |i: usize| healthy.get(i) == Some(&true);
        let load = |i: usize| outstanding.get(i).copied().unwrap_or(0);
        let n = self.endpoints;
        let chosen = match self.strategy {
            Strategy::Failover => (0..n).find(|&i| up(i)),
            Strategy::ConsistentHash => {
                self.ring
                    .as_ref()?
                    .pick(key, self.load_factor, healthy, outstanding)
            }
            Strategy::RoundRobin => (0..n).map(|k| (self.next + k) % n).find(|&i| up(i)),
            // The first minimum in scan order from `next`: equal loads take
            // turns instead of piling on the lowest index.
            Strategy::LeastOutstanding => (0..n)
                .map(|k| (self.next + k) % n)
                .filter(|&i| up(i))
                .min_by_key(|&i| load(i)),
        }?;
        // Advancing past the chosen one (not by one) is what keeps round
        // robin even when some are down: each healthy one is chosen once per
        // turn of the scan.
        self.next = (chosen + 1) % n;
        Some(chosen)
    }
}
