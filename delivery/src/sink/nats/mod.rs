//! The NATS JetStream sink: each record is published to one subject with
//! the header `Nats-Msg-Id: <agent.id>:<event.sequence>`, and counts as
//! delivered only when JetStream's publish ack for it arrives. Acks are
//! pipelined: a batch is published whole, then its ack futures awaited.
//!
//! The client is the official `async-nats` crate: it speaks the protocol,
//! JetStream publish and acks, TLS over rustls (our trust anchors and
//! client certificate, the ring provider), and user/password, token, NKey
//! and `.creds` (JWT) authentication. We keep what it does not do for us:
//!
//! * [`settings`]: validation at config load, credential files included;
//! * [`servers`]: the order servers are tried in, configured ones first,
//!   then the addresses the cluster advertises, with TLS for all of them;
//!   each `connect()` gives async-nats one server;
//! * [`session`]: one client per connection, its automatic reconnects
//!   turned into a failed connection the delivery stage can see;
//! * [`greeting`]: after a failed connect, why, from the server's `INFO`
//!   (TLS configured but not offered, required but not configured, not a
//!   NATS server at all);
//! * [`jetstream`] (stream check, refusals) and [`advice`]: what each
//!   failure means for the operator;
//! * [`verifier`]: a fixed `server_name` checked for every server.
//!
//! What an ack means, and what to configure on the server:
//!
//! * JetStream acknowledges a record once its stream stored it (for a
//!   replicated stream, once a majority of replicas did), but by default
//!   the file store fsyncs only every 2 minutes. For an acknowledged
//!   record to survive a power loss, set `jetstream { sync_interval: always }`
//!   in the server config (nats-server 2.10 or later; Debian 12's 2.9.10
//!   refuses the option as an unknown field), or rely on R3 streams whose
//!   replicas do not lose power together.
//! * A record sent again (after a timeout or a failover) is dropped by
//!   JetStream if its `Nats-Msg-Id` was seen within the stream's
//!   `duplicate_window` (default 2 minutes). Beyond that window a resent
//!   record is stored twice; readers then dedup by (`agent.id`,
//!   `event.sequence`). Keep the window longer than the longest outage
//!   after which the agent may resend.
//! * The stream must exist: the agent does not create it. Set `stream` to
//!   have `connect()` check that it exists and captures `subject`.
//! * TLS (a `tls` table or `tls://` URLs) applies to every server of the
//!   endpoint, advertised ones included, and is never given up: a server
//!   that does not offer TLS is refused, not spoken to in plain text. An
//!   endpoint without TLS configured whose server requires it is upgraded
//!   by async-nats with the system's CAs; if the server's certificate does
//!   not chain to them, the error says to add a `tls` table.
//! * Timeouts are the delivery stage's (`connect_timeout_ms`,
//!   `send_timeout_ms`): they bound the connect and the wait for a batch's
//!   acks, and a connection whose send timed out counts as failed.

pub mod advice;
pub mod greeting;
pub mod jetstream;
pub mod servers;
pub mod session;
pub mod settings;
pub mod verifier;

use std::sync::{Arc, Mutex, PoisonError};

use async_nats::Subject;

pub use self::settings::{NatsConfigError, NatsSettings};
use self::{servers::Servers, session::Session, settings::Validated};
use crate::sink::endpoint::{Batch, BoxFuture, Connection, Connector, Guarantee, SinkError};

/// A connector for the JetStream endpoint `settings` describes.
pub fn connector(settings: &NatsSettings) -> Result<Arc<dyn Connector>, NatsConfigError> {
    Ok(Arc::new(NatsConnector::try_new(settings)?))
}

/// Connects to the first server of a cluster that completes the handshake.
pub struct NatsConnector {
    endpoint: String,
    settings: Arc<Validated>,
    servers: Arc<Mutex<Servers>>,
}

