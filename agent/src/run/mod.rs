//! `lbwitness run`: checks, load, attach, the pipeline tasks, reloads on
//! SIGHUP, and a clean shutdown on SIGINT or SIGTERM.
//!
//! ```text
//! ring buffer ─▶ capture::ringbuf ─▶ flows (sweeps FLOWS, reads COUNTERS) ─▶ audit ─▶ spooler ─▶ groups ─▶ collectors
//!                                            run (hooks, reloads), watch ──┘
//! ```

pub mod delivery;
mod reload;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use agent_common::names;
use anyhow::{Context as _, anyhow};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf};
use tokio::{
    signal::unix::SignalKind,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    audit::{
        AuditTask, Control,
        identity::StateDir,
        records::AuditRecords,
        state::{self, HeadFile, Resume},
    },
    capture::{
        self,
        attach::{self, Attachment, attach},
        pins::Pins,
    },
    config::{Config, Overrides},
    enrich::{Captured, Enricher},
    flows::{Baselines, FlowMaps, FlowSettings, FlowTask, recover::Recovered},
    preflight,
    telemetry::Telemetry,
    watch::{PathNote, Startup, Watcher},
};
use lbwitness_delivery::deliver::declare::LossBook;
use lbwitness_trail::{
    chain::{Chain, Head},
    checkpoint::Signer,
    keys,
    record::{
        Record,
        audit::{CaptureInterface, Hook, PreviousChain, Start, WatchProblem, WatchedFile},
    },
};

/// Channel depths: enough to ride out a burst, small enough to push back.
const EVENT_BATCHES: usize = 64;
const RECORDS: usize = 8192;
const BATCHES: usize = 16;
const CONTROL: usize = 256;
/// What a stop needs after the final flow flush: the audit stage's last
/// records, the final checkpoint, the spool's last fsync, and the groups'
/// 2.5 s to deliver what is spooled (`run::delivery::DRAIN`).
const STOP_TAIL: Duration = Duration::from_millis(3000);

/// What the stop's last part always gets, even after an overrun: the
/// audit stage's queued records, the final checkpoint, and the groups'
/// 2.5 s to deliver (`run::delivery::DRAIN`).
const TAIL_FLOOR: Duration = Duration::from_secs(4);

