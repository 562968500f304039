//! The flow task: lifecycle events in, flow and counters records out. It
//! sweeps the kernel flow map on a timer and applies the decisions of the
//! pure [`table::FlowTable`].

pub mod evictions;
mod maps;
mod pace;
pub mod recover;
pub mod table;

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use agent_common::{
    counter::{Counter, CounterClass},
    flow::{FlowEvent, FlowKey},
};
use lbwitness_trail::record::{CounterValue, Record};
use tokio::sync::mpsc;

use self::evictions::Evictions;
pub use self::maps::{Baselines, FlowMaps};
use self::recover::{CounterBaseline, Recovered};
use self::table::{FlowTable, ReportReason, Verdict};
use crate::{
    clock::{Clock, monotonic_ns},
    config::FlowTimeouts,
    enrich::Enricher,
    telemetry::Telemetry,
};

/// Flows ended and reported per step of a sweep.
const END_CHUNK: usize = 1024;

/// Settings of the flow task.
#[derive(Clone, Copy, Debug)]
pub struct FlowSettings {
    /// Export timeouts.
    pub timeouts: FlowTimeouts,
    /// Sweep period.
    pub sweep_interval: Duration,
    /// Whether lifecycle events become records.
    pub lifecycle_records: bool,
}

/// How long the final flush may take, from the stop signal, before it
/// declares the flows it has not reported yet: 1.5 s plus 10 µs per open
/// flow (a shutdown record costs 5–15 µs through the enricher, the audit
/// stage and the spool on the 2-vCPU development VM; README "Benchmarks").
pub fn flush_budget(open_flows: u64) -> Duration {
    const BASE: Duration = Duration::from_millis(1500);
    const PER_FLOW: Duration = Duration::from_micros(10);
    BASE + PER_FLOW * u32::try_from(open_flows).unwrap_or(u32::MAX)
}

/// Counter totals at the previous counters record.
struct Reported {
    kernel: [u64; Counter::COUNT as usize],
    agent: BTreeMap<&'static str, u64>,
    /// When the previous counters record was made: the start of the
    /// interval the next gap records cover.
    at: SystemTime,
}

/// The flow task's state.
pub struct FlowTask {
    maps: FlowMaps,
    table: FlowTable,
    evictions: Evictions,
    enricher: Enricher,
    settings: FlowSettings,
    telemetry: Arc<Telemetry>,
    reported: Reported,
    clock: Clock,
    out: mpsc::Sender<Record>,
    /// What a crashed run left unreported, reported first.
    recovered: Recovered,
    /// Set when the stop begins: a sweep then gives way to the final flush.
    stopping: Arc<OnceLock<tokio::time::Instant>>,
}

/// The writer is gone; nothing more can be delivered.
#[derive(Debug, thiserror::Error)]
#[error("the record writer stopped")]
pub struct WriterGone;

impl FlowTask {
    /// A task over `maps` that sends records to `out`, first those of what
    /// crashed runs left unreported.
    pub fn new(
        (maps, recovered): (FlowMaps, Recovered),
        enricher: Enricher,
        settings: FlowSettings,
        telemetry: Arc<Telemetry>,
        out: mpsc::Sender<Record>,
    ) -> Self {
        Self {
            maps,
            table: FlowTable::new(settings.timeouts),
            // Replaced in `run` once the map has been looked at.
            evictions: Evictions::default(),
            enricher,
            settings,
            telemetry,
            reported: Reported {
                kernel: [0; Counter::COUNT as usize],
                agent: BTreeMap::new(),
                at: SystemTime::now(),
            },
            clock: Clock::sample(),
            out,
            recovered,
            stopping: Arc::default(),
        }
    }

    /// Reports what crashed runs left in their pinned maps, then unpins
    /// them. Their ktime stamps are of this boot: pins do not survive a
    /// reboot.
    async fn report_recovered(&mut self) -> Result<(), WriterGone> {
        let recovered = std::mem::take(&mut self.recovered);
        if recovered.dirs.is_empty() {
            return Ok(());
        }
        let (packets, bytes) = recovered
            .flows
            .iter()
            .fold((0, 0), |(p, b), r| (p + r.packets, b + r.bytes));
        tracing::info!(
            flows = recovered.flows.len(),
            packets,
            bytes,
            unread_events = recovered.unread_events,
            "recovered a crashed run's unreported flow counts"
        );
        self.clock.refresh();
        for report in &recovered.flows {
            self.emit(self.enricher.flow_record(&self.clock, report))
                .await?;
        }
        let now = SystemTime::now();
        for &(counter, delta, since) in &recovered.counters {
            let class = match counter.class() {
                CounterClass::Loss => "loss",
                CounterClass::Malformed => "malformed",
                CounterClass::Info => continue,
            };
            let gap = self
                .enricher
                .gap_record(since, now, "kernel", counter.name(), class, delta);
            self.emit(gap).await?;
        }
        if recovered.unread_events > 0 {
            let gap = self.enricher.gap_record(
                now,
                now,
                "kernel",
                "ringbuf_unread",
                "loss",
                recovered.unread_events,
            );
            self.emit(gap).await?;
        }
        recovered.remove_pins();
        Ok(())
    }

