//! `[spool]`, `[[groups]]`, `[[routes]]` and `[routing]`: where records go.
//! Without `[[groups]]`, one group named `output` holds the `output` file
//! (or standard output), so the spool and delivery are always the same
//! path.

use std::{path::PathBuf, time::Duration};

use lbwitness_delivery::{
    balance::{HealthPolicy, Strategy},
    deliver::{GroupSpec, worker::Timeouts},
    route::{RouteError, RouteFile, Router, RoutingFile},
    sink::{
        file::FileSettings,
        nats::{NatsSettings, settings::Validated},
        syslog::SyslogSettings,
    },
    spool::{FsyncPolicy, OnFull},
};
use lbwitness_trail::record::fields;
use serde::Deserialize;

/// `[spool]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolFile {
    /// Default `<state_dir>/spool`.
    pub dir: Option<PathBuf>,
    /// Most bytes on disk. Default 1 GiB.
    pub max_bytes: Option<u64>,
    /// Bytes per segment file. Default 16 MiB.
    pub segment_bytes: Option<u64>,
    /// What to drop when full. Default `drop_newest`.
    pub on_full: Option<OnFull>,
    /// `always` (default) or `never` (docs/SPOOL.md).
    pub fsync: Option<FsyncPolicy>,
}

/// The kind of collector a group delivers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// NDJSON files.
    File,
    /// Standard output.
    Stdout,
    /// Syslog over TCP, TLS or RELP.
    Syslog,
    /// NATS JetStream.
    Nats,
}

/// One `[[groups]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// Unique; routes name it.
    pub name: String,
    /// What its endpoints are.
    pub kind: Kind,
    /// Default `round_robin`.
    pub strategy: Option<Strategy>,
    /// `consistent_hash` only: the field to hash, e.g. `source.ip`.
    pub hash_field: Option<String>,
    /// `consistent_hash` only: bounded-load factor, default 1.25.
    pub load_factor: Option<f64>,
    /// Most records per batch. Default 512.
    pub batch_records: Option<usize>,
    /// Most bytes per batch. Default 1 MiB.
    pub batch_bytes: Option<usize>,
    /// Batches queued or in flight per endpoint. Default 2.
    pub in_flight: Option<usize>,
    /// Default 5000.
    pub connect_timeout_ms: Option<u64>,
    /// Default 10000.
    pub send_timeout_ms: Option<u64>,
    /// Consecutive failures before an endpoint is down. Default 1.
    pub failure_threshold: Option<u32>,
    /// First probe delay after going down. Default 250.
    pub backoff_base_ms: Option<u64>,
    /// Longest probe delay. Default 30000.
    pub backoff_max_ms: Option<u64>,
    /// The endpoints, as their kind defines them.
    #[serde(default)]
    pub endpoints: Vec<toml::Table>,
}

/// One endpoint, validated.
#[derive(Clone, Debug)]
pub enum EndpointSettings {
    /// A file or a directory of segments.
    File(FileSettings),
    /// Standard output.
    Stdout,
    /// A syslog collector.
    Syslog(SyslogSettings),
    /// A NATS JetStream endpoint (one or more servers).
    Nats(NatsSettings),
}

/// One group, validated.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// How it delivers.
    pub spec: GroupSpec,
    /// Its endpoints, in config order.
    pub endpoints: Vec<EndpointSettings>,
}

/// The spool, validated.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// Its directory.
    pub dir: PathBuf,
    /// Most bytes on disk.
    pub max_bytes: u64,
    /// Bytes per segment.
    pub segment_bytes: u64,
    /// What to drop when full.
    pub on_full: OnFull,
    /// When appended records reach the disk.
    pub fsync: FsyncPolicy,
}

/// Delivery, validated.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The spool.
    pub spool: SpoolConfig,
    /// The groups; index = route mask bit.
    pub groups: Vec<GroupConfig>,
    /// `[[routes]]` (checked by [`Router::try_new`]).
    pub routes: Vec<RouteFile>,
    /// `[routing]`.
    pub routing: RoutingFile,
}

impl Delivery {
    /// The group names, in order.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.spec.name.clone()).collect()
    }

    /// The router for these groups.
    pub fn router(&self) -> Router {
        Router::try_new(&self.routes, &self.routing, &self.group_names())
            .expect("checked when the config was loaded")
    }
}

/// A delivery setting that is wrong: the dotted key and what is allowed.
pub type Problem = (String, String);