/// The longest a clean stop takes with `open_flows` flows in the kernel
/// map: 4.5 s with few flows, growing by 10 µs per open flow (the final
/// flush's [`crate::flows::flush_budget`]).
pub fn stop_budget(open_flows: u64) -> Duration {
    crate::flows::flush_budget(open_flows) + STOP_TAIL
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it. Later
/// kernels use memory cgroups and ignore it, so failure is only logged.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// What the start record says about paths the watcher cannot fully watch.
fn watch_problems(startup: &Startup) -> Vec<WatchProblem> {
    let note = |kind: &str, n: &PathNote| WatchProblem {
        path: n.path.display().to_string(),
        problem: format!("{kind}: {}", n.reason),
    };
    let mut problems: Vec<WatchProblem> = startup
        .skipped
        .iter()
        .map(|n| note("not watched", n))
        .chain(
            startup
                .unattributed
                .iter()
                .map(|n| note("writers not attributed", n)),
        )
        .chain(startup.unreadable.iter().map(|n| note("unreadable", n)))
        .collect();
    if let Some(problem) = &startup.state_problem {
        problems.push(WatchProblem {
            path: String::new(),
            problem: format!("changes while stopped not checked: {problem}"),
        });
    }
    for p in &problems {
        tracing::warn!(path = %p.path, problem = %p.problem, "watched files");
    }
    problems
}

/// `lbwitness.hook` of an XDP attachment.
fn hook(a: &Attachment) -> Hook {
    Hook {
        ifindex: a.ifindex,
        interface: a.iface.clone(),
        kind: "xdp",
        mode: a.mode.as_str(),
    }
}

/// The first records of a run: the restart gap (after a previous run), the
/// start record, one `hook-attach` per attachment, and the watched files'
/// changes made while the agent was not running.
fn prelude(
    records: &AuditRecords,
    resume: &Resume,
    config: &Config,
    key_id: &str,
    attachments: &[Attachment],
    startup: &Startup,
    previous_chain: Option<PreviousChain>,
) -> Vec<Record> {
    let now = SystemTime::now();
    let mut prelude = Vec::new();
    if let Some(previous) = resume.previous {
        prelude.push(records.restart(now, resume.head, previous));
    }
    let start = Start {
        capture: attachments
            .iter()
            .map(|a| CaptureInterface {
                fallback: a.fallback.clone(),
                interface: a.iface.clone(),
                xdp_mode: a.mode.as_str(),
            })
            .collect(),
        config_sha256: config.sha256.clone(),
        hooks: attachments
            .iter()
            .map(|a| format!("xdp/{}/{}", a.iface, a.mode.as_str()))
            .collect(),
        interfaces: attachments.iter().map(|a| a.iface.clone()).collect(),
        key_id: key_id.to_owned(),
        previous_chain,
        version: env!("CARGO_PKG_VERSION"),
        watch_problems: watch_problems(startup),
        watched_files: startup
            .current
            .iter()
            .map(|(path, state)| WatchedFile {
                path: path.display().to_string(),
                sha256: state.as_ref().map(|s| s.sha256.clone()),
                size: state.as_ref().map(|s| s.size),
            })
            .collect(),
    };
    prelude.push(records.start(now, start));
    prelude.extend(attachments.iter().map(|a| records.hook(now, true, hook(a))));
    prelude.extend(startup.changes.iter().map(|c| records.file_change(c)));
    prelude
}

/// Takes the ring buffer and the flow task's maps from the loaded object,
/// and pins them with their baselines in this run's directory, so that a
/// crash leaves their unreported counts for the next start. When pinning
/// fails the run goes on unpinned (`pins` becomes `None`), with a warning.
fn take_maps(
    ebpf: &mut aya::Ebpf,
    pins: &mut Option<Pins>,
    entries: u32,
) -> anyhow::Result<(RingBuf<MapData>, FlowMaps)> {
    let mut take = |name: &str| {
        ebpf.take_map(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map `{name}`: rebuild the agent"))
    };
    let (flows, counters, events) = (
        take(names::FLOW_MAP)?,
        take(names::COUNTERS_MAP)?,
        take(names::EVENTS_MAP)?,
    );
    let baselines = pins.as_ref().and_then(|p| {
        let pin = |map: &Map, name: &str| map.pin(p.path(name)).map_err(anyhow::Error::from);
        // Baselines first: a run directory with FLOWS always has them.
        let pinned = Baselines::create_pinned(entries, p)
            .map_err(anyhow::Error::from)
            .and_then(|b| {
                pin(&flows, names::FLOW_MAP)?;
                pin(&counters, names::COUNTERS_MAP)?;
                pin(&events, names::EVENTS_MAP)?;
                Ok(b)
            });
        match pinned {
            Ok(b) => Some(b),
            Err(err) => {
                tracing::warn!(%err, "pinning the flow maps failed; a crash will lose the counts not yet reported");
                p.remove();
                None
            }
        }
    });
    if baselines.is_none() {
        *pins = None;
    }
    let maps = FlowMaps {
        flows: BpfHashMap::try_from(flows)?,
        counters: PerCpuArray::try_from(counters)?,
        baselines,
    };
    Ok((RingBuf::try_from(events)?, maps))
}

/// Why the main loop ended.
enum Ending {
    /// SIGTERM or SIGINT: a clean stop.
    Signal(&'static str),
    /// A task stopped on its own: an error.
    Failed(String),
}

/// Runs the agent until SIGINT or SIGTERM. `overrides` are the command
/// line's, applied again on every reload.
pub async fn run(config: Config, overrides: Overrides) -> anyhow::Result<()> {
    let mut config = config;
    let interfaces = preflight::resolve_interfaces(&config.interfaces)?;
    preflight::check_capabilities()?;
    preflight::check_kernel(Path::new(preflight::VMLINUX_BTF))?;

    // The chain's state, before anything can produce a record. The lock
    // is held until the agent exits.
    let state_dir = StateDir::open(&config.state_dir)?;
    let (key, made) = keys::load_or_generate(&config.audit.signing_key)?;
    let signer = Signer::new(key);
    if made {
        info!(
            key = %config.audit.signing_key.display(),
            public = %keys::public_path(&config.audit.signing_key).display(),
            key_id = signer.key_id(),
            "made a new checkpoint signing key; give its public half to whoever verifies the trail"
        );
    }
    // The spool says where the chain really ended: records past its last
    // intact one never reached a collector.
    let opened = delivery::open(&config, state_dir.agent_id())?;
    let (mut head_file, persisted) = HeadFile::open(&config.state_dir)?;
    let spool_records = opened.tail.is_none_or(|t| t.head.sequence > 0);
    let settled = state_dir.settle(
        &mut head_file,
        persisted,
        spool_records,
        overrides.new_chain,
    )?;
    let agent_id: &'static str = Box::leak(settled.agent_id.into_boxed_str());
    let tail = opened.tail;
    let resume = state::resume(settled.persisted, tail);
    // Named until the new chain's first records are out.
    let previous_chain = settled
        .previous_chain
        .filter(|_| resume.head == Head::GENESIS);
    info!(
        agent_id,
        sequence = resume.head.sequence,
        "audit chain resumed"
    );
    let (watcher, startup) = Watcher::new(
        config.audit.watch_files.clone(),
        config.state_dir.join("watch.state"),
    )?;

    // What crashed runs left pinned, read before this run pins its own.
    let (mut pins, recovered) = match Pins::prepare(&config.bpffs, agent_id) {
        Ok((pins, left)) => (Some(pins), Recovered::read(left)),
        Err(err) => {
            tracing::warn!(%err, "the flow maps will not be pinned; a crash will lose the counts not yet reported");
            (None, Recovered::default())
        }
    };

    raise_memlock();

    let mut ebpf = capture::load(
        config.flow_table_entries,
        config.ring_buffer_bytes,
        config.lifecycle_records,
    )?;
    // Pinned before attach, so every packet counted is in a pinned map.
    let (ring, maps) = take_maps(&mut ebpf, &mut pins, config.flow_table_entries)?;
    let mut attachments = Vec::new();
    {
        let prog = capture::xdp_program(&mut ebpf)?;
        for (ifindex, name) in &interfaces {
            // On error, dropping `ebpf` detaches what was attached so far;
            // the run counted nothing, so its pins go too.
            let a = attach(prog, name, *ifindex, config.xdp_mode).inspect_err(|_| {
                if let Some(pins) = &pins {
                    pins.remove();
                }
            })?;
            info!(iface = %a.iface, ifindex = a.ifindex, mode = a.mode.as_str(), "attached XDP");
            if let Some(why) = &a.fallback {
                warn!(
                    iface = %a.iface,
                    native_refused = %why,
                    "capturing in GENERIC XDP mode, not native: {}; flow records say \
                     lbwitness.capture.xdp_mode \"generic\"",
                    attach::GENERIC_COUNTS
                );
            }
            attachments.push(a);
        }
    }

    let host = hostname();
    let audit_records = AuditRecords::new(host.clone());
    let mut prelude = prelude(
        &audit_records,
        &resume,
        &config,
        signer.key_id(),
        &attachments,
        &startup,
        previous_chain,
    );
    // What the spool lost while the agent was down, right after the start.
    prelude.extend(
        opened
            .losses
            .iter()
            .map(|l| audit_records.spool_loss(SystemTime::now(), l.clone())),
    );

    let telemetry = Arc::new(Telemetry::default());
    let shutdown = CancellationToken::new();
    let (event_tx, event_rx) = mpsc::channel(EVENT_BATCHES);
    let (record_tx, record_rx) = mpsc::channel(RECORDS);
    let (control_tx, control_rx) = mpsc::channel(CONTROL);
    let (batch_tx, batch_rx) = mpsc::channel(BATCHES);
    let (durable_tx, durable_rx) = watch::channel(resume.head.sequence);
    let (change_tx, mut change_rx) = mpsc::channel(64);

    let router = config.delivery.router();
    let book = LossBook::new();
    let mut pipeline = delivery::start(
        opened.spool,
        opened.connectors,
        &config,
        agent_id,
        resume.head.sequence,
        book.clone(),
        batch_rx,
        durable_tx,
    )?;
    let audit = AuditTask::new(
        Chain::new(agent_id, resume.head),
        resume.checkpointed,
        signer,
        (
            config.audit.checkpoint_records,
            config.audit.checkpoint_interval,
        ),
        head_file,
        audit_records.clone(),
        durable_rx.clone(),
        (router, batch_tx),
    )
    .declaring(book);
    let mut audit = tokio::spawn(audit.run(prelude, record_rx, control_rx));
    let flow_task = FlowTask::new(
        (maps, recovered),
        Enricher::new(
            host,
            attachments
                .iter()
                .map(|a| (a.ifindex, Captured::new(&a.iface, a.mode)))
                .collect(),
        ),
        FlowSettings {
            timeouts: config.timeouts,
            sweep_interval: config.sweep_interval,
            lifecycle_records: config.lifecycle_records,
        },
        telemetry.clone(),
        record_tx,
    );
    let stopping = Arc::new(std::sync::OnceLock::new());
    let mut flows = tokio::spawn(flow_task.run(event_rx, stopping.clone()));
    let mut reader: JoinHandle<std::io::Result<()>> = tokio::spawn(capture::ringbuf::run(
        ring,
        event_tx,
        telemetry.clone(),
        shutdown.clone(),
    ));
    let watch_stop = CancellationToken::new();
    let mut watching = tokio::spawn(watcher.run(change_tx, watch_stop.clone()));
    info!(
        interfaces = ?config.interfaces,
        output = ?config.output,
        "lbwitness running"
    );

    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let mut report = tokio::time::interval(delivery::REPORT_EVERY);
    report.tick().await;
    let mut watch_open = true;
    let mut watch_running = true;
    let ending = loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ending::Signal("SIGTERM") }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Ending::Signal("SIGINT") }
            _ = sighup.recv() => {
                // logrotate renames the output, then signals: write anew.
                lbwitness_delivery::sink::file::reopen_files();
                let msg = reload::reload(&mut config, &overrides, &audit_records);
                if control_tx.send(msg).await.is_err() {
                    break Ending::Failed("the audit stage stopped".to_owned());
                }
            }
            change = change_rx.recv(), if watch_open => match change {
                Some(change) => {
                    info!(path = %change.path.display(), change = change.kind.as_str(), "watched file changed");
                    let record = Box::new(audit_records.file_change(&change));
                    if control_tx.send(Control::Record(record)).await.is_err() {
                        break Ending::Failed("the audit stage stopped".to_owned());
                    }
                }
                None => watch_open = false,
            },
            r = &mut watching, if watch_running => {
                // File watching is not capture: losing it is recorded, not fatal.
                watch_running = false;
                let error = match r {
                    Ok(Ok(())) => "the watcher ended".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("the watcher panicked: {e}"),
                };
                tracing::error!(%error, "watching files stopped; their changes are no longer recorded");
                let record = audit_records.watch_stopped(SystemTime::now(), &config.audit.watch_files, error);
                if control_tx.send(Control::Record(Box::new(record))).await.is_err() {
                    break Ending::Failed("the audit stage stopped".to_owned());
                }
            }
            _ = report.tick() => pipeline.log_stats(),
            r = &mut pipeline.spooler => break Ending::Failed(format!("the spooler stopped: {r:?}")),
            r = pipeline.groups.join_next() => break Ending::Failed(format!("a collector group stopped: {r:?}")),
            r = &mut audit => break Ending::Failed(format!("the audit stage stopped: {r:?}")),
            r = &mut flows => break Ending::Failed(format!("the flow task stopped: {r:?}")),
            r = &mut reader => break Ending::Failed(format!("the ring-buffer reader stopped: {r:?}")),
        }
    };
    // The stop budget counts from here.
    let stop_began = tokio::time::Instant::now();
    let _ = stopping.set(stop_began);
    watch_stop.cancel();

    // Detach first, so what the maps hold afterwards is final.
    {
        let prog = capture::xdp_program(&mut ebpf)?;
        for a in attachments {
            let record = audit_records.hook(SystemTime::now(), false, hook(&a));
            prog.detach(a.link)
                .with_context(|| format!("detaching XDP from {}", a.iface))?;
            info!(iface = %a.iface, "detached XDP");
            // The audit stage may be gone already (early stop); then there
            // is nobody to record this.
            let _ = control_tx.send(Control::Record(Box::new(record))).await;
        }
    }
    let signal = match ending {
        Ending::Signal(signal) => signal,
        Ending::Failed(why) => return Err(anyhow!(why)),
    };
    let _ = control_tx.send(Control::Stopping(signal)).await;
    drop(control_tx);
    shutdown.cancel();
    // The flow task keeps its flush within its own budget, declaring what
    // it could not report, so it is awaited without a limit: cutting it
    // off would leave the trail open. What follows it gets at least
    // STOP_TAIL, and never ends past the budget for a full table unless
    // the flows already did.
    reader.await.context("ring-buffer reader panicked")??;
    flows.await.context("flow task panicked")??;
    let full = stop_began + stop_budget(u64::from(config.flow_table_entries));
    let tail_until = full.max(tokio::time::Instant::now() + TAIL_FLOOR);
    let drained = tokio::time::timeout_at(tail_until, async {
        let finished = audit.await.context("audit stage panicked")??;
        let written = pipeline.drain(finished.head.sequence, durable_rx).await?;
        finished.mark_clean(written)?;
        Ok::<u64, anyhow::Error>(written)
    })
    .await
    .context("shutdown took longer than its budget; some records may be unwritten")??;
    let took = stop_began.elapsed();
    if took > stop_budget(u64::from(config.flow_table_entries)) {
        tracing::warn!(
            took_ms = took.as_millis() as u64,
            "the stop overran its budget: the host is short of CPU or disk"
        );
    }
    // Everything was reported: nothing is left for a restart to recover.
    if let Some(pins) = &pins {
        pins.remove();
    }
    info!(sequence = drained, "stopped cleanly");
    Ok(())
}
