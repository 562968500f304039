//! One connection to one NATS server: the handshake and the pipelined
//! publish of a batch. The thin async shell around [`parse`], [`wire`] and
//! [`jetstream`].
//! The plain-text greeting and whether TLS follows are [`greeting`]'s.

use std::{future::poll_fn, pin::Pin, task::Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};

use super::{
    advice,
    greeting::{self, Plan},
    jetstream,
    parse::{self, Message, ServerOp},
    servers::ServerAddr,
    settings::Validated,
    wire::{self, ServerInfo},
};
use crate::sink::{
    endpoint::{Batch, SinkError},
    net::{Stream, TlsClient, connect_tcp},
};

/// Bytes of records encoded ahead of the socket: enough to keep a loopback
/// connection busy, small enough that a batch is never copied whole.
const WRITE_AHEAD: usize = 64 * 1024;

/// Spare room for each socket read, in bytes.
const READ_CHUNK: usize = 16 * 1024;

/// Our only subscription: every reply inbox.
const SID: u32 = 1;

/// A connected, greeted, authenticated NATS session.
pub struct Session {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes the stream accepted but may still hold (TLS records rustls
    /// has not written to the socket yet): flush before waiting on reads.
    unflushed: bool,
    /// Socket reads land here first, then in `rbuf`.
    scratch: Box<[u8]>,
    /// With TLS: explains rustls' errors on any read or write.
    tls: Option<TlsClient>,
    endpoint: String,
    inbox: String,
    next_token: u64,
    /// The server's latest `INFO`.
    pub info: ServerInfo,
    /// Set when an `INFO` update arrives; cleared by whoever learns from it.
    pub info_changed: bool,
}

enum Event {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Flushed(std::io::Result<()>),
}

impl Session {
    /// Connects to `addr`, reads `INFO`, upgrades to TLS when `settings`
    /// ask for it, sends `CONNECT`, subscribes to the reply inbox and waits
    /// for the `PONG` that proves the server took all of it; then checks the
    /// configured stream.
    pub async fn open(addr: &ServerAddr, settings: &Validated) -> Result<Self, SinkError> {
        let scheme = if settings.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        let endpoint = format!("{scheme}://{addr}");
        let mut tcp = connect_tcp(&endpoint, (addr.host.as_str(), addr.port)).await?;
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let info = greeting::read_info(&mut tcp, &mut rbuf, &endpoint).await?;
        let tls = match &settings.tls {
            Some(tls) => Some(tls.for_server(addr).map_err(|e| SinkError::Tls {
                endpoint: endpoint.clone(),
                message: format!("{e}; set server_name in the tls table"),
            })?),
            None => None,
        };
        let stream: Box<dyn Stream> = match greeting::plan(&info, tls.is_some(), rbuf.is_empty()) {
            Err(mismatch) => return Err(mismatch.error(&endpoint)),
            Ok(Plan::Plain) => Box::new(tcp),
            Ok(Plan::Tls) => {
                let tls = tls.as_ref().expect("the plan is TLS only when configured");
                tls.handshake(&endpoint, tcp).await?
            }
        };
        let mut random = [0u8; 11];
        getrandom::fill(&mut random).map_err(|e| SinkError::Io {
            endpoint: endpoint.clone(),
            source: std::io::Error::other(format!("no randomness for the reply inbox: {e}")),
        })?;
        let mut session = Self {
            stream,
            rbuf,
            wbuf: BytesMut::with_capacity(WRITE_AHEAD),
            unflushed: false,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            tls,
            endpoint,
            inbox: format!("_INBOX.{}", hex::encode(random)),
            next_token: 0,
            info,
            info_changed: false,
        };
        session.handshake(settings).await?;
        Ok(session)
    }

