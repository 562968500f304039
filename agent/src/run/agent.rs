//! [`Agent`]: a running `lbwitness run`, from start to a clean stop.

use std::{
    path::Path,
    sync::{Arc, OnceLock},
    time::SystemTime,
};

use anyhow::{Context as _, anyhow};
use lbwitness_delivery::deliver::declare::LossBook;
use lbwitness_trail::chain::Chain;
use tokio::{
    sync::{mpsc, watch},
    task::{JoinError, JoinHandle},
    time::{Instant, Interval},
};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    BATCHES, CONTROL, EVENT_BATCHES, RECORDS, TAIL_FLOOR, WATCH_CHANGES,
    delivery::{self, Pipeline},
    hooks::Hooks,
    prelude::Prelude,
    reload,
    resume::Resumed,
    signals::{Received, Signals},
    stop_budget,
};
use crate::{
    audit::{AuditError, AuditTask, Control, Finished, identity::StateDir, records::AuditRecords},
    capture,
    config::{Config, Overrides},
    enrich::{Captured, Enricher},
    flows::{FlowSettings, FlowTask, WriterGone},
    preflight,
    privacy::{self, Keep, Pseudonymiser},
    requests::task::RequestStage,
    telemetry::Telemetry,
    watch::{FileChange, WatchError, Watcher},
};

