//! Syslog collectors (rsyslog, syslog-ng, SIEM syslog inputs): each record
//! is one RFC 5424 message whose MSG is the record's canonical JSON line,
//! sent over TCP (RFC 6587), TLS (RFC 5425) or RELP.
//!
//! * [`rfc5424`], [`relp::frame`]: pure formatting and framing.
//! * [`octet`], [`relp`]: the connections.
//! * [`connector`]: settings in, a [`Connector`] out, with every file read
//!   and every name checked, so a bad config fails at start.

pub mod fields;
pub mod net;
pub mod octet;
pub mod relp;
pub mod rfc5424;
pub mod settings;

use std::sync::Arc;

use self::{
    net::{SharedTls, TlsClient, host_of},
    octet::OctetConnection,
    relp::RelpConnection,
    rfc5424::Header,
};
pub use self::{
    rfc5424::Facility,
    settings::{SyslogConfigError, SyslogSettings, TlsSettings, Transport},
};
use crate::sink::{
    endpoint::{BoxFuture, Connection, Connector, Guarantee, SinkError},
    net::TlsClientError,
};

/// Builds the connector for one syslog endpoint: checks the address and
/// APP-NAME and reads the certificate files now.
pub fn connector(settings: &SyslogSettings) -> Result<Arc<dyn Connector>, SyslogConfigError> {
    let host = host_of(&settings.address)
        .ok_or_else(|| SyslogConfigError::Address(settings.address.clone()))?;
    let header = Header::new(
        settings.facility,
        &settings.app_name,
        Some(std::process::id()),
    )
    .ok_or_else(|| SyslogConfigError::AppName(settings.app_name.clone()))?;
    let tls_settings = match (settings.transport, &settings.tls) {
        (Transport::Tls, None) => Some(TlsSettings::default()),
        (Transport::Tcp, Some(_)) => None,
        (_, tls) => tls.clone(),
    };
    let scheme = match (settings.transport, tls_settings.is_some()) {
        (Transport::Tcp, _) => "syslog+tcp",
        (Transport::Tls, _) => "syslog+tls",
        (Transport::Relp, false) => "syslog+relp",
        (Transport::Relp, true) => "syslog+relp+tls",
    };
    let endpoint: Arc<str> = format!("{scheme}://{}", settings.address).into();
    if settings.transport == Transport::Tcp && settings.tls.is_some() {
        return Err(SyslogConfigError::TlsWithTcp {
            endpoint: endpoint.to_string(),
        });
    }
    let tls = match tls_settings {
        Some(tls) => Some(Arc::new(tls_client(&endpoint, host, &tls)?)),
        None => None,
    };
    Ok(Arc::new(SyslogConnector {
        endpoint,
        address: settings.address.clone(),
        transport: settings.transport,
        tls,
        header: Arc::new(header),
    }))
}

fn tls_client(
    endpoint: &str,
    host: &str,
    tls: &TlsSettings,
) -> Result<TlsClient, SyslogConfigError> {
    TlsClient::try_new(tls, host).map_err(|e| match e {
        TlsClientError::ServerName(name) => SyslogConfigError::ServerName {
            endpoint: endpoint.to_owned(),
            name,
        },
        TlsClientError::Files(error) => SyslogConfigError::Tls {
            endpoint: endpoint.to_owned(),
            error,
        },
    })
}

/// Connects to one syslog endpoint.
struct SyslogConnector {
    endpoint: Arc<str>,
    address: String,
    transport: Transport,
    tls: SharedTls,
    header: Arc<Header>,
}

impl SyslogConnector {
    async fn open(&self) -> Result<Box<dyn Connection>, SinkError> {
        let stream = net::connect(&self.endpoint, &self.address, self.tls.as_deref()).await?;
        let (endpoint, header, tls) =
            (self.endpoint.clone(), self.header.clone(), self.tls.clone());
        Ok(match self.transport {
            Transport::Relp => Box::new(RelpConnection::open(stream, endpoint, header, tls).await?),
            Transport::Tcp | Transport::Tls => Box::new(OctetConnection {
                stream,
                endpoint,
                header,
                tls,
                broken: false,
            }),
        })
    }
}

impl Connector for SyslogConnector {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn guarantee(&self) -> Guarantee {
        match self.transport {
            Transport::Relp => Guarantee::Acknowledged,
            Transport::Tcp | Transport::Tls => Guarantee::Written,
        }
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SinkError>> {
        Box::pin(self.open())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> SyslogSettings {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn endpoints_and_guarantees() {
        let c = connector(&settings("address = \"127.0.0.1:2514\"")).unwrap();
        assert_eq!(c.endpoint(), "syslog+relp://127.0.0.1:2514");
        assert_eq!(c.guarantee(), Guarantee::Acknowledged);
        let c = connector(&settings("address = \"[::1]:514\"\ntransport = \"tcp\"")).unwrap();
        assert_eq!(c.endpoint(), "syslog+tcp://[::1]:514");
        assert_eq!(c.guarantee(), Guarantee::Written);
    }

    #[test]
    fn bad_settings_fail_at_start_with_what_to_fix() {
        let err = |toml: &str| connector(&settings(toml)).err().unwrap().to_string();
        assert!(err("address = \"collector\"").contains("host:port"));
        assert!(err("address = \"c:1\"\napp_name = \"two words\"").contains("app_name"));
        assert!(
            err("address = \"c:1\"\ntransport = \"tcp\"\n[tls]").contains("transport = \"tls\"")
        );
        let missing =
            err("address = \"c:1\"\ntransport = \"tls\"\n[tls]\nca_file = \"/nonexistent.pem\"");
        assert!(
            missing.contains("syslog+tls://c:1") && missing.contains("/nonexistent.pem"),
            "{missing}"
        );
        let name = err(
            "address = \"c:1\"\ntransport = \"tls\"\n[tls]\nca_file = \"/etc/ssl/certs/ca-certificates.crt\"\nserver_name = \"bad name!\"",
        );
        assert!(name.contains("server_name"), "{name}");
    }
}
