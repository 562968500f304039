//! The request stage's tasks, thin shells around the pure parts: a reader
//! that drains the request ring buffer, and the stage that puts events in
//! kernel-time order, feeds the [`Tracker`], keeps the kernel's process
//! filter up to date, and turns outcomes and losses into records.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use agent_common::request::RequestCounter;
use aya::maps::{MapData, RingBuf};
use lbwitness_trail::record::Record;
use tokio::{sync::mpsc, task::JoinHandle, time::Duration};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    event::{ReqEvent, decode},
    input::Input,
    procs::{Processes, Selector},
    records::RequestRecords,
    reorder::Reorder,
    seed,
    tracker::{Output, Tracker},
};
use crate::{
    capture::{
        requests::{
            HookChoice, ProcFilter, RequestCounters, RequestLoadError, RequestProbes,
            RequestSettings as LoadSettings,
        },
        ringbuf,
    },
    clock::{Clock, monotonic_ns},
    config::requests::RequestSettings,
    enrich::Enricher,
    flows::WriterGone,
    privacy::Pseudonymiser,
    telemetry::Counter,
};

/// Most events handed to the stage in one message.
const BATCH: usize = 512;
/// Batches the reader may be ahead of the stage; beyond, it waits and the
/// kernel counts what the full ring refuses.
const BATCHES: usize = 64;
/// How often held events are released and idle windows checked.
const TICK: Duration = Duration::from_millis(20);
/// How often the reader looks at the ring without being woken: the kernel
/// wakes it only once an eighth of the ring waits
/// ([`LoadSettings::with_batched_wakeups`]). Far below the reorder hold
/// ([`super::reorder::HOLD_NS`], 100 ms), so no event waits longer for it.
const POLL: Duration = Duration::from_millis(10);
/// How long after the switch-off the ring is taken as final.
const SWITCH_SETTLE: Duration = Duration::from_millis(5);
/// How often `/proc` is rescanned for load-balancer processes.
const RESCAN: Duration = Duration::from_secs(1);
/// How often the kernel's loss counters become gap records.
const COUNTERS: Duration = Duration::from_secs(10);

/// Request capture, running. Dropping the probes detaches them.
pub struct RequestStage {
    probes: RequestProbes,
    /// Tells the reader to drain the ring and stop, once detached.
    stop_reading: CancellationToken,
    reader: JoinHandle<std::io::Result<()>>,
    stage: JoinHandle<Result<(), WriterGone>>,
}

impl RequestStage {
    /// Loads and attaches the request programs, then spawns the reader and
    /// the stage. Records go to `out`, with clients' pseudonyms when
    /// `pseudonyms` is given; both tasks end after [`RequestStage::stop`].
    pub fn start(
        settings: &RequestSettings,
        hostname: String,
        pseudonyms: Option<Arc<Pseudonymiser>>,
        out: mpsc::Sender<Record>,
    ) -> Result<Self, RequestLoadError> {
        let stop_reading = CancellationToken::new();
        let load = LoadSettings::try_new(settings.ring_buffer_bytes, settings.capture_bytes)
            .map(|l| {
                l.with_tls_libraries(settings.tls_libraries.clone())
                    .with_batched_wakeups()
            })
            .map_err(|e| RequestLoadError::Syscalls(e.to_string()))?;
        let mut probes = RequestProbes::load(&load)?;
        let ring = probes.take_ring()?;
        let filter = probes.take_procs()?;
        let counters = probes.take_counters()?;
        let decode_errors = Arc::new(Counter::default());
        let ring_bytes = Arc::new(Counter::default());
        let (tx, rx) = mpsc::channel(BATCHES);
        let reader = tokio::spawn(read_ring(
            ring,
            tx,
            Read {
                decode_errors: decode_errors.clone(),
                ring_bytes: ring_bytes.clone(),
            },
            stop_reading.clone(),
        ));
        let stage = Stage {
            tracker: Tracker::new(super::http::Limits::default(), settings.exact_tag),
            reorder: Reorder::default(),
            processes: Processes::new(
                "/proc".into(),
                Selector {
                    names: settings.processes.clone(),
                    cgroups: settings.cgroups.clone(),
                },
            ),
            filter,
            counters,
            reported: BTreeMap::new(),
            decode_errors,
            decode_reported: 0,
            ring_bytes,
            since: SystemTime::now(),
            records: RequestRecords::new(hostname.clone(), settings.privacy.clone(), pseudonyms),
            gaps: Enricher::new(hostname, Default::default()),
            clock: Clock::sample(),
            out,
            outputs: Vec::new(),
            released: Vec::new(),
            late_seen: 0,
        };
        let stage = tokio::spawn(stage.run(rx));
        Ok(Self {
            probes,
            stop_reading,
            reader,
            stage,
        })
    }