/// Why [`Agent::supervise`] returned.
#[derive(Debug)]
pub enum Ending {
    /// SIGTERM or SIGINT (named): a clean stop.
    Signal(&'static str),
    /// A task stopped on its own: an error, which [`Agent::stop`] returns.
    Failed(String),
}

/// The agent, running: its kernel hooks, the pipeline's tasks and what
/// connects them. Made by [`Agent::start`], run by [`Agent::supervise`],
/// ended by [`Agent::stop`].
pub struct Agent {
    /// The running config; reloads update what can change.
    config: Config,
    /// The command line's overrides, applied again on every reload.
    overrides: Overrides,
    records: AuditRecords,
    signals: Signals,
    /// When the groups' counts are logged.
    report: Interval,
    /// To the audit stage: records from outside the flow path, reloads,
    /// and the stop.
    control: mpsc::Sender<Control>,
    /// The watcher's changes; `None` once it closed the channel.
    changes: Option<mpsc::Receiver<FileChange>>,
    tasks: Tasks,
    /// The last sequence the spool holds durably.
    durable: watch::Receiver<u64>,
    /// Tells the ring-buffer reader to stop.
    shutdown: CancellationToken,
    /// Tells the watcher to stop.
    watch_stop: CancellationToken,
    /// When the stop began, for the flow task's final flush budget.
    stopping: Arc<OnceLock<Instant>>,
    hooks: Hooks,
    /// Locks the state directory until the agent is gone.
    _state_dir: StateDir,
}

/// The pipeline's tasks.
struct Tasks {
    reader: JoinHandle<std::io::Result<()>>,
    flows: JoinHandle<Result<(), WriterGone>>,
    audit: JoinHandle<Result<Finished, AuditError>>,
    /// `None` once it ended: file watching is not capture, so losing it is
    /// recorded, not fatal.
    watching: Option<JoinHandle<Result<(), WatchError>>>,
    /// `None` when request capture is off or the kernel could not load it.
    requests: Option<RequestStage>,
    pipeline: Pipeline,
}

impl Agent {
    /// Checks the host, resumes the chain, loads and attaches the eBPF
    /// programs and spawns the pipeline's tasks. Returns once everything
    /// runs, or with what stopped it; what was attached is detached again
    /// on error.
    pub async fn start(config: Config, overrides: Overrides) -> anyhow::Result<Self> {
        // Signals first: a SIGHUP (logrotate) or SIGTERM during a slow
        // start (loading the request programs takes a while) must not kill
        // the agent by the default action.
        let signals = Signals::install()?;
        let interfaces = preflight::resolve_interfaces(&config.interfaces)?;
        preflight::check_capabilities()?;
        preflight::check_kernel(Path::new(preflight::VMLINUX_BTF))?;

        // The chain's state, before anything can produce a record.
        let chain = Resumed::open(&config, overrides.new_chain)?;
        let pseudonyms = open_pseudonyms(&config)?;
        let (watcher, startup) = Watcher::new(
            config.audit.watch_files.clone(),
            config.state_dir.join("watch.state"),
        )?;
        let (hooks, taken) = Hooks::attach(&config, &interfaces, chain.agent_id)?;

        let host = hostname();
        let records = AuditRecords::new(host.clone());
        let (record_tx, record_rx) = mpsc::channel(RECORDS);
        // Before the start record, which names its hooks; its records wait
        // in the channel until the audit task has chained the prelude.
        let requests = start_requests(&config, &host, pseudonyms.clone(), &record_tx);
        let prelude = Prelude {
            records: &records,
            resume: &chain.resume,
            config_sha256: &config.sha256,
            key_id: chain.signer.key_id(),
            attachments: hooks.attachments(),
            request_hooks: requests.as_ref().map_or(&[], |r| r.choices()),
            startup: &startup,
            previous_chain: chain.previous_chain,
            spool_losses: &chain.opened.losses,
            pseudonyms: pseudonyms.as_deref().map(Pseudonymiser::start_record),
        }
        .into_records();

        let telemetry = Arc::new(Telemetry::default());
        let shutdown = CancellationToken::new();
        let (event_tx, event_rx) = mpsc::channel(EVENT_BATCHES);
        let (control_tx, control_rx) = mpsc::channel(CONTROL);
        let (batch_tx, batch_rx) = mpsc::channel(BATCHES);
        let (durable_tx, durable_rx) = watch::channel(chain.resume.head.sequence);
        let (change_tx, change_rx) = mpsc::channel(WATCH_CHANGES);

        let book = LossBook::new();
        let pipeline = delivery::start(
            chain.opened.spool,
            chain.opened.connectors,
            &config,
            chain.agent_id,
            chain.resume.head.sequence,
            book.clone(),
            batch_rx,
            durable_tx,
        )?;
        let audit = AuditTask::new(
            Chain::new(chain.agent_id, chain.resume.head),
            chain.resume.checkpointed,
            chain.signer,
            (
                config.audit.checkpoint_records,
                config.audit.checkpoint_interval,
            ),
            chain.head_file,
            records.clone(),
            durable_rx.clone(),
            (config.delivery.router(), batch_tx),
        )
        .declaring(book);
        let audit = tokio::spawn(audit.run(prelude, record_rx, control_rx));
        let flow_task = FlowTask::new(
            (taken.maps, taken.recovered),
            Enricher::new(
                host,
                hooks
                    .attachments()
                    .iter()
                    .map(|a| (a.ifindex, Captured::new(&a.iface, a.mode)))
                    .collect(),
            )
            .pseudonymising(pseudonyms),
            FlowSettings {
                timeouts: config.timeouts,
                sweep_interval: config.sweep_interval,
                lifecycle_records: config.lifecycle_records,
            },
            telemetry.clone(),
            record_tx,
        );
        let stopping = Arc::new(OnceLock::new());
        let flows = tokio::spawn(flow_task.run(event_rx, stopping.clone()));
        let reader = tokio::spawn(capture::ringbuf::run(
            taken.ring,
            event_tx,
            telemetry,
            shutdown.clone(),
        ));
        let watch_stop = CancellationToken::new();
        let watching = tokio::spawn(watcher.run(change_tx, watch_stop.clone()));

        // The first tick is a report period away, not now.
        let report = tokio::time::interval_at(
            Instant::now() + delivery::REPORT_EVERY,
            delivery::REPORT_EVERY,
        );
        info!(
            interfaces = ?config.interfaces,
            output = ?config.output,
            "lbwitness running"
        );
        Ok(Self {
            config,
            overrides,
            records,
            signals,
            report,
            control: control_tx,
            changes: Some(change_rx),
            tasks: Tasks {
                reader,
                flows,
                audit,
                watching: Some(watching),
                requests,
                pipeline,
            },
            durable: durable_rx,
            shutdown,
            watch_stop,
            stopping,
            hooks,
            _state_dir: chain.state_dir,
        })
    }

