//! TLS client settings shared by the sinks that speak TLS (syslog over TLS,
//! NATS): the `tls` table of an endpoint, a rustls [`ClientConfig`] built
//! from PEM files, and plain words for rustls' handshake errors.
//!
//! Files are read once, when the sink is configured, so a missing or garbled
//! certificate stops the agent at start instead of at the first delivery.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use rustls::{
    AlertDescription, CertificateError, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
};
use serde::Deserialize;

/// The Debian/Ubuntu system CA bundle, the default trust anchors.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An endpoint's `tls` table (syslog and NATS alike).
///
/// ```toml
/// [tls]
/// ca_file = "/etc/lbwitness/ca.pem"
/// server_name = "collector.example"
/// client_cert = "/etc/lbwitness/agent.pem"
/// client_key = "/etc/lbwitness/agent.key"
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// CA certificates (PEM) the collector's certificate must chain to;
    /// default the system bundle `/etc/ssl/certs/ca-certificates.crt`.
    pub ca_file: Option<PathBuf>,
    /// The name the collector's certificate must carry (DNS name or IP);
    /// default the host the endpoint connects to.
    pub server_name: Option<String>,
    /// Client certificate chain (PEM), for collectors that require one.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl TlsSettings {
    /// The files to read.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

/// Why a TLS client configuration could not be built. Each message is
/// whole: the cause is in it and not repeated as a `source()` (an error
/// printed with its chain would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file could not be read or parsed.
    #[error(
        "cannot read {what} from {path}: {reason}; check the path, its permissions and that it is PEM"
    )]
    Pem {
        /// The setting that names the file: `ca_file`, `client_cert` or
        /// `client_key`.
        setting: &'static str,
        /// What the file should hold, e.g. `CA certificates`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file parsed but held nothing usable.
    #[error("{path} holds no {what}; expected PEM `-----BEGIN {label}-----` blocks")]
    Empty {
        /// The setting that names the file.
        setting: &'static str,
        /// What was expected.
        what: &'static str,
        /// The PEM label expected.
        label: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// Only one of the client certificate and key was given.
    #[error("client_cert and client_key go together: set both (PEM files) or neither")]
    HalfClientAuth,
    /// rustls refused the material (e.g. the key does not match the
    /// certificate, or an unsupported key type).
    #[error(
        "TLS client setup with {path}: {reason}; check that the key belongs to the certificate"
    )]
    Rustls {
        /// The client certificate file.
        path: PathBuf,
        /// rustls' reason.
        reason: rustls::Error,
    },
}

impl TlsConfigError {
    /// The key of the `tls` table the error is about.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Pem { setting, .. } | Self::Empty { setting, .. } => setting,
            Self::HalfClientAuth => "client_cert",
            Self::Rustls { .. } => "client_key",
        }
    }
}

/// The files a TLS client needs; `None` means the default (the system CA
/// bundle, no client certificate).
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// Trust anchors (PEM); default [`SYSTEM_CA_FILE`].
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), leaf first.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// The CA file in use.
    pub fn ca_path(&self) -> &Path {
        self.ca_file.as_deref().unwrap_or(Path::new(SYSTEM_CA_FILE))
    }
}

