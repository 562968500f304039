//! The two halves of a RELP exchange, run concurrently on one connection:
//! writing `syslog` frames within the window, and reading the `rsp` frames
//! that open it again.

use std::sync::Arc;

use bytes::{Buf as _, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::Semaphore,
};

use super::frame::{self, encode, next_txnr};
use crate::sink::{
    endpoint::{Batch, SinkError},
    syslog::{
        net::{SharedTls, escaped, io_error},
        octet::WRITE_CHUNK,
        rfc5424::Header,
    },
};

/// The largest server frame accepted, in bytes of DATA. Server frames are
/// short answers; a larger DATALEN means the peer is not a RELP server.
const MAX_SERVER_DATA: usize = 64 * 1024;

/// The endpoint, for errors.
pub(super) struct Cx {
    pub(super) endpoint: Arc<str>,
    pub(super) tls: SharedTls,
}

impl Cx {
    pub(super) fn io(&self, err: std::io::Error) -> SinkError {
        match &self.tls {
            Some(tls) => tls.error(&self.endpoint, err, |e| io_error(&self.endpoint, e)),
            None => io_error(&self.endpoint, err),
        }
    }

    pub(super) fn protocol(&self, detail: String) -> SinkError {
        SinkError::Protocol {
            endpoint: self.endpoint.to_string(),
            detail,
        }
    }

    pub(super) fn aborted(&self, why: &str, pending: usize) -> SinkError {
        let message = format!("{why} before answering {pending} command(s)");
        io_error(
            &self.endpoint,
            std::io::Error::new(std::io::ErrorKind::ConnectionAborted, message),
        )
    }
}

/// Writes one `syslog` frame per record, numbered from `first`, taking a
/// window slot for each and flushing before it waits for a slot (answers
/// can only come for frames the collector has).
pub(super) async fn write_frames<W: AsyncWrite + Unpin>(
    wr: &mut W,
    cx: &Cx,
    header: &Header,
    batch: &Batch,
    first: u32,
    window: &Semaphore,
) -> Result<(), SinkError> {
    let mut out = Vec::with_capacity(WRITE_CHUNK + 2048);
    let mut head = Vec::with_capacity(256);
    let mut txnr = first;
    for entry in &batch.entries {
        if let Ok(slot) = window.try_acquire() {
            slot.forget();
        } else {
            wr.write_all(&out).await.map_err(|e| cx.io(e))?;
            out.clear();
            wr.flush().await.map_err(|e| cx.io(e))?;
            window
                .acquire()
                .await
                .expect("the window semaphore is never closed")
                .forget();
        }
        head.clear();
        header.write(&entry.line, &mut head);
        encode(txnr, "syslog", &[&head, &entry.line], &mut out);
        txnr = next_txnr(txnr);
        if out.len() >= WRITE_CHUNK {
            wr.write_all(&out).await.map_err(|e| cx.io(e))?;
            out.clear();
        }
    }
    wr.write_all(&out).await.map_err(|e| cx.io(e))?;
    wr.flush().await.map_err(|e| cx.io(e))
}

/// Reads until `count` rsp frames numbered from `first` have arrived,
/// calling `on_rsp(index, data)` for each. Fails on anything else: another
/// command, a transaction number out of order, `serverclose`, the end of
/// the stream, bytes that are not a frame.
pub(super) async fn read_rsps<R: AsyncRead + Unpin>(
    rd: &mut R,
    received: &mut BytesMut,
    cx: &Cx,
    first: u32,
    count: usize,
    mut on_rsp: impl FnMut(usize, &[u8]) -> Result<(), SinkError>,
) -> Result<(), SinkError> {
    let mut expected = first;
    let mut got = 0;
    while got < count {
        let used = match frame::parse(received, MAX_SERVER_DATA) {
            Ok(Some((f, used))) => {
                if f.txnr == 0 && f.command == b"serverclose" {
                    return Err(
                        cx.aborted("the collector ended the session (serverclose)", count - got)
                    );
                }
                if f.command != b"rsp" || f.txnr != expected {
                    return Err(cx.protocol(format!(
                        "expected the rsp for transaction {expected}, received {}",
                        escaped(&received[..used], 120)
                    )));
                }
                on_rsp(got, f.data)?;
                used
            }
            Ok(None) => {
                received.reserve(8 * 1024);
                let n = rd.read_buf(received).await.map_err(|e| cx.io(e))?;
                if n == 0 {
                    return Err(cx.aborted("the collector closed the connection", count - got));
                }
                continue;
            }
            Err(err) => {
                return Err(cx.protocol(format!(
                    "not a RELP frame ({err}): received {}",
                    escaped(received, 120)
                )));
            }
        };
        received.advance(used);
        expected = next_txnr(expected);
        got += 1;
    }
    Ok(())
}
