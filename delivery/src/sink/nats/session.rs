//! One async-nats client connected to one NATS server: the connect with our
//! options, the stream check, and the pipelined publish of a batch.
//!
//! async-nats reconnects by itself; the delivery stage must still see a
//! dead endpoint. So a session listens to the client's events, and from
//! the first disconnect (or server `-ERR`) on, every call fails: the
//! connection counts as broken, the group marks the endpoint down and
//! re-routes its batches, and a later `connect()` makes a new client. The
//! client gets one reconnect attempt at most, so a dropped session leaves
//! no task retrying in the background.

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::{
    ConnectOptions, Event, RequestErrorKind, Subject,
    header::{HeaderMap, NATS_MESSAGE_ID},
    jetstream,
};
use bytes::Bytes;
use tokio::sync::watch;

use super::{
    advice, greeting,
    jetstream::{StreamProblem, check_stream_info},
    servers::ServerAddr,
    settings::{Auth, Validated},
};
use crate::sink::{
    endpoint::{Batch, SinkError},
    net::TlsClient,
};

/// async-nats' own limits on a connect, a request and a publish ack. The
/// delivery stage bounds every connect and send by its configured timeouts
/// (`connect_timeout_ms`, `send_timeout_ms`, at most 10 minutes) and drops
/// the connection when one fires; these only keep async-nats from giving
/// up first.
const CLIENT_LIMIT: Duration = Duration::from_secs(600);

/// How long the greeting probe that explains a failed connect may take.
const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// Why a session stopped being usable.
#[derive(Clone, Debug)]
enum Lost {
    /// The client lost its connection (it may have reconnected since).
    Disconnected,
    /// The server sent `-ERR` on the established connection.
    ServerError(String),
}

/// A connected, authenticated client of one server.
pub struct Session {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    lost: watch::Receiver<Option<Lost>>,
    endpoint: String,
    /// The server has JetStream on (from its `INFO`), for messages.
    jetstream_enabled: bool,
    max_payload: usize,
}

impl Session {
    /// Connects to `addr` (TCP, `INFO`, TLS when configured, `CONNECT`,
    /// `PING`/`PONG`), then checks the configured stream.
    pub async fn open(addr: &ServerAddr, settings: &Validated) -> Result<Self, SinkError> {
        let scheme = if settings.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        let endpoint = format!("{scheme}://{addr}");
        let tls = match &settings.tls {
            Some(tls) => Some(tls.for_server(addr).map_err(|e| SinkError::Tls {
                endpoint: endpoint.clone(),
                message: format!("{e}; set server_name in the tls table"),
            })?),
            None => None,
        };
        let (lost_tx, lost) = watch::channel(None);
        let client = match options(&endpoint, settings, Arc::new(lost_tx))?
            .connect(format!("nats://{addr}"))
            .await
        {
            Ok(client) => client,
            Err(e) => return Err(diagnose(&endpoint, addr, settings, tls.as_ref(), &e).await),
        };
        let info = client.server_info();
        if !info.headers {
            return Err(advice::protocol(
                &endpoint,
                format!(
                    "server {} does not support message headers, which JetStream dedup needs; upgrade to nats-server 2.2 or later",
                    info.version
                ),
            ));
        }
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(CLIENT_LIMIT);
        let session = Self {
            client,
            jetstream,
            lost,
            endpoint,
            jetstream_enabled: info.jetstream,
            max_payload: info.max_payload,
        };
        if let Some(stream) = &settings.stream {
            session.check_stream(stream, &settings.subject).await?;
        }
        Ok(session)
    }

    /// The addresses the server advertises for its cluster, as of its
    /// latest `INFO`.
    pub fn connect_urls(&self) -> Vec<String> {
        self.client.server_info().connect_urls
    }

