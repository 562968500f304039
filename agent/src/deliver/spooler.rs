//! The spooler task: appends the audit stage's sealed batches to the spool,
//! makes them durable with one fsync per wakeup (group commit), tells the
//! audit stage and the groups how far the spool is durable, applies the
//! groups' acknowledgements, and turns what the spool had to drop into gap
//! records.

use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::group::{Ack, ToSpool};
use crate::{
    audit::{
        Batch, Control,
        chain::Hash,
        records::{AuditRecords, SpoolLoss},
    },
    record::Record,
    spool::{Loss, Spool, SpoolError, SpoolRecord},
};

/// How often acknowledgements are written to disk. A crash loses at most
/// this much ack progress, which means duplicates, never loss.
const PERSIST_ACKS: Duration = Duration::from_millis(100);

/// The spooler's state.
pub struct Spooler {
    spool: Spool,
    groups: Vec<String>,
    records: AuditRecords,
    /// Sequence and hash of the last record handed to the spool, kept or
    /// dropped: the `before_hash` of a loss that starts after it.
    last: Option<(u64, Hash)>,
    /// Gap records the audit stage has not taken yet.
    gaps: Vec<Record>,
    durable: u64,
}

impl Spooler {
    /// `durable` is the last sequence the spool held at start.
    pub fn new(spool: Spool, groups: Vec<String>, records: AuditRecords, durable: u64) -> Self {
        Self {
            spool,
            groups,
            records,
            last: None,
            gaps: Vec::new(),
            durable,
        }
    }

    /// The spool (for the groups' readers).
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    fn append(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let records: Vec<SpoolRecord<'_>> = batch
            .records
            .iter()
            .map(|r| SpoolRecord {
                sequence: r.sequence,
                routes: r.routes,
                line: batch.line(r),
            })
            .collect();
        let appended = self.spool.append(&records)?;
        for loss in appended.dropped {
            let before_hash = match self.last {
                Some((seq, hash)) if seq + 1 == loss.first => Some(hash),
                None if loss.first == 1 => Some([0; 32]),
                _ => batch
                    .records
                    .iter()
                    .find(|r| r.sequence + 1 == loss.first)
                    .map(|r| r.hash),
            };
            let last_hash = batch
                .records
                .iter()
                .find(|r| r.sequence == loss.last)
                .map(|r| r.hash);
            self.declare(&loss, before_hash, last_hash);
        }
        if let Some(r) = batch.records.last() {
            self.last = Some((r.sequence, r.hash));
        }
        Ok(())
    }

    /// Queues a gap record for `loss`.
    pub fn declare(&mut self, loss: &Loss, before_hash: Option<Hash>, last_hash: Option<Hash>) {
        tracing::error!(
            reason = loss.reason.as_str(),
            first = loss.first,
            last = loss.last,
            count = loss.count,
            "the spool lost records; declaring them in a gap record"
        );
        let loss = SpoolLoss {
            reason: loss.reason.as_str(),
            first: loss.first,
            last: loss.last,
            count: loss.count,
            before_hash,
            last_hash,
        };
        self.gaps
            .push(self.records.spool_loss(SystemTime::now(), &loss));
    }

    /// Hands queued gap records to the audit stage without waiting: the
    /// audit stage may itself be waiting for this task.
    fn hand_over_gaps(&mut self, control: &mpsc::WeakSender<Control>) {
        if self.gaps.is_empty() {
            return;
        }
        // Weak: the audit stage ends when the run's senders are gone, and
        // this task must not keep it alive.
        let Some(control) = control.upgrade() else {
            tracing::error!(
                "a spool loss happened after the audit stage stopped; \
                 it is in the log but not in the trail"
            );
            self.gaps.clear();
            return;
        };
        while let Some(gap) = self.gaps.pop() {
            match control.try_send(Control::Record(Box::new(gap))) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Control::Record(gap))) => {
                    self.gaps.push(*gap);
                    return;
                }
                Err(_) => {
                    tracing::error!(
                        "a spool loss happened after the audit stage stopped; \
                         it is in the log but not in the trail"
                    );
                    self.gaps.clear();
                    return;
                }
            }
        }
    }

    /// Runs until the audit stage has closed `batches` and every group has
    /// dropped its `acks` sender. Returns the last durable sequence.
    pub async fn run(
        mut self,
        mut batches: mpsc::Receiver<Batch>,
        mut acks: mpsc::Receiver<ToSpool>,
        durable: watch::Sender<u64>,
        control: mpsc::WeakSender<Control>,
    ) -> Result<u64, SpoolError> {
        let mut persist = tokio::time::interval(PERSIST_ACKS);
        persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut batches_open, mut acks_open) = (true, true);
        let mut unpersisted = false;
        while batches_open || acks_open {
            tokio::select! {
                biased;
                batch = batches.recv(), if batches_open => match batch {
                    Some(batch) => {
                        self.append(&batch)?;
                        let mut last = batch.last_sequence;
                        // Group commit: everything queued, then one fsync.
                        while let Ok(batch) = batches.try_recv() {
                            self.append(&batch)?;
                            last = batch.last_sequence;
                        }
                        blocking(|| self.spool.sync())?;
                        tracing::trace!(last, "spooled");
                        self.durable = last;
                        durable.send_replace(last);
                    }
                    None => batches_open = false,
                },
                ack = acks.recv(), if acks_open => match ack {
                    Some(ack) => {
                        self.on_group(ack);
                        while let Ok(ack) = acks.try_recv() {
                            self.on_group(ack);
                        }
                        unpersisted = true;
                    }
                    None => acks_open = false,
                },
                _ = persist.tick() => {
                    if unpersisted {
                        blocking(|| self.spool.persist_acks())?;
                        unpersisted = false;
                    }
                }
            }
            self.hand_over_gaps(&control);
        }
        self.spool.persist_acks()?;
        Ok(self.durable)
    }

    fn on_group(&mut self, msg: ToSpool) {
        match msg {
            ToSpool::Ack(Ack { group, through }) => {
                if let Some(name) = self.groups.get(group) {
                    self.spool.ack(name, through);
                }
            }
            // The spool reports each damaged region to one reader only.
            ToSpool::Lost(loss) => self.declare(&loss, None, None),
        }
    }
}

/// Runs `f`, which waits for the disk (fdatasync: milliseconds, far more
/// when the disk is busy), without holding up the other tasks: on a
/// multi-threaded runtime the worker hands its queued tasks to another
/// thread first. Tasks queued behind a worker blocked in fsync would
/// otherwise wait for it, and delivery latency would carry the disk's.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl super::Source for crate::spool::Reader {
    async fn next(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<super::Read, Box<dyn std::error::Error + Send + Sync>> {
        let read = crate::spool::Reader::next(self, max_records, max_bytes).await?;
        Ok(super::Read {
            entries: read.entries,
            scanned_through: read.scanned_through,
            losses: read.losses,
        })
    }
}
