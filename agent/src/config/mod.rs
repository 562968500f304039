//! Agent configuration: TOML with unknown keys refused, explicit defaults,
//! and validation in [`Config::try_new`] so an invalid config cannot exist.

pub mod delivery;
pub mod privacy;
pub mod requests;
mod spans;
pub mod summary;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use self::spans::LineCol;

/// Where state lives when neither the config nor the CLI says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lbwitness";

/// Default flow map capacity: a busy balancer's concurrent flows (each
/// connection is two, one per direction) plus a burst, about 150 MiB of
/// kernel memory (~150 bytes per entry, README "Sizing").
pub const DEFAULT_FLOW_TABLE_ENTRIES: u32 = 1 << 20;

/// Default ring buffer: 16 MiB of kernel memory, room for about 190 000
/// lifecycle events (88 bytes each), two seconds of 100 000 per second.
/// Unused (one page) without lifecycle records.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 16 << 20;

/// How to attach XDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic when the driver has none.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// A config error, naming the file, the line and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type.
    #[error("config file {}{}: {}{message}", .path.display(), at_text(.at), .key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where in it, when toml could say.
        at: Option<LineCol>,
        /// The key there, when there is one.
        key: Option<String>,
        /// toml's message.
        message: String,
    },
    /// A value outside what is allowed.
    #[error("{}{}: `{key}` {problem}", .path.as_ref().map_or_else(|| "config".to_owned(), |p| format!("config file {}", p.display())), at_text(.at))]
    Invalid {
        /// The file, when the value came from one (not the command line).
        path: Option<PathBuf>,
        /// Where in the file: the value, or the table it belongs in.
        at: Option<LineCol>,
        /// Dotted key, e.g. `flows.idle_timeout_secs` or
        /// `groups[0].endpoints[1].urls[0]`.
        key: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

fn at_text(at: &Option<LineCol>) -> String {
    at.map(|at| format!(", {at}")).unwrap_or_default()
}

impl ConfigError {
    /// The same error with the line and column of its key in `text`.
    fn located(self, text: &str, doc: &spans::Document<'_>) -> Self {
        match self {
            Self::Invalid {
                path: path @ Some(_),
                at: None,
                key,
                problem,
            } => Self::Invalid {
                at: spans::span_of(doc, &key).map(|s| spans::line_col(text, s.start)),
                path,
                key,
                problem,
            },
            other => other,
        }
    }

    /// A toml error: where it is, and the key there when the document
    /// parsed.
    fn toml(
        path: &Path,
        text: &str,
        doc: Option<&spans::Document<'_>>,
        e: &toml::de::Error,
    ) -> Self {
        let span = e.span();
        Self::Parse {
            path: path.to_owned(),
            at: span.clone().map(|s| spans::line_col(text, s.start)),
            key: doc
                .zip(span)
                .and_then(|(doc, s)| spans::key_at(doc, s.start)),
            message: e.message().trim_end().to_owned(),
        }
    }
}

/// The config file as written. Every field has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Directory for the agent's state and default output.
    pub state_dir: Option<PathBuf>,
    /// NDJSON output path, `-` for stdout. Default: `<state_dir>/records.ndjson`.
    pub output: Option<PathBuf>,
    /// When the output file rotates and how many rotated files stay.
    pub output_rotation: Option<lbwitness_delivery::sink::file::Rotation>,
    /// Capture settings.
    #[serde(default)]
    pub capture: CaptureFile,
    /// Flow export settings.
    #[serde(default)]
    pub flows: FlowsFile,
    /// Audit trail settings.
    #[serde(default)]
    pub audit: AuditFile,
    /// Client-address pseudonyms.
    #[serde(default)]
    pub privacy: privacy::PrivacyFile,
    /// Request capture.
    #[serde(default)]
    pub requests: requests::RequestsFile,
    /// The durable spool.
    #[serde(default)]
    pub spool: delivery::SpoolFile,
    /// Collector groups.
    #[serde(default)]
    pub groups: Vec<delivery::GroupFile>,
    /// Routes from records to groups.
    #[serde(default)]
    pub routes: Vec<lbwitness_delivery::route::RouteFile>,
    /// Where unrouted records go.
    pub routing: Option<lbwitness_delivery::route::RoutingFile>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// Ed25519 private key (PKCS#8 PEM, mode 0600) that signs checkpoints.
    /// Default `<state_dir>/signing.key`, made on first start when missing.
    pub signing_key: Option<PathBuf>,
    /// A checkpoint at least every this many records.
    pub checkpoint_records: Option<u64>,
    /// A checkpoint at least this often, also when idle.
    pub checkpoint_interval_secs: Option<u64>,
    /// Files whose changes are recorded. Default: HAProxy's config.
    pub watch_files: Option<Vec<PathBuf>>,
}

