//! The flow task: lifecycle events in, flow and counters records out. It
//! sweeps the kernel flow map on a timer and applies the decisions of the
//! pure [`table::FlowTable`].

pub mod evictions;
pub mod table;

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    sync::Arc,
    time::{Duration, SystemTime},
};

use agent_common::{
    counter::{Counter, CounterClass},
    flow::{FlowEvent, FlowKey, FlowStats},
};
use aya::maps::{HashMap as BpfHashMap, IterableMap as _, MapData, PerCpuArray};
use tokio::sync::mpsc;

use self::{
    evictions::Evictions,
    table::{FlowTable, ReportReason, Verdict},
};
use crate::{
    capture::sys::lookup_and_delete,
    clock::{Clock, monotonic_ns},
    config::FlowTimeouts,
    enrich::Enricher,
    record::{CounterValue, Record},
    telemetry::Telemetry,
};

/// Flows ended and reported per step of a sweep.
const END_CHUNK: usize = 1024;

/// The kernel maps the flow task owns.
pub struct FlowMaps {
    /// `FLOWS`.
    pub flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    /// `COUNTERS`.
    pub counters: PerCpuArray<MapData, u64>,
}

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
}

/// The writer is gone; nothing more can be delivered.
#[derive(Debug, thiserror::Error)]
#[error("the record writer stopped")]
pub struct WriterGone;

impl FlowTask {
    /// A task over `maps` that sends records to `out`.
    pub fn new(
        maps: FlowMaps,
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
        }
    }

    /// Runs until `events` closes (the capture task has drained the ring
    /// after detach), then reports every open flow and the final counters.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Vec<FlowEvent>>,
    ) -> Result<(), WriterGone> {
        let present = self.maps.flows.keys().count() as u64;
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
                _ = tick.tick() => self.sweep().await?,
            }
        }
        self.flush_all().await?;
        self.report_counters(true).await
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
        self.table.begin_sweep();
        let mut present = 0_u64;
        let mut complete = true;
        let mut to_end = Vec::new();
        let mut reports = Vec::new();
        for entry in self.maps.flows.iter() {
            let Ok((key, stats)) = entry else {
                // The map changed under the iterator; the next sweep sees
                // it. The count of what is present is unknown now, and an
                // undercount would declare evictions that did not happen.
                complete = false;
                continue;
            };
            present += 1;
            match self.table.classify(&key, &stats, now) {
                Verdict::Keep => {}
                Verdict::Report => {
                    reports.push(self.table.report(key, &stats, ReportReason::ActiveTimeout));
                }
                Verdict::End(why) => to_end.push((key, why)),
            }
        }
        // Known flows the iteration did not meet: look again (iteration over
        // a changing hash map can skip keys) before forgetting them.
        let unseen: Vec<FlowKey> = self.table.unseen().collect();
        for key in unseen {
            if self.maps.flows.get(&key, 0).is_ok() {
                present += 1;
            } else {
                self.table.forget(&key);
            }
        }
        // Before this sweep removes anything, so `removed` and `present`
        // describe the same moment.
        if let Some(inserted) = inserted.filter(|_| complete) {
            self.observe_evictions(inserted, present);
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
        match lookup_and_delete::<FlowKey, FlowStats>(self.maps.flows.map().fd().as_fd(), &key) {
            Ok(Some(stats)) => {
                self.evictions.removed();
                Some(self.table.report(key, &stats, why))
            }
            Ok(None) => {
                // Evicted since the walk; the ledger counts it next time.
                self.table.forget(&key);
                None
            }
            Err(err) => {
                self.telemetry.map_errors.inc();
                tracing::warn!(%err, "removing an ended flow from the kernel map failed");
                None
            }
        }
    }

    /// Reports every flow left in the map (at shutdown, after detach).
    async fn flush_all(&mut self) -> Result<(), WriterGone> {
        self.clock.refresh();
        let keys: Vec<FlowKey> = self.maps.flows.keys().filter_map(Result::ok).collect();
        let mut reports = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(report) = self.end_flow(key, ReportReason::Shutdown) {
                reports.push(report);
            }
        }
        // Detached: nothing inserts or evicts any more, so this count is
        // exact. What a map error left in the map is present, not evicted.
        if let Some(inserted) = self.kernel_total(Counter::FlowsInserted) {
            let left = self.maps.flows.keys().count() as u64;
            self.observe_evictions(inserted, left);
        }
        for report in &reports {
            self.emit(self.enricher.flow_record(&self.clock, report))
                .await?;
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
        match self.maps.counters.get(&(counter as u32), 0) {
            Ok(per_cpu) => Some(per_cpu.iter().sum::<u64>()),
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
        if lost {
            tracing::warn!("capture loss since the previous counters record");
        }
        let now = SystemTime::now();
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
