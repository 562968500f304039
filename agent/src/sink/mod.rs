//! Where records go. One trait ([`endpoint::Connector`]) and one file per
//! collector kind.

pub mod endpoint;
pub mod file;
pub mod nats;

use tokio::sync::{mpsc, watch};

use crate::audit::Batch;

/// A destination for sealed NDJSON lines.
pub trait Sink: Send {
    /// Writes complete NDJSON lines (each ending in `\n`).
    fn write(&mut self, lines: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Makes everything written so far durable (or at least visible).
    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// The writer task: writes sealed batches in order until the audit stage is
/// done, flushing whenever it catches up, and reports the last sequence
/// made durable on `durable`. Returns that sequence.
pub async fn run<S: Sink>(
    mut sink: S,
    mut batches: mpsc::Receiver<Batch>,
    durable: watch::Sender<u64>,
) -> std::io::Result<u64> {
    let mut written = *durable.borrow();
    while let Some(batch) = batches.recv().await {
        sink.write(&batch.lines).await?;
        written = batch.last_sequence;
        // Nothing else waiting: make what we have durable now.
        if batches.is_empty() {
            sink.flush().await?;
            durable.send_replace(written);
        }
    }
    sink.flush().await?;
    durable.send_replace(written);
    Ok(written)
}
