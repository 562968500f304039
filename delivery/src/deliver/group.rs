//! One collector group's task: reads its records from the spool, batches
//! them, picks an endpoint for each batch (or each record, for
//! `consistent_hash`), re-routes what an endpoint fails to take, probes
//! endpoints that are down, and acknowledges to the spool what the group
//! has delivered.

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use tokio::sync::{mpsc, watch};

use super::{
    GroupSpec, Job, Read, Source, Stats,
    ledger::Ledger,
    worker::{self, Outcome, Work},
};
use crate::{
    balance::{self, BalanceError, Balancer, Health},
    sink::endpoint::{Batch, Connector, Entry, SinkError},
};

/// An acknowledgement for the spool: `group` has everything routed to it
/// up to `through`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The group's index.
    pub group: usize,
    /// The watermark.
    pub through: u64,
}

/// What a group tells the spooler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToSpool {
    /// Delivery progress.
    Ack(Ack),
    /// Damaged records the group's reader found: to declare.
    Lost(crate::spool::Loss),
}

/// Why a group stopped.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The spool could not be read.
    #[error("group {group}: reading the spool: {message}")]
    Spool {
        /// The group.
        group: String,
        /// The spool's error.
        message: String,
    },
}

/// Depth of a worker's queue.
const WORK_QUEUE: usize = 256;

struct Endpoint {
    work: mpsc::Sender<Work>,
    health: Health,
    /// Batches queued or in flight at this endpoint.
    outstanding: u64,
    probing: bool,
    name: String,
}

/// The group's state.
pub struct Group {
    index: usize,
    spec: GroupSpec,
    agent_id: Arc<str>,
    endpoints: Vec<Endpoint>,
    balancer: Balancer,
    ledger: Ledger,
    /// Batches waiting for a healthy endpoint, oldest first.
    waiting: VecDeque<Job>,
    next_job: u64,
    acks: mpsc::Sender<ToSpool>,
    stats: Arc<Stats>,
}

