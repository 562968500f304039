//! The record the agent emits: Elastic Common Schema fields as nested JSON.
//! Everything lbwitness-specific sits under `lbwitness.*` so it never
//! collides with an ECS field.

pub mod audit;
pub mod fields;
pub mod http;
#[cfg(any(test, feature = "testing"))]
pub mod samples;

use std::collections::BTreeMap;

use serde::Serialize;

/// One output record.
///
/// Fields of every record struct are declared in the order of their JSON
/// names (RFC 8785 sorts object members), so serialising one with
/// [`crate::jcs::to_canonical_vec`] yields its canonical form directly;
/// the agent's `record_kinds::records_serialise_canonically` checks that for
/// every record kind it builds.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// When the event happened (RFC 3339, UTC, ns).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// `agent.*`.
    pub agent: Agent,
    /// `destination.*`, for flow records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    /// `error.*`, for failed connections and requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<http::Error>,
    /// `event.*`.
    pub event: Event,
    /// `file.*`, for file-change records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<audit::File>,
    /// `http.*`, for request records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<http::Http>,
    /// `lbwitness.*`: fields ECS has no place for.
    #[serde(skip_serializing_if = "Extra::is_empty")]
    pub lbwitness: Extra,
    /// `network.*`, for flow records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// `observer.*`: this host.
    pub observer: Observer,
    /// `process.*`: who did it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<audit::Process>,
    /// `source.*`, for flow records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    /// `url.*`, for request records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<http::Url>,
    /// `user.*`: as whom, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<audit::User>,
    /// `user_agent.*`, for request records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<http::UserAgent>,
}

impl Record {
    /// A minimal record for tests: `action` in `dataset`, host `lb1`.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_test(dataset: &'static str, action: &'static str) -> Self {
        Self::new(
            Event::new(dataset, action, "event", &["process"], &["info"]),
            "2026-11-21T00:00:00.000000000Z".into(),
            Observer {
                hostname: "lb1".into(),
                ingress: None,
                product: "lbwitness",
                kind: "sensor",
            },
        )
    }

    /// A record with only the fields every record has. The audit stage
    /// fills `agent.id` and `event.sequence`.
    pub fn new(event: Event, timestamp: String, observer: Observer) -> Self {
        Self {
            timestamp,
            agent: Agent {
                id: "",
                kind: "lbwitness",
                version: env!("CARGO_PKG_VERSION"),
            },
            destination: None,
            error: None,
            event,
            file: None,
            http: None,
            lbwitness: Extra::default(),
            network: None,
            observer,
            process: None,
            source: None,
            url: None,
            user: None,
            user_agent: None,
        }
    }
}

/// Whether `s` is an `agent.id` as the agent writes it: a UUID in lowercase
/// hyphenated form (`6f1c2a4e-8b9d-4c3e-9f10-2a3b4c5d6e7f`). Other spellings
/// of the same UUID are refused, so one agent has one id.
pub fn is_agent_id(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

/// `event.*`. `event.hash` is not a field: the chain inserts it into the
/// serialised record (see [`crate::chain`]).
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// What happened, e.g. `flow`, `tcp-syn`, `checkpoint`, `gap`.
    pub action: &'static str,
    /// ECS categories.
    pub category: &'static [&'static str],
    /// `lbwitness.flow`, `lbwitness.lifecycle`, `lbwitness.capture` or
    /// `lbwitness.audit`.
    pub dataset: &'static str,
    /// `end - start` in nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// End of the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// `event` for most records, `metric` for counters, `state` for
    /// checkpoints.
    pub kind: &'static str,
    /// Always `lbwitness`.
    pub module: &'static str,
    /// ECS `event.outcome`: `success`, `failure` or `unknown`, for request
    /// and connection records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// Why, e.g. `idle-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Per-agent record number, assigned by the audit stage.
    pub sequence: u64,
    /// Start of the interval the record covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// ECS types.
    #[serde(rename = "type")]
    pub kind_types: &'static [&'static str],
}

impl Event {
    /// An event with the fields every lbwitness event shares; the optional
    /// ones are empty.
    pub fn new(
        dataset: &'static str,
        action: &'static str,
        kind: &'static str,
        category: &'static [&'static str],
        kind_types: &'static [&'static str],
    ) -> Self {
        Self {
            action,
            category,
            dataset,
            duration: None,
            end: None,
            kind,
            module: "lbwitness",
            outcome: None,
            reason: None,
            sequence: 0,
            start: None,
            kind_types,
        }
    }
}

