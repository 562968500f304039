//! `[sink.nats]`-style settings, validated before anything connects:
//! URLs, subject and stream names, one way to authenticate (its files read
//! and checked here, so a bad seed stops the agent at start), TLS.

use std::{
    fmt,
    path::{Path, PathBuf},
};

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
    /// NKey authentication: a file holding the user's NKey seed, one line
    /// starting with `SU` (as `nk -gen user` writes it). The server's
    /// `authorization { users = [{ nkey: "U..." }] }` lists the public key.
    /// Read and checked when the config is loaded; keep it readable by the
    /// agent only.
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// JWT authentication (decentralised, operator mode): a `.creds` file
    /// with the user JWT and its NKey seed, as `nsc generate creds` writes
    /// it. Read and checked when the config is loaded.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
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
            nkey_seed_file: None,
            creds_file: None,
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
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
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
        /// Its place in `urls`.
        index: usize,
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
    #[error("nats: {problem}")]
    Credentials {
        /// The setting at fault: `user`, `password`, `token`,
        /// `nkey_seed_file` or `creds_file`.
        setting: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// An NKey seed or `.creds` file that cannot be read or holds no usable
    /// key. The secret itself is never in the message.
    #[error("nats: {setting} `{}`: {reason}", path.display())]
    CredentialsFile {
        /// `nkey_seed_file` or `creds_file`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The `tls` table: a certificate file, or a name no certificate can
    /// carry. Not a `source()`: the message holds it.
    #[error("nats {endpoint}: tls: {error}")]
    Tls {
        /// The server whose TLS client could not be built.
        endpoint: String,
        /// What is wrong.
        error: TlsClientError,
    },
}

impl NatsConfigError {
    /// The endpoint's key the error is about, e.g. `urls[1]` or
    /// `tls.ca_file`.
    pub fn setting(&self, settings: &NatsSettings) -> String {
        match self {
            Self::NoUrls => "urls".into(),
            Self::BadUrl { index, .. } => format!("urls[{index}]"),
            Self::BadSubject { .. } => "subject".into(),
            Self::BadStream { .. } => "stream".into(),
            Self::Credentials { setting, .. } | Self::CredentialsFile { setting, .. } => {
                (*setting).into()
            }
            Self::Tls {
                error: TlsClientError::Files(e),
                ..
            } => format!("tls.{}", e.setting()),
            // Without `server_name`, the names checked are the URLs' hosts.
            Self::Tls { .. }
                if settings
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.server_name.is_some()) =>
            {
                "tls.server_name".into()
            }
            Self::Tls { .. } => "urls".into(),
        }
    }
}

/// TLS for the servers of one endpoint.
#[derive(Clone)]
pub struct NatsTls {
    /// Built for the first server (or the configured `server_name`).
    client: TlsClient,
    /// `server_name` was configured: every server must carry it.
    fixed_name: bool,
    /// What async-nats is given: our trust anchors and client certificate,
    /// checking the configured `server_name` when there is one (async-nats
    /// itself checks the URL's host).
    pub rustls: rustls::ClientConfig,
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
    /// How to authenticate.
    pub auth: Auth,
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
            .enumerate()
            .map(|(index, url)| {
                parse_url(url).map_err(|reason| NatsConfigError::BadUrl {
                    index,
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
            (Some(_), None) => {
                return Err(NatsConfigError::Credentials {
                    setting: "user",
                    problem: "`user` needs `password`",
                });
            }
            (None, Some(_)) => {
                return Err(NatsConfigError::Credentials {
                    setting: "password",
                    problem: "`password` needs `user`",
                });
            }
        };
        if user.is_some() && settings.token.is_some() {
            return Err(NatsConfigError::Credentials {
                setting: "token",
                problem: "set either `user`/`password` or `token`, not both",
            });
        }
        let auth = match (
            user,
            &settings.token,
            &settings.nkey_seed_file,
            &settings.creds_file,
        ) {
            (None, None, None, None) => Auth::None,
            (Some((user, password)), None, None, None) => Auth::UserPassword(user, password),
            (None, Some(token), None, None) => Auth::Token(token.clone()),
            (None, None, Some(path), None) => Auth::NKey(read_nkey_seed(path)?),
            (None, None, None, Some(path)) => Auth::Creds(read_creds(path)?),
            (.., Some(_)) => return Err(several("creds_file")),
            (..) => return Err(several("nkey_seed_file")),
        };
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
            auth,
            tls,
        })
    }
}

