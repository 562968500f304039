//! Syslog over TCP (RFC 6587) and over TLS (RFC 5425): octet-counted frames
//! `MSG-LEN SP SYSLOG-MSG`, with no reply from the collector.

use std::{io::Write as _, sync::Arc};

use tokio::io::AsyncWriteExt;

use super::{
    net::{Peek, SharedTls, Stream, escaped, io_error, peek},
    rfc5424::Header,
};
use crate::sink::endpoint::{Batch, BoxFuture, Connection, SinkError};

/// Bytes of frames gathered before a write: large enough for few syscalls,
/// small enough that a collector that stops reading holds the send at the
/// socket instead of growing the agent's memory.
pub const WRITE_CHUNK: usize = 64 * 1024;

/// Appends the octet-counted frame of the message `header` + `line`.
pub fn frame(header: &[u8], line: &[u8], out: &mut Vec<u8>) {
    let len = header.len() + line.len();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{len} ");
    out.extend_from_slice(header);
    out.extend_from_slice(line);
}

/// A TCP or TLS connection to a syslog collector.
pub struct OctetConnection {
    pub(super) stream: Box<dyn Stream>,
    pub(super) endpoint: Arc<str>,
    pub(super) header: Arc<Header>,
    pub(super) tls: SharedTls,
    /// Set while a send is in progress: a send that did not finish (an
    /// error, or the caller's timeout dropping it) may have left half a
    /// frame on the wire, so the connection must not be used again.
    pub(super) broken: bool,
}

impl OctetConnection {
    async fn send_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let endpoint = &*self.endpoint;
        if self.broken {
            return Err(io_error(endpoint, unusable()));
        }
        self.check_alive().await?;
        self.broken = true;
        let mut out = Vec::with_capacity(WRITE_CHUNK + 2048);
        let mut header = Vec::with_capacity(256);
        for entry in &batch.entries {
            header.clear();
            self.header.write(&entry.line, &mut header);
            frame(&header, &entry.line, &mut out);
            if out.len() >= WRITE_CHUNK {
                self.write(&out).await?;
                out.clear();
            }
        }
        self.write(&out).await?;
        self.stream.flush().await.map_err(|e| self.error(e))?;
        self.broken = false;
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        match self.stream.write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Fails when the collector has closed the connection, reset it, sent a
    /// TLS alert (e.g. refusing our client certificate after a TLS 1.3
    /// handshake) or sent anything at all, so records are not written into a
    /// connection already known to be dead.
    async fn check_alive(&mut self) -> Result<(), SinkError> {
        let endpoint = &*self.endpoint;
        match peek(&mut *self.stream).await {
            Peek::Quiet => Ok(()),
            Peek::Closed => Err(io_error(
                endpoint,
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the collector closed the connection",
                ),
            )),
            Peek::Data(bytes) => Err(SinkError::Protocol {
                endpoint: endpoint.to_owned(),
                detail: format!(
                    "the collector sent {}, but a syslog receiver never answers on this \
                     transport; is this a syslog port, and is the transport right?",
                    escaped(&bytes, 64)
                ),
            }),
            Peek::Failed(e) => Err(self.error(e)),
        }
    }

    fn error(&self, err: std::io::Error) -> SinkError {
        let endpoint = &*self.endpoint;
        match &self.tls {
            Some(tls) => tls.error(endpoint, err, |e| io_error(endpoint, e)),
            None => io_error(endpoint, err),
        }
    }
}

/// The error for a connection reused after a failed send.
pub fn unusable() -> std::io::Error {
    std::io::Error::other("connection unusable after an unfinished send; reconnect")
}

impl Connection for OctetConnection {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.send_batch(batch))
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        Box::pin(async move {
            // TLS close_notify, then FIN: the collector sees a clean end.
            let endpoint = self.endpoint.clone();
            self.stream
                .shutdown()
                .await
                .map_err(|e| io_error(&endpoint, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt as _, DuplexStream, duplex};

    use super::*;
    use crate::sink::{endpoint::Entry, syslog::rfc5424::Facility};

    fn connection() -> (OctetConnection, DuplexStream) {
        let (client, server) = duplex(1 << 20);
        let conn = OctetConnection {
            stream: Box::new(client),
            endpoint: "syslog+tcp://test:1".into(),
            header: Arc::new(Header::new(Facility::Local0, "lbwitness", None).unwrap()),
            tls: None,
            broken: false,
        };
        (conn, server)
    }

    fn batch(n: u64) -> Batch {
        Batch {
            agent_id: "a".into(),
            entries: (1..=n)
                .map(|sequence| Entry {
                    sequence,
                    line: Bytes::from(format!("{{\"event\":{{\"sequence\":{sequence}}}}}")),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_batch_is_its_frames_back_to_back() {
        let (mut conn, mut server) = connection();
        // Enough records to cross several write chunks.
        let b = batch(5000);
        let (sent, wire) = tokio::join!(conn.send(&b), async {
            let mut wire = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            while !wire.ends_with(b"\"sequence\":5000}}") {
                let n = server.read(&mut chunk).await.unwrap();
                wire.extend_from_slice(&chunk[..n]);
            }
            wire
        });
        sent.unwrap();
        let mut expected = Vec::new();
        for entry in &b.entries {
            let mut head = Vec::new();
            conn.header.write(&entry.line, &mut head);
            frame(&head, &entry.line, &mut expected);
        }
        assert_eq!(wire, expected);
    }

    #[tokio::test]
    async fn a_closed_or_answering_peer_fails_the_next_send() {
        let (mut conn, server) = connection();
        drop(server);
        let err = conn.send(&batch(1)).await.unwrap_err();
        assert!(err.to_string().contains("closed the connection"), "{err}");

        let (mut conn, mut server) = connection();
        server
            .write_all(b"220 smtp.example ESMTP\r\n")
            .await
            .unwrap();
        let err = conn.send(&batch(1)).await.unwrap_err();
        assert!(
            matches!(&err, SinkError::Protocol { detail, .. } if detail.contains("220 smtp.example")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unfinished_send_retires_the_connection() {
        let (mut conn, _server) = connection();
        // The peer never reads: the send blocks once the pipe is full, and
        // the caller's timeout drops it half-way through a frame.
        let unfinished =
            tokio::time::timeout(Duration::from_millis(20), conn.send(&batch(100_000))).await;
        assert!(unfinished.is_err());
        let err = conn.send(&batch(1)).await.unwrap_err();
        assert!(err.to_string().contains("reconnect"), "{err}");
    }
}