    /// Runs until SIGINT or SIGTERM, or until a task stops on its own.
    /// Meanwhile: SIGHUP reopens the output files and reloads the config,
    /// watched files' changes and the watcher's end are recorded, and the
    /// groups' counts are logged every [`delivery::REPORT_EVERY`].
    pub async fn supervise(&mut self) -> Ending {
        loop {
            let ending = tokio::select! {
                signal = self.signals.recv() => self.on_signal(signal).await,
                change = next_change(&mut self.changes) => self.on_change(change).await,
                r = ended(&mut self.tasks.watching) => self.on_watcher_end(r).await,
                _ = self.report.tick() => {
                    self.tasks.pipeline.log_stats();
                    None
                }
                r = &mut self.tasks.pipeline.spooler => Some(failed("the spooler stopped", r)),
                r = self.tasks.pipeline.groups.join_next() => Some(failed("a collector group stopped", r)),
                r = &mut self.tasks.audit => Some(failed("the audit stage stopped", r)),
                r = &mut self.tasks.flows => Some(failed("the flow task stopped", r)),
                r = &mut self.tasks.reader => Some(failed("the ring-buffer reader stopped", r)),
            };
            if let Some(ending) = ending {
                return ending;
            }
        }
    }

    /// Stops in order, within [`stop_budget`]: detaches (recording each
    /// detach), tells the audit stage why, lets the flow task flush every
    /// open flow, then gives the audit stage its final checkpoint and the
    /// spool and groups their last fsync and delivery. Returns the error
    /// that ended [`Agent::supervise`], if any, right after detaching.
    pub async fn stop(self, ending: Ending) -> anyhow::Result<()> {
        let Self {
            config,
            records,
            control,
            tasks,
            durable,
            shutdown,
            watch_stop,
            stopping,
            mut hooks,
            ..
        } = self;
        // The stop budget counts from here.
        let began = Instant::now();
        let _ = stopping.set(began);
        watch_stop.cancel();
        // Detach first, so what the maps hold afterwards is final.
        hooks.detach(&records, &control).await?;
        // Request capture switches off, drains and flushes on its own; its
        // last records precede the stop. Its detach goes on meanwhile and
        // is awaited last.
        let detaching = match tasks.requests {
            Some(requests) => Some(requests.stop().await.context("request capture")?),
            None => None,
        };
        let signal = match ending {
            Ending::Signal(signal) => signal,
            Ending::Failed(why) => return Err(anyhow!(why)),
        };
        let _ = control.send(Control::Stopping(signal)).await;
        drop(control);
        shutdown.cancel();
        // The flow task keeps its flush within its own budget, declaring
        // what it could not report, so it is awaited without a limit:
        // cutting it off would leave the trail open. What follows it gets
        // at least TAIL_FLOOR, and never ends past the budget for a full
        // table unless the flows already did.
        tasks
            .reader
            .await
            .context("ring-buffer reader panicked")??;
        tasks.flows.await.context("flow task panicked")??;

        let budget = stop_budget(u64::from(config.flow_table_entries));
        let tail_until = (began + budget).max(Instant::now() + TAIL_FLOOR);
        let drained = tokio::time::timeout_at(tail_until, async {
            let finished = tasks.audit.await.context("audit stage panicked")??;
            let written = tasks
                .pipeline
                .drain(finished.head.sequence, durable)
                .await?;
            finished.mark_clean(written)?;
            Ok::<u64, anyhow::Error>(written)
        })
        .await
        .context("shutdown took longer than its budget; some records may be unwritten")??;
        let took = began.elapsed();
        if took > budget {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "the stop overran its budget: the host is short of CPU or disk"
            );
        }
        // Everything was reported: nothing is left for a restart to recover.
        hooks.unpin();
        if let Some(detaching) = detaching {
            detaching.await.context("detaching request capture")?;
        }
        info!(sequence = drained, "stopped cleanly");
        Ok(())
    }

