//! The ring-buffer reader task: woken by epoll through tokio's `AsyncFd`,
//! never polling in a loop.

use std::sync::Arc;

use agent_common::flow::FlowEvent;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc, time::Duration};
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
    read(ring, tx, shutdown, None, |ring| {
        read_batch(ring, &telemetry)
    })
    .await
}

/// The reader loop of any ring buffer: waits for epoll readiness, or
/// with `poll` also for that interval to pass (for a ring whose producers
/// do not wake the reader on every event), hands each batch `read_batch`
/// decodes to `tx`, and after `shutdown` drains what is left. A full `tx`
/// makes it wait, never drop.
pub async fn read<E>(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<E>>,
    shutdown: CancellationToken,
    poll: Option<Duration>,
    mut read_batch: impl FnMut(&mut RingBuf<MapData>) -> Vec<E>,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    let mut tick = poll.map(|every| {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    loop {
        let woken = tokio::select! {
            () = shutdown.cancelled() => break,
            guard = fd.readable_mut() => Some(guard?),
            () = next_tick(&mut tick) => None,
        };
        let open = match woken {
            Some(mut guard) => {
                let open = drain(guard.get_inner_mut(), &tx, &mut read_batch).await;
                guard.clear_ready();
                open
            }
            None => drain(fd.get_mut(), &tx, &mut read_batch).await,
        };
        if !open {
            return Ok(());
        }
    }
    // The program is detached by now: whatever the ring holds is final.
    drain(fd.get_mut(), &tx, &mut read_batch).await;
    Ok(())
}

/// The next tick of `tick`; never without one.
async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Hands `tx` batches until the ring is empty; false once `tx` is closed.
async fn drain<E>(
    ring: &mut RingBuf<MapData>,
    tx: &mpsc::Sender<Vec<E>>,
    read_batch: &mut impl FnMut(&mut RingBuf<MapData>) -> Vec<E>,
) -> bool {
    loop {
        let batch = read_batch(ring);
        if batch.is_empty() {
            return true;
        }
        if tx.send(batch).await.is_err() {
            return false;
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