/// `source.*` / `destination.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    /// Bytes sent by this endpoint (source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Address.
    pub ip: std::net::IpAddr,
    /// ECS `*.nat`: for a request or client connection, the backend
    /// connection's ends (see [`http::Nat`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<http::Nat>,
    /// Packets sent by this endpoint (source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Port, for TCP and UDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `network.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Network {
    /// Bytes in the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Community ID v1, seed 0.
    pub community_id: String,
    /// IANA protocol number, as a string (ECS keyword).
    pub iana_number: String,
    /// Inner VLAN tag (802.1ad QinQ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<Inner>,
    /// Packets in the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Lowercase transport name (`tcp`, `udp`, `icmp`, `ipv6-icmp`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'static str>,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type")]
    pub ip_type: &'static str,
    /// Outer VLAN tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vlan>,
}

/// `network.vlan`.
#[derive(Clone, Debug, Serialize)]
pub struct Vlan {
    /// VLAN id as a string (ECS keyword).
    pub id: String,
}

/// `network.inner`.
#[derive(Clone, Debug, Serialize)]
pub struct Inner {
    /// `network.inner.vlan`.
    pub vlan: Vlan,
}

/// `observer.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Observer {
    /// This host's name.
    pub hostname: String,
    /// The interface the packets arrived on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
    /// Always `lbwitness`.
    pub product: &'static str,
    /// Always `sensor`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `observer.ingress`.
#[derive(Clone, Debug, Serialize)]
pub struct Ingress {
    /// `observer.ingress.interface`.
    pub interface: Interface,
}

/// `observer.ingress.interface`.
#[derive(Clone, Debug, Serialize)]
pub struct Interface {
    /// Interface index, as a string (ECS keyword).
    pub id: String,
    /// Interface name.
    pub name: String,
}

/// `agent.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Agent {
    /// The agent's stable id (`<state_dir>/agent.id`), set by the audit stage.
    pub id: &'static str,
    /// Always `lbwitness`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The agent's version.
    pub version: &'static str,
}

/// `lbwitness.*`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Extra {
    /// Agent counters, same shape as `kernel`.
    #[serde(skip_serializing_if = "Option::is_none", rename = "agent")]
    pub agent_counters: Option<BTreeMap<&'static str, CounterValue>>,
    /// How a request's backend was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<http::Backend>,
    /// How a flow was captured (flow and lifecycle records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureExtra>,
    /// A checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<audit::Checkpoint>,
    /// A config reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<audit::ConfigReload>,
    /// A TCP connection of the load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<http::Connection>,
    /// A watched file's previous state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<audit::FileExtra>,
    /// Declared loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<audit::Gap>,
    /// A hook attached or detached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<audit::Hook>,
    /// ICMP type and code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    /// Kernel counters: name to change since the previous counters record and
    /// running total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<BTreeMap<&'static str, CounterValue>>,
    /// A key rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<audit::KeyRotation>,
    /// Which addresses are pseudonyms (`[privacy] pseudonymise_clients`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyExtra>,
    /// An agent start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<audit::Start>,
    /// An agent stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<audit::Stop>,
    /// TCP flags seen, e.g. `["SYN", "ACK"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<Vec<&'static str>>,
    /// File watching stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<audit::WatchStopped>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.agent_counters.is_none()
            && self.backend.is_none()
            && self.capture.is_none()
            && self.checkpoint.is_none()
            && self.config.is_none()
            && self.connection.is_none()
            && self.file.is_none()
            && self.gap.is_none()
            && self.hook.is_none()
            && self.icmp.is_none()
            && self.kernel.is_none()
            && self.key.is_none()
            && self.privacy.is_none()
            && self.start.is_none()
            && self.stop.is_none()
            && self.tcp_flags.is_none()
            && self.watch.is_none()
    }
}

/// `lbwitness.capture` of a flow or lifecycle record.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CaptureExtra {
    /// The XDP mode of the attachment that measured the flow: `native`
    /// counts wire packets; `generic` counts GRO/GSO super-packets as one.
    pub xdp_mode: &'static str,
}

/// `lbwitness.privacy` of a record that shows client pseudonyms in place
/// of client addresses: IPv6 addresses in `100::/64` (RFC 6666, discard
/// only) that stand for a client under the agent's pseudonym key.
#[derive(Clone, Debug, Serialize)]
pub struct PrivacyExtra {
    /// The fields that hold a pseudonym, e.g. `["source.ip"]`.
    pub fields: Vec<&'static str>,
    /// The pseudonym key's public id: equal pseudonyms under equal ids are
    /// one client.
    pub key_id: String,
    /// Always `true`.
    pub pseudonymised: bool,
}

/// `lbwitness.icmp`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Icmp {
    /// ICMP code.
    pub code: u8,
    /// ICMP type.
    #[serde(rename = "type")]
    pub icmp_type: u8,
}

/// One counter in a counters record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CounterValue {
    /// Change since the previous counters record.
    pub delta: u64,
    /// Total since the agent started.
    pub total: u64,
}