fn problem(key: impl Into<String>, text: impl Into<String>) -> Problem {
    (key.into(), text.into())
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: String,
    v: T,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<T, Problem> {
    if v < lo || v > hi {
        return Err(problem(key, format!("is {v}; allowed {lo} to {hi}{unit}")));
    }
    Ok(v)
}

fn spool(file: SpoolFile, state_dir: &std::path::Path) -> Result<SpoolConfig, Problem> {
    let max_bytes = range(
        "spool.max_bytes".into(),
        file.max_bytes.unwrap_or(1 << 30),
        1 << 20,
        1 << 50,
        " bytes",
    )?;
    let segment_bytes = range(
        "spool.segment_bytes".into(),
        file.segment_bytes.unwrap_or(16 << 20),
        64 << 10,
        1 << 30,
        " bytes",
    )?;
    if segment_bytes.saturating_mul(4) > max_bytes {
        return Err(problem(
            "spool.segment_bytes",
            format!(
                "is {segment_bytes}, more than a quarter of spool.max_bytes ({max_bytes}); \
                 a full spool drops whole segments, so keep segments small"
            ),
        ));
    }
    Ok(SpoolConfig {
        dir: file.dir.unwrap_or_else(|| state_dir.join("spool")),
        max_bytes,
        segment_bytes,
        on_full: file.on_full.unwrap_or_default(),
        fsync: file.fsync.unwrap_or_default(),
    })
}

/// One endpoint, checked as its connector will use it: addresses and URLs
/// parsed, names and credentials checked, certificate files read. So a
/// value that cannot work is refused with the config, not when the
/// collector group starts.
fn endpoint(kind: Kind, key: &str, table: toml::Table) -> Result<EndpointSettings, Problem> {
    let parse_err = |e: toml::de::Error| problem(key, e.message().to_owned());
    let refused = |setting: String, e: &dyn std::fmt::Display| {
        problem(format!("{key}.{setting}"), format!("is refused: {e}"))
    };
    Ok(match kind {
        Kind::File => {
            let file: FileSettings = table.try_into().map_err(parse_err)?;
            if let Some(rotation) = &file.rotation {
                rotation
                    .check()
                    .map_err(|(k, p)| problem(format!("{key}.rotation.{k}"), p))?;
            }
            EndpointSettings::File(file)
        }
        Kind::Stdout => {
            if !table.is_empty() {
                return Err(problem(key, "stdout endpoints take no settings"));
            }
            EndpointSettings::Stdout
        }
        Kind::Syslog => {
            let settings: SyslogSettings = table.try_into().map_err(parse_err)?;
            lbwitness_delivery::sink::syslog::connector(&settings)
                .map_err(|e| refused(e.setting(&settings), &e))?;
            EndpointSettings::Syslog(settings)
        }
        Kind::Nats => {
            let settings: NatsSettings = table.try_into().map_err(parse_err)?;
            Validated::try_new(&settings).map_err(|e| refused(e.setting(&settings), &e))?;
            EndpointSettings::Nats(settings)
        }
    })
}

fn group(i: usize, mut g: GroupFile) -> Result<GroupConfig, Problem> {
    let key = |k: &str| format!("groups[{i}].{k}");
    if g.endpoints.is_empty() {
        return Err(problem(
            key("endpoints"),
            "is empty: a group needs at least one endpoint",
        ));
    }
    let endpoints = std::mem::take(&mut g.endpoints)
        .into_iter()
        .enumerate()
        .map(|(j, t)| endpoint(g.kind, &key(&format!("endpoints[{j}]")), t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GroupConfig {
        spec: spec(i, g)?,
        endpoints,
    })
}

/// The group's delivery settings (everything but its endpoints).
fn spec(i: usize, g: GroupFile) -> Result<GroupSpec, Problem> {
    let key = |k: &str| format!("groups[{i}].{k}");
    if g.name.is_empty()
        || !g
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(problem(
            key("name"),
            format!("is `{}`; use letters, digits, `-` and `_`", g.name),
        ));
    }
    let strategy = g.strategy.unwrap_or_default();
    if (strategy == Strategy::ConsistentHash) != g.hash_field.is_some() {
        return Err(problem(
            key("hash_field"),
            "is required with strategy = \"consistent_hash\" and allowed only with it",
        ));
    }
    if let Some(field) = &g.hash_field
        && !fields::is_field(field)
    {
        // An unknown field is absent from every record: all would hash to
        // the one empty key and land on one collector.
        return Err(problem(
            key("hash_field"),
            match fields::closest(field) {
                Some(near) => format!(
                    "is `{field}`, which no record carries; did you mean `{near}`? \
                     (fields are listed in README.md, \"Field reference\")"
                ),
                None => format!(
                    "is `{field}`, which no record carries; name a record field such as \
                     `source.ip` or `network.community_id`"
                ),
            },
        ));
    }
    let load_factor = range(
        key("load_factor"),
        g.load_factor.unwrap_or(1.25),
        1.0,
        10.0,
        "",
    )?;
    let ms = |v: Option<u64>, default: u64, k: &str, lo: u64, hi: u64| {
        range(key(k), v.unwrap_or(default), lo, hi, " ms").map(Duration::from_millis)
    };
    let base = ms(g.backoff_base_ms, 250, "backoff_base_ms", 10, 60_000)?;
    let cap = ms(g.backoff_max_ms, 30_000, "backoff_max_ms", 10, 3_600_000)?;
    let threshold = range(
        key("failure_threshold"),
        g.failure_threshold.unwrap_or(1),
        1,
        100,
        "",
    )?;
    let health = HealthPolicy::try_new(threshold, base, cap)
        .map_err(|e| problem(key("backoff_max_ms"), e.to_string()))?;
    Ok(GroupSpec {
        name: g.name,
        strategy,
        load_factor,
        hash_field: g.hash_field,
        batch_records: range(
            key("batch_records"),
            g.batch_records.unwrap_or(512),
            1,
            65_536,
            "",
        )?,
        batch_bytes: range(
            key("batch_bytes"),
            g.batch_bytes.unwrap_or(1 << 20),
            4096,
            64 << 20,
            " bytes",
        )?,
        in_flight: range(key("in_flight"), g.in_flight.unwrap_or(2), 1, 64, "")?,
        timeouts: Timeouts {
            connect: ms(
                g.connect_timeout_ms,
                5_000,
                "connect_timeout_ms",
                100,
                600_000,
            )?,
            send: ms(g.send_timeout_ms, 10_000, "send_timeout_ms", 100, 600_000)?,
        },
        health,
    })
}

/// The key a routing error is about, e.g. `routes[1].match."event.action"`.
fn route_key(e: &RouteError, routes: &[RouteFile]) -> String {
    let index = |name: &str| routes.iter().rposition(|r| r.name == name);
    let in_route = |name: &str, rest: &str| match index(name) {
        Some(i) => format!("routes[{i}]{rest}"),
        None => "routes".to_owned(),
    };
    match e {
        RouteError::TooManyGroups { .. } | RouteError::DuplicateGroup { .. } => "groups".into(),
        RouteError::DuplicateRoute { name } => in_route(name, ".name"),
        RouteError::NoGroups { route } => in_route(route, ".groups"),
        RouteError::NoDefault => "routing.default".into(),
        RouteError::UnknownGroup { place, .. } => match routes
            .iter()
            .rposition(|r| *place == format!("route `{}`", r.name))
        {
            Some(i) => format!("routes[{i}].groups"),
            None => "routing.default".into(),
        },
        RouteError::UnknownField { route, source } => {
            in_route(route, &format!(".match.{:?}", source.name))
        }
        RouteError::EmptyMatch { route, key } | RouteError::BadValue { route, key, .. } => {
            in_route(route, &format!(".match.{key:?}"))
        }
    }
}

/// The config file's delivery tables, as written.
pub struct DeliveryFile {
    /// `[spool]`.
    pub spool: SpoolFile,
    /// `[[groups]]`.
    pub groups: Vec<GroupFile>,
    /// `[[routes]]`.
    pub routes: Vec<RouteFile>,
    /// `[routing]`.
    pub routing: Option<RoutingFile>,
}

/// Validates delivery. `output` is the implicit group's endpoint when no
/// group is configured (`None`: an explicit output was combined with
/// groups, which is refused).
pub fn delivery(
    file: DeliveryFile,
    state_dir: &std::path::Path,
    output: Option<EndpointSettings>,
    explicit_output: bool,
) -> Result<Delivery, Problem> {
    let spool = spool(file.spool, state_dir)?;
    let mut groups = file
        .groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| group(i, g))
        .collect::<Result<Vec<_>, _>>()?;
    let mut routing = file.routing;
    let mut routes = file.routes;
    if groups.is_empty() {
        if !routes.is_empty() || routing.is_some() {
            return Err(problem(
                "routes",
                "names groups, but no [[groups]] are configured",
            ));
        }
        let endpoint = output.expect("an output without groups");
        groups.push(GroupConfig {
            spec: spec(
                0,
                GroupFile {
                    name: "output".into(),
                    kind: Kind::File,
                    strategy: Some(Strategy::Failover),
                    hash_field: None,
                    load_factor: None,
                    batch_records: None,
                    batch_bytes: None,
                    in_flight: None,
                    connect_timeout_ms: None,
                    send_timeout_ms: None,
                    failure_threshold: None,
                    backoff_base_ms: None,
                    backoff_max_ms: None,
                    endpoints: Vec::new(),
                },
            )?,
            endpoints: vec![endpoint],
        });
        routing = Some(RoutingFile {
            default: vec!["output".into()],
        });
        routes.clear();
    } else if explicit_output {
        return Err(problem(
            "output",
            "is set together with [[groups]]; add a group of kind \"file\" instead",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = groups.iter().find(|g| !seen.insert(g.spec.name.clone())) {
        return Err(problem("groups", format!("name `{}` twice", dup.spec.name)));
    }
    let routing = routing.unwrap_or_else(|| RoutingFile {
        // Without [routing], records no route matches go to every group.
        default: groups.iter().map(|g| g.spec.name.clone()).collect(),
    });
    let names: Vec<String> = groups.iter().map(|g| g.spec.name.clone()).collect();
    Router::try_new(&routes, &routing, &names)
        .map_err(|e| problem(route_key(&e, &routes), format!("is refused: {e}")))?;
    Ok(Delivery {
        spool,
        groups,
        routes,
        routing,
    })
}
