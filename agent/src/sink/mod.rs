//! Where records go. One trait, one file per collector kind.

pub mod file;

use tokio::sync::mpsc;

use crate::record::Record;

/// A destination for serialised NDJSON records.
pub trait Sink: Send {
    /// Writes complete NDJSON lines (each ending in `\n`).
    fn write(&mut self, lines: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Makes everything written so far durable (or at least visible).
    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Most records serialised before a write.
const BATCH: usize = 512;

/// The writer task: numbers records in output order, serialises them and
/// writes them until every sender is gone, then flushes.
///
/// `event.sequence` is assigned here, in the single place records are
/// ordered, so the numbers have no holes.
pub async fn run<S: Sink>(
    mut sink: S,
    mut records: mpsc::Receiver<Record>,
) -> std::io::Result<u64> {
    let mut sequence = 0u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut batch = Vec::with_capacity(BATCH);
    while records.recv_many(&mut batch, BATCH).await > 0 {
        buf.clear();
        for mut record in batch.drain(..) {
            sequence += 1;
            record.event.sequence = sequence;
            serde_json::to_writer(&mut buf, &record).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        sink.write(&buf).await?;
        // Nothing else waiting: make what we have visible now.
        if records.is_empty() {
            sink.flush().await?;
        }
    }
    sink.flush().await?;
    Ok(sequence)
}