    /// Runs until `events` closes (the capture task has drained the ring
    /// after detach), then reports every open flow and the final counters.
    /// `stopping` is when the stop began: the final flush's budget counts
    /// from then.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Vec<FlowEvent>>,
        stopping: Arc<OnceLock<tokio::time::Instant>>,
    ) -> Result<(), WriterGone> {
        self.stopping = stopping;
        self.report_recovered().await?;
        // This run's maps are its own (a crashed run's pins are read apart),
        // so what they hold now is the ledger's starting point.
        let present = self.maps.entries().map_or(0, |e| e.all.len() as u64);
        let inserted = self.kernel_total(Counter::FlowsInserted).unwrap_or(0);
        self.evictions = Evictions::starting_from(present, inserted);
        let mut tick = tokio::time::interval(self.settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = events.recv() => match batch {
                    Some(batch) => self.on_events(&batch).await?,
                    None => break,
                },
                _ = tick.tick() => {
                    if !self.catch_up(&mut events).await? {
                        break;
                    }
                    self.sweep().await?;
                }
            }
        }
        let began = self
            .stopping
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        self.flush_all(began).await?;
        self.report_counters(true).await
    }

    /// Handles every event batch already queued, so a backlog is not worked
    /// off one batch per sweep: with a large table a sweep takes long, and
    /// at a stop each queued batch would delay the final flush by one more
    /// sweep. `false` when the capture task has finished (the stop).
    async fn catch_up(
        &mut self,
        events: &mut mpsc::Receiver<Vec<FlowEvent>>,
    ) -> Result<bool, WriterGone> {
        loop {
            match events.try_recv() {
                Ok(batch) => self.on_events(&batch).await?,
                Err(mpsc::error::TryRecvError::Empty) => return Ok(true),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(false),
            }
        }
    }

    async fn emit(&self, record: Record) -> Result<(), WriterGone> {
        self.out.send(record).await.map_err(|_| WriterGone)
    }

    /// Lifecycle events become lifecycle records and nothing else: the
    /// sweep alone tracks flows, so an event that comes late (the reader
    /// fell behind) or never (the ring was full) changes no flow report and
    /// no eviction count. Without lifecycle records the kernel sends none.
    async fn on_events(&mut self, batch: &[FlowEvent]) -> Result<(), WriterGone> {
        if !self.settings.lifecycle_records {
            return Ok(());
        }
        self.clock.refresh();
        for ev in batch {
            self.emit(self.enricher.lifecycle_record(&self.clock, ev))
                .await?;
        }
        Ok(())
    }

    /// One pass over the kernel map: report what timed out, detect
    /// evictions, report counters that moved.
    async fn sweep(&mut self) -> Result<(), WriterGone> {
        self.clock.refresh();
        let now = monotonic_ns();
        // Before the walk, so the eviction count is a lower bound.
        let inserted = self.kernel_total(Counter::FlowsInserted);
        let entries = match self.maps.entries() {
            Ok(entries) => entries,
            Err(err) => {
                self.telemetry.map_errors.inc();
                tracing::warn!(%err, "reading the kernel flow map failed; the next sweep retries");
                return self.report_counters(false).await;
            }
        };
        self.table.begin_sweep();
        let mut present = entries.all.len() as u64;
        let mut to_end = Vec::new();
        let mut to_report = Vec::new();
        for (i, (key, stats)) in entries.all.into_iter().enumerate() {
            // With a large table a sweep takes long; at a stop, give way to
            // the final flush, which reports every flow anyway. Nothing is
            // reported or removed before this loop ends, so leaving it
            // loses nothing.
            if i.is_multiple_of(4096) && self.stopping.get().is_some() {
                return Ok(());
            }
            match self.table.classify(&key, &stats, now) {
                Verdict::Keep => {}
                Verdict::Report => to_report.push((key, stats)),
                Verdict::End(why) => to_end.push((key, why)),
            }
        }
        // Known flows the walk did not meet: look again (a per-element walk
        // over a changing hash map can skip keys) before forgetting them.
        let unseen: Vec<FlowKey> = self.table.unseen().collect();
        for key in unseen {
            if self.maps.contains(&key) {
                present += 1;
            } else {
                self.forget(&key);
            }
        }
        // Before this sweep removes anything, so `removed` and `present`
        // describe the same moment. A walk that skipped entries leaves the
        // count of what is present unknown, and an undercount would declare
        // evictions that did not happen.
        if let Some(inserted) = inserted.filter(|_| entries.complete) {
            self.observe_evictions(inserted, present);
        }
        let mut reports = Vec::new();
        for (key, stats) in to_report {
            reports.push(self.table.report(key, &stats, ReportReason::ActiveTimeout));
            if let Err(err) = self.maps.note_reported(&key, &stats) {
                // A restart after a crash would count these twice.
                self.telemetry.map_errors.inc();
                tracing::warn!(%err, "recording a flow's reported counts failed");
            }
        }
        for report in &reports {
            self.emit(self.enricher.flow_record(&self.clock, report))
                .await?;
        }
        // In chunks, so a million flows ending at once never hold a million
        // reports in memory.
        for chunk in to_end.chunks(END_CHUNK) {
            reports.clear();
            reports.extend(
                chunk
                    .iter()
                    .filter_map(|&(key, why)| self.end_flow(key, why)),
            );
            for report in &reports {
                self.emit(self.enricher.flow_record(&self.clock, report))
                    .await?;
            }
        }
        self.report_counters(false).await
    }

    /// Removes a flow from the kernel map with its final counts and reports
    /// it. `None` when the kernel evicted it first.
    fn end_flow(&mut self, key: FlowKey, why: ReportReason) -> Option<table::FlowReport> {
        match self.maps.remove(&key) {
            Ok(Some(stats)) => {
                self.evictions.removed();
                let report = self.table.report(key, &stats, why);
                self.forget(&key);
                Some(report)
            }
            Ok(None) => {
                // Evicted since the walk; the ledger counts it next time.
                self.forget(&key);
                None
            }
            Err(err) => {
                self.telemetry.map_errors.inc();
                tracing::warn!(%err, "removing an ended flow from the kernel map failed");
                None
            }
        }
    }

    /// Forgets a flow that left the kernel map, here and in its baseline.
    fn forget(&mut self, key: &FlowKey) {
        self.table.forget(key);
        if let Err(err) = self.maps.forget(key) {
            self.telemetry.map_errors.inc();
            tracing::warn!(%err, "removing a flow's reported counts failed");
        }
    }

    /// Reports every flow left in the map (at shutdown, after detach),
    /// within [`flush_budget`] of the flow count: one batched drain of the
    /// map, then one record per flow for as long as the pipeline can still
    /// take them, and those queued before them, in time. Flows left then
    /// are declared in one `shutdown-unflushed` gap record with their
    /// count.
    async fn flush_all(&mut self, began: tokio::time::Instant) -> Result<(), WriterGone> {
        let since = SystemTime::now();
        self.clock.refresh();
        let drained = match self.maps.drain() {
            Ok(drained) => drained,
            Err(err) => {
                // The final counters record declares the map error.
                self.telemetry.map_errors.inc();
                tracing::warn!(%err, "draining the kernel flow map at shutdown failed");
                Vec::new()
            }
        };
        for _ in &drained {
            self.evictions.removed();
        }
        // Detached: nothing inserts or evicts any more, so this count is
        // exact. What a map error left in the map is present, not evicted.
        if let Some(inserted) = self.kernel_total(Counter::FlowsInserted) {
            let left = self.maps.entries().map_or(0, |e| e.all.len() as u64);
            self.observe_evictions(inserted, left);
        }
        let drain_ms = began.elapsed().as_millis() as u64;
        let deadline = began + flush_budget(drained.len() as u64);
        let mut flushed: usize = 0;
        let emitting = tokio::time::Instant::now();
        for (key, stats) in &drained {
            // Stop while what is queued can still reach the spool in time.
            if flushed.is_multiple_of(256) {
                let queued = (self.out.max_capacity() - self.out.capacity()) as u64;
                let now = tokio::time::Instant::now();
                if !pace::fits(
                    now - emitting,
                    flushed as u64,
                    queued + pace::DOWNSTREAM,
                    deadline.saturating_duration_since(now),
                ) {
                    break;
                }
            }
            let report = self.table.report(*key, stats, ReportReason::Shutdown);
            let record = self.enricher.flow_record(&self.clock, &report);
            match tokio::time::timeout_at(deadline, self.out.send(record)).await {
                Ok(sent) => sent.map_err(|_| WriterGone)?,
                Err(_) => break,
            }
            flushed += 1;
        }
        let unflushed = (drained.len() - flushed) as u64;
        tracing::info!(
            flows = drained.len(),
            unflushed,
            drained_ms = drain_ms,
            took_ms = began.elapsed().as_millis() as u64,
            "final flow sweep (times since the stop signal)"
        );
        if unflushed > 0 {
            tracing::warn!(
                unflushed,
                "the stop budget ran out before every open flow was reported; \
                 declaring the rest in a gap record"
            );
            let gap = self.enricher.gap_record(
                since,
                SystemTime::now(),
                "agent",
                "shutdown-unflushed",
                "loss",
                unflushed,
            );
            self.emit(gap).await?;
        }
        Ok(())
    }

    /// Declares the evictions the ledger newly finds (the one place
    /// `flows_evicted` moves).
    fn observe_evictions(&mut self, inserted: u64, present: u64) {
        let new = self.evictions.observe(inserted, present);
        self.telemetry.flows_evicted.add(new);
    }

    /// A kernel counter summed over the CPUs; `None` (counted as a map
    /// error) when the map cannot be read.
    fn kernel_total(&self, counter: Counter) -> Option<u64> {
        match self.maps.counter_total(counter) {
            Ok(total) => Some(total),
            Err(err) => {
                self.telemetry.map_errors.inc();
                tracing::warn!(%err, counter = counter.name(), "reading a kernel counter failed");
                None
            }
        }
    }

    /// Emits a counters record when any counter moved since the last one, or
    /// always when `force` (the final record at shutdown), preceded by one
    /// gap record per loss or malformed-packet reason that moved.
    async fn report_counters(&mut self, force: bool) -> Result<(), WriterGone> {
        let mut kernel = BTreeMap::new();
        let mut agent = BTreeMap::new();
        let mut moved = false;
        let mut lost = false;
        let mut gaps = Vec::new();
        for counter in Counter::ALL {
            let Some(total) = self.kernel_total(counter) else {
                continue;
            };
            let delta = total.saturating_sub(self.reported.kernel[counter as usize]);
            // Informational counts (ARP, fragments) ride along with the next
            // record; losses and malformed packets get one within a sweep.
            moved |= delta > 0 && counter.class() != CounterClass::Info;
            lost |= delta > 0 && counter.class() == CounterClass::Loss;
            let class = match counter.class() {
                CounterClass::Loss => Some("loss"),
                CounterClass::Malformed => Some("malformed"),
                CounterClass::Info => None,
            };
            if let Some(class) = class.filter(|_| delta > 0) {
                gaps.push(("kernel", counter.name(), class, delta));
            }
            kernel.insert(counter.name(), CounterValue { delta, total });
        }
        for (name, total, is_loss) in self.telemetry.snapshot() {
            let before = self.reported.agent.get(name).copied().unwrap_or(0);
            let delta = total.saturating_sub(before);
            // Event counts move all the time; only losses warrant a record.
            moved |= delta > 0 && is_loss;
            lost |= delta > 0 && is_loss;
            if delta > 0 && is_loss {
                gaps.push(("agent", name, "loss", delta));
            }
            agent.insert(name, CounterValue { delta, total });
        }
        if !moved && !force {
            return Ok(());
        }
        // Deltas are relative to the previous record, so the baseline moves
        // only when a record goes out.
        for counter in Counter::ALL {
            if let Some(v) = kernel.get(counter.name()) {
                self.reported.kernel[counter as usize] = v.total;
            }
        }
        for (name, v) in &agent {
            self.reported.agent.insert(name, v.total);
        }
        let now = SystemTime::now();
        let baseline = CounterBaseline {
            totals: self.reported.kernel,
            at_unix_ns: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        };
        if let Err(err) = self.maps.note_counters(&baseline) {
            self.telemetry.map_errors.inc();
            tracing::warn!(%err, "recording the reported counter totals failed");
        }
        if lost {
            tracing::warn!("capture loss since the previous counters record");
        }
        let since = std::mem::replace(&mut self.reported.at, now);
        for (source, reason, class, count) in gaps {
            let gap = self
                .enricher
                .gap_record(since, now, source, reason, class, count);
            self.emit(gap).await?;
        }
        let record = self.enricher.counters_record(now, kernel, agent, lost);
        self.emit(record).await
    }
}