/// `[capture]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureFile {
    /// Interfaces to attach to.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: Option<XdpMode>,
    /// Flow map capacity (entries).
    pub flow_table_entries: Option<u32>,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: Option<u32>,
    /// Where bpffs is (or is to be mounted); the flow maps are pinned below
    /// it so a restart after a crash recovers their unreported counts.
    pub bpffs: Option<PathBuf>,
}

/// `[flows]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsFile {
    /// IPFIX active timeout: a long flow is reported at least this often.
    pub active_timeout_secs: Option<u64>,
    /// IPFIX idle timeout: a flow with no packet for this long ends.
    pub idle_timeout_secs: Option<u64>,
    /// Idle timeout for a TCP flow that has seen FIN or RST.
    pub closed_timeout_secs: Option<u64>,
    /// How often the flow map is swept, in milliseconds.
    pub sweep_interval_ms: Option<u64>,
    /// Emit a record for each lifecycle event (flow start, SYN, FIN, RST).
    pub lifecycle_records: Option<bool>,
}

/// Settings the command line can override.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--iface`, replacing the config's interfaces when non-empty.
    pub interfaces: Vec<String>,
    /// `--xdp-mode`.
    pub xdp_mode: Option<XdpMode>,
    /// `--output`.
    pub output: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--new-chain`: start a new chain under a new id if the state
    /// directory lost the head of its id (start-up only; no config key).
    pub new_chain: bool,
}

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// An NDJSON file, appended to.
    File(PathBuf),
}

/// Flow export timing, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// See [`FlowsFile::active_timeout_secs`].
    pub active: Duration,
    /// See [`FlowsFile::idle_timeout_secs`].
    pub idle: Duration,
    /// See [`FlowsFile::closed_timeout_secs`].
    pub closed: Duration,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// State directory.
    pub state_dir: PathBuf,
    /// Record output.
    pub output: Output,
    /// Interfaces to attach to (at least one).
    pub interfaces: Vec<String>,
    /// XDP mode.
    pub xdp_mode: XdpMode,
    /// Flow map capacity.
    pub flow_table_entries: u32,
    /// Ring buffer bytes.
    pub ring_buffer_bytes: u32,
    /// The bpffs mount the maps are pinned in.
    pub bpffs: PathBuf,
    /// Flow timeouts.
    pub timeouts: FlowTimeouts,
    /// Sweep period.
    pub sweep_interval: Duration,
    /// Whether lifecycle events become records.
    pub lifecycle_records: bool,
    /// Audit trail settings.
    pub audit: AuditSettings,
    /// Spool, groups and routes.
    pub delivery: delivery::Delivery,
    /// Request capture.
    pub requests: requests::RequestSettings,
    /// Client-address pseudonyms.
    pub privacy: privacy::PrivacySettings,
    /// The config file, when there is one.
    pub path: Option<PathBuf>,
    /// Hex SHA-256 of the config file's bytes (of nothing without one).
    pub sha256: String,
}

/// The default watched file: the load balancer's config.
pub const DEFAULT_WATCH_FILES: &[&str] = &["/etc/haproxy/haproxy.cfg"];

/// Audit trail settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// The checkpoint signing key.
    pub signing_key: PathBuf,
    /// Records between checkpoints.
    pub checkpoint_records: u64,
    /// Time between checkpoints.
    pub checkpoint_interval: Duration,
    /// Watched files.
    pub watch_files: Vec<PathBuf>,
}

impl Config {
    /// Reads and validates a config file, then applies CLI overrides. Every
    /// value is checked here, certificate files read and collector
    /// addresses parsed, so a bad config stops the agent before it touches
    /// anything; errors name the file, the line and the key.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            use sha2::Digest as _;
            let mut config = Self::try_new(ConfigFile::default(), overrides, None)?;
            config.sha256 = hex::encode(sha2::Sha256::digest(b""));
            return Ok(config);
        };
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            at: None,
            key: None,
            message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        })?;
        Self::from_text(path, &text, overrides)
    }

    /// Validates the config file `path` holds `text`, then applies CLI
    /// overrides.
    pub fn from_text(path: &Path, text: &str, overrides: Overrides) -> Result<Self, ConfigError> {
        use sha2::Digest as _;
        let doc =
            toml::de::DeTable::parse(text).map_err(|e| ConfigError::toml(path, text, None, &e))?;
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| ConfigError::toml(path, text, Some(&doc), &e))?;
        spans::check_endpoints(&doc, &file)
            .map_err(|e| ConfigError::toml(path, text, Some(&doc), &e))?;
        let mut config =
            Self::try_new(file, overrides, Some(path)).map_err(|e| e.located(text, &doc))?;
        config.path = Some(path.to_owned());
        config.sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        Ok(config)
    }

    /// Validates `file` with `overrides` applied; `path` names the file in errors.
    pub fn try_new(
        file: ConfigFile,
        overrides: Overrides,
        path: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.map(Path::to_owned),
            at: None,
            key: key.to_owned(),
            problem,
        };
        // A value the command line gave has no place in the file.
        let cli = |flag: &str, problem: String| ConfigError::Invalid {
            path: None,
            at: None,
            key: flag.to_owned(),
            problem,
        };
        let state_dir = overrides
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let explicit_output = overrides.output.is_some() || file.output.is_some();
        let output_from_cli = overrides.output.is_some();
        let output = match overrides.output.or(file.output) {
            Some(p) if p.as_os_str() == "-" => Output::Stdout,
            Some(p) if p.as_os_str().is_empty() => {
                let problem = "must not be empty".to_owned();
                return Err(if output_from_cli {
                    cli("--output", problem)
                } else {
                    invalid("output", problem)
                });
            }
            Some(p) => Output::File(p),
            None => Output::File(state_dir.join("records.ndjson")),
        };
        let interfaces_from_cli = !overrides.interfaces.is_empty();
        let interfaces = if interfaces_from_cli {
            overrides.interfaces
        } else {
            file.capture.interfaces
        };
        let bad_interfaces = |problem: String| {
            if interfaces_from_cli {
                cli("--iface", problem)
            } else {
                invalid("capture.interfaces", problem)
            }
        };
        if interfaces.is_empty() {
            return Err(invalid(
                "capture.interfaces",
                "is empty: name at least one interface (or pass --iface)".into(),
            ));
        }
        for name in &interfaces {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return Err(bad_interfaces(format!(
                    "has `{name}`, which is not a valid interface name"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = interfaces.iter().find(|i| !seen.insert(*i)) {
            return Err(bad_interfaces(format!("names `{dup}` twice")));
        }

        let flow_table_entries = file
            .capture
            .flow_table_entries
            .unwrap_or(DEFAULT_FLOW_TABLE_ENTRIES);
        if !(1024..=16 * 1024 * 1024).contains(&flow_table_entries) {
            return Err(invalid(
                "capture.flow_table_entries",
                format!("is {flow_table_entries}; allowed 1024 to 16777216"),
            ));
        }
        let ring_buffer_bytes = file
            .capture
            .ring_buffer_bytes
            .unwrap_or(DEFAULT_RING_BUFFER_BYTES);
        if !ring_buffer_bytes.is_power_of_two() || !(4096..=1 << 30).contains(&ring_buffer_bytes) {
            return Err(invalid(
                "capture.ring_buffer_bytes",
                format!("is {ring_buffer_bytes}; must be a power of two from 4096 to 1073741824"),
            ));
        }

        let secs = |v: Option<u64>, default: u64, key: &str| {
            let v = v.unwrap_or(default);
            if !(1..=86_400).contains(&v) {
                return Err(invalid(key, format!("is {v}; allowed 1 to 86400 seconds")));
            }
            Ok(Duration::from_secs(v))
        };
        let active = secs(
            file.flows.active_timeout_secs,
            60,
            "flows.active_timeout_secs",
        )?;
        let idle = secs(file.flows.idle_timeout_secs, 15, "flows.idle_timeout_secs")?;
        let closed = secs(
            file.flows.closed_timeout_secs,
            2,
            "flows.closed_timeout_secs",
        )?;
        if closed > idle {
            return Err(invalid(
                "flows.closed_timeout_secs",
                format!(
                    "is {}s, longer than flows.idle_timeout_secs ({}s)",
                    closed.as_secs(),
                    idle.as_secs()
                ),
            ));
        }
        let sweep_ms = file.flows.sweep_interval_ms.unwrap_or(1000);
        if !(50..=60_000).contains(&sweep_ms) {
            return Err(invalid(
                "flows.sweep_interval_ms",
                format!("is {sweep_ms}; allowed 50 to 60000"),
            ));
        }
        let checkpoint_records = file.audit.checkpoint_records.unwrap_or(10_000);
        if !(1..=10_000_000).contains(&checkpoint_records) {
            return Err(invalid(
                "audit.checkpoint_records",
                format!("is {checkpoint_records}; allowed 1 to 10000000"),
            ));
        }
        let checkpoint_interval = secs(
            file.audit.checkpoint_interval_secs,
            10,
            "audit.checkpoint_interval_secs",
        )?;
        let audit = AuditSettings {
            signing_key: file
                .audit
                .signing_key
                .unwrap_or_else(|| state_dir.join("signing.key")),
            checkpoint_records,
            checkpoint_interval,
            watch_files: file
                .audit
                .watch_files
                .unwrap_or_else(|| DEFAULT_WATCH_FILES.iter().map(PathBuf::from).collect()),
        };
        if let Some(i) = audit.watch_files.iter().position(|p| !p.is_absolute()) {
            return Err(invalid(
                &format!("audit.watch_files[{i}]"),
                format!(
                    "is `{}`; use absolute paths",
                    audit.watch_files[i].display()
                ),
            ));
        }
        if let Some(rotation) = &file.output_rotation {
            if output == Output::Stdout {
                return Err(invalid(
                    "output_rotation",
                    "is set, but the output is standard output (`-`); drop it".into(),
                ));
            }
            if !file.groups.is_empty() {
                return Err(invalid(
                    "output_rotation",
                    "is set together with [[groups]]; give the file group's endpoint a \
                     `rotation` table instead"
                        .into(),
                ));
            }
            rotation
                .check()
                .map_err(|(key, problem)| invalid(&format!("output_rotation.{key}"), problem))?;
        }
        let delivery = delivery::delivery(
            delivery::DeliveryFile {
                spool: file.spool,
                groups: file.groups,
                routes: file.routes,
                routing: file.routing,
            },
            &state_dir,
            Some(match &output {
                Output::Stdout => delivery::EndpointSettings::Stdout,
                Output::File(path) => {
                    delivery::EndpointSettings::File(lbwitness_delivery::sink::file::FileSettings {
                        path: path.clone(),
                        rotation: file.output_rotation,
                    })
                }
            }),
            explicit_output,
        )
        .map_err(|(key, problem)| invalid(&key, problem))?;
        let requests = requests::RequestSettings::try_new(file.requests)
            .map_err(|(key, problem)| invalid(key, problem))?;
        let privacy = privacy::PrivacySettings::try_new(file.privacy)
            .map_err(|(key, problem)| invalid(&key, problem))?;
        Ok(Self {
            audit,
            delivery,
            requests,
            privacy,
            path: None,
            sha256: String::new(),
            state_dir,
            output,
            interfaces,
            xdp_mode: overrides
                .xdp_mode
                .or(file.capture.xdp_mode)
                .unwrap_or_default(),
            flow_table_entries,
            ring_buffer_bytes,
            bpffs: file
                .capture
                .bpffs
                .clone()
                .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf")),
            timeouts: FlowTimeouts {
                active,
                idle,
                closed,
            },
            sweep_interval: Duration::from_millis(sweep_ms),
            lifecycle_records: file.flows.lifecycle_records.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_text(Path::new("t.toml"), text, Overrides::default())
    }

    #[test]
    fn defaults_apply() {
        let c = parse("[capture]\ninterfaces = [\"veth0\"]\n").unwrap();
        assert_eq!(c.timeouts.active, Duration::from_secs(60));
        assert_eq!(c.timeouts.idle, Duration::from_secs(15));
        assert_eq!(c.xdp_mode, XdpMode::Auto);
        assert_eq!(
            c.output,
            Output::File(PathBuf::from("/var/lib/lbwitness/records.ndjson"))
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[capture]\ninterfaces = [\"a\"]\nbogus = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bogus") && text.contains("t.toml"), "{text}");
    }

    #[test]
    fn invalid_values_name_key_and_file() {
        const IF: &str = "[capture]\ninterfaces = [\"a\"]\n";
        for (extra, key) in [
            ("[flows]\nidle_timeout_secs = 0", "flows.idle_timeout_secs"),
            (
                "[flows]\nactive_timeout_secs = 999999",
                "flows.active_timeout_secs",
            ),
            ("ring_buffer_bytes = 5000", "capture.ring_buffer_bytes"),
            ("flow_table_entries = 1", "capture.flow_table_entries"),
            (
                "[flows]\nclosed_timeout_secs = 20",
                "flows.closed_timeout_secs",
            ),
            ("[flows]\nsweep_interval_ms = 1", "flows.sweep_interval_ms"),
        ] {
            let err = parse(&format!("{IF}{extra}\n")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("t.toml"), "{err}");
        }
    }

    #[test]
    fn interfaces_required_and_unique() {
        assert!(
            parse("")
                .unwrap_err()
                .to_string()
                .contains("capture.interfaces")
        );
        let err = parse("[capture]\ninterfaces=[\"a\",\"a\"]").unwrap_err();
        assert!(err.to_string().contains("twice"));
        let err = parse("[capture]\ninterfaces=[\"a/b\"]").unwrap_err();
        assert!(err.to_string().contains("not a valid interface name"));
    }

    #[test]
    fn output_rotation_is_checked_and_reaches_the_output() {
        const IF: &str = "[capture]\ninterfaces = [\"a\"]\n";
        let c = parse(&format!(
            "output = \"/o.ndjson\"\n[output_rotation]\nmax_bytes = 1048576\nkeep = 3\n{IF}"
        ))
        .unwrap();
        let delivery::EndpointSettings::File(f) = &c.delivery.groups[0].endpoints[0] else {
            panic!("not a file endpoint");
        };
        assert_eq!(f.rotation.and_then(|r| r.keep), Some(3));
        for (text, key) in [
            ("[output_rotation]\nkeep = 3\n", "output_rotation.max_bytes"),
            (
                "[output_rotation]\nmax_age_secs = 0\n",
                "output_rotation.max_age_secs",
            ),
            (
                "output = \"-\"\n[output_rotation]\nmax_bytes = 4096\n",
                "output_rotation",
            ),
            ("[output_rotation]\nbogus = 1\n", "bogus"),
        ] {
            let err = parse(&format!("{text}{IF}")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("t.toml"), "{err}");
        }
    }

    #[test]
    fn cli_overrides_file() {
        let file: ConfigFile =
            toml::from_str("output = \"/x\"\n[capture]\ninterfaces=[\"a\"]\nxdp_mode=\"native\"")
                .unwrap();
        let c = Config::try_new(
            file,
            Overrides {
                interfaces: vec!["b".into()],
                xdp_mode: Some(XdpMode::Generic),
                output: Some("-".into()),
                state_dir: None,
                new_chain: false,
            },
            None,
        )
        .unwrap();
        assert_eq!(c.interfaces, vec!["b".to_string()]);
        assert_eq!(c.xdp_mode, XdpMode::Generic);
        assert_eq!(c.output, Output::Stdout);
    }
}

#[cfg(test)]
#[path = "errors_tests.rs"]
mod errors_tests;
