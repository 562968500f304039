//! RELP, rsyslog's acknowledged transport: `open` with offers, then one
//! `syslog` command per record, pipelined up to [`WINDOW`] unanswered, each
//! acknowledged by an `rsp` with its transaction number; `close` at the end.
//! A send returns Ok only once every record of the batch has its `rsp 200`.

pub mod frame;
mod pipeline;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::{io::AsyncWriteExt, sync::Semaphore};

use self::{
    frame::{Rsp, encode, next_txnr, offers},
    pipeline::{Cx, read_rsps, write_frames},
};
use super::{
    net::{SharedTls, Stream, escaped, io_error},
    octet::unusable,
    rfc5424::Header,
};
use crate::sink::endpoint::{Batch, BoxFuture, Connection, SinkError};

/// Commands sent and not yet answered, at most. Bounds what the collector
/// queues for us (its answers) and what a dropped connection leaves in
/// doubt; 1024 frames of ~1 KiB keep a loopback or LAN link busy.
pub const WINDOW: usize = 1024;
/// Our offers in `open`.
const OFFERS: &str = concat!(
    "relp_version=0\nrelp_software=lbwitness,",
    env!("CARGO_PKG_VERSION"),
    "\ncommands=syslog"
);

/// A RELP session.
pub struct RelpConnection {
    stream: Box<dyn Stream>,
    cx: Cx,
    header: Arc<Header>,
    /// The transaction number of the next command.
    txnr: u32,
    /// Received bytes not yet parsed into frames.
    received: BytesMut,
    /// See `OctetConnection::broken`.
    broken: bool,
}

impl RelpConnection {
    /// Opens the session on `stream`: sends `open` and checks that the
    /// server speaks RELP and accepts the `syslog` command.
    pub async fn open(
        mut stream: Box<dyn Stream>,
        endpoint: Arc<str>,
        header: Arc<Header>,
        tls: SharedTls,
    ) -> Result<Self, SinkError> {
        let cx = Cx { endpoint, tls };
        let mut out = Vec::new();
        encode(1, "open", &[OFFERS.as_bytes()], &mut out);
        stream.write_all(&out).await.map_err(|e| cx.io(e))?;
        stream.flush().await.map_err(|e| cx.io(e))?;
        let mut received = BytesMut::with_capacity(8 * 1024);
        let mut answer = Vec::new();
        read_rsps(&mut stream, &mut received, &cx, 1, 1, |_, data| {
            answer = data.to_vec();
            Ok(())
        })
        .await?;
        check_open(&cx, &answer)?;
        Ok(Self {
            stream,
            cx,
            header,
            txnr: next_txnr(1),
            received,
            broken: false,
        })
    }

    async fn send_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let Self {
            stream,
            cx,
            header,
            txnr,
            received,
            broken,
        } = self;
        if *broken {
            return Err(io_error(&cx.endpoint, unusable()));
        }
        if batch.entries.is_empty() {
            return Ok(());
        }
        *broken = true;
        let window = Semaphore::new(WINDOW);
        let (mut rd, mut wr) = tokio::io::split(stream);
        let writer = write_frames(&mut wr, cx, header, batch, *txnr, &window);
        let reader = read_rsps(
            &mut rd,
            received,
            cx,
            *txnr,
            batch.entries.len(),
            |i, data| match Rsp::parse(data) {
                Some(rsp) if rsp.status == Some(200) => {
                    window.add_permits(1);
                    Ok(())
                }
                Some(rsp) if rsp.status.is_some() => Err(SinkError::Rejected {
                    endpoint: cx.endpoint.to_string(),
                    detail: format!(
                        "record {} (event.sequence {}) answered {}; see the collector's log",
                        i + 1,
                        batch.entries[i].sequence,
                        escaped(data, 200)
                    ),
                }),
                _ => Err(cx.protocol(format!(
                    "a syslog command was answered {}, not a RELP status",
                    escaped(data, 200)
                ))),
            },
        );
        tokio::try_join!(writer, reader)?;
        for _ in &batch.entries {
            *txnr = next_txnr(*txnr);
        }
        *broken = false;
        Ok(())
    }

    async fn close_session(mut self) -> Result<(), SinkError> {
        if !self.broken {
            let mut out = Vec::new();
            encode(self.txnr, "close", &[], &mut out);
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| self.cx.io(e))?;
            self.stream.flush().await.map_err(|e| self.cx.io(e))?;
            // librelp answers `close` with an empty rsp, then `serverclose`.
            read_rsps(
                &mut self.stream,
                &mut self.received,
                &self.cx,
                self.txnr,
                1,
                |_, _| Ok(()),
            )
            .await?;
        }
        self.stream.shutdown().await.map_err(|e| self.cx.io(e))
    }
}

/// Checks the answer to `open`: status 200, a `relp_version` offer and the
/// `syslog` command among the `commands` offered.
fn check_open(cx: &Cx, answer: &[u8]) -> Result<(), SinkError> {
    let rsp = match Rsp::parse(answer) {
        Some(rsp) if rsp.status == Some(200) => rsp,
        Some(rsp) if rsp.status.is_some() => {
            return Err(SinkError::Rejected {
                endpoint: cx.endpoint.to_string(),
                detail: format!(
                    "open answered {}; see the collector's log",
                    escaped(answer, 200)
                ),
            });
        }
        _ => {
            return Err(cx.protocol(format!(
                "open answered {}, not a RELP status",
                escaped(answer, 200)
            )));
        }
    };
    let offered = |name: &[u8]| offers(rsp.data).find(|(n, _)| *n == name).map(|(_, v)| v);
    if offered(b"relp_version").is_none() {
        return Err(cx.protocol(format!(
            "the open answer has no relp_version offer: {}",
            escaped(answer, 200)
        )));
    }
    let commands = offered(b"commands").unwrap_or_default();
    if !commands.split(|&b| b == b',').any(|c| c == b"syslog") {
        return Err(SinkError::Rejected {
            endpoint: cx.endpoint.to_string(),
            detail: format!(
                "the collector does not offer the RELP syslog command (offers {}); \
                 check its imrelp configuration",
                escaped(rsp.data, 200)
            ),
        });
    }
    Ok(())
}

impl Connection for RelpConnection {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.send_batch(batch))
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        Box::pin(self.close_session())
    }
}

#[cfg(test)]
mod tests;
