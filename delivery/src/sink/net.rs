//! The byte stream under the network sinks (syslog, NATS): a TCP connection,
//! optionally upgraded to TLS, and the TLS client each endpoint builds once.
//!
//! The TCP connect and the TLS handshake are separate steps because NATS
//! reads its server's plain-text `INFO` between them.

use std::{io, path::PathBuf};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use crate::sink::{
    endpoint::SinkError,
    tls::{HandshakeContext, TlsConfigError, TlsSettings, client_config, explain, rustls_error},
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

/// Why a [`TlsClient`] cannot be built from settings.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    /// The expected name is neither a DNS name nor an IP address.
    #[error("server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    /// A certificate file. Not a `source()`: the message already holds it.
    #[error("{0}")]
    Files(TlsConfigError),
}

impl TlsClient {
    /// Reads the files `settings` names and expects the server's
    /// certificate to carry `settings.server_name`, else `default_name`
    /// (the host the endpoint connects to).
    pub fn try_new(settings: &TlsSettings, default_name: &str) -> Result<Self, TlsClientError> {
        let files = settings.files();
        let config = client_config(&files).map_err(TlsClientError::Files)?;
        let base = Self {
            connector: TlsConnector::from(config),
            server_name: ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()),
            server_name_text: String::new(),
            ca_file: files.ca_path().to_owned(),
            client_cert: files.client_cert.is_some(),
        };
        base.named(settings.server_name.as_deref().unwrap_or(default_name))
    }

    /// The same client expecting the certificate to carry `name`; shares the
    /// rustls configuration.
    pub fn named(&self, name: &str) -> Result<Self, TlsClientError> {
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsClientError::ServerName(name.to_owned()))?;
        Ok(Self {
            server_name,
            server_name_text: name.to_owned(),
            ..self.clone()
        })
    }

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

    /// Performs the TLS handshake over `tcp`, so a refused certificate fails
    /// here and not on the first send.
    pub async fn handshake(
        &self,
        endpoint: &str,
        tcp: TcpStream,
    ) -> Result<Box<dyn Stream>, SinkError> {
        let stream = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|err| {
                self.error(endpoint, err, |err| SinkError::Tls {
                    endpoint: endpoint.to_owned(),
                    message: format!(
                        "handshake failed: {err}; check that the collector speaks TLS on this port"
                    ),
                })
            })?;
        Ok(Box::new(stream))
    }
}

/// Connects over TCP to `address` (anything tokio resolves: `host:port`,
/// `(host, port)`), with Nagle off.
pub async fn connect_tcp(
    endpoint: &str,
    address: impl tokio::net::ToSocketAddrs,
) -> Result<TcpStream, SinkError> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|source| SinkError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    // Records are written in large buffers; the last, partial segment of a
    // batch should leave at once rather than wait for Nagle's timer.
    tcp.set_nodelay(true)
        .map_err(|source| io_error(endpoint, source))?;
    Ok(tcp)
}

/// An I/O error on an established connection.
pub fn io_error(endpoint: &str, source: io::Error) -> SinkError {
    SinkError::Io {
        endpoint: endpoint.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_swapped() {
        let settings = TlsSettings {
            ca_file: Some(crate::sink::tls::SYSTEM_CA_FILE.into()),
            ..TlsSettings::default()
        };
        if !std::path::Path::new(crate::sink::tls::SYSTEM_CA_FILE).exists() {
            return;
        }
        let client = TlsClient::try_new(&settings, "127.0.0.1").unwrap();
        assert_eq!(client.server_name_text, "127.0.0.1");
        assert!(matches!(client.server_name, ServerName::IpAddress(_)));
        let other = client.named("nats-2.example").unwrap();
        assert_eq!(other.server_name_text, "nats-2.example");
        assert!(matches!(other.server_name, ServerName::DnsName(_)));
        assert!(matches!(
            client.named("bad name!"),
            Err(TlsClientError::ServerName(_))
        ));
        let fixed = TlsSettings {
            server_name: Some("nats.example".into()),
            ..settings
        };
        let client = TlsClient::try_new(&fixed, "10.0.0.1").unwrap();
        assert_eq!(client.server_name_text, "nats.example");
    }
}
