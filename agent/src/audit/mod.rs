//! The audit stage: numbers and chains every record, writes signed
//! checkpoints, and records the agent's own actions. The scheme is specified
//! in docs/AUDIT.md.
//!
//! ```text
//! flows ──records──▶ ┐
//!                    ├─▶ AuditTask ──sealed batches──▶ sink writer
//! run, watch ─ctl──▶ ┘        │                            │
//!                        head file ◀──── durable sequence ─┘
//! ```

pub mod identity;
pub mod records;
pub mod state;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use ed25519_dalek::SigningKey;
use lbwitness_delivery::{
    deliver::declare::LossBook,
    route::Router,
    sealed::{Batch, Sealed},
    spool::Loss,
};
use lbwitness_trail::{
    chain::{Chain, Head, SealError},
    checkpoint::{self, Cadence, Reason, Signer},
    record::{Record, audit::Stop},
};
use tokio::sync::{mpsc, watch};

use self::{
    records::AuditRecords,
    state::{HeadFile, Persisted, StateError},
};

/// A request to the audit stage from outside the record flow.
#[derive(Debug)]
pub enum Control {
    /// A self-audit record (hook attach or detach, file change).
    Record(Box<Record>),
    /// The config was reloaded: record it, and apply what can be applied.
    Reload {
        /// The `config-reload` record.
        record: Box<Record>,
        /// A new signing key: rotate to it.
        key: Option<Box<SigningKey>>,
        /// New checkpoint cadence.
        cadence: Option<(u64, Duration)>,
    },
    /// The agent is stopping because of this signal.
    Stopping(&'static str),
}

/// Why the audit stage stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A record could not be serialised.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The head file could not be written: without it a crash could fork
    /// the chain, so the agent stops.
    #[error(transparent)]
    State(#[from] StateError),
    /// The sink writer is gone.
    #[error("the record writer stopped")]
    SinkGone,
}

/// Where the audit stage ended, for the clean-stop mark.
#[derive(Debug)]
pub struct Finished {
    /// The head file.
    pub head_file: HeadFile,
    /// The final head.
    pub head: Head,
    /// The final checkpoint's sequence.
    pub checkpointed: u64,
}

impl Finished {
    /// Records in the head file that the stop was clean, when the sink has
    /// made everything up to the final checkpoint durable.
    pub fn mark_clean(mut self, durable: u64) -> Result<(), StateError> {
        let state = Persisted {
            head: self.head,
            durable,
            checkpointed: self.checkpointed,
            clean: durable == self.head.sequence,
        };
        self.head_file.write(&state, true)
    }
}

/// Most records sealed into one batch.
const BATCH: usize = 512;

/// The audit task's state.
pub struct AuditTask {
    chain: Chain,
    signer: Signer,
    cadence: Cadence,
    head_file: HeadFile,
    records: AuditRecords,
    durable: watch::Receiver<u64>,
    out: mpsc::Sender<Batch>,
    router: Router,
    lines: Vec<u8>,
    sealed_records: Vec<Sealed>,
    scratch: Vec<u8>,
    /// Records this run sealed.
    sealed: u64,
    /// A checkpoint went into `lines`: fsync the head file with it.
    sync: bool,
    signal: &'static str,
    /// Where the spool's losses wait to be declared (none: no spool).
    book: Option<Arc<LossBook>>,
    /// What is sealed now is essential (see [`Sealed::essential`]).
    essential: bool,
}

impl AuditTask {
    /// A task continuing `chain`; `checkpointed` is the sequence of the last
    /// checkpoint, `durable` reports what the sink has made durable.
    #[expect(clippy::too_many_arguments, reason = "plain wiring, called once")]
    pub fn new(
        chain: Chain,
        checkpointed: u64,
        signer: Signer,
        (every_records, every): (u64, Duration),
        head_file: HeadFile,
        records: AuditRecords,
        durable: watch::Receiver<u64>,
        (router, out): (Router, mpsc::Sender<Batch>),
    ) -> Self {
        Self {
            chain,
            signer,
            cadence: Cadence::new(every_records, every, checkpointed, Instant::now()),
            head_file,
            records,
            durable,
            out,
            router,
            lines: Vec::with_capacity(256 * 1024),
            sealed_records: Vec::with_capacity(BATCH),
            scratch: Vec::with_capacity(4096),
            sealed: 0,
            sync: false,
            signal: "SIGTERM",
            book: None,
            essential: false,
        }
    }

    /// Declares the spool's losses from `book`: a gap record per loss and
    /// a checkpoint right after them, all essential, so the spool takes
    /// them even while full and the declaration is covered at once.
    pub fn declaring(mut self, book: Arc<LossBook>) -> Self {
        self.book = Some(book);
        self
    }