/// Reads the files and builds a client configuration with the ring provider,
/// TLS 1.2 and 1.3.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let client = match (&files.client_cert, &files.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => return Err(TlsConfigError::HalfClientAuth),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_path = files.ca_path();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(read_certs(ca_path, "ca_file", "CA certificates")?);
    if added == 0 {
        return Err(TlsConfigError::Empty {
            setting: "ca_file",
            what: "usable CA certificate",
            label: "CERTIFICATE",
            path: ca_path.to_owned(),
        });
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert, "client_cert", "a client certificate")?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError::Pem {
                setting: "client_key",
                what: "a private key",
                path: key.clone(),
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|reason| TlsConfigError::Rustls {
                    path: cert.clone(),
                    reason,
                })?
        }
    };
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an error when there is none.
fn read_certs(
    path: &Path,
    setting: &'static str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem_err = |reason: String| TlsConfigError::Pem {
        setting,
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsConfigError::Empty {
            setting,
            what,
            label: "CERTIFICATE",
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// What the caller knows about the handshake, for [`explain`].
#[derive(Clone, Copy, Debug)]
pub struct HandshakeContext<'a> {
    /// The CA file the server was checked against.
    pub ca_file: &'a Path,
    /// The name the certificate must carry.
    pub server_name: &'a str,
    /// Whether a client certificate was offered.
    pub client_cert: bool,
}

/// rustls' reason in words, with what to check. `err` is the error a
/// handshake or a TLS read/write returned.
pub fn explain(err: &rustls::Error, cx: &HandshakeContext<'_>) -> String {
    let ca = cx.ca_file.display();
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::ExpiredContext { time, not_after } => format!(
                "the collector's certificate expired at {} (now {}); renew it on the collector",
                date(*not_after),
                date(*time)
            ),
            CertificateError::Expired => {
                "the collector's certificate has expired; renew it on the collector".into()
            }
            CertificateError::NotValidYetContext { time, not_before } => format!(
                "the collector's certificate is not valid before {} (now {}); check both clocks",
                date(*not_before),
                date(*time)
            ),
            CertificateError::NotValidYet => {
                "the collector's certificate is not valid yet; check both clocks".into()
            }
            CertificateError::UnknownIssuer => format!(
                "the collector's certificate is not signed by a CA in {ca} (unknown issuer); \
                 set ca_file to the CA that issued it"
            ),
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the collector's certificate is not valid for the expected name {:?} \
                 (it names {}); set server_name to one of those or fix the certificate",
                cx.server_name,
                if presented.is_empty() {
                    "no subjectAltName".to_owned()
                } else {
                    presented
                        .iter()
                        .map(|n| bare(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            CertificateError::NotValidForName => format!(
                "the collector's certificate is not valid for the expected name {:?}; \
                 set server_name or fix the certificate",
                cx.server_name
            ),
            other => {
                format!("the collector's certificate was refused ({other}); check it against {ca}")
            }
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired if !cx.client_cert => format!(
                "the collector requires a client certificate (alert {alert:?}); \
                 set client_cert and client_key"
            ),
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired => format!(
                "the collector refused {} (alert {alert:?}); check client_cert and \
                 that the collector trusts its issuer",
                if cx.client_cert {
                    "our client certificate"
                } else {
                    "the connection without a client certificate"
                }
            ),
            _ => format!("the collector aborted the handshake (alert {alert:?}); see its log"),
        },
        other => format!("{other}; check that the collector speaks TLS on this port"),
    }
}

/// A presented name without rustls' debug wrapping: `DnsName("a.example")`
/// is `a.example`.
fn bare(name: &str) -> &str {
    match (name.find("(\""), name.strip_suffix("\")")) {
        (Some(open), Some(inner)) if open + 2 <= inner.len() => &inner[open + 2..],
        _ => name,
    }
}

/// A UNIX time as an RFC 3339 date, for messages.
fn date(t: UnixTime) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.as_secs())).to_string()
}

/// The rustls error inside an I/O error from a TLS stream, if any.
pub fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> HandshakeContext<'static> {
        HandshakeContext {
            ca_file: Path::new("/etc/lbw/ca.pem"),
            server_name: "collector.example",
            client_cert: false,
        }
    }

    #[test]
    fn expired_names_the_dates() {
        let err = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_600_000_000)),
        });
        let text = explain(&err, &cx());
        assert!(text.contains("expired at 2020-09-13T12:26:40Z"), "{text}");
        assert!(text.contains("now 2023-11-14T22:13:20Z"), "{text}");
    }

    #[test]
    fn unknown_issuer_names_the_ca_file() {
        let err = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let text = explain(&err, &cx());
        assert!(
            text.contains("unknown issuer") && text.contains("/etc/lbw/ca.pem"),
            "{text}"
        );
    }

    #[test]
    fn name_mismatch_names_the_expected_name() {
        let err = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("collector.example")
                .unwrap()
                .to_owned(),
            presented: vec!["DnsName(\"other.example\")".into(), "10.0.0.1".into()],
        });
        let text = explain(&err, &cx());
        assert!(
            text.contains("\"collector.example\"")
                && text.contains("(it names other.example, 10.0.0.1)"),
            "{text}"
        );
    }

    #[test]
    fn missing_client_certificate_says_to_set_one() {
        let err = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(explain(&err, &cx()).contains("set client_cert"));
    }

    #[test]
    fn unreadable_and_garbage_files_are_clear_errors() {
        let missing = TlsFiles {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let err = client_config(&missing).unwrap_err();
        assert_eq!(err.setting(), "ca_file");
        // Whole, and once: printed with its chain too.
        assert!(std::error::Error::source(&err).is_none());
        let err = err.to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert_eq!(err.matches("/nonexistent/ca.pem").count(), 1, "{err}");

        let garbage = std::env::temp_dir().join(format!("lbw-tls-garbage-{}", std::process::id()));
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let files = TlsFiles {
            ca_file: Some(garbage.clone()),
            ..TlsFiles::default()
        };
        let err = client_config(&files).unwrap_err().to_string();
        std::fs::remove_file(&garbage).unwrap();
        assert!(err.contains("BEGIN CERTIFICATE"), "{err}");
    }

    #[test]
    fn half_client_auth_is_refused() {
        let files = TlsFiles {
            client_cert: Some("/x.pem".into()),
            ..TlsFiles::default()
        };
        assert!(matches!(
            client_config(&files),
            Err(TlsConfigError::HalfClientAuth)
        ));
    }

    #[test]
    fn system_bundle_loads() {
        if Path::new(SYSTEM_CA_FILE).exists() {
            client_config(&TlsFiles::default()).expect("the system CA bundle loads");
        }
    }
}
