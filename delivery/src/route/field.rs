//! The record fields a route can match on, read from a [`Record`] without
//! allocating: strings are borrowed, addresses and ports stay numbers.

use std::{fmt, net::IpAddr, str::FromStr};

use lbwitness_trail::record::Record;

/// A field a route can match on, named by its dotted ECS name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `event.kind`: `event`, `metric` or `state`.
    EventKind,
    /// `event.category` (a list: any element matches).
    EventCategory,
    /// `event.action`, e.g. `flow`, `tcp-rst`, `gap`, `file-change`.
    EventAction,
    /// `event.type` (a list: any element matches).
    EventType,
    /// `event.dataset`, e.g. `lbwitness.flow`, `lbwitness.audit`.
    EventDataset,
    /// `event.reason`, e.g. `idle-timeout`, `restart-after-crash`.
    EventReason,
    /// `network.transport`, e.g. `tcp`.
    NetworkTransport,
    /// `network.type`: `ipv4` or `ipv6`.
    NetworkType,
    /// `network.community_id`.
    NetworkCommunityId,
    /// `network.iana_number`, e.g. `6`.
    NetworkIanaNumber,
    /// `network.vlan.id` (outer tag).
    NetworkVlanId,
    /// `source.ip`: an address or a CIDR prefix.
    SourceIp,
    /// `source.port`: a port or a range `low-high`.
    SourcePort,
    /// `destination.ip`: an address or a CIDR prefix.
    DestinationIp,
    /// `destination.port`: a port or a range `low-high`.
    DestinationPort,
    /// `observer.hostname`.
    ObserverHostname,
    /// `observer.ingress.interface.name`, e.g. `eth0`.
    ObserverIngressInterfaceName,
    /// `observer.ingress.interface.id` (interface index).
    ObserverIngressInterfaceId,
    /// `file.path`, for file-change records.
    FilePath,
    /// `process.name`, for file-change records.
    ProcessName,
    /// `user.name`, for file-change records.
    UserName,
}

/// How a field's configured values are read and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Exact string equality.
    Str,
    /// Addresses and CIDR prefixes.
    Ip,
    /// Ports and port ranges.
    Port,
}

/// Every field with its ECS name, in the order the error message lists them.
const NAMES: [(Field, &str); 21] = [
    (Field::EventKind, "event.kind"),
    (Field::EventCategory, "event.category"),
    (Field::EventAction, "event.action"),
    (Field::EventType, "event.type"),
    (Field::EventDataset, "event.dataset"),
    (Field::EventReason, "event.reason"),
    (Field::NetworkTransport, "network.transport"),
    (Field::NetworkType, "network.type"),
    (Field::NetworkCommunityId, "network.community_id"),
    (Field::NetworkIanaNumber, "network.iana_number"),
    (Field::NetworkVlanId, "network.vlan.id"),
    (Field::SourceIp, "source.ip"),
    (Field::SourcePort, "source.port"),
    (Field::DestinationIp, "destination.ip"),
    (Field::DestinationPort, "destination.port"),
    (Field::ObserverHostname, "observer.hostname"),
    (
        Field::ObserverIngressInterfaceName,
        "observer.ingress.interface.name",
    ),
    (
        Field::ObserverIngressInterfaceId,
        "observer.ingress.interface.id",
    ),
    (Field::FilePath, "file.path"),
    (Field::ProcessName, "process.name"),
    (Field::UserName, "user.name"),
];

/// `event.action` values lbwitness writes (records from `enrich` and
/// `audit::records`); a route naming another one never matches.
pub const ACTIONS: &[&str] = &[
    "agent-start",
    "agent-stop",
    "capture-counters",
    "checkpoint",
    "config-reload",
    "connection",
    "file-change",
    "flow",
    "flow-start",
    "gap",
    "hook-attach",
    "hook-detach",
    "http-request",
    "key-rotation",
    "tcp-fin",
    "tcp-rst",
    "tcp-syn",
    "watch-stopped",
];

/// `event.dataset` values lbwitness writes.
pub const DATASETS: &[&str] = &[
    "lbwitness.audit",
    "lbwitness.capture",
    "lbwitness.connection",
    "lbwitness.flow",
    "lbwitness.lifecycle",
    "lbwitness.request",
];

