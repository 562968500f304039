//! The configuration of one syslog endpoint.

use serde::Deserialize;

use super::rfc5424::{APP_NAME_MAX, Facility};
use crate::sink::tls::TlsConfigError;
pub use crate::sink::tls::TlsSettings;

/// One syslog collector.
///
/// ```toml
/// address = "collector.example:6514"
/// transport = "tls"            # tcp | tls | relp (default)
/// facility = "local0"          # default
/// app_name = "lbwitness"       # default
/// [tls]                        # optional; with relp: RELP over TLS
/// ca_file = "/etc/lbwitness/ca.pem"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSettings {
    /// `host:port` (`[v6]:port` for IPv6 literals).
    pub address: String,
    /// The wire protocol.
    #[serde(default)]
    pub transport: Transport,
    /// TLS settings; required for nothing (the defaults verify against the
    /// system CA bundle and the host of `address`).
    pub tls: Option<TlsSettings>,
    /// APP-NAME: 1 to 48 printable ASCII characters.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Syslog facility of every message.
    #[serde(default)]
    pub facility: Facility,
}

fn default_app_name() -> String {
    "lbwitness".to_owned()
}

/// How messages travel.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RFC 6587 octet counting over TCP. Unacknowledged: a connection drop
    /// can lose what was in flight.
    Tcp,
    /// RFC 5425: octet counting over TLS. Unacknowledged, like `tcp`.
    Tls,
    /// RELP: every message acknowledged by the collector (rsyslog's imrelp).
    /// Over TLS when a `[tls]` section is present.
    #[default]
    Relp,
}

/// Why a syslog endpoint's configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SyslogConfigError {
    /// `address` is not `host:port` with a port from 1 to 65535.
    #[error(
        "syslog address {0:?} is not host:port with a port from 1 to 65535; write e.g. \"collector.example:6514\" or \"[::1]:2514\""
    )]
    Address(String),
    /// `app_name` breaks RFC 5424.
    #[error(
        "syslog app_name {0:?} must be 1 to {APP_NAME_MAX} printable ASCII characters without spaces"
    )]
    AppName(String),
    /// `server_name` is neither a DNS name nor an IP address.
    #[error("syslog {endpoint}: server_name {name:?} is not a valid DNS name or IP address")]
    ServerName {
        /// The endpoint.
        endpoint: String,
        /// The name.
        name: String,
    },
    /// A `[tls]` section with the plain `tcp` transport.
    #[error(
        "syslog {endpoint}: a [tls] section is set but transport is \"tcp\"; use transport = \"tls\" (or \"relp\" for RELP over TLS) or remove [tls]"
    )]
    TlsWithTcp {
        /// The endpoint.
        endpoint: String,
    },
    /// The certificate files. Not a `source()`: the message holds it.
    #[error("syslog {endpoint}: {error}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// What is wrong with which file.
        error: TlsConfigError,
    },
}

impl SyslogConfigError {
    /// The endpoint's key the error is about, e.g. `address` or
    /// `tls.ca_file`.
    pub fn setting(&self, settings: &SyslogSettings) -> String {
        match self {
            Self::Address(_) => "address".into(),
            Self::AppName(_) => "app_name".into(),
            // Without `server_name`, the name checked is the address's host.
            Self::ServerName { .. }
                if settings
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.server_name.is_some()) =>
            {
                "tls.server_name".into()
            }
            Self::ServerName { .. } => "address".into(),
            Self::TlsWithTcp { .. } => "tls".into(),
            Self::Tls { error, .. } => format!("tls.{}", error.setting()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let s: SyslogSettings = toml::from_str("address = \"127.0.0.1:2514\"").unwrap();
        assert_eq!(s.transport, Transport::Relp);
        assert_eq!(s.facility, Facility::Local0);
        assert_eq!(s.app_name, "lbwitness");
        assert!(s.tls.is_none());

        let s: SyslogSettings = toml::from_str(
            "address = \"c:6514\"\ntransport = \"tls\"\nfacility = \"local5\"\n[tls]\nserver_name = \"c.example\"",
        )
        .unwrap();
        assert_eq!(
            (s.transport, s.facility),
            (Transport::Tls, Facility::Local5)
        );
        assert_eq!(s.tls.unwrap().server_name.as_deref(), Some("c.example"));

        for bad in [
            "address = \"c:1\"\nport = 5",
            "address = \"c:1\"\ntransport = \"udp\"",
            "address = \"c:1\"\nfacility = \"local8\"",
            "address = \"c:1\"\n[tls]\ncafile = \"x\"",
        ] {
            assert!(toml::from_str::<SyslogSettings>(bad).is_err(), "{bad}");
        }
    }
}
