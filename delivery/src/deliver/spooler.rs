//! The spooler task: appends the audit stage's sealed batches to the spool,
//! makes them durable with one fsync per wakeup (group commit), tells the
//! audit stage and the groups how far the spool is durable, applies the
//! groups' acknowledgements, and hands what the spool had to drop to the
//! [`LossBook`], from which the audit stage seals gap records.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};

use super::{
    declare::LossBook,
    group::{Ack, ToSpool},
};
use crate::{
    sealed::Batch,
    spool::{Loss, Spool, SpoolError, SpoolRecord},
};

/// How often acknowledgements are written to disk. A crash loses at most
/// this much ack progress, which means duplicates, never loss.
const PERSIST_ACKS: Duration = Duration::from_millis(100);

/// The spooler's state.
pub struct Spooler {
    spool: Spool,
    groups: Vec<String>,
    /// Where losses go to be declared.
    book: Arc<LossBook>,
    /// Damaged regions a group's reader found while running whose gap
    /// record is not durable yet. The spool marks such a region reported
    /// in its ack file, so a restart would not report it again: until the
    /// gap record is on disk, the ack file is not written (see
    /// [`Self::may_persist`]).
    undeclared: Vec<Loss>,
    durable: u64,
}

impl Spooler {
    /// `durable` is the last sequence the spool held at start.
    pub fn new(spool: Spool, groups: Vec<String>, book: Arc<LossBook>, durable: u64) -> Self {
        Self {
            spool,
            groups,
            book,
            undeclared: Vec::new(),
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
                prev: r.prev,
                essential: r.essential,
            })
            .collect();
        let appended = self.spool.append(&records)?;
        let first = batch.records.first().map_or(u64::MAX, |r| r.sequence);
        for mut loss in appended.dropped {
            // The spool gives `before_hash` wherever the batch could. The
            // hash a loss ends at may be in this batch, after the frames
            // the spool has seen.
            loss.last_hash = loss.last_hash.or_else(|| {
                batch.records.iter().find_map(|r| {
                    (r.sequence == loss.last)
                        .then_some(r.hash)
                        .or((r.sequence == loss.last + 1).then_some(r.prev))
                })
            });
            // This batch's own records were refused; anything older was
            // already in the spool (drop_oldest) or is a declaration to
            // make again.
            if loss.first >= first {
                self.book.refused(loss);
            } else {
                self.book.lost(loss);
            }
        }
        if let Some(kept) = appended.kept_regular {
            self.book.kept(kept);
        }
        Ok(())
    }

    /// Whether the ack file may be written: not while a runtime loss's gap
    /// record is still on its way to the disk. A crash in that window
    /// would leave the region marked reported, never declared. Holding the
    /// ack file back costs only ack progress (duplicates after a crash).
    fn may_persist(&self) -> bool {
        self.undeclared.is_empty()
    }

    /// Forgets the runtime losses whose gap records `batch` holds; call
    /// after the batch is durable.
    fn declared_in(&mut self, batch: &Batch) {
        if self.undeclared.is_empty() {
            return;
        }
        for r in &batch.records {
            let line = batch.line(r);
            // Cheap filter before parsing: only gap records qualify.
            const GAP: &[u8] = b"\"action\":\"gap\"";
            if !line.windows(GAP.len()).any(|w| w == GAP) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let gap = &v["lbwitness"]["gap"];
            self.undeclared.retain(|l| {
                !(gap["reason"] == l.reason.as_str()
                    && gap["first_sequence"] == l.first
                    && gap["last_sequence"] == l.last
                    && gap["count"] == l.count)
            });
        }
    }

    /// Runs until the audit stage has closed `batches` and every group has
    /// dropped its `acks` sender. Returns the last durable sequence.
    pub async fn run(
        mut self,
        mut batches: mpsc::Receiver<Batch>,
        mut acks: mpsc::Receiver<ToSpool>,
        durable: watch::Sender<u64>,
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
                        let mut appended = vec![batch];
                        // Group commit: everything queued, then one fsync.
                        while let Ok(batch) = batches.try_recv() {
                            self.append(&batch)?;
                            last = batch.last_sequence;
                            appended.push(batch);
                        }
                        blocking(|| self.spool.sync())?;
                        for batch in &appended {
                            self.declared_in(batch);
                        }
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
                    if unpersisted && self.may_persist() {
                        blocking(|| self.spool.persist_acks())?;
                        unpersisted = false;
                    }
                }
            }
        }
        if self.may_persist() {
            self.spool.persist_acks()?;
        } else {
            // The next run re-reads from the last persisted acks, finds the
            // damaged region again, and declares it.
            tracing::warn!(
                losses = self.undeclared.len(),
                "stopping before a spool loss's gap record was durable; \
                 acknowledgements are not persisted, so the next run declares it"
            );
        }
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
            ToSpool::Lost(loss) => {
                self.undeclared.push(loss);
                self.book.lost(loss);
            }
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