    async fn handshake(&mut self, settings: &Validated) -> Result<(), SinkError> {
        if !self.info.headers {
            return Err(self.protocol(format!("server {} does not support message headers, which JetStream dedup needs; upgrade to nats-server 2.2 or later", self.info.version)));
        }
        let auth = wire::Auth {
            user: settings.user.as_ref().map(|(u, _)| u.as_str()),
            pass: settings.user.as_ref().map(|(_, p)| p.as_str()),
            auth_token: settings.token.as_deref(),
        };
        wire::connect(&mut self.wbuf, auth, self.tls.is_some());
        wire::sub(&mut self.wbuf, &format!("{}.*", self.inbox), SID);
        wire::ping(&mut self.wbuf);
        self.flush().await?;
        while !matches!(self.read_op().await?, ServerOp::Pong) {}
        if let Some(stream) = &settings.stream {
            self.check_stream(stream, &settings.subject).await?;
        }
        Ok(())
    }

    /// Asks JetStream for `stream`'s info and checks it captures `subject`.
    async fn check_stream(&mut self, stream: &str, subject: &str) -> Result<(), SinkError> {
        let reply = format!("{}.info", self.inbox);
        let api = format!("$JS.API.STREAM.INFO.{stream}");
        wire::publish(&mut self.wbuf, &api, &reply, b"");
        self.flush().await?;
        let msg = loop {
            if let ServerOp::Msg(msg) = self.read_op().await?
                && msg.subject == reply
            {
                break msg;
            }
        };
        jetstream::check_stream_info(&msg, subject)
            .map_err(|problem| advice::stream_problem(&self.endpoint, &problem, stream, subject))
    }

    /// Publishes every record of `batch` to `subject`, pipelined, and
    /// returns once JetStream acknowledged each one. Returns how many of
    /// them JetStream already had (duplicates it dropped).
    pub async fn publish(&mut self, batch: &Batch, subject: &str) -> Result<usize, SinkError> {
        let agent = &*batch.agent_id;
        if !wire::header_safe(agent) {
            return Err(self.rejected(format!(
                "agent.id {agent:?} contains CR or LF and cannot be a Nats-Msg-Id"
            )));
        }
        for entry in &batch.entries {
            let size = wire::message_size(agent, entry.sequence, entry.line.len());
            if size > self.info.max_payload {
                return Err(self.rejected(format!(
                    "record {} is {size} bytes with headers, over the server's max_payload of {} bytes; raise max_payload in the server config",
                    entry.sequence, self.info.max_payload
                )));
            }
        }
        let count = batch.entries.len();
        let base = self.next_token;
        self.next_token += count as u64;
        let mut acked = vec![false; count];
        let (mut remaining, mut duplicates, mut next) = (count, 0, 0);
        loop {
            while next < count && self.wbuf.len() < WRITE_AHEAD {
                let entry = &batch.entries[next];
                let reply = format!("{}.{}", self.inbox, base + next as u64);
                wire::hpub_record(
                    &mut self.wbuf,
                    subject,
                    &reply,
                    agent,
                    entry.sequence,
                    &entry.line,
                );
                next += 1;
            }
            while let Some(op) = self.take_op()? {
                let ServerOp::Msg(msg) = op else { continue };
                let Some(i) = self.reply_index(&msg, base, count) else {
                    continue;
                };
                match jetstream::pub_ack(&msg) {
                    Ok(ack) if !acked[i] => {
                        acked[i] = true;
                        remaining -= 1;
                        duplicates += usize::from(ack.duplicate);
                    }
                    Ok(_) => {}
                    Err(refusal) => {
                        let sequence = batch.entries[i].sequence;
                        let enabled = self.info.jetstream;
                        return Err(advice::refused(
                            &self.endpoint,
                            &refusal,
                            sequence,
                            subject,
                            enabled,
                        ));
                    }
                }
            }
            if remaining == 0 {
                // Only PONGs can be left to write.
                self.flush().await?;
                return Ok(duplicates);
            }
            match self.next_event().await {
                Event::Read(Ok(0)) => return Err(self.closed()),
                Event::Read(Ok(_)) => {}
                Event::Wrote(Ok(n)) => {
                    self.wbuf.advance(n);
                    self.unflushed = true;
                }
                Event::Flushed(Ok(())) => self.unflushed = false,
                Event::Read(Err(e)) | Event::Wrote(Err(e)) | Event::Flushed(Err(e)) => {
                    return Err(self.io(e));
                }
            }
        }
    }

