//! `[sink.nats]`-style settings, validated before anything connects.

use std::fmt;

use serde::Deserialize;

use super::servers::{ServerAddr, is_tls_url, parse_url};
use crate::sink::{
    net::{TlsClient, TlsClientError},
    tls::TlsSettings,
};

/// One NATS JetStream endpoint, as configured.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// Servers of one cluster, tried in order, e.g. `nats://10.0.0.1:4222`.
    pub urls: Vec<String>,
    /// Subject the records are published to.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// If set, `connect()` checks that this stream exists and captures
    /// `subject`.
    #[serde(default)]
    pub stream: Option<String>,
    /// User name (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password (with `user`).
    #[serde(default)]
    pub password: Option<String>,
    /// Authentication token (instead of `user`/`password`).
    #[serde(default)]
    pub token: Option<String>,
    /// TLS for every server of the endpoint, including the ones the
    /// cluster advertises. A `tls://` URL asks for TLS with the defaults
    /// (system CAs, the URL's host as the name).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

/// The default subject.
pub fn default_subject() -> String {
    "lbwitness.audit".into()
}

impl NatsSettings {
    /// Settings for `urls` with every other field at its default.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            subject: default_subject(),
            stream: None,
            user: None,
            password: None,
            token: None,
            tls: None,
        }
    }
}

// Secrets stay out of logs.
impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsSettings")
            .field("urls", &self.urls)
            .field("subject", &self.subject)
            .field("stream", &self.stream)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("tls", &self.tls)
            .finish()
    }
}

/// Settings that cannot work, found before connecting.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    /// `urls` is empty.
    #[error(
        "nats: `urls` is empty; list at least one server, e.g. urls = [\"nats://127.0.0.1:4222\"]"
    )]
    NoUrls,
    /// A URL that does not parse.
    #[error("nats: url `{url}`: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A subject that cannot be published to.
    #[error("nats: subject `{subject}`: {reason}")]
    BadSubject {
        /// The subject.
        subject: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A stream name JetStream would refuse.
    #[error(
        "nats: stream `{stream}`: a stream name is not empty and has no spaces, `.`, `*`, `>`, `/` or `\\`"
    )]
    BadStream {
        /// The name.
        stream: String,
    },
    /// Credentials that do not go together.
    #[error("nats: {0}")]
    Credentials(&'static str),
    /// The `tls` table: a certificate file, or a name no certificate can
    /// carry.
    #[error("nats {endpoint}: tls: {source}")]
    Tls {
        /// The server whose TLS client could not be built.
        endpoint: String,
        /// What is wrong.
        source: TlsClientError,
    },
}

/// TLS for the servers of one endpoint.
#[derive(Clone)]
pub struct NatsTls {
    /// Built for the first server (or the configured `server_name`).
    client: TlsClient,
    /// `server_name` was configured: every server must carry it.
    fixed_name: bool,
}

impl NatsTls {
    /// The TLS client for `addr`: the configured `server_name`, else the
    /// address's host (also for addresses the cluster advertised).
    pub fn for_server(&self, addr: &ServerAddr) -> Result<TlsClient, TlsClientError> {
        if self.fixed_name {
            Ok(self.client.clone())
        } else {
            self.client.named(&addr.host)
        }
    }
}

/// Settings checked: every URL parsed, subject and stream valid. No
/// `Debug`: it holds the secrets.
pub struct Validated {
    /// The servers, in configured order.
    pub servers: Vec<ServerAddr>,
    /// The subject.
    pub subject: String,
    /// The stream to check, if any.
    pub stream: Option<String>,
    /// `user` and `password`.
    pub user: Option<(String, String)>,
    /// `token`.
    pub token: Option<String>,
    /// TLS, when a `tls` table or a `tls://` URL asks for it.
    pub tls: Option<NatsTls>,
}

