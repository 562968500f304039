//! Opening the spool and starting the spooler and the collector groups;
//! draining them at a clean stop. Public for the delivery benchmark
//! (agent/benches/delivery.rs), which drives this same wiring.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use lbwitness_delivery::{
    deliver::{
        Stats,
        declare::LossBook,
        group::{Group, GroupError},
        spooler::Spooler,
    },
    sink::{
        endpoint::Connector,
        file::{FileConnector, StdoutConnector},
        nats, syslog,
    },
    spool::{Spool, SpoolError, SpoolSettings},
};
use lbwitness_delivery::{sealed::Batch, spool::Loss};
use lbwitness_trail::record::audit::Gap;
use tokio::{
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
};

use crate::{
    audit::state::Tail,
    config::{Config, delivery::EndpointSettings},
};

/// How often each group's per-endpoint counts are logged.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How long a clean stop waits for the groups to deliver what is spooled.
/// What is left stays in the spool for the next run.
const DRAIN: Duration = Duration::from_millis(2500);

/// The spool as found at start.
pub struct Opened {
    /// The spool.
    pub spool: Spool,
    /// Where the chain ended, when the spool can say (`None`: records past
    /// its end may have reached collectors, so their numbers must not be
    /// given again; the head file decides).
    pub tail: Option<Tail>,
    /// What recovery found lost, to declare.
    pub losses: Vec<Gap>,
    /// Each group's endpoints, checked (files writable, certificates
    /// readable) before anything is attached.
    pub connectors: Vec<Vec<Arc<dyn Connector>>>,
}

