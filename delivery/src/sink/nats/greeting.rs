//! The start of a NATS connection, before `CONNECT`: the server's `INFO`
//! greeting, always in plain text, and whether the connection continues in
//! plain text or goes TLS (NATS' classic TLS: after `INFO` the client
//! starts the TLS handshake on the same TCP connection).
//!
//! async-nats does this itself and never falls back to plain text when told
//! `require_tls`, but when it fails it says only "IO error" or rustls'
//! complaint about a corrupt message. So after a failed connect, [`probe`]
//! reads the greeting once more on a connection of its own and [`plan`]
//! (pure) says what was wrong in the operator's terms: no NATS server
//! there, TLS configured but not offered, TLS required but not configured.

use serde::Deserialize;
use tokio::io::AsyncReadExt as _;

use super::{advice, servers::ServerAddr};
use crate::sink::{endpoint::SinkError, net::connect_tcp};

/// The longest `INFO` greeting accepted, in bytes: a large cluster's
/// `connect_urls` fit many times over; a server streaming garbage does not
/// make us buffer it forever.
const MAX_INFO: usize = 64 * 1024;

/// The fields of `INFO` the checks need.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ServerInfo {
    /// The server speaks only TLS.
    pub tls_required: bool,
    /// The server accepts TLS (and plain text).
    pub tls_available: bool,
    /// The server supports message headers (`Nats-Msg-Id` needs them).
    pub headers: bool,
    /// nats-server's version, for messages.
    pub version: String,
}

/// How the connection goes on after `INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Plain text: no TLS configured, none required.
    Plain,
    /// The TLS handshake, then `CONNECT` over it.
    Tls,
}

/// Why the connection cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The server requires TLS; none is configured.
    TlsRequired,
    /// TLS is configured; the server does not offer it.
    TlsNotOffered,
}

impl Mismatch {
    /// The error for the operator, with what to change.
    pub fn error(self, endpoint: &str) -> SinkError {
        let tls = |message: &str| SinkError::Tls {
            endpoint: endpoint.to_owned(),
            message: message.to_owned(),
        };
        match self {
            Self::TlsRequired => tls(
                "the server requires TLS; add a `tls` table to this endpoint \
                 (ca_file = the CA that signed the server's certificate) \
                 or write its URLs as tls://host:port",
            ),
            Self::TlsNotOffered => tls(
                "TLS is configured but the server does not offer it (its INFO has \
                 neither tls_required nor tls_available); records are not sent in \
                 plain text: enable `tls { ... }` on the server, or remove `tls` \
                 and use nats:// URLs on a trusted network",
            ),
        }
    }
}

/// What follows `info` when TLS is (or is not) `configured`. Configured
/// TLS is never given up.
pub fn plan(info: &ServerInfo, configured: bool) -> Result<Plan, Mismatch> {
    match (configured, info.tls_required || info.tls_available) {
        (false, _) if info.tls_required => Err(Mismatch::TlsRequired),
        (false, _) => Ok(Plan::Plain),
        (true, false) => Err(Mismatch::TlsNotOffered),
        (true, true) => Ok(Plan::Tls),
    }
}

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Greeting<'a> {
    /// An `INFO` line: its JSON.
    Info(&'a [u8]),
    /// Something else, up to its line end: not a NATS server.
    Other(&'a [u8]),
    /// Not enough bytes yet.
    Partial,
}

/// Classifies what a server sent first. Pure.
pub fn classify(buf: &[u8]) -> Greeting<'_> {
    const INFO: &[u8] = b"INFO ";
    let line = buf
        .iter()
        .position(|&b| b == b'\n')
        .map(|end| buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]));
    let head = &buf[..buf.len().min(INFO.len())];
    match line {
        Some(line) if line.starts_with(INFO) => Greeting::Info(&line[INFO.len()..]),
        Some(line) => Greeting::Other(line),
        // Refuse garbage as soon as it cannot become `INFO `.
        None if !INFO.starts_with(head) => Greeting::Other(buf),
        None => Greeting::Partial,
    }
}

