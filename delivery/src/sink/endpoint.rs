//! The collector interface every sink kind implements: a [`Connector`] makes
//! [`Connection`]s to one endpoint, and a connection sends [`Batch`]es and
//! returns once the collector has taken them.
//!
//! The delivery stage (`deliver/`) owns timeouts, retries, health and
//! re-routing; a sink only speaks its protocol and reports failures as
//! [`SinkError`]s that say what to fix.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

pub use crate::entry::Entry;

/// A boxed, sendable future: sink kinds sit behind `dyn` so one group can be
/// driven without knowing its kind.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Records for one endpoint, in ascending sequence (not always contiguous:
/// a group sees only the records routed to it).
#[derive(Clone, Debug)]
pub struct Batch {
    /// `agent.id` of every record (one agent per spool).
    pub agent_id: Arc<str>,
    /// The records.
    pub entries: Vec<Entry>,
}

impl Batch {
    /// The sequence of the first record (0 when empty).
    pub fn first_sequence(&self) -> u64 {
        self.entries.first().map_or(0, |e| e.sequence)
    }

    /// The sequence of the last record (0 when empty).
    pub fn last_sequence(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.sequence)
    }

    /// Bytes of record text.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.line.len()).sum()
    }
}

/// What a successful send guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// The collector acknowledged every record (RELP `rsp 200`, a JetStream
    /// publish ack, an fsync): a connection drop after this loses nothing.
    Acknowledged,
    /// The records were written to the socket; the collector never says it
    /// has them, so a connection drop can lose what was in flight (plain TCP
    /// or TLS syslog).
    Written,
}

/// Why a connection or a send failed. Every message names the endpoint and
/// what to check.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Could not reach the endpoint.
    #[error("{endpoint}: cannot connect: {source}; is the collector running and listening there?")]
    Connect {
        /// The endpoint, as in the config.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake failed: certificate, name or protocol.
    #[error("{endpoint}: TLS: {message}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// rustls' reason and what to check (CA file, server name, expiry).
        message: String,
    },
    /// The collector did not answer in time.
    #[error("{endpoint}: no answer within {timeout:?} while {doing}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The limit.
        timeout: Duration,
        /// What the agent was waiting for.
        doing: &'static str,
    },
    /// The collector answered something the protocol does not allow.
    #[error("{endpoint}: protocol error: {detail}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was received and what was expected.
        detail: String,
    },
    /// The collector refused the records (a RELP error response, a JetStream
    /// error, no stream for the subject).
    #[error("{endpoint}: rejected: {detail}")]
    Rejected {
        /// The endpoint.
        endpoint: String,
        /// The collector's reason.
        detail: String,
    },
    /// The endpoint is gone for the rest of this run and will not be
    /// probed again: standard output whose reader exited (EPIPE).
    #[error("{endpoint}: {detail}")]
    Closed {
        /// The endpoint.
        endpoint: String,
        /// What happened and where the records go instead.
        detail: String,
    },
    /// An I/O error on an established connection or a file.
    #[error("{endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Makes connections to one endpoint. Cheap to keep; shared by the
/// endpoint's worker and its health checks.
pub trait Connector: Send + Sync + 'static {
    /// The endpoint's name for logs and records, e.g.
    /// `syslog+relp://127.0.0.1:2514`.
    fn endpoint(&self) -> &str;

    /// What a successful [`Connection::send`] guarantees.
    fn guarantee(&self) -> Guarantee;

    /// Opens a connection, including any handshake (TLS, RELP `open`, NATS
    /// `CONNECT`), so success means the collector is ready to take records.
    /// Also the active health check. The caller applies a timeout.
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SinkError>>;
}

/// An open connection to one endpoint.
pub trait Connection: Send {
    /// Sends every record of `batch` and returns once the collector has all
    /// of them (see [`Connector::guarantee`]). On error nothing is assumed
    /// delivered and the connection is dropped. The caller applies a timeout.
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Closes the connection politely (RELP `close`, flushing a file).
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}