    /// Waits until the stream can be read, written or flushed, and does
    /// that: one `&mut` stream polled both ways, since a TLS stream cannot
    /// be split into halves the way a `TcpStream` can.
    async fn next_event(&mut self) -> Event {
        let Self {
            stream,
            rbuf,
            wbuf,
            unflushed,
            scratch,
            ..
        } = self;
        poll_fn(|cx| {
            // Drain replies first so the server never waits on us.
            let mut buf = ReadBuf::new(scratch);
            if let Poll::Ready(read) = Pin::new(&mut **stream).poll_read(cx, &mut buf) {
                rbuf.extend_from_slice(buf.filled());
                return Poll::Ready(Event::Read(read.map(|()| buf.filled().len())));
            }
            if !wbuf.is_empty() {
                if let Poll::Ready(wrote) = Pin::new(&mut **stream).poll_write(cx, wbuf) {
                    return Poll::Ready(Event::Wrote(wrote));
                }
            } else if *unflushed
                && let Poll::Ready(flushed) = Pin::new(&mut **stream).poll_flush(cx)
            {
                return Poll::Ready(Event::Flushed(flushed));
            }
            Poll::Pending
        })
        .await
    }

    /// Shuts the socket down politely (NATS has no goodbye).
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The index in the batch that `msg` answers, if it is one of ours.
    fn reply_index(&self, msg: &Message, base: u64, count: usize) -> Option<usize> {
        let token = msg.subject.strip_prefix(&self.inbox)?.strip_prefix('.')?;
        let token = token.parse::<u64>().ok()?.checked_sub(base)?;
        usize::try_from(token).ok().filter(|i| *i < count)
    }

    /// Reads until one operation other than `PING`, `+OK` or an `INFO`
    /// update arrives, answering and noting those on the way.
    async fn read_op(&mut self) -> Result<ServerOp, SinkError> {
        loop {
            if let Some(op) = self.take_op()? {
                self.flush().await?;
                return Ok(op);
            }
            match self.stream.read(&mut self.scratch).await {
                Ok(0) => return Err(self.closed()),
                Ok(n) => self.rbuf.extend_from_slice(&self.scratch[..n]),
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// Takes the next interesting operation already read, if any. `PING`
    /// queues a `PONG`, `-ERR` becomes an error.
    fn take_op(&mut self) -> Result<Option<ServerOp>, SinkError> {
        loop {
            let op = parse::next_op(&mut self.rbuf).map_err(|e| self.protocol(e.to_string()))?;
            match op {
                Some(ServerOp::Ping) => wire::pong(&mut self.wbuf),
                Some(ServerOp::Ok) => {}
                Some(ServerOp::Info(json)) => {
                    // An update (cluster topology, lame duck): only the
                    // addresses matter; an unreadable one changes nothing.
                    if let Ok(info) = ServerInfo::parse(&json) {
                        self.info.connect_urls = info.connect_urls;
                        self.info_changed = true;
                    }
                }
                Some(ServerOp::Err(text)) => {
                    return Err(advice::server_error(&self.endpoint, &text));
                }
                other => return Ok(other),
            }
        }
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        if !self.wbuf.is_empty() {
            let result = self.stream.write_all(&self.wbuf).await;
            result.map_err(|e| self.io(e))?;
            self.wbuf.clear();
            self.unflushed = true;
        }
        if self.unflushed {
            // A no-op on TCP; with TLS, the records rustls still holds.
            let result = self.stream.flush().await;
            result.map_err(|e| self.io(e))?;
            self.unflushed = false;
        }
        Ok(())
    }

    fn closed(&self) -> SinkError {
        self.io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ))
    }

    /// An I/O error; with TLS, rustls' reasons (an alert such as "client
    /// certificate required", which TLS 1.3 delivers after the handshake)
    /// become [`SinkError::Tls`].
    fn io(&self, source: std::io::Error) -> SinkError {
        let plain = |source| SinkError::Io {
            endpoint: self.endpoint.clone(),
            source,
        };
        match &self.tls {
            Some(tls) => tls.error(&self.endpoint, source, plain),
            None => plain(source),
        }
    }

    fn protocol(&self, detail: String) -> SinkError {
        advice::protocol(&self.endpoint, detail)
    }

    fn rejected(&self, detail: String) -> SinkError {
        advice::rejected(&self.endpoint, detail)
    }
}