    /// What serves each hook, and why.
    pub fn choices(&self) -> &[HookChoice] {
        self.probes.choices()
    }

    /// Switches the programs off, so what the ring holds is final, lets
    /// the reader drain it and the stage flush what is in flight, and
    /// waits for both. The detach (tens of perf events, each close waiting
    /// for an RCU grace period: seconds in all) runs meanwhile on threads
    /// of its own; the caller awaits the returned handle last, so the flow
    /// flush and the trail's end never wait for it.
    pub async fn stop(self) -> anyhow::Result<JoinHandle<()>> {
        let Self {
            mut probes,
            stop_reading,
            reader,
            stage,
        } = self;
        probes.switch_off()?;
        // A program past its check when the switch flipped is still
        // sending: it runs for microseconds.
        tokio::time::sleep(SWITCH_SETTLE).await;
        let detach = tokio::task::spawn_blocking(move || probes.detach());
        stop_reading.cancel();
        reader.await??;
        stage.await??;
        Ok(detach)
    }
}

/// Reads the ring until `stop`, then drains it. When the stage falls
/// behind, `send` waits and the kernel counts every event the full ring
/// refuses: the one place that drops also counts.
async fn read_ring(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<ReqEvent>>,
    counters: Read,
    stop: CancellationToken,
) -> std::io::Result<()> {
    ringbuf::read(ring, tx, stop, Some(POLL), |ring| {
        read_batch(ring, &counters)
    })
    .await
}

/// What the reader counts.
struct Read {
    /// Events the decoder rejected.
    decode_errors: Arc<Counter>,
    /// Bytes of every event read from the ring (item lengths, without the
    /// ring's own 8-byte record header and 8-byte alignment), for the
    /// benchmark's cost per request.
    ring_bytes: Arc<Counter>,
}

fn read_batch(ring: &mut RingBuf<MapData>, counters: &Read) -> Vec<ReqEvent> {
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        let Some(item) = ring.next() else { break };
        counters.ring_bytes.add(item.len() as u64);
        match decode(&item) {
            Ok(ev) => batch.push(ev),
            Err(err) => {
                counters.decode_errors.inc();
                warn!(%err, "rejected a request event");
            }
        }
    }
    batch
}

struct Stage {
    tracker: Tracker,
    reorder: Reorder<Input>,
    processes: Processes,
    filter: ProcFilter,
    counters: RequestCounters,
    /// Each loss counter's total as last declared.
    reported: BTreeMap<&'static str, u64>,
    decode_errors: Arc<Counter>,
    decode_reported: u64,
    /// Bytes read from the ring, reported when the stage stops.
    ring_bytes: Arc<Counter>,
    /// When the losses not yet declared began.
    since: SystemTime,
    records: RequestRecords,
    gaps: Enricher,
    clock: Clock,
    out: mpsc::Sender<Record>,
    outputs: Vec<Output>,
    released: Vec<(u64, Input)>,
    /// [`Reorder::late`] as last seen.
    late_seen: u64,
}