impl Group {
    /// Starts one worker per endpoint. `acked` is the group's watermark from
    /// the spool.
    pub fn new(
        index: usize,
        spec: GroupSpec,
        agent_id: Arc<str>,
        connectors: Vec<Arc<dyn Connector>>,
        acked: u64,
        acks: mpsc::Sender<ToSpool>,
        outcomes: &mpsc::Sender<Outcome>,
    ) -> Result<Self, BalanceError> {
        let names: Vec<String> = connectors.iter().map(|c| c.endpoint().to_owned()).collect();
        // The ring is built on endpoint names, so reordering the config
        // does not move keys.
        let balancer = Balancer::try_new(spec.strategy, &names, spec.load_factor)?;
        let stats = Arc::new(Stats::new(&spec.name, &connectors));
        let endpoints = connectors
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                // Deep enough that a send never waits: `in_flight` is enforced by
                // `eligible`, and a failure returns the queue at once.
                let (tx, rx) = mpsc::channel(WORK_QUEUE);
                let name = c.endpoint().to_owned();
                tokio::spawn(worker::run(i, c, spec.timeouts, rx, outcomes.clone()));
                Endpoint {
                    work: tx,
                    health: Health::new(spec.health),
                    outstanding: 0,
                    probing: false,
                    name,
                }
            })
            .collect::<Vec<_>>();
        Ok(Self {
            index,
            spec,
            agent_id,
            endpoints,
            balancer,
            ledger: Ledger::new(acked),
            waiting: VecDeque::new(),
            next_job: 0,
            acks,
            stats,
        })
    }

    /// Counters for logs and the demo.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn healthy(&self) -> Vec<bool> {
        self.endpoints.iter().map(|e| e.health.is_up()).collect()
    }

    /// Endpoints that may take a batch now: up, and (except for
    /// `consistent_hash`, where the key decides) below `in_flight`.
    fn eligible(&self) -> Vec<bool> {
        let hashed = self.spec.hash_field.is_some();
        self.endpoints
            .iter()
            .map(|e| e.health.is_up() && (hashed || (e.outstanding as usize) < self.spec.in_flight))
            .collect()
    }

    /// Room for another read: nothing waiting, and every endpoint that is up
    /// below its `in_flight` (one read may go to all of them).
    fn can_read(&self) -> bool {
        self.waiting.is_empty()
            && self.endpoints.iter().any(|e| e.health.is_up())
            && self
                .endpoints
                .iter()
                .filter(|e| e.health.is_up())
                .all(|e| (e.outstanding as usize) < self.spec.in_flight)
    }

    fn job(&mut self, chunk: u64, entries: Vec<Entry>) -> Job {
        self.next_job += 1;
        Job {
            id: self.next_job,
            chunk,
            batch: Batch {
                agent_id: self.agent_id.clone(),
                entries,
            },
        }
    }

    /// Splits a read into jobs and hands them out.
    async fn on_read(&mut self, read: Read) {
        let Read {
            entries,
            scanned_through,
            losses,
        } = read;
        for loss in losses {
            let _ = self.acks.send(ToSpool::Lost(loss)).await;
        }
        tracing::trace!(group = %self.spec.name, records = entries.len(), scanned_through, "read");
        let parts = self.split(entries);
        let (chunk, moved) = self.ledger.read(scanned_through, parts.len());
        for (prefer, entries) in parts {
            let job = self.job(chunk, entries);
            self.place(job, prefer).await;
        }
        if let Some(through) = moved {
            self.ack(through).await;
        }
    }

    /// One batch, or for `consistent_hash` one batch per endpoint holding
    /// the records whose key maps there (and one, for no endpoint, of those
    /// with no endpoint up).
    fn split(&mut self, entries: Vec<Entry>) -> Vec<(Option<usize>, Vec<Entry>)> {
        if entries.is_empty() {
            return Vec::new();
        }
        let Some(field) = self.spec.hash_field.clone() else {
            return vec![(None, entries)];
        };
        let up: Vec<bool> = self.endpoints.iter().map(|e| e.health.is_up()).collect();
        // Load in records: what is outstanding plus what this split adds.
        let per_batch = self.spec.batch_records as u64;
        let mut load: Vec<u64> = self
            .endpoints
            .iter()
            .map(|e| e.outstanding * per_batch)
            .collect();
        let mut parts: Vec<Vec<Entry>> = vec![Vec::new(); self.endpoints.len()];
        let mut unplaced = Vec::new();
        for e in entries {
            let key = balance::field_of_line(&e.line, &field).map_or(0, balance::hash_key);
            match self.balancer.pick(key, &up, &load) {
                Some(i) => {
                    load[i] += 1;
                    parts[i].push(e);
                }
                None => unplaced.push(e),
            }
        }
        let mut out: Vec<(Option<usize>, Vec<Entry>)> = parts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(i, p)| (Some(i), p))
            .collect();
        if !unplaced.is_empty() {
            out.push((None, unplaced));
        }
        out
    }

    /// Gives `job` to `prefer` when it is eligible, else to the endpoint the
    /// strategy picks; gives it back when no endpoint can take it now.
    async fn dispatch(&mut self, job: Job, prefer: Option<usize>) -> Result<(), Job> {
        let eligible = self.eligible();
        let target = match prefer {
            Some(i) if eligible[i] => Some(i),
            _ => {
                let outstanding: Vec<u64> = self.endpoints.iter().map(|e| e.outstanding).collect();
                self.balancer.pick(0, &eligible, &outstanding)
            }
        };
        let Some(i) = target else {
            return Err(job);
        };
        self.endpoints[i].outstanding += 1;
        match self.endpoints[i].work.send(Work::Send(job)).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(work)) => {
                // The worker is gone; it never ends before its group.
                self.endpoints[i].outstanding -= 1;
                match work {
                    Work::Send(job) => Err(job),
                    Work::Probe => unreachable!("sent a batch"),
                }
            }
        }
    }

    /// Dispatches, or keeps the job until an endpoint can take it.
    async fn place(&mut self, job: Job, prefer: Option<usize>) {
        if let Err(job) = self.dispatch(job, prefer).await {
            self.waiting.push_back(job);
        }
    }

    /// Dispatches waiting jobs, oldest first, while endpoints take them.
    async fn flush_waiting(&mut self) {
        while let Some(job) = self.waiting.pop_front() {
            if let Err(job) = self.dispatch(job, None).await {
                self.waiting.push_front(job);
                break;
            }
        }
    }

    async fn ack(&mut self, through: u64) {
        self.stats.acked.store(through, Ordering::Relaxed);
        let _ = self
            .acks
            .send(ToSpool::Ack(Ack {
                group: self.index,
                through,
            }))
            .await;
    }

    async fn on_outcome(&mut self, outcome: Outcome) {
        let now = Instant::now();
        match outcome {
            Outcome::Sent { endpoint, job } => {
                tracing::trace!(group = %self.spec.name, endpoint, last = job.batch.last_sequence(), "sent");
                let e = &mut self.endpoints[endpoint];
                e.outstanding -= 1;
                e.health.on_success();
                self.stats
                    .sent(endpoint, job.batch.entries.len(), job.batch.bytes());
                if let Some(through) = self.ledger.done(job.chunk) {
                    self.ack(through).await;
                }
                self.flush_waiting().await;
            }
            Outcome::Failed {
                endpoint,
                job,
                error,
            } => {
                let e = &mut self.endpoints[endpoint];
                e.outstanding -= 1;
                if let Some(error @ SinkError::Closed { .. }) = error {
                    // Said once: the endpoint is never tried again this run.
                    if !e.health.is_ended() {
                        e.health.end();
                        self.stats.failed(endpoint);
                        tracing::error!(group = %self.spec.name, endpoint = %e.name, %error,
                            "collector endpoint ended");
                    }
                } else if let Some(error) = error {
                    let was_healthy = e.health.is_up();
                    e.health.on_failure(now, getrandom::u64().unwrap_or(0));
                    self.stats.failed(endpoint);
                    if was_healthy && !e.health.is_up() {
                        tracing::warn!(group = %self.spec.name, endpoint = %e.name, %error,
                            "collector endpoint down; its batches go to the group's other endpoints");
                    } else {
                        tracing::debug!(group = %self.spec.name, endpoint = %e.name, %error, "send failed");
                    }
                }
                self.stats.rerouted.fetch_add(1, Ordering::Relaxed);
                // Re-routed batches go ahead of new ones.
                if self.spec.hash_field.is_some() && job.batch.entries.len() > 1 {
                    // Re-split among the endpoints still up.
                    let parts = self.split(job.batch.entries);
                    self.ledger
                        .add_jobs(job.chunk, parts.len().saturating_sub(1));
                    for (prefer, entries) in parts.into_iter().rev() {
                        let j = self.job(job.chunk, entries);
                        match self.dispatch(j, prefer).await {
                            Ok(()) => {}
                            Err(j) => self.waiting.push_front(j),
                        }
                    }
                } else {
                    self.waiting.push_front(job);
                    self.flush_waiting().await;
                }
            }
            Outcome::Probed { endpoint, result } => {
                let e = &mut self.endpoints[endpoint];
                e.probing = false;
                match result {
                    Ok(()) => {
                        if !e.health.is_up() {
                            tracing::info!(group = %self.spec.name, endpoint = %e.name, "collector endpoint healthy again");
                        }
                        e.health.on_probe(now, true, 0);
                        // Failover returns to the primary as soon as it is back.
                        self.flush_waiting().await;
                    }
                    Err(error) => {
                        e.health.on_probe(now, false, getrandom::u64().unwrap_or(0));
                        tracing::debug!(group = %self.spec.name, endpoint = %e.name, %error, "probe failed");
                    }
                }
            }
        }
        self.stats.set_health(&self.healthy());
    }

    /// Probes the endpoints that are down and due.
    async fn probe_due(&mut self) {
        let now = Instant::now();
        for e in &mut self.endpoints {
            if !e.probing && e.health.probe_due(now) {
                e.probing = true;
                let _ = e.work.send(Work::Probe).await;
            }
        }
    }

    /// When the next probe is due.
    fn next_probe(&self) -> Option<Instant> {
        self.endpoints
            .iter()
            .filter(|e| !e.probing)
            .filter_map(|e| e.health.next_probe())
            .min()
    }

    /// Delivers until `finish` carries a sequence the group has acknowledged
    /// (the agent is stopping and everything up to it is durable), or
    /// forever. The caller bounds the drain with a timeout.
    pub async fn run<S: Source>(
        mut self,
        mut source: S,
        mut outcomes: mpsc::Receiver<Outcome>,
        mut finish: watch::Receiver<Option<u64>>,
    ) -> Result<u64, GroupError> {
        loop {
            if let Some(end) = *finish.borrow()
                && self.ledger.acked() >= end
            {
                break;
            }
            let probe_at = self.next_probe().map(tokio::time::Instant::from_std);
            let can_read = self.can_read();
            tokio::select! {
                biased;
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome).await,
                () = sleep_until(probe_at), if probe_at.is_some() => self.probe_due().await,
                read = source.next(self.spec.batch_records, self.spec.batch_bytes), if can_read => {
                    let read = read.map_err(|e| GroupError::Spool {
                        group: self.spec.name.clone(),
                        message: e.to_string(),
                    })?;
                    self.on_read(read).await;
                }
                r = finish.changed() => if r.is_err() { break },
            }
        }
        Ok(self.ledger.acked())
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