impl NatsConnector {
    /// Validates `settings`.
    pub fn try_new(settings: &NatsSettings) -> Result<Self, NatsConfigError> {
        let settings = Validated::try_new(settings)?;
        let endpoint = format!(
            "{}://{}",
            if settings.tls.is_some() {
                "tls"
            } else {
                "nats"
            },
            settings
                .servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(Self {
            endpoint,
            servers: Arc::new(Mutex::new(Servers::new(settings.servers.clone()))),
            settings: Arc::new(settings),
        })
    }

    async fn connect_any(&self) -> Result<NatsConnection, SinkError> {
        let order = lock(&self.servers).order();
        let mut first_refusal = None;
        let mut last_error = None;
        for (index, addr) in order {
            lock(&self.servers).attempting(index);
            match Session::open(&addr, &self.settings).await {
                Ok(session) => {
                    let mut servers = lock(&self.servers);
                    servers.succeeded(index);
                    servers.learn(&session.connect_urls());
                    tracing::debug!(endpoint = %self.endpoint, server = %addr, "connected");
                    return Ok(NatsConnection {
                        session: Some(session),
                        subject: Subject::from(self.settings.subject.as_str()),
                        servers: Arc::clone(&self.servers),
                        index,
                        in_flight: false,
                    });
                }
                Err(e) => {
                    // An advertised address is often unreachable from here
                    // by design (NAT, relays): not worth a warning each
                    // probe. A configured one is.
                    if lock(&self.servers).is_learned(index) {
                        tracing::debug!(endpoint = %self.endpoint, server = %addr, error = %e, "advertised NATS server unusable, trying the next");
                    } else {
                        tracing::warn!(endpoint = %self.endpoint, server = %addr, error = %e, "NATS server unusable, trying the next");
                    }
                    // A refusal (credentials, missing stream) says more
                    // than "connection refused" from a node that is down.
                    if first_refusal.is_none() && !matches!(e, SinkError::Connect { .. }) {
                        first_refusal = Some(e);
                    } else {
                        last_error = Some(e);
                    }
                }
            }
        }
        Err(first_refusal
            .or(last_error)
            .expect("there is always at least one server"))
    }
}

// Only the endpoint: the settings hold secrets.
impl std::fmt::Debug for NatsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConnector")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Connector for NatsConnector {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::Acknowledged
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SinkError>> {
        Box::pin(async move { Ok(Box::new(self.connect_any().await?) as Box<dyn Connection>) })
    }
}

/// A session with one server of the cluster.
struct NatsConnection {
    session: Option<Session>,
    subject: Subject,
    servers: Arc<Mutex<Servers>>,
    index: usize,
    /// A send started and has not succeeded: if the connection is dropped
    /// now (an error, or the caller's timeout), its server counts as failed.
    in_flight: bool,
}

impl Connection for NatsConnection {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let session = self
                .session
                .as_ref()
                .expect("only close() takes the session");
            self.in_flight = true;
            let duplicates = session.publish(batch, &self.subject).await?;
            self.in_flight = false;
            if duplicates > 0 {
                tracing::debug!(
                    duplicates,
                    first = batch.first_sequence(),
                    "JetStream already had some records"
                );
            }
            // The cluster may have grown since the connect (INFO updates).
            lock(&self.servers).learn(&session.connect_urls());
            Ok(())
        })
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        let session = self.session.take();
        Box::pin(async move {
            if let Some(session) = session {
                session.close().await;
            }
            Ok(())
        })
    }
}

impl Drop for NatsConnection {
    fn drop(&mut self) {
        if self.in_flight {
            lock(&self.servers).failed(self.index);
        }
    }
}

/// The server list is only read and bumped, so a panic elsewhere while it
/// was held leaves nothing half-done: use it anyway.
fn lock(servers: &Mutex<Servers>) -> std::sync::MutexGuard<'_, Servers> {
    servers.lock().unwrap_or_else(PoisonError::into_inner)
}
