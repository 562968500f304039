//! The record the agent emits: Elastic Common Schema fields as nested JSON.
//! Everything lbwitness-specific sits under `lbwitness.*` so it never
//! collides with an ECS field.

use std::collections::BTreeMap;

use serde::Serialize;

/// One output record.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// When the event happened (RFC 3339, UTC, ns).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// `event.*`.
    pub event: Event,
    /// `source.*`, for flow records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    /// `destination.*`, for flow records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    /// `network.*`, for flow records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// `observer.*`: this host.
    pub observer: Observer,
    /// `agent.*`.
    pub agent: Agent,
    /// `lbwitness.*`: fields ECS has no place for.
    #[serde(skip_serializing_if = "Extra::is_empty")]
    pub lbwitness: Extra,
}

/// `event.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// `event` for flows and lifecycle, `metric` for counters.
    pub kind: &'static str,
    /// ECS categories.
    pub category: &'static [&'static str],
    /// ECS types.
    #[serde(rename = "type")]
    pub kind_types: &'static [&'static str],
    /// What happened, e.g. `flow`, `tcp-syn`, `capture-counters`.
    pub action: &'static str,
    /// Why, e.g. `idle-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Start of the interval the record covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// End of the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// `end - start` in nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// Per-agent record number, set by the writer in output order.
    pub sequence: u64,
    /// Always `lbwitness`.
    pub module: &'static str,
    /// `lbwitness.flow`, `lbwitness.lifecycle` or `lbwitness.capture`.
    pub dataset: &'static str,
}

/// `source.*` / `destination.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    /// Address.
    pub ip: std::net::IpAddr,
    /// Port, for TCP and UDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Bytes sent by this endpoint (source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Packets sent by this endpoint (source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

/// `network.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Network {
    /// Lowercase transport name (`tcp`, `udp`, `icmp`, `ipv6-icmp`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'static str>,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type")]
    pub ip_type: &'static str,
    /// IANA protocol number, as a string (ECS keyword).
    pub iana_number: String,
    /// Bytes in the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Packets in the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Community ID v1, seed 0.
    pub community_id: String,
    /// Outer VLAN tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vlan>,
    /// Inner VLAN tag (802.1ad QinQ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<Inner>,
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
    /// Always `lbwitness`.
    pub product: &'static str,
    /// Always `sensor`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The interface the packets arrived on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
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
    /// Interface name.
    pub name: String,
    /// Interface index, as a string (ECS keyword).
    pub id: String,
}

/// `agent.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Agent {
    /// Always `lbwitness`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The agent's version.
    pub version: &'static str,
}

/// `lbwitness.*`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Extra {
    /// TCP flags seen, e.g. `["SYN", "ACK"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<Vec<&'static str>>,
    /// ICMP type and code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    /// Kernel counters: name to change since the previous counters record and
    /// running total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<BTreeMap<&'static str, CounterValue>>,
    /// Agent counters, same shape.
    #[serde(skip_serializing_if = "Option::is_none", rename = "agent")]
    pub agent_counters: Option<BTreeMap<&'static str, CounterValue>>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.tcp_flags.is_none()
            && self.icmp.is_none()
            && self.kernel.is_none()
            && self.agent_counters.is_none()
    }
}

/// `lbwitness.icmp`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Icmp {
    /// ICMP type.
    #[serde(rename = "type")]
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
}

/// One counter in a counters record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CounterValue {
    /// Change since the previous counters record.
    pub delta: u64,
    /// Total since the agent started.
    pub total: u64,
}
