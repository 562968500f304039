//! Opening the byte stream under a syslog transport (TCP, optionally TLS),
//! and the I/O helpers the transports share.

use std::{future::poll_fn, io, path::PathBuf, pin::Pin, sync::Arc, task::Poll};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use crate::sink::{
    endpoint::SinkError,
    tls::{HandshakeContext, explain, rustls_error},
};

/// A connected byte stream: plain TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What a TLS connection needs, built once from the config.
#[derive(Clone)]
pub struct TlsClient {
    /// rustls, with the trust anchors and client certificate loaded.
    pub connector: TlsConnector,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
    /// `server_name` as configured, for messages.
    pub server_name_text: String,
    /// The CA file, for messages.
    pub ca_file: PathBuf,
    /// Whether a client certificate is configured.
    pub client_cert: bool,
}

impl TlsClient {
    fn context(&self) -> HandshakeContext<'_> {
        HandshakeContext {
            ca_file: &self.ca_file,
            server_name: &self.server_name_text,
            client_cert: self.client_cert,
        }
    }

    /// Maps an I/O error on this TLS stream to [`SinkError::Tls`] when rustls
    /// is behind it (a refused certificate, an alert), else to `other`.
    pub fn error(
        &self,
        endpoint: &str,
        err: io::Error,
        other: impl FnOnce(io::Error) -> SinkError,
    ) -> SinkError {
        match rustls_error(&err) {
            Some(tls) => SinkError::Tls {
                endpoint: endpoint.to_owned(),
                message: explain(tls, &self.context()),
            },
            None => other(err),
        }
    }
}

/// Connects to `address` (resolving it) and, with `tls`, completes the
/// handshake, so a refused certificate fails here and not on the first send.
pub async fn connect(
    endpoint: &str,
    address: &str,
    tls: Option<&TlsClient>,
) -> Result<Box<dyn Stream>, SinkError> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|source| SinkError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    // Frames are written in large buffers; the last, partial segment of a
    // batch should leave at once rather than wait for Nagle's timer.
    tcp.set_nodelay(true)
        .map_err(|source| io_error(endpoint, source))?;
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let stream = tls
        .connector
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|err| {
            tls.error(endpoint, err, |err| SinkError::Tls {
                endpoint: endpoint.to_owned(),
                message: format!(
                    "handshake failed: {err}; check that the collector speaks TLS on this port"
                ),
            })
        })?;
    Ok(Box::new(stream))
}

/// An I/O error on an established connection.
pub fn io_error(endpoint: &str, source: io::Error) -> SinkError {
    SinkError::Io {
        endpoint: endpoint.to_owned(),
        source,
    }
}

/// What the read side holds right now, without waiting.
#[derive(Debug)]
pub enum Peek {
    /// Nothing to read: the connection looks healthy.
    Quiet,
    /// The collector closed its side.
    Closed,
    /// Bytes the collector sent (at most 512 of them).
    Data(Vec<u8>),
    /// The read failed (a reset, a TLS alert).
    Failed(io::Error),
}

/// Polls the read side once. A syslog collector never sends anything on a
/// plain TCP or TLS connection, so any answer here means the connection is
/// closed, broken or not a syslog receiver.
pub async fn peek(stream: &mut dyn Stream) -> Peek {
    let mut bytes = [0u8; 512];
    poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut bytes);
        Poll::Ready(match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Pending => Peek::Quiet,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Peek::Closed,
            Poll::Ready(Ok(())) => Peek::Data(buf.filled().to_vec()),
            Poll::Ready(Err(err)) => Peek::Failed(err),
        })
    })
    .await
}

/// The host part of `host:port` (without IPv6 brackets), or `None` when the
/// address is not of that form.
pub fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some(host)
}

/// Received bytes for an error message: escaped, at most `max` of them.
pub fn escaped(bytes: &[u8], max: usize) -> String {
    let shown = bytes[..bytes.len().min(max)].escape_ascii().to_string();
    if bytes.len() > max {
        format!("\"{shown}\"... ({} bytes)", bytes.len())
    } else {
        format!("\"{shown}\"")
    }
}

/// Shared, so every connection of one endpoint uses one rustls config.
pub type SharedTls = Option<Arc<TlsClient>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:514"), Some("127.0.0.1"));
        assert_eq!(host_of("collector.example:6514"), Some("collector.example"));
        assert_eq!(host_of("[::1]:2514"), Some("::1"));
        assert_eq!(host_of("::1:2514"), None);
        assert_eq!(host_of("collector"), None);
        assert_eq!(host_of("collector:http"), None);
        assert_eq!(host_of(":514"), None);
        assert_eq!(host_of("[]:514"), None);
        assert_eq!(host_of("host:70000"), None);
    }

    #[test]
    fn escaped_truncates() {
        assert_eq!(escaped(b"a\nb", 10), "\"a\\nb\"");
        assert_eq!(escaped(&[0xff; 20], 2), "\"\\xff\\xff\"... (20 bytes)");
    }
}
