//! Opening the byte stream under a syslog transport (TCP, optionally TLS),
//! and the I/O helpers the transports share. The stream and the TLS client
//! themselves live in [`crate::sink::net`], shared with NATS.

use std::{future::poll_fn, io, pin::Pin, sync::Arc, task::Poll};

use tokio::io::ReadBuf;

pub use crate::sink::net::{Stream, TlsClient, io_error};
use crate::sink::{endpoint::SinkError, net::connect_tcp};

/// Connects to `address` (resolving it) and, with `tls`, completes the
/// handshake, so a refused certificate fails here and not on the first send.
pub async fn connect(
    endpoint: &str,
    address: &str,
    tls: Option<&TlsClient>,
) -> Result<Box<dyn Stream>, SinkError> {
    let tcp = connect_tcp(endpoint, address).await?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => tls.handshake(endpoint, tcp).await,
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
    // Port 0 is nobody's: connecting to it always fails.
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
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
        assert_eq!(host_of("host:99999"), None);
        assert_eq!(host_of("host:0"), None);
    }

    #[test]
    fn escaped_truncates() {
        assert_eq!(escaped(b"a\nb", 10), "\"a\\nb\"");
        assert_eq!(escaped(&[0xff; 20], 2), "\"\\xff\\xff\"... (20 bytes)");
    }
}