    /// Asks JetStream for `stream`'s info and checks it captures `subject`.
    async fn check_stream(&self, stream: &str, subject: &str) -> Result<(), SinkError> {
        let api = format!("$JS.API.STREAM.INFO.{stream}");
        let problem = match self.guard(self.client.request(api, Bytes::new())).await? {
            Ok(reply) => {
                let status = reply.status.map(|code| {
                    let text = reply.description.as_deref().unwrap_or("");
                    format!("{} {text}", code.as_u16()).trim_end().to_owned()
                });
                check_stream_info(status.as_deref(), &reply.payload, subject)
            }
            Err(e) if e.kind() == RequestErrorKind::NoResponders => Err(StreamProblem::Refused(
                super::jetstream::Refusal::NoResponders,
            )),
            Err(e) if e.kind() == RequestErrorKind::TimedOut => {
                return Err(SinkError::Timeout {
                    endpoint: self.endpoint.clone(),
                    timeout: CLIENT_LIMIT,
                    doing: "waiting for JetStream's stream info",
                });
            }
            Err(e) => {
                return Err(advice::protocol(
                    &self.endpoint,
                    format!("stream info: {e}"),
                ));
            }
        };
        problem.map_err(|p| advice::stream_problem(&self.endpoint, &p, stream, subject))
    }

    /// Publishes every record of `batch` to `subject`, each with
    /// `Nats-Msg-Id: <agent.id>:<event.sequence>`, pipelined: all of them
    /// first, then the acks. Returns once JetStream acknowledged each one,
    /// with how many of them it already had (duplicates it dropped).
    pub async fn publish(&self, batch: &Batch, subject: &Subject) -> Result<usize, SinkError> {
        if let Some(lost) = self.lost.borrow().clone() {
            return Err(self.lost_error(lost));
        }
        let agent = &*batch.agent_id;
        if agent.contains(['\r', '\n']) {
            return Err(advice::rejected(
                &self.endpoint,
                format!("agent.id {agent:?} contains CR or LF and cannot be a Nats-Msg-Id"),
            ));
        }
        for entry in &batch.entries {
            let size = message_size(agent, entry.sequence, entry.line.len());
            if size > self.max_payload {
                return Err(advice::rejected(
                    &self.endpoint,
                    format!(
                        "record {} is {size} bytes with headers, over the server's max_payload of {} bytes; raise max_payload in the server config",
                        entry.sequence, self.max_payload
                    ),
                ));
            }
        }
        let failed = |e: &jetstream::context::PublishError, sequence| {
            advice::publish_error(
                &self.endpoint,
                e,
                sequence,
                subject.as_str(),
                self.jetstream_enabled,
            )
        };
        let mut acks = Vec::with_capacity(batch.entries.len());
        for entry in &batch.entries {
            let mut headers = HeaderMap::new();
            headers.insert(
                NATS_MESSAGE_ID,
                format!("{agent}:{}", entry.sequence).as_str(),
            );
            let publish =
                self.jetstream
                    .publish_with_headers(subject.clone(), headers, entry.line.clone());
            let ack = self
                .guard(publish)
                .await?
                .map_err(|e| failed(&e, entry.sequence))?;
            acks.push(ack);
        }
        let mut duplicates = 0;
        for (ack, entry) in acks.into_iter().zip(&batch.entries) {
            let ack = self
                .guard(std::future::IntoFuture::into_future(ack))
                .await?
                .map_err(|e| failed(&e, entry.sequence))?;
            duplicates += usize::from(ack.duplicate);
        }
        Ok(duplicates)
    }

    /// Flushes what the client still holds and lets it go.
    pub async fn close(self) {
        let _ = self.client.flush().await;
    }

    /// `work`, unless the connection is lost first.
    async fn guard<T>(&self, work: impl Future<Output = T>) -> Result<T, SinkError> {
        let mut lost = self.lost.clone();
        tokio::select! {
            biased;
            done = work => Ok(done),
            why = lost.wait_for(Option::is_some) => {
                // The sender is gone only when the client's tasks ended.
                let why = why.map_or(Lost::Disconnected, |w| w.clone().unwrap_or(Lost::Disconnected));
                Err(self.lost_error(why))
            }
        }
    }

    fn lost_error(&self, lost: Lost) -> SinkError {
        match lost {
            Lost::Disconnected => SinkError::Io {
                endpoint: self.endpoint.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the connection to the server was lost; records not acknowledged are sent again",
                ),
            },
            Lost::ServerError(text) => advice::server_error(&self.endpoint, &text),
        }
    }
}

