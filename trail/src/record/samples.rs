//! Records shaped like the agent's own, for the tests of crates that take
//! records but cannot build them the agent's way (routing and balancing in
//! lbwitness-delivery). Built with the `testing` feature.
//!
//! The agent's tests check that [`flow`] and [`lifecycle`] with the default
//! tuple serialise exactly as its enricher's records do, so these stay
//! faithful as the schema grows.

use std::net::IpAddr;

use super::{
    CaptureExtra, Endpoint, Event, Ingress, Inner, Interface, Network, Observer, Record, Vlan,
};

/// The default flow's source address (`192.0.2.1`).
pub const SOURCE: [u8; 4] = [192, 0, 2, 1];

/// `network.community_id` of the default tuple, TCP 192.0.2.1:40000 →
/// 192.0.2.2:80 (kept for other tuples: routing tests do not read it).
const COMMUNITY_ID: &str = "1:G+HkHCrmxWLQgwEnSytJ6z6uCFc=";

/// A flow record as the agent writes it: TCP `src`:40000 → 192.0.2.2:`dst_port`
/// on veth0 (ifindex 3, native XDP), QinQ 100/200, 3 packets and 4 bytes
/// with only SYN seen, idle-ended.
pub fn flow(src: IpAddr, dst_port: u16) -> Record {
    let mut event = Event::new(
        "lbwitness.flow",
        "flow",
        "event",
        &["network"],
        &["connection", "end"],
    );
    event.reason = Some("idle-timeout");
    event.start = Some("1970-01-01T00:00:00.000000001Z".into());
    event.end = Some("1970-01-01T00:00:00.000000002Z".into());
    event.duration = Some(1);
    let mut r = tcp(
        event,
        "1970-01-01T00:00:00.000000002Z",
        src,
        dst_port,
        Some((3, 4)),
    );
    r.lbwitness.tcp_flags = Some(vec!["SYN"]);
    r
}

/// A lifecycle record (`tcp-syn`, `tcp-fin`, `tcp-rst` or `flow-start`) of
/// the default tuple, at 5 ns after the epoch.
pub fn lifecycle(action: &'static str) -> Record {
    let types: &'static [&'static str] = match action {
        "tcp-rst" | "tcp-fin" => &["connection", "end"],
        _ => &["connection", "start"],
    };
    let event = Event::new("lbwitness.lifecycle", action, "event", &["network"], types);
    let mut r = tcp(
        event,
        "1970-01-01T00:00:00.000000005Z",
        SOURCE.into(),
        80,
        None,
    );
    r.lbwitness.tcp_flags = Some(vec![]);
    r
}

/// An agent record (`lbwitness.audit`) with only the fields every record
/// has, e.g. `key-rotation` or `checkpoint`.
pub fn audit(action: &'static str) -> Record {
    Record::for_test("lbwitness.audit", action)
}

fn tcp(
    event: Event,
    timestamp: &str,
    src: IpAddr,
    dst_port: u16,
    counts: Option<(u64, u64)>,
) -> Record {
    let observer = Observer {
        hostname: "lb1".into(),
        ingress: Some(Ingress {
            interface: Interface {
                id: "3".into(),
                name: "veth0".into(),
            },
        }),
        product: "lbwitness",
        kind: "sensor",
    };
    let mut r = Record::new(event, timestamp.into(), observer);
    r.lbwitness.capture = Some(CaptureExtra { xdp_mode: "native" });
    r.source = Some(Endpoint {
        bytes: counts.map(|c| c.1),
        ip: src,
        nat: None,
        packets: counts.map(|c| c.0),
        port: Some(40000),
    });
    r.destination = Some(Endpoint {
        bytes: None,
        ip: IpAddr::from([192, 0, 2, 2]),
        nat: None,
        packets: None,
        port: Some(dst_port),
    });
    r.network = Some(Network {
        bytes: counts.map(|c| c.1),
        community_id: COMMUNITY_ID.into(),
        iana_number: "6".into(),
        inner: Some(Inner {
            vlan: Vlan { id: "200".into() },
        }),
        packets: counts.map(|c| c.0),
        transport: Some("tcp"),
        ip_type: "ipv4",
        vlan: Some(Vlan { id: "100".into() }),
    });
    r
}

/// The values at the dotted `path` in the record's JSON, as text (strings
/// unquoted, arrays flattened): the reference for accessors that read a
/// record's fields without serialising it.
pub fn json_values(record: &Record, path: &str) -> Vec<String> {
    let scalar = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let json = serde_json::to_value(record).expect("records serialise");
    match json.pointer(&format!("/{}", path.replace('.', "/"))) {
        None => vec![],
        Some(serde_json::Value::Array(items)) => items.iter().map(scalar).collect(),
        Some(v) => vec![scalar(v)],
    }
}