    async fn on_signal(&mut self, signal: Received) -> Option<Ending> {
        if signal != Received::Hangup {
            info!("{}: stopping", signal.name());
            return Some(Ending::Signal(signal.name()));
        }
        // logrotate renames the output, then signals: write anew.
        lbwitness_delivery::sink::file::reopen_files();
        let msg = reload::reload(&mut self.config, &self.overrides, &self.records);
        self.tell_audit(msg).await
    }

    /// A watched file changed (`None`: the watcher closed its channel).
    async fn on_change(&mut self, change: Option<FileChange>) -> Option<Ending> {
        let Some(change) = change else {
            self.changes = None;
            return None;
        };
        info!(path = %change.path.display(), change = change.kind.as_str(), "watched file changed");
        let record = Box::new(self.records.file_change(&change));
        self.tell_audit(Control::Record(record)).await
    }

    async fn on_watcher_end(
        &mut self,
        r: Result<Result<(), WatchError>, JoinError>,
    ) -> Option<Ending> {
        self.tasks.watching = None;
        let error = match r {
            Ok(Ok(())) => "the watcher ended".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the watcher panicked: {e}"),
        };
        tracing::error!(%error, "watching files stopped; their changes are no longer recorded");
        let record =
            self.records
                .watch_stopped(SystemTime::now(), &self.config.audit.watch_files, error);
        self.tell_audit(Control::Record(Box::new(record))).await
    }

    /// Sends `msg` to the audit stage; when it is gone, the run fails.
    async fn tell_audit(&self, msg: Control) -> Option<Ending> {
        match self.control.send(msg).await {
            Ok(()) => None,
            Err(_) => Some(Ending::Failed("the audit stage stopped".to_owned())),
        }
    }
}

fn failed(what: &str, r: impl std::fmt::Debug) -> Ending {
    Ending::Failed(format!("{what}: {r:?}"))
}

/// The watcher's next change; pending for ever once its channel closed.
async fn next_change(rx: &mut Option<mpsc::Receiver<FileChange>>) -> Option<FileChange> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The task's end; pending for ever once it was seen.
async fn ended<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Starts request capture when configured. A kernel that cannot run it
/// leaves the agent capturing flows, with the reason logged: flows are
/// what the agent has always promised, requests are more.
/// With `[privacy] pseudonymise_clients`, the pseudonymiser every record
/// builder shares: the key from the (locked) state directory, made on the
/// first such start, and this host's addresses, which are not clients.
fn open_pseudonyms(config: &Config) -> anyhow::Result<Option<Arc<Pseudonymiser>>> {
    if !config.privacy.pseudonymise_clients {
        return Ok(None);
    }
    let (key, made) = privacy::key::load_or_create(&config.state_dir)?;
    let local = privacy::local::addresses()
        .context("reading this host's addresses (getifaddrs), which are never pseudonymised")?;
    let local_count = local.len();
    let p = Pseudonymiser::new(
        &key,
        Keep {
            local,
            networks: config.privacy.keep_networks.clone(),
        },
    );
    info!(
        key = %config.state_dir.join(privacy::key::FILE_NAME).display(),
        key_id = p.key_id(),
        made,
        local_addresses = local_count,
        keep_networks = config.privacy.keep_networks.len(),
        "client addresses are pseudonymised"
    );
    if config.privacy.keep_networks.is_empty() {
        tracing::warn!(
            "privacy.keep_networks is empty: backend addresses are pseudonymised too; \
             list the backend networks there to show them"
        );
    }
    Ok(Some(Arc::new(p)))
}

fn start_requests(
    config: &Config,
    host: &str,
    pseudonyms: Option<Arc<Pseudonymiser>>,
    records: &mpsc::Sender<lbwitness_trail::record::Record>,
) -> Option<RequestStage> {
    if !config.requests.enabled {
        return None;
    }
    match RequestStage::start(
        &config.requests,
        host.to_owned(),
        pseudonyms,
        records.clone(),
    ) {
        Ok(stage) => {
            info!(
                processes = ?config.requests.processes,
                cgroups = ?config.requests.cgroups,
                "capturing requests"
            );
            Some(stage)
        }
        Err(err) => {
            tracing::error!(%err, "request capture is off: the kernel refused it");
            None
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