/// async-nats' options for one server of `settings`; its events go to
/// `lost`.
fn options(
    endpoint: &str,
    settings: &Validated,
    lost: Arc<watch::Sender<Option<Lost>>>,
) -> Result<ConnectOptions, SinkError> {
    let mut options = ConnectOptions::new()
        .name("lbwitness")
        .no_echo()
        // One server per client: the connector picks it (configured ones
        // first) and learns the advertised ones itself.
        .retain_servers_order()
        .ignore_discovered_servers()
        .max_reconnects(1)
        .connection_timeout(CLIENT_LIMIT)
        .request_timeout(Some(CLIENT_LIMIT))
        .event_callback(move |event| {
            let lost = Arc::clone(&lost);
            async move {
                let why = match event {
                    Event::Disconnected | Event::Closed => Lost::Disconnected,
                    Event::ServerError(async_nats::ServerError::Other(text)) => {
                        Lost::ServerError(text)
                    }
                    Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                        Lost::ServerError("Authorization Violation".into())
                    }
                    _ => return,
                };
                lost.send_if_modified(|now| {
                    let first = now.is_none();
                    if first {
                        *now = Some(why);
                    }
                    first
                });
            }
        });
    options = match &settings.auth {
        Auth::None => options,
        Auth::UserPassword(user, password) => {
            options.user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => options.token(token.clone()),
        Auth::NKey(seed) => options.nkey(seed.clone()),
        // Checked when the config was loaded; kept for the type's sake.
        Auth::Creds(text) => options
            .credentials(text)
            .map_err(|e| advice::rejected(endpoint, format!("creds_file: {e}")))?,
    };
    if let Some(tls) = &settings.tls {
        // Never plain text: async-nats upgrades every connection or fails.
        options = options
            .require_tls(true)
            .tls_client_config(tls.rustls.clone());
    }
    Ok(options)
}

/// The error for a failed connect, in the operator's terms: a refusal of
/// the credentials as such; otherwise, unless the TCP connection itself
/// failed, what the server's greeting shows (no NATS server there, TLS
/// mismatched); else async-nats' error, rustls' reason explained.
async fn diagnose(
    endpoint: &str,
    addr: &ServerAddr,
    settings: &Validated,
    tls: Option<&TlsClient>,
    err: &async_nats::ConnectError,
) -> SinkError {
    let plain = || advice::connect_error(endpoint, err, tls, CLIENT_LIMIT);
    if err.kind() == async_nats::ConnectErrorKind::AuthorizationViolation {
        return match settings.auth {
            Auth::NKey(_) => advice::key_refused(endpoint, "nkey_seed_file"),
            Auth::Creds(_) => advice::key_refused(endpoint, "creds_file"),
            _ => plain(),
        };
    }
    if advice::is_tcp_failure(err) {
        return plain();
    }
    match tokio::time::timeout(PROBE_LIMIT, greeting::probe(addr, endpoint)).await {
        Ok(Ok(info)) => match greeting::plan(&info, settings.tls.is_some()) {
            Err(mismatch) => mismatch.error(endpoint),
            Ok(_) => plain(),
        },
        Ok(Err(e @ SinkError::Protocol { .. })) => e,
        Ok(Err(_)) | Err(_) => plain(),
    }
}

/// The size of one published record as the server counts it against
/// `max_payload`: the header block and the payload.
fn message_size(agent: &str, sequence: u64, payload: usize) -> usize {
    // "NATS/1.0\r\n" "Nats-Msg-Id: " <agent> ":" <sequence> "\r\n" "\r\n"
    let digits = sequence.checked_ilog10().unwrap_or(0) as usize + 1;
    10 + "Nats-Msg-Id".len() + 2 + agent.len() + 1 + digits + 2 + 2 + payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_size_counts_the_header_block() {
        let block = "NATS/1.0\r\nNats-Msg-Id: a:123\r\n\r\n";
        assert_eq!(message_size("a", 123, 5), block.len() + 5);
        assert_eq!(message_size("a", 0, 0), block.len() - 2);
    }
}