    /// Seals `prelude` (the restart gap, start and attach records), then
    /// records and control messages until both channels close, then the
    /// stop record and a final checkpoint.
    pub async fn run(
        mut self,
        prelude: Vec<Record>,
        mut records: mpsc::Receiver<Record>,
        mut control: mpsc::Receiver<Control>,
    ) -> Result<Finished, AuditError> {
        // Essential: a spool still full from the last run must not refuse
        // the restart gap or the start record.
        self.essential = true;
        for record in prelude {
            self.push(record)?;
        }
        self.essential = false;
        self.flush().await?;
        let book = self.book.clone();
        let ready = || async {
            match &book {
                Some(b) => b.ready().await,
                None => std::future::pending().await,
            }
        };
        let mut batch = Vec::with_capacity(BATCH);
        let (mut records_open, mut control_open) = (true, true);
        while records_open || control_open {
            let deadline = tokio::time::Instant::from_std(self.cadence.deadline());
            // Control first: a hook detached before the final flush is
            // recorded before the flush's records.
            tokio::select! {
                biased;
                msg = control.recv(), if control_open => match msg {
                    Some(msg) => self.on_control(msg)?,
                    None => control_open = false,
                },
                n = records.recv_many(&mut batch, BATCH), if records_open => {
                    records_open = n > 0;
                    for record in batch.drain(..) {
                        self.push(record)?;
                    }
                }
                () = ready() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            // Taken here, not only when woken: under a steady stream the
            // record branch is always ready and would starve the book's.
            if let Some(b) = &book {
                self.declare(b.take_ready(), true)?;
            }
            // Checked here, not only in the timer branch: under a steady
            // stream the record branch is always ready and would starve it.
            if Instant::now() >= self.cadence.deadline() {
                self.checkpoint(Reason::Interval, None)?;
            }
            self.flush().await?;
        }
        // Every refused range ends here: once the spooler has seen every
        // record, declare what is left before the stop record, and make
        // the end essential too, so a full spool still ends the trail.
        self.essential = true;
        if let Some(b) = &book {
            self.flush().await?;
            let head = self.chain.head().sequence;
            // An error: the spooler is gone, and nothing more reaches the
            // spool anyway.
            let _ = self.durable.wait_for(|d| *d >= head).await;
            self.declare(b.take_all(), false)?;
        }
        let stop = Stop {
            records: self.sealed + 2,
            signal: self.signal,
        };
        self.push(self.records.stop(SystemTime::now(), stop))?;
        self.checkpoint(Reason::Stop, None)?;
        self.flush().await?;
        Ok(Finished {
            head_file: self.head_file,
            head: self.chain.head(),
            checkpointed: self.cadence.last(),
        })
    }

    fn on_control(&mut self, msg: Control) -> Result<(), AuditError> {
        match msg {
            Control::Record(record) => self.push(*record),
            Control::Stopping(signal) => {
                self.signal = signal;
                Ok(())
            }
            Control::Reload {
                record,
                key,
                cadence,
            } => {
                self.push(*record)?;
                if let Some((records, every)) = cadence {
                    self.cadence.set(records, every);
                }
                match key {
                    Some(key) if key.verifying_key() != self.signer.public() => self.rotate(*key),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Announces `key` in a checkpoint signed with the current key, then
    /// signs with it.
    fn rotate(&mut self, key: SigningKey) -> Result<(), AuditError> {
        let next = Signer::new(key);
        self.checkpoint(Reason::Rotation, Some(&next))?;
        let previous = std::mem::replace(&mut self.signer, next);
        tracing::info!(
            previous = previous.key_id(),
            key = self.signer.key_id(),
            "signing key rotated"
        );
        let record =
            self.records
                .key_rotation(SystemTime::now(), previous.key_id(), self.signer.key_id());
        self.push(record)
    }

    /// A gap record per spool loss, essential, then (`checkpoint`) one
    /// checkpoint covering them.
    fn declare(&mut self, losses: Vec<Loss>, checkpoint: bool) -> Result<(), AuditError> {
        if losses.is_empty() {
            return Ok(());
        }
        let essential = std::mem::replace(&mut self.essential, true);
        for l in &losses {
            let record = self.records.spool_loss(SystemTime::now(), l.gap());
            self.push(record)?;
        }
        if checkpoint {
            self.checkpoint(Reason::Gap, None)?;
        }
        self.essential = essential;
        Ok(())
    }

    /// Routes, numbers and chains `record` into the batch being built.
    fn seal(&mut self, record: &mut Record) -> Result<u64, AuditError> {
        let start = self.lines.len();
        // Routed before sealing: the router reads fields, not the line.
        let routes = self.router.route(record);
        let prev = self.chain.head().hash;
        let sequence = self.chain.seal(record, &mut self.lines)?;
        self.sealed_records.push(Sealed {
            sequence,
            hash: self.chain.head().hash,
            prev,
            routes,
            start,
            end: self.lines.len() - 1,
            essential: self.essential,
        });
        Ok(sequence)
    }

    fn push(&mut self, mut record: Record) -> Result<(), AuditError> {
        self.seal(&mut record)?;
        self.sealed += 1;
        if self.cadence.records_due(self.chain.head().sequence) {
            self.checkpoint(Reason::Records, None)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, reason: Reason, next: Option<&Signer>) -> Result<(), AuditError> {
        let base = self.records.checkpoint(SystemTime::now(), reason.as_str());
        let mut record = checkpoint::sign(
            &self.chain,
            base,
            self.cadence.first_uncovered(),
            &self.signer,
            next.map(|n| n.public()).as_ref(),
            reason == Reason::Stop,
            &mut self.scratch,
        )?;
        let sequence = self.seal(&mut record)?;
        self.sealed += 1;
        self.cadence.done(sequence, Instant::now());
        self.sync = true;
        Ok(())
    }

    /// Writes the head ahead of the batch, then hands the batch on. When the
    /// sink is slow, this waits: back-pressure reaches the ring buffer, where
    /// the kernel counts what it cannot reserve.
    async fn flush(&mut self) -> Result<(), AuditError> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let head = self.chain.head();
        self.head_file.write(
            &Persisted {
                head,
                durable: *self.durable.borrow(),
                checkpointed: self.cadence.last(),
                clean: false,
            },
            std::mem::take(&mut self.sync),
        )?;
        let lines = std::mem::replace(&mut self.lines, Vec::with_capacity(256 * 1024));
        let records = std::mem::replace(&mut self.sealed_records, Vec::with_capacity(BATCH));
        self.out
            .send(Batch {
                lines,
                records,
                last_sequence: head.sequence,
            })
            .await
            .map_err(|_| AuditError::SinkGone)
    }
}

#[cfg(test)]
mod tests;