/// Opens (and recovers) the spool.
pub fn open(config: &Config, agent_id: &str) -> anyhow::Result<Opened> {
    let d = &config.delivery;
    let connectors = d
        .groups
        .iter()
        .map(|g| {
            g.endpoints
                .iter()
                .map(connector)
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(|| format!("collector group {}", g.spec.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (spool, recovery) = Spool::open(SpoolSettings {
        dir: d.spool.dir.clone(),
        max_bytes: d.spool.max_bytes,
        segment_bytes: d.spool.segment_bytes,
        on_full: d.spool.on_full,
        groups: d.group_names(),
        fsync: d.spool.fsync,
    })
    .with_context(|| format!("opening the spool in {}", d.spool.dir.display()))?;
    for p in &recovery.problems {
        tracing::warn!(spool = %d.spool.dir.display(), "{p}");
    }
    if recovery.torn_bytes > 0 {
        tracing::warn!(
            bytes = recovery.torn_bytes,
            "cut a torn spool tail left by a crash"
        );
    }
    let last = match &recovery.last {
        Some(e) => Some(
            crate::audit::state::tail_of_line(&e.line, agent_id).with_context(|| {
                format!(
                    "the spool's last record (sequence {}) is not this agent's ({agent_id}); \
                     was the spool directory copied from another host?",
                    e.sequence
                )
            })?,
        ),
        None => None,
    };
    let last_seq = last.as_ref().map_or(0, |t: &Tail| t.head.sequence);
    // A damaged record after the last intact one may have been delivered:
    // never number it again; the head file (written ahead of every batch)
    // says where to continue.
    let tail = if recovery.highest_sequence().unwrap_or(0) > last_seq {
        None
    } else {
        Some(last.unwrap_or(Tail::EMPTY))
    };
    let losses = recovery.losses.iter().map(Loss::gap).collect();
    Ok(Opened {
        spool,
        tail,
        losses,
        connectors,
    })
}

fn connector(e: &EndpointSettings) -> anyhow::Result<Arc<dyn Connector>> {
    Ok(match e {
        EndpointSettings::File(f) => FileConnector::try_new(f.clone())?,
        EndpointSettings::Stdout => Arc::new(StdoutConnector::default()),
        EndpointSettings::Syslog(s) => syslog::connector(s)?,
        EndpointSettings::Nats(n) => nats::connector(n)?,
    })
}

/// The running delivery tasks.
pub struct Pipeline {
    /// The spooler; ends after the audit stage and every group.
    pub spooler: JoinHandle<Result<u64, SpoolError>>,
    /// One task per group; they end only when told to finish.
    pub groups: JoinSet<Result<u64, GroupError>>,
    finish: watch::Sender<Option<u64>>,
    stats: Vec<Arc<Stats>>,
}

/// Starts the spooler and one task per group. The spooler hands what the
/// spool loses to `book`, for the audit stage to declare.
#[expect(clippy::too_many_arguments, reason = "plain wiring, called once")]
pub fn start(
    spool: Spool,
    connectors: Vec<Vec<Arc<dyn Connector>>>,
    config: &Config,
    agent_id: &'static str,
    head: u64,
    book: Arc<LossBook>,
    batches: mpsc::Receiver<Batch>,
    durable: watch::Sender<u64>,
) -> anyhow::Result<Pipeline> {
    let (ack_tx, ack_rx) = mpsc::channel(1024);
    let (finish, finish_rx) = watch::channel(None);
    let agent: Arc<str> = agent_id.into();
    let mut groups = JoinSet::new();
    let mut stats = Vec::new();
    for (i, (g, connectors)) in config.delivery.groups.iter().zip(connectors).enumerate() {
        let reader = spool
            .reader(&g.spec.name)
            .with_context(|| format!("reading the spool for group {}", g.spec.name))?;
        let (out_tx, out_rx) = mpsc::channel(64);
        let group = Group::new(
            i,
            g.spec.clone(),
            agent.clone(),
            connectors,
            0,
            ack_tx.clone(),
            &out_tx,
        )
        .with_context(|| format!("collector group {}", g.spec.name))?;
        stats.push(group.stats());
        groups.spawn(group.run(reader, out_rx, finish_rx.clone()));
    }
    drop(ack_tx);
    let spooler = Spooler::new(spool, config.delivery.group_names(), book, head);
    let spooler = tokio::spawn(spooler.run(batches, ack_rx, durable));
    Ok(Pipeline {
        spooler,
        groups,
        finish,
        stats,
    })
}

impl Pipeline {
    /// Each group's counters, in config order.
    pub fn stats(&self) -> &[Arc<Stats>] {
        &self.stats
    }

    /// Logs each group's per-endpoint counts.
    pub fn log_stats(&self) {
        for s in &self.stats {
            tracing::info!(group = %s.group, acked = s.acked.load(std::sync::atomic::Ordering::Relaxed),
                endpoints = %s.summary(), "delivered");
        }
    }

    /// After the audit stage ended at `last`: waits for the spool to hold
    /// it, gives the groups [`DRAIN`] to deliver, then stops them and the
    /// spooler. Returns the last durable sequence.
    pub async fn drain(
        mut self,
        last: u64,
        mut durable: watch::Receiver<u64>,
    ) -> anyhow::Result<u64> {
        durable
            .wait_for(|d| *d >= last)
            .await
            .context("the spooler stopped before the last records were spooled")?;
        self.finish.send_replace(Some(last));
        let drained = tokio::time::timeout(DRAIN, async {
            while let Some(r) = self.groups.join_next().await {
                r.context("a collector group panicked")??;
            }
            Ok::<(), anyhow::Error>(())
        })
        .await;
        if drained.is_err() {
            self.groups.abort_all();
            while self.groups.join_next().await.is_some() {}
        }
        self.log_stats();
        for s in &self.stats {
            let acked = s.acked.load(std::sync::atomic::Ordering::Relaxed);
            if acked < last {
                tracing::warn!(group = %s.group, acked, last,
                    "not everything was delivered before the stop; the rest stays in the spool for the next run");
            }
        }
        let durable = self.spooler.await.context("the spooler panicked")??;
        Ok(durable)
    }
}