/// Reads the files once and checks that every configured server has a name
/// a certificate can carry.
fn tls_for(tls: &TlsSettings, servers: &[ServerAddr]) -> Result<NatsTls, NatsConfigError> {
    let err = |addr: &ServerAddr| {
        let endpoint = format!("tls://{addr}");
        move |error| NatsConfigError::Tls { endpoint, error }
    };
    let first = &servers[0];
    let client = TlsClient::try_new(tls, &first.host).map_err(err(first))?;
    let rustls = match &tls.server_name {
        Some(_) => super::verifier::with_fixed_name(&client).map_err(err(first))?,
        None => (**client.connector.config()).clone(),
    };
    let nats = NatsTls {
        client,
        fixed_name: tls.server_name.is_some(),
        rustls,
    };
    for addr in servers {
        nats.for_server(addr).map_err(err(addr))?;
    }
    Ok(nats)
}

/// How a connection authenticates: at most one way. No `Debug`: secrets.
#[derive(Clone)]
pub enum Auth {
    /// No credentials.
    None,
    /// `user` and `password`.
    UserPassword(String, String),
    /// `token`.
    Token(String),
    /// The NKey seed read from `nkey_seed_file`.
    NKey(String),
    /// The contents of `creds_file` (user JWT and seed), checked.
    Creds(String),
}

fn several(setting: &'static str) -> NatsConfigError {
    NatsConfigError::Credentials {
        setting,
        problem: "set one way to authenticate: `user`/`password`, `token`, `nkey_seed_file` or `creds_file`, not several",
    }
}

fn read_secret(setting: &'static str, path: &Path) -> Result<String, NatsConfigError> {
    std::fs::read_to_string(path).map_err(|e| NatsConfigError::CredentialsFile {
        setting,
        path: path.to_owned(),
        reason: format!("cannot read it: {e}"),
    })
}

/// The seed in `path`, checked to be a user NKey seed.
fn read_nkey_seed(path: &Path) -> Result<String, NatsConfigError> {
    let text = read_secret("nkey_seed_file", path)?;
    let bad = |reason: String| NatsConfigError::CredentialsFile {
        setting: "nkey_seed_file",
        path: path.to_owned(),
        reason,
    };
    // `nk -gen user -pubout` writes the public key on a second line.
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| bad("the file is empty; write the user's seed (SU...) in it".into()))?;
    let key = nkeys::KeyPair::from_seed(seed).map_err(|e| {
        bad(format!(
            "not an NKey seed ({e}); the file holds one line starting with `SU`, as `nk -gen user` writes it"
        ))
    })?;
    if !seed.starts_with("SU") {
        return Err(bad(format!(
            "a seed of the wrong kind (its public key starts with `{}`, a user's with `U`); a client authenticates with a user seed, starting with `SU`",
            &key.public_key()[..1]
        )));
    }
    Ok(seed.to_owned())
}

/// The text of the `.creds` file `path`, checked to hold a JWT and a user
/// seed.
fn read_creds(path: &Path) -> Result<String, NatsConfigError> {
    let text = read_secret("creds_file", path)?;
    async_nats::ConnectOptions::new()
        .credentials(&text)
        .map_err(|e| NatsConfigError::CredentialsFile {
            setting: "creds_file",
            path: path.to_owned(),
            reason: format!(
                "not a NATS credentials file ({e}); it holds a `BEGIN NATS USER JWT` and a `BEGIN USER NKEY SEED` block, as `nsc generate creds` writes it"
            ),
        })?;
    Ok(text)
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
#[path = "settings_tests.rs"]
mod tests;