impl Validated {
    /// Validates `settings`.
    pub fn try_new(settings: &NatsSettings) -> Result<Self, NatsConfigError> {
        if settings.urls.is_empty() {
            return Err(NatsConfigError::NoUrls);
        }
        let servers = settings
            .urls
            .iter()
            .map(|url| {
                parse_url(url).map_err(|reason| NatsConfigError::BadUrl {
                    url: url.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(reason) = subject_problem(&settings.subject) {
            return Err(NatsConfigError::BadSubject {
                subject: settings.subject.clone(),
                reason,
            });
        }
        if let Some(stream) = &settings.stream
            && (stream.is_empty()
                || stream
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c)))
        {
            return Err(NatsConfigError::BadStream {
                stream: stream.clone(),
            });
        }
        let user = match (&settings.user, &settings.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            (Some(_), None) => return Err(NatsConfigError::Credentials("`user` needs `password`")),
            (None, Some(_)) => return Err(NatsConfigError::Credentials("`password` needs `user`")),
        };
        if user.is_some() && settings.token.is_some() {
            return Err(NatsConfigError::Credentials(
                "set either `user`/`password` or `token`, not both",
            ));
        }
        let tls = match &settings.tls {
            Some(tls) => Some(tls.clone()),
            None if settings.urls.iter().any(|url| is_tls_url(url)) => Some(TlsSettings::default()),
            None => None,
        };
        let tls = match tls {
            Some(tls) => Some(tls_for(&tls, &servers)?),
            None => None,
        };
        Ok(Self {
            servers,
            subject: settings.subject.clone(),
            stream: settings.stream.clone(),
            user,
            token: settings.token.clone(),
            tls,
        })
    }
}

/// Reads the files once and checks that every configured server has a name
/// a certificate can carry.
fn tls_for(tls: &TlsSettings, servers: &[ServerAddr]) -> Result<NatsTls, NatsConfigError> {
    let err = |addr: &ServerAddr| {
        let endpoint = format!("tls://{addr}");
        move |source| NatsConfigError::Tls { endpoint, source }
    };
    let first = &servers[0];
    let client = TlsClient::try_new(tls, &first.host).map_err(err(first))?;
    let nats = NatsTls {
        client,
        fixed_name: tls.server_name.is_some(),
    };
    for addr in servers {
        nats.for_server(addr).map_err(err(addr))?;
    }
    Ok(nats)
}

/// What makes `subject` unusable for publishing, if anything.
fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.is_empty() {
        Some("is empty")
    } else if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains spaces or control characters")
    } else if subject.split('.').any(str::is_empty) {
        Some("has an empty token (leading, trailing or doubled `.`)")
    } else if subject.split('.').any(|t| t == "*" || t == ">") {
        Some("records are published to one subject; wildcards belong in the stream's subjects")
    } else if subject.starts_with("$JS.") || subject.starts_with("_INBOX.") {
        Some("is reserved for JetStream's API and replies")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<NatsSettings, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let s = parse(r#"urls = ["nats://127.0.0.1:4222"]"#).unwrap();
        assert_eq!(s, NatsSettings::new(["nats://127.0.0.1:4222"]));
        assert_eq!(s.subject, "lbwitness.audit");
        let err = parse("urls = []\nsubjct = \"x\"").unwrap_err();
        assert!(err.contains("subjct"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let with = |f: fn(&mut NatsSettings)| {
            let mut s = NatsSettings::new(["nats://h:4222"]);
            f(&mut s);
            Validated::try_new(&s)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(with(|_| {}), Ok(()));
        assert!(
            with(|s| s.urls.clear())
                .unwrap_err()
                .contains("at least one")
        );
        assert!(
            with(|s| s.urls.push("ftp://h".into()))
                .unwrap_err()
                .contains("tls://host:port")
        );
        for (subject, why) in [
            ("", "empty"),
            ("a b", "spaces"),
            ("a..b", "empty token"),
            ("a.", "empty token"),
            ("a.>", "wildcards"),
            ("a.*.b", "wildcards"),
            ("$JS.API.X", "reserved"),
        ] {
            let mut s = NatsSettings::new(["h"]);
            s.subject = subject.into();
            let err = Validated::try_new(&s).err().expect(subject).to_string();
            assert!(err.contains(why), "{subject}: {err}");
        }
        assert!(
            with(|s| s.stream = Some("a.b".into()))
                .unwrap_err()
                .contains("stream")
        );
        assert!(with(|s| s.stream = Some(String::new())).is_err());
        assert!(
            with(|s| s.user = Some("u".into()))
                .unwrap_err()
                .contains("needs `password`")
        );
        assert!(
            with(|s| s.password = Some("p".into()))
                .unwrap_err()
                .contains("needs `user`")
        );
        let both = with(|s| {
            s.user = Some("u".into());
            s.password = Some("p".into());
            s.token = Some("t".into());
        });
        assert!(both.unwrap_err().contains("not both"));
    }

    #[test]
    fn tls_table_parses_like_syslogs() {
        let s = parse(
            "urls = [\"nats://a:4222\"]\n[tls]\nca_file = \"/etc/lbw/ca.pem\"\n\
             server_name = \"nats.example\"\nclient_cert = \"/etc/lbw/agent.pem\"\n\
             client_key = \"/etc/lbw/agent.key\"",
        )
        .unwrap();
        let tls = s.tls.unwrap();
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/lbw/ca.pem"))
        );
        assert_eq!(tls.server_name.as_deref(), Some("nats.example"));
        assert!(tls.client_cert.is_some() && tls.client_key.is_some());
        let err = parse("urls = [\"a\"]\n[tls]\ncafile = \"x\"").unwrap_err();
        assert!(err.contains("cafile"), "{err}");
    }

    /// A usable CA file, or `None` where the system bundle is missing.
    fn system_ca() -> Option<std::path::PathBuf> {
        let path = std::path::Path::new(crate::sink::tls::SYSTEM_CA_FILE);
        path.exists().then(|| path.to_owned())
    }

    #[test]
    fn tls_is_on_with_a_table_or_a_tls_url_and_names_follow_the_host() {
        let plain = Validated::try_new(&NatsSettings::new(["nats://a:4222"])).unwrap();
        assert!(plain.tls.is_none());
        let Some(ca) = system_ca() else { return };
        let by_url = Validated::try_new(&NatsSettings::new(["nats://a:4222", "tls://b:4222"]))
            .unwrap()
            .tls
            .expect("a tls:// URL turns TLS on for the endpoint");
        let learned = ServerAddr {
            host: "10.0.0.9".into(),
            port: 4222,
        };
        assert_eq!(
            by_url.for_server(&learned).unwrap().server_name_text,
            "10.0.0.9"
        );
        let mut s = NatsSettings::new(["nats://a:4222", "nats://b:4222"]);
        s.tls = Some(TlsSettings {
            ca_file: Some(ca.clone()),
            server_name: Some("nats.example".into()),
            ..TlsSettings::default()
        });
        let fixed = Validated::try_new(&s).unwrap().tls.unwrap();
        assert_eq!(
            fixed.for_server(&learned).unwrap().server_name_text,
            "nats.example"
        );
        let mut s = NatsSettings::new(["tls://a:4222"]);
        s.tls = Some(TlsSettings {
            ca_file: Some(ca),
            server_name: Some("bad name!".into()),
            ..TlsSettings::default()
        });
        let err = Validated::try_new(&s).err().unwrap().to_string();
        assert!(err.contains("server_name \"bad name!\""), "{err}");
    }

    #[test]
    fn tls_files_are_read_at_start() {
        let mut s = NatsSettings::new(["nats://a:4222"]);
        s.tls = Some(TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        });
        let err = Validated::try_new(&s).err().unwrap().to_string();
        assert!(
            err.contains("tls://a:4222") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        s.tls = Some(TlsSettings {
            client_cert: Some("/x.pem".into()),
            ..TlsSettings::default()
        });
        let err = Validated::try_new(&s).err().unwrap().to_string();
        assert!(err.contains("client_key"), "{err}");
    }

    #[test]
    fn debug_hides_secrets() {
        let mut s = NatsSettings::new(["h"]);
        s.password = Some("hunter2".into());
        s.token = Some("s3cret".into());
        let text = format!("{s:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