impl Stage {
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<ReqEvent>>) -> Result<(), WriterGone> {
        self.rescan();
        let mut tick = tokio::time::interval(TICK);
        let mut rescan = tokio::time::interval(RESCAN);
        let mut counters = tokio::time::interval(COUNTERS);
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => batch.into_iter().for_each(|ev| self.take(ev)),
                    None => break,
                },
                _ = tick.tick() => {}
                _ = rescan.tick() => {
                    self.rescan();
                    self.clock.refresh();
                    self.tracker.expire(monotonic_ns(), &mut self.outputs);
                }
                _ = counters.tick() => self.declare_losses().await?,
            }
            self.reorder.release(monotonic_ns(), &mut self.released);
            self.feed();
            self.send().await?;
        }
        // The reader drained the ring: everything the kernel sent is here.
        self.reorder.drain(&mut self.released);
        self.feed();
        self.tracker.flush(monotonic_ns(), &mut self.outputs);
        self.send().await?;
        self.declare_losses().await?;
        let u = self.tracker.unused();
        info!(
            untupled_chunks = u.untupled_chunks,
            early_chunks = u.early_chunks,
            framing_lost = u.framing_lost,
            unclaimed_backend = u.unclaimed_backend,
            tls_records = u.tls_records,
            splice_unknown_socket = u.splice_unknown_socket,
            splice_unlinked = u.splice_unlinked,
            seeds_dropped = u.seeds_dropped,
            ring_bytes = self.ring_bytes.get(),
            "request capture stopped"
        );
        Ok(())
    }

    /// One decoded event into the reorder buffer, with the loss it reports.
    fn take(&mut self, ev: ReqEvent) {
        let t = ev.ktime_ns();
        let lost = ev.lost();
        if lost > 0 {
            // The lost events came before this one on its CPU.
            self.reorder.push(
                t.saturating_sub(1),
                Input::Lost {
                    count: u64::from(lost),
                },
            );
        }
        if let Some((t, input)) = Input::from_event(ev) {
            self.reorder.push(t, input);
        }
    }

    fn feed(&mut self) {
        let late = self.reorder.late();
        if late > self.late_seen {
            // An event came after later ones had left: what it belonged
            // to was decided out of order, so every open window is in
            // doubt (of order, not of events).
            self.late_seen = late;
            if let Some((t, _)) = self.released.first() {
                let t = *t;
                self.tracker.push(t, Input::OutOfOrder, &mut self.outputs);
            }
        }
        for (t, input) in self.released.drain(..) {
            self.tracker.push(t, input, &mut self.outputs);
        }
    }

    async fn send(&mut self) -> Result<(), WriterGone> {
        for o in self.outputs.drain(..) {
            let record = match &o {
                Output::Request(r) => {
                    let p = self.processes.info(r.thread.tgid);
                    self.records.request(&self.clock, r, &p)
                }
                Output::Connection(c) => {
                    let p = self.processes.info(c.tgid);
                    self.records.connection(&self.clock, c, &p)
                }
            };
            self.out.send(record).await.map_err(|_| WriterGone)?;
        }
        Ok(())
    }

    /// Follows new load-balancer processes and forgets the dead.
    fn rescan(&mut self) {
        let changes = self.processes.rescan(&self.filter.tgids());
        for pid in &changes.removed {
            if let Err(err) = self.filter.remove(*pid) {
                warn!(pid, %err, "could not stop following a process");
            }
        }
        // Every new process into the filter first, then their snapshots:
        // reading /proc takes milliseconds per process, and a process not
        // yet in the filter loses its events meanwhile.
        let mut followed = Vec::new();
        for pid in &changes.added {
            match self.filter.add(*pid) {
                Ok(()) => followed.push(*pid),
                Err(err) => {
                    warn!(pid, %err, "could not follow a load-balancer process; its requests are not captured")
                }
            }
        }
        for pid in followed {
            // Read after the filter took it: a socket opened or closed from
            // here on is also an event, which the tracker orders against
            // this snapshot.
            let at = monotonic_ns();
            let seed = seed::read(self.processes.proc_root(), pid);
            info!(
                pid,
                older_connections = seed.conns.len(),
                older_pipes = seed.pipes.len(),
                "following a load-balancer process"
            );
            self.reorder.push(at, Input::Seed { tgid: pid, seed });
        }
    }

    /// A gap record for each loss counter that grew since the last time.
    async fn declare_losses(&mut self) -> Result<(), WriterGone> {
        let now = SystemTime::now();
        let mut gaps = Vec::new();
        match self.counters.read() {
            Ok(counts) => {
                for (counter, total) in counts {
                    if !is_loss(counter) {
                        continue;
                    }
                    let before = self.reported.insert(counter.name(), total).unwrap_or(0);
                    if total > before {
                        gaps.push((counter.name(), total - before));
                    }
                }
            }
            Err(err) => warn!(%err, "could not read the request counters"),
        }
        let decode_errors = self.decode_errors.get();
        if decode_errors > self.decode_reported {
            gaps.push(("req_decode_errors", decode_errors - self.decode_reported));
            self.decode_reported = decode_errors;
        }
        for (reason, count) in gaps {
            warn!(reason, count, "request events lost");
            let gap = self
                .gaps
                .gap_record(self.since, now, "kernel", reason, "loss", count);
            self.out.send(gap).await.map_err(|_| WriterGone)?;
        }
        self.since = now;
        Ok(())
    }
}

/// Whether a counter counts events or processes the kernel failed to
/// capture (as opposed to information).
fn is_loss(c: RequestCounter) -> bool {
    !matches!(
        c,
        RequestCounter::MsgPeekSkipped
            | RequestCounter::NonTcpSkipped
            | RequestCounter::Truncated
            | RequestCounter::DataEvents
    )
}
