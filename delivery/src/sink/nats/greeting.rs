//! The start of a NATS connection, before `CONNECT`: the server's `INFO`
//! greeting, always in plain text, and whether the connection continues in
//! plain text or goes TLS. NATS' classic TLS: after `INFO` the client
//! starts the TLS handshake on the same TCP connection and everything from
//! `CONNECT` on is encrypted. [`plan`] is pure.

use bytes::BytesMut;
use tokio::{io::AsyncReadExt as _, net::TcpStream};

use super::{
    advice,
    parse::{self, ServerOp},
    wire::ServerInfo,
};
use crate::sink::endpoint::SinkError;

/// The longest `INFO` greeting accepted, in bytes: a large cluster's
/// `connect_urls` fit many times over; a server streaming garbage does not
/// make us buffer it forever.
const MAX_INFO: usize = 64 * 1024;

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
    /// The server sent more than `INFO` before the handshake.
    EarlyBytes,
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
            Self::EarlyBytes => advice::protocol(
                endpoint,
                "the server sent more than INFO before the TLS handshake".into(),
            ),
        }
    }
}

/// What follows `info` when TLS is (or is not) `configured`; `drained`
/// says nothing but `INFO` was read. Configured TLS is never given up.
pub fn plan(info: &ServerInfo, configured: bool, drained: bool) -> Result<Plan, Mismatch> {
    match (configured, info.tls_required || info.tls_available) {
        (false, _) if info.tls_required => Err(Mismatch::TlsRequired),
        (false, _) => Ok(Plan::Plain),
        (true, false) => Err(Mismatch::TlsNotOffered),
        (true, true) if !drained => Err(Mismatch::EarlyBytes),
        (true, true) => Ok(Plan::Tls),
    }
}

/// Reads the server's plain-text `INFO` greeting from `tcp`. Bytes read past
/// it stay in `rbuf`.
pub async fn read_info(
    tcp: &mut TcpStream,
    rbuf: &mut BytesMut,
    endpoint: &str,
) -> Result<ServerInfo, SinkError> {
    let mut chunk = [0u8; 4096];
    loop {
        match parse::next_op(rbuf).map_err(|e| advice::protocol(endpoint, e.to_string()))? {
            Some(ServerOp::Info(json)) => {
                return ServerInfo::parse(&json).map_err(|e| advice::protocol(endpoint, e));
            }
            Some(ServerOp::Err(text)) => return Err(advice::server_error(endpoint, &text)),
            Some(other) => {
                return Err(advice::protocol(
                    endpoint,
                    format!(
                        "expected the server's INFO greeting, got {other:?}; is this a NATS client port?"
                    ),
                ));
            }
            None if rbuf.len() > MAX_INFO => {
                return Err(advice::protocol(
                    endpoint,
                    format!(
                        "no INFO greeting in the first {MAX_INFO} bytes; is this a NATS client port?"
                    ),
                ));
            }
            None => {}
        }
        match tcp.read(&mut chunk).await {
            Ok(0) => {
                return Err(SinkError::Io {
                    endpoint: endpoint.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before its INFO greeting",
                    ),
                });
            }
            Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
            Err(source) => {
                return Err(SinkError::Io {
                    endpoint: endpoint.to_owned(),
                    source,
                });
            }
        }
    }
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
        for (required, available, configured, drained, want) in [
            (false, false, false, true, Ok(Plain)),
            (false, true, false, true, Ok(Plain)),
            (true, false, false, true, Err(TlsRequired)),
            (true, true, false, true, Err(TlsRequired)),
            (false, false, true, true, Err(TlsNotOffered)),
            (false, true, true, true, Ok(Tls)),
            (true, false, true, true, Ok(Tls)),
            (true, false, true, false, Err(EarlyBytes)),
            (false, false, false, false, Ok(Plain)),
        ] {
            let got = plan(&info(required, available), configured, drained);
            assert_eq!(got, want, "{required} {available} {configured} {drained}");
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
        assert!(text(Mismatch::EarlyBytes).contains("protocol error"));
    }
}