#[cfg(test)]
mod tests {
    use lbwitness_trail::record::Record;

    use super::*;
    use crate::spool::{FsyncPolicy, LossReason, OnFull, SpoolSettings, acks, tests::Scratch};

    /// Group `g`'s acknowledgement as the ack file on disk has it.
    fn persisted(dir: &std::path::Path) -> u64 {
        std::fs::read(dir.join("acks"))
            .ok()
            .and_then(|b| acks::decode(&b))
            .map_or(0, |s| s.acked("g"))
    }

    /// Waits (real time) for the spooler's 100 ms persist tick to pass.
    async fn ticks() {
        tokio::time::sleep(PERSIST_ACKS * 3).await;
    }

    #[tokio::test]
    async fn a_runtime_loss_holds_the_ack_file_until_its_gap_record_is_durable() {
        let dir = Scratch::new("spooler-hold");
        let (spool, _) = Spool::open(SpoolSettings {
            dir: dir.0.clone(),
            max_bytes: 1 << 20,
            segment_bytes: 1 << 16,
            on_full: OnFull::DropNewest,
            groups: vec!["g".into()],
            fsync: FsyncPolicy::Never,
        })
        .unwrap();
        let book = LossBook::new();
        let spooler = Spooler::new(spool, vec!["g".into()], book.clone(), 0);
        let (batches, batches_rx) = mpsc::channel(8);
        let (acks_tx, acks_rx) = mpsc::channel(8);
        let (durable, mut durable_rx) = watch::channel(0);
        let task = tokio::spawn(spooler.run(batches_rx, acks_rx, durable));

        let flows: Vec<Vec<u8>> = (1..=10)
            .map(|s| format!("{{\"event\":{{\"action\":\"flow\",\"sequence\":{s}}}}}").into_bytes())
            .collect();
        batches.send(Batch::unchained(1, &flows, 1)).await.unwrap();
        durable_rx.wait_for(|d| *d >= 10).await.unwrap();
        acks_tx
            .send(ToSpool::Ack(Ack {
                group: 0,
                through: 2,
            }))
            .await
            .unwrap();
        ticks().await;
        assert_eq!(
            persisted(&dir.0),
            2,
            "acks persist while nothing is undeclared"
        );

        let loss = Loss {
            first: 3,
            last: 4,
            count: 2,
            reason: LossReason::Corrupt,
            before_hash: None,
            last_hash: None,
        };
        acks_tx.send(ToSpool::Lost(loss)).await.unwrap();
        acks_tx
            .send(ToSpool::Ack(Ack {
                group: 0,
                through: 10,
            }))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), book.ready())
            .await
            .expect("the loss goes to the book for the audit stage");
        assert_eq!(book.take_ready(), vec![loss]);
        let mut gap = Box::new(Record::for_test("lbwitness.audit", "gap"));
        gap.lbwitness.gap = Some(loss.gap());
        ticks().await;
        assert_eq!(
            persisted(&dir.0),
            2,
            "held while the gap record is not durable"
        );

        // Another gap record (a different range) does not release it.
        let mut other = gap.clone();
        other.lbwitness.gap.as_mut().unwrap().first_sequence = Some(5);
        batches
            .send(Batch::unchained(
                11,
                &[serde_json::to_vec(&*other).unwrap()],
                1,
            ))
            .await
            .unwrap();
        durable_rx.wait_for(|d| *d >= 11).await.unwrap();
        ticks().await;
        assert_eq!(persisted(&dir.0), 2, "only its own gap record releases it");

        batches
            .send(Batch::unchained(
                12,
                &[serde_json::to_vec(&*gap).unwrap()],
                1,
            ))
            .await
            .unwrap();
        durable_rx.wait_for(|d| *d >= 12).await.unwrap();
        acks_tx
            .send(ToSpool::Ack(Ack {
                group: 0,
                through: 12,
            }))
            .await
            .unwrap();
        ticks().await;
        assert_eq!(
            persisted(&dir.0),
            12,
            "persisted once the gap record is durable"
        );

        drop((batches, acks_tx));
        assert_eq!(task.await.unwrap().unwrap(), 12);
    }
}