/// Connects to `addr` on a connection of its own and reads the server's
/// plain-text `INFO` greeting. Only used to explain a failed connect.
pub async fn probe(addr: &ServerAddr, endpoint: &str) -> Result<ServerInfo, SinkError> {
    let mut tcp = connect_tcp(endpoint, (addr.host.as_str(), addr.port)).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        match classify(&buf) {
            Greeting::Info(json) => {
                return serde_json::from_slice(json).map_err(|e| {
                    advice::protocol(endpoint, format!("the server's INFO is not JSON: {e}"))
                });
            }
            Greeting::Other(bytes) => return Err(not_nats(endpoint, bytes)),
            Greeting::Partial if buf.len() > MAX_INFO => {
                return Err(advice::protocol(
                    endpoint,
                    format!(
                        "no INFO greeting in the first {MAX_INFO} bytes; is this a NATS client port?"
                    ),
                ));
            }
            Greeting::Partial => {}
        }
        match tcp.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => {
                return Err(SinkError::Io {
                    endpoint: endpoint.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before its INFO greeting",
                    ),
                });
            }
            Ok(0) => return Err(not_nats(endpoint, &buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(source) => {
                return Err(SinkError::Io {
                    endpoint: endpoint.to_owned(),
                    source,
                });
            }
        }
    }
}

/// The server's first bytes were not `INFO`.
fn not_nats(endpoint: &str, bytes: &[u8]) -> SinkError {
    let shown: String = bytes.escape_ascii().to_string().chars().take(120).collect();
    advice::protocol(
        endpoint,
        format!("unexpected `{shown}`; is this a NATS server's client port?"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tls_required: bool, tls_available: bool) -> ServerInfo {
        ServerInfo {
            tls_required,
            tls_available,
            ..ServerInfo::default()
        }
    }

    #[test]
    fn every_combination() {
        use Mismatch::*;
        use Plan::*;
        for (required, available, configured, want) in [
            (false, false, false, Ok(Plain)),
            (false, true, false, Ok(Plain)),
            (true, false, false, Err(TlsRequired)),
            (true, true, false, Err(TlsRequired)),
            (false, false, true, Err(TlsNotOffered)),
            (false, true, true, Ok(Tls)),
            (true, false, true, Ok(Tls)),
        ] {
            let got = plan(&info(required, available), configured);
            assert_eq!(got, want, "{required} {available} {configured}");
        }
    }

    #[test]
    fn errors_say_what_to_change() {
        let text = |m: Mismatch| m.error("tls://h:4222").to_string();
        assert!(text(Mismatch::TlsRequired).contains("add a `tls` table"));
        assert!(text(Mismatch::TlsNotOffered).contains("not sent in plain text"));
        assert!(matches!(
            Mismatch::TlsNotOffered.error("e"),
            SinkError::Tls { .. }
        ));
    }

    #[test]
    fn first_bytes() {
        assert_eq!(
            classify(b"INFO {\"a\":1} \r\nPING"),
            Greeting::Info(b"{\"a\":1} ")
        );
        assert_eq!(classify(b"INF"), Greeting::Partial);
        assert_eq!(classify(b"INFO {\"a\""), Greeting::Partial);
        assert_eq!(
            classify(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            Greeting::Other(b"HTTP/1.1 400 Bad Request")
        );
        assert_eq!(classify(&[0x16, 0x03]), Greeting::Other(&[0x16, 0x03]));
        let err = not_nats("nats://h:1", b"HTTP/1.1 400 Bad Request").to_string();
        assert!(
            err.contains("unexpected `HTTP/1.1 400 Bad Request`; is this a NATS server"),
            "{err}"
        );
        assert!(
            not_nats("e", &[0x16, 0xff])
                .to_string()
                .contains("\\x16\\xff")
        );
    }
}
