//! The ring-buffer reader task: woken by epoll through tokio's `AsyncFd`,
//! never polling in a loop.

use std::sync::Arc;

use agent_common::flow::FlowEvent;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    decode::{Event, decode},
    telemetry::Telemetry,
};

/// Most events handed to the flow task in one message.
const BATCH: usize = 256;

/// Reads events until `shutdown`, then drains what is left and returns.
///
/// When the flow task falls behind, `send` waits: the ring buffer fills and
/// the kernel counts every event it cannot reserve (`ringbuf_reserve_failed`),
/// so the one place that drops also counts.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<FlowEvent>>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    read(ring, tx, shutdown, |ring| read_batch(ring, &telemetry)).await
}

/// The reader loop of any ring buffer: waits for epoll readiness, hands
/// each batch `read_batch` decodes to `tx`, and after `shutdown` drains
/// what is left. A full `tx` makes it wait, never drop.
pub async fn read<E>(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<E>>,
    shutdown: CancellationToken,
    mut read_batch: impl FnMut(&mut RingBuf<MapData>) -> Vec<E>,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    loop {
        let mut guard = tokio::select! {
            () = shutdown.cancelled() => break,
            guard = fd.readable_mut() => guard?,
        };
        loop {
            let batch = read_batch(guard.get_inner_mut());
            if batch.is_empty() {
                break;
            }
            if tx.send(batch).await.is_err() {
                return Ok(());
            }
        }
        guard.clear_ready();
    }
    // The program is detached by now: whatever the ring holds is final.
    loop {
        let batch = read_batch(fd.get_mut());
        if batch.is_empty() || tx.send(batch).await.is_err() {
            return Ok(());
        }
    }
}

fn read_batch(ring: &mut RingBuf<MapData>, telemetry: &Telemetry) -> Vec<FlowEvent> {
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        let Some(item) = ring.next() else { break };
        match decode(&item) {
            Ok(Event::Flow(ev)) => batch.push(ev),
            Err(err) => {
                telemetry.decode_errors.inc();
                tracing::warn!(%err, "rejected a kernel event");
            }
        }
    }
    telemetry.events.add(batch.len() as u64);
    batch
}
