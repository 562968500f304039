//! Delivery: from the spool to the collector groups.
//!
//! ```text
//! audit ──batches──▶ spooler ──append, fsync──▶ spool (disk)
//!                      ▲  │ durable end                │ per-group readers
//!                acks  │  ▼                            ▼
//!                      └── group task ──▶ balancer ──▶ endpoint workers ──▶ collectors
//! ```
//!
//! Every group reads the spool on its own and acknowledges what all its
//! batches up to a point have delivered; the spool deletes a segment only
//! when every group has passed it (docs/SPOOL.md). A batch an endpoint fails
//! to take goes to another healthy endpoint of the group, or waits for one.

pub mod declare;
pub mod group;
pub mod ledger;
pub mod spooler;
pub mod worker;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use crate::{
    balance::{HealthPolicy, Strategy},
    sink::endpoint::{Batch, Connector, Entry},
};

/// How one group delivers: validated from the config.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// The group's name.
    pub name: String,
    /// How batches are spread over the endpoints.
    pub strategy: Strategy,
    /// `consistent_hash`: the bounded-load factor c (≥ 1).
    pub load_factor: f64,
    /// `consistent_hash`: the record field whose value keeps records
    /// together, e.g. `source.ip`.
    pub hash_field: Option<String>,
    /// Most records in one batch.
    pub batch_records: usize,
    /// Most bytes of record text in one batch.
    pub batch_bytes: usize,
    /// Batches queued or in flight per endpoint.
    pub in_flight: usize,
    /// Connect and send timeouts.
    pub timeouts: worker::Timeouts,
    /// Failure detection and probe backoff.
    pub health: HealthPolicy,
}

/// A batch on its way to one endpoint.
#[derive(Debug)]
pub struct Job {
    /// Unique within the group.
    pub id: u64,
    /// The read it came from (see [`ledger::Ledger`]).
    pub chunk: u64,
    /// The records.
    pub batch: Batch,
}

/// Records read for one group.
#[derive(Debug, Default)]
pub struct Read {
    /// The group's records, in order.
    pub entries: Vec<Entry>,
    /// The last sequence the read passed, routed to the group or not.
    pub scanned_through: u64,
    /// Damaged spool records found while reading: to declare.
    pub losses: Vec<crate::spool::Loss>,
}

/// Where a group reads its records: the spool's reader for the group.
pub trait Source: Send {
    /// Waits for records after the last read and returns up to the limits.
    /// Must be cancel-safe: a group drops the future when something else
    /// needs its attention, and the next call must return the same records.
    fn next(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Read, Box<dyn std::error::Error + Send + Sync>>> + Send;
}

/// Per-endpoint counters of one group, for logs and the demo.
#[derive(Debug)]
pub struct Stats {
    /// The group.
    pub group: String,
    /// The endpoints' names.
    pub endpoints: Vec<String>,
    /// Records delivered, per endpoint.
    pub records: Vec<AtomicU64>,
    /// Bytes delivered, per endpoint.
    pub bytes: Vec<AtomicU64>,
    /// Failed sends, per endpoint.
    pub failures: Vec<AtomicU64>,
    /// Health, per endpoint.
    pub healthy: Vec<AtomicBool>,
    /// Batches handed to another endpoint after a failure.
    pub rerouted: AtomicU64,
    /// The group's acknowledgement watermark.
    pub acked: AtomicU64,
}

impl Stats {
    fn new(group: &str, connectors: &[Arc<dyn Connector>]) -> Self {
        let n = connectors.len();
        Self {
            group: group.to_owned(),
            endpoints: connectors.iter().map(|c| c.endpoint().to_owned()).collect(),
            records: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bytes: (0..n).map(|_| AtomicU64::new(0)).collect(),
            failures: (0..n).map(|_| AtomicU64::new(0)).collect(),
            healthy: (0..n).map(|_| AtomicBool::new(true)).collect(),
            rerouted: AtomicU64::new(0),
            acked: AtomicU64::new(0),
        }
    }

    fn sent(&self, endpoint: usize, records: usize, bytes: usize) {
        self.records[endpoint].fetch_add(records as u64, Ordering::Relaxed);
        self.bytes[endpoint].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn failed(&self, endpoint: usize) {
        self.failures[endpoint].fetch_add(1, Ordering::Relaxed);
    }

    fn set_health(&self, healthy: &[bool]) {
        for (h, v) in self.healthy.iter().zip(healthy) {
            h.store(*v, Ordering::Relaxed);
        }
    }

    /// One line for the log: `endpoint=records` for each endpoint.
    pub fn summary(&self) -> String {
        self.endpoints
            .iter()
            .enumerate()
            .map(|(i, name)| {
                format!(
                    "{name}={}{}",
                    self.records[i].load(Ordering::Relaxed),
                    if self.healthy[i].load(Ordering::Relaxed) {
                        ""
                    } else {
                        " (down)"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}