/// `event.kind` values lbwitness writes.
pub const KINDS: &[&str] = &["event", "metric", "state"];

impl Field {
    /// Every field, for listing and tests.
    pub fn all() -> impl Iterator<Item = Field> {
        NAMES.iter().map(|(f, _)| *f)
    }

    /// The dotted ECS name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("", |(_, n)| n)
    }

    /// How configured values are parsed and compared.
    pub fn kind(self) -> Kind {
        match self {
            Self::SourceIp | Self::DestinationIp => Kind::Ip,
            Self::SourcePort | Self::DestinationPort => Kind::Port,
            _ => Kind::Str,
        }
    }

    /// The values lbwitness can write in this field, when the set is closed
    /// (used to warn about routes that can never match).
    pub fn vocabulary(self) -> Option<&'static [&'static str]> {
        match self {
            Self::EventAction => Some(ACTIONS),
            Self::EventDataset => Some(DATASETS),
            Self::EventKind => Some(KINDS),
            _ => None,
        }
    }

    /// The field's values in `r`: none when the record lacks it, several for
    /// list fields. Borrows from `r`; never allocates.
    pub fn values(self, r: &Record) -> Values<'_> {
        use Value::{Ip, Port, Str};
        let net = r.network.as_ref();
        let interface = r.observer.ingress.as_ref().map(|i| &i.interface);
        Values::One(match self {
            Self::EventCategory => return Values::Many(r.event.category.iter()),
            Self::EventType => return Values::Many(r.event.kind_types.iter()),
            Self::EventKind => Some(Str(r.event.kind)),
            Self::EventAction => Some(Str(r.event.action)),
            Self::EventDataset => Some(Str(r.event.dataset)),
            Self::EventReason => r.event.reason.map(Str),
            Self::NetworkTransport => net.and_then(|n| n.transport).map(Str),
            Self::NetworkType => net.map(|n| Str(n.ip_type)),
            Self::NetworkCommunityId => net.map(|n| Str(&n.community_id)),
            Self::NetworkIanaNumber => net.map(|n| Str(&n.iana_number)),
            Self::NetworkVlanId => net.and_then(|n| n.vlan.as_ref()).map(|v| Str(&v.id)),
            Self::SourceIp => r.source.as_ref().map(|e| Ip(e.ip)),
            Self::SourcePort => r.source.as_ref().and_then(|e| e.port).map(Port),
            Self::DestinationIp => r.destination.as_ref().map(|e| Ip(e.ip)),
            Self::DestinationPort => r.destination.as_ref().and_then(|e| e.port).map(Port),
            Self::ObserverHostname => Some(Str(&r.observer.hostname)),
            Self::ObserverIngressInterfaceName => interface.map(|i| Str(&i.name)),
            Self::ObserverIngressInterfaceId => interface.map(|i| Str(&i.id)),
            Self::FilePath => r.file.as_ref().map(|f| Str(&f.path)),
            Self::ProcessName => r.process.as_ref().and_then(|p| p.name.as_deref()).map(Str),
            Self::UserName => r.user.as_ref().and_then(|u| u.name.as_deref()).map(Str),
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a routable field.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{name}` is not a field routes can match; use one of: {}",
    supported()
)]
pub struct UnknownField {
    /// The name as written.
    pub name: String,
}

/// The supported names, comma-separated.
pub fn supported() -> String {
    NAMES.map(|(_, n)| n).join(", ")
}

impl FromStr for Field {
    type Err = UnknownField;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(f, _)| *f)
            .ok_or_else(|| UnknownField { name: s.to_owned() })
    }
}

/// One value of a field in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A string field.
    Str(&'a str),
    /// `source.ip` / `destination.ip`.
    Ip(IpAddr),
    /// `source.port` / `destination.port`.
    Port(u16),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::Ip(ip) => ip.fmt(f),
            Self::Port(p) => p.fmt(f),
        }
    }
}

/// The values of one field in one record.
#[derive(Clone, Debug)]
pub enum Values<'a> {
    /// A scalar field: present or not.
    One(Option<Value<'a>>),
    /// A list field (`event.category`, `event.type`).
    Many(std::slice::Iter<'a, &'static str>),
}

impl<'a> Iterator for Values<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        match self {
            Self::One(v) => v.take(),
            Self::Many(it) => it.next().map(|s| Value::Str(s)),
        }
    }
}
