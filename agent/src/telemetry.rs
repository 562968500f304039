//! The agent's own counters. Each has one name and one place that
//! increments it; the flow task reports them in counters records.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every agent counter.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Ring-buffer events decoded (capture::ringbuf).
    pub events: Counter,
    /// Ring-buffer events rejected by the decoder (capture::ringbuf).
    pub decode_errors: Counter,
    /// Flows the kernel's LRU map evicted before the agent removed them
    /// with their final report; their unreported packets are lost
    /// (flows::evictions, counted from the kernel's inserts).
    pub flows_evicted: Counter,
    /// Flow-map operations that failed (flows).
    pub map_errors: Counter,
}

impl Telemetry {
    /// `(name, value, counts as loss)` of each counter.
    pub fn snapshot(&self) -> [(&'static str, u64, bool); 4] {
        [
            ("events", self.events.get(), false),
            ("decode_errors", self.decode_errors.get(), true),
            ("flows_evicted", self.flows_evicted.get(), true),
            ("map_errors", self.map_errors.get(), true),
        ]
    }
}
