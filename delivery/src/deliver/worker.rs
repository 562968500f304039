//! One endpoint's worker: holds at most one connection, sends the batches
//! its group gives it one at a time, and reports each outcome. Timeouts are
//! applied here, so a collector that accepts and never reads shows up as a
//! failed send, not as a stuck group.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::Job;
use crate::sink::endpoint::{Connection, Connector, SinkError};

/// What a worker is asked to do.
#[derive(Debug)]
pub enum Work {
    /// Send this batch.
    Send(Job),
    /// Connect (if not connected): the active health check.
    Probe,
}

/// What a worker reports back to its group.
#[derive(Debug)]
pub enum Outcome {
    /// The batch was delivered.
    Sent {
        /// The endpoint's index in its group.
        endpoint: usize,
        /// The batch.
        job: Job,
    },
    /// The batch was not delivered: re-route it.
    Failed {
        /// The endpoint's index.
        endpoint: usize,
        /// The batch.
        job: Job,
        /// Why; `None` when it was never tried because an earlier batch at
        /// this endpoint had just failed.
        error: Option<SinkError>,
    },
    /// A probe's result.
    Probed {
        /// The endpoint's index.
        endpoint: usize,
        /// Ok when the endpoint is ready for records.
        result: Result<(), SinkError>,
    },
}

/// Timeouts for one endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Connecting, including the protocol's handshake.
    pub connect: Duration,
    /// Sending one batch until the collector has it.
    pub send: Duration,
}

/// Runs until the group drops its sender.
pub async fn run(
    endpoint: usize,
    connector: Arc<dyn Connector>,
    timeouts: Timeouts,
    mut work: mpsc::Receiver<Work>,
    outcomes: mpsc::Sender<Outcome>,
) {
    let mut conn: Option<Box<dyn Connection>> = None;
    while let Some(item) = work.recv().await {
        let outcome = match item {
            Work::Probe => Outcome::Probed {
                endpoint,
                result: ensure(&mut conn, connector.as_ref(), timeouts.connect)
                    .await
                    .map(|_| ()),
            },
            Work::Send(job) => match send(&mut conn, connector.as_ref(), timeouts, &job).await {
                Ok(()) => Outcome::Sent { endpoint, job },
                Err(error) => {
                    conn = None;
                    // Batches queued behind the failed one go back at once
                    // instead of each waiting out its own timeout.
                    while let Ok(item) = work.try_recv() {
                        if let Work::Send(job) = item {
                            let _ = outcomes
                                .send(Outcome::Failed {
                                    endpoint,
                                    job,
                                    error: None,
                                })
                                .await;
                        }
                    }
                    Outcome::Failed {
                        endpoint,
                        job,
                        error: Some(error),
                    }
                }
            },
        };
        if outcomes.send(outcome).await.is_err() {
            break;
        }
    }
    if let Some(c) = conn {
        let _ = tokio::time::timeout(timeouts.connect, c.close()).await;
    }
}

/// Connects unless connected.
async fn ensure<'c>(
    conn: &'c mut Option<Box<dyn Connection>>,
    connector: &dyn Connector,
    limit: Duration,
) -> Result<&'c mut Box<dyn Connection>, SinkError> {
    if conn.is_none() {
        let c = tokio::time::timeout(limit, connector.connect())
            .await
            .map_err(|_| SinkError::Timeout {
                endpoint: connector.endpoint().to_owned(),
                timeout: limit,
                doing: "connecting",
            })??;
        *conn = Some(c);
    }
    Ok(conn.as_mut().expect("connected above"))
}

async fn send(
    conn: &mut Option<Box<dyn Connection>>,
    connector: &dyn Connector,
    timeouts: Timeouts,
    job: &Job,
) -> Result<(), SinkError> {
    let c = ensure(conn, connector, timeouts.connect).await?;
    tokio::time::timeout(timeouts.send, c.send(&job.batch))
        .await
        .map_err(|_| SinkError::Timeout {
            endpoint: connector.endpoint().to_owned(),
            timeout: timeouts.send,
            doing: "waiting for the collector to take a batch",
        })?
}
