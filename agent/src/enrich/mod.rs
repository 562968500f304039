//! Turns kernel data into ECS records: names, addresses, Community ID,
//! wall-clock times.

pub mod community_id;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use agent_common::flow::{FlowEvent, FlowKey, IP_V4, proto, reason, tcp_flag};
use lbwitness_trail::record::{
    CaptureExtra, CounterValue, Endpoint, Event, Icmp, Ingress, Inner, Interface, Network,
    Observer, Record, Vlan, audit::Gap,
};

use crate::{
    capture::attach::AttachedMode,
    clock::{Clock, rfc3339},
    flows::table::FlowReport,
    privacy::{Pseudonymiser, id_pair},
};

/// Static context for records: host, and the interfaces captured on.
#[derive(Clone, Debug)]
pub struct Enricher {
    hostname: String,
    interfaces: HashMap<u32, Captured>,
    pseudonyms: Option<Arc<Pseudonymiser>>,
}

/// An interface the XDP program is attached to, as records name it.
#[derive(Clone, Debug)]
pub struct Captured {
    name: String,
    mode: AttachedMode,
}

impl Captured {
    /// Interface `name`, attached in `mode`.
    pub fn new(name: &str, mode: AttachedMode) -> Self {
        Self {
            name: name.to_owned(),
            mode,
        }
    }
}

/// ECS transport name for an IANA protocol number.
pub fn transport_name(protocol: u8) -> Option<&'static str> {
    Some(match protocol {
        proto::ICMP => "icmp",
        2 => "igmp",
        proto::TCP => "tcp",
        proto::UDP => "udp",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        proto::ICMPV6 => "ipv6-icmp",
        112 => "vrrp",
        proto::SCTP => "sctp",
        _ => return None,
    })
}

/// Names of the TCP flags set in `flags`, in header order.
pub fn tcp_flag_names(flags: u16) -> Vec<&'static str> {
    [
        (tcp_flag::NS, "NS"),
        (tcp_flag::CWR, "CWR"),
        (tcp_flag::ECE, "ECE"),
        (tcp_flag::URG, "URG"),
        (tcp_flag::ACK, "ACK"),
        (tcp_flag::PSH, "PSH"),
        (tcp_flag::RST, "RST"),
        (tcp_flag::SYN, "SYN"),
        (tcp_flag::FIN, "FIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

fn has_ports(protocol: u8) -> bool {
    matches!(protocol, proto::TCP | proto::UDP | proto::SCTP)
}

fn is_icmp(protocol: u8) -> bool {
    matches!(protocol, proto::ICMP | proto::ICMPV6)
}

impl Enricher {
    /// Context for `hostname` with `interfaces` by index.
    pub fn new(hostname: String, interfaces: HashMap<u32, Captured>) -> Self {
        Self {
            hostname,
            interfaces,
            pseudonyms: None,
        }
    }

    /// The same context, showing clients' pseudonyms in place of their
    /// addresses (`[privacy] pseudonymise_clients`).
    pub fn pseudonymising(mut self, pseudonyms: Option<Arc<Pseudonymiser>>) -> Self {
        self.pseudonyms = pseudonyms;
        self
    }

    fn observer(&self, ifindex: Option<u32>) -> Observer {
        Observer {
            hostname: self.hostname.clone(),
            product: "lbwitness",
            kind: "sensor",
            ingress: ifindex.map(|i| Ingress {
                interface: Interface {
                    name: self
                        .interfaces
                        .get(&i)
                        .map_or_else(|| format!("ifindex-{i}"), |c| c.name.clone()),
                    id: i.to_string(),
                },
            }),
        }
    }

    fn base(&self, event: Event, timestamp: String, ifindex: Option<u32>) -> Record {
        Record::new(event, timestamp, self.observer(ifindex))
    }

    /// A flow or lifecycle record: the observer, and the XDP mode that
    /// measured the flow (what its packet counts mean).
    fn flow_base(&self, event: Event, timestamp: String, ifindex: u32) -> Record {
        let mut rec = self.base(event, timestamp, Some(ifindex));
        rec.lbwitness.capture = self.interfaces.get(&ifindex).map(|c| CaptureExtra {
            xdp_mode: c.mode.as_str(),
        });
        rec
    }

    /// Fills source, destination and network from a flow key. A flow has
    /// no roles, so with pseudonyms on each end is shown by the address
    /// rule alone ([`crate::privacy`]), and the Community ID is computed
    /// over what the record shows: the request and connection records of
    /// the same connection show, and hash, the same.
    fn flow_fields(&self, rec: &mut Record, key: &FlowKey, counts: Option<(u64, u64)>) {
        let ports = has_ports(key.protocol);
        let (src, dst) = match &self.pseudonyms {
            Some(p) => {
                let (src, dst) = (p.show(key.src_ip()), p.show(key.dst_ip()));
                let fields = [("source.ip", src), ("destination.ip", dst)]
                    .into_iter()
                    .filter(|(_, shown)| shown.is_pseudonym())
                    .map(|(name, _)| name)
                    .collect();
                rec.lbwitness.privacy = p.mark(fields);
                (src.ip(), dst.ip())
            }
            None => (key.src_ip(), key.dst_ip()),
        };
        rec.source = Some(Endpoint {
            ip: src,
            nat: None,
            port: ports.then_some(key.src_port),
            bytes: counts.map(|c| c.1),
            packets: counts.map(|c| c.0),
        });
        rec.destination = Some(Endpoint {
            ip: dst,
            nat: None,
            port: ports.then_some(key.dst_port),
            bytes: None,
            packets: None,
        });
        let vlan =
            |depth: u8, id: u16| (key.vlan_depth >= depth).then(|| Vlan { id: id.to_string() });
        rec.network = Some(Network {
            transport: transport_name(key.protocol),
            ip_type: if key.ip_version == IP_V4 {
                "ipv4"
            } else {
                "ipv6"
            },
            iana_number: key.protocol.to_string(),
            bytes: counts.map(|c| c.1),
            packets: counts.map(|c| c.0),
            community_id: {
                let (a, b) = id_pair(src, dst);
                community_id::community_id_v1(0, a, b, key.protocol, key.src_port, key.dst_port)
            },
            vlan: vlan(1, key.vlan_outer),
            inner: vlan(2, key.vlan_inner).map(|vlan| Inner { vlan }),
        });
        if is_icmp(key.protocol) {
            rec.lbwitness.icmp = Some(Icmp {
                icmp_type: key.src_port as u8,
                code: key.dst_port as u8,
            });
        }
    }

    /// A flow record from a report.
    pub fn flow_record(&self, clock: &Clock, report: &FlowReport) -> Record {
        let start = clock.wall(report.start_ns);
        let end = clock.wall(report.end_ns);
        let end_text = rfc3339(end);
        let types: &'static [&'static str] = if report.reason.is_final() {
            &["connection", "end"]
        } else {
            &["connection", "info"]
        };
        let mut event = Event::new("lbwitness.flow", "flow", "event", &["network"], types);
        event.reason = Some(report.reason.as_str());
        event.start = Some(rfc3339(start));
        event.end = Some(end_text.clone());
        event.duration = Some(report.end_ns.saturating_sub(report.start_ns));
        let mut rec = self.flow_base(event, end_text, report.key.ifindex);
        self.flow_fields(&mut rec, &report.key, Some((report.packets, report.bytes)));
        if report.key.protocol == proto::TCP {
            rec.lbwitness.tcp_flags = Some(tcp_flag_names(report.tcp_flags));
        }
        rec
    }

    /// A lifecycle record: a flow's first packet, or a SYN, FIN or RST.
    pub fn lifecycle_record(&self, clock: &Clock, ev: &FlowEvent) -> Record {
        let (action, types): (&'static str, &'static [&'static str]) =
            if ev.reasons & reason::RST != 0 {
                ("tcp-rst", &["connection", "end"])
            } else if ev.reasons & reason::FIN != 0 {
                ("tcp-fin", &["connection", "end"])
            } else if ev.reasons & reason::SYN != 0 {
                ("tcp-syn", &["connection", "start"])
            } else {
                ("flow-start", &["connection", "start"])
            };
        let at = rfc3339(clock.wall(ev.header.ktime_ns));
        let mut event = Event::new("lbwitness.lifecycle", action, "event", &["network"], types);
        event.reason = (ev.reasons & reason::NEW != 0).then_some("new-flow");
        let mut rec = self.flow_base(event, at, ev.key.ifindex);
        self.flow_fields(&mut rec, &ev.key, None);
        if ev.key.protocol == proto::TCP {
            rec.lbwitness.tcp_flags = Some(tcp_flag_names(ev.tcp_flags));
        }
        rec
    }

    /// A counters record: kernel drops and malformed packets by reason, and
    /// the agent's own losses.
    pub fn counters_record(
        &self,
        now: std::time::SystemTime,
        kernel: BTreeMap<&'static str, CounterValue>,
        agent: BTreeMap<&'static str, CounterValue>,
        lost: bool,
    ) -> Record {
        let types: &'static [&'static str] = if lost { &["info", "error"] } else { &["info"] };
        let mut event = Event::new(
            "lbwitness.capture",
            "capture-counters",
            "metric",
            &["network"],
            types,
        );
        event.reason = lost.then_some("capture-loss");
        let mut rec = self.base(event, rfc3339(now), None);
        rec.lbwitness.kernel = Some(kernel);
        rec.lbwitness.agent_counters = Some(agent);
        rec
    }

    /// A gap record: `count` of `reason` lost (or unparsable) between
    /// `start` and `end`.
    pub fn gap_record(
        &self,
        start: std::time::SystemTime,
        end: std::time::SystemTime,
        source: &'static str,
        reason: &'static str,
        class: &'static str,
        count: u64,
    ) -> Record {
        let mut event = Event::new(
            "lbwitness.audit",
            "gap",
            "event",
            &["network"],
            &["info", "error"],
        );
        event.reason = Some(reason);
        event.start = Some(rfc3339(start));
        event.end = Some(rfc3339(end));
        event.duration = Some(
            end.duration_since(start)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        );
        let mut rec = self.base(event, rfc3339(end), None);
        rec.lbwitness.gap = Some(Gap {
            before_hash: None,
            class,
            count,
            first_sequence: None,
            last_hash: None,
            last_sequence: None,
            previous_run: None,
            reason,
            source,
        });
        rec
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use agent_common::flow::IP_V6;

    use super::*;
    use crate::flows::table::ReportReason;

    pub(crate) fn enricher() -> Enricher {
        Enricher::new(
            "lb1".into(),
            [(3, Captured::new("veth0", AttachedMode::Native))].into(),
        )
    }

    /// TCP 192.0.2.1:40000 -> 192.0.2.2:80 on ifindex 3, QinQ 100/200.
    pub(crate) fn v4_key() -> FlowKey {
        let mut k = FlowKey {
            ifindex: 3,
            src_port: 40000,
            dst_port: 80,
            ip_version: IP_V4,
            protocol: proto::TCP,
            vlan_depth: 2,
            vlan_outer: 100,
            vlan_inner: 200,
            ..FlowKey::default()
        };
        k.src_addr[..4].copy_from_slice(&[192, 0, 2, 1]);
        k.dst_addr[..4].copy_from_slice(&[192, 0, 2, 2]);
        k
    }

    /// A SYN-only report of `key`, idle-ended, for tests that need any
    /// real flow record.
    pub(crate) fn flow_report(key: FlowKey) -> FlowReport {
        FlowReport {
            key,
            start_ns: 1,
            end_ns: 2,
            packets: 3,
            bytes: 4,
            tcp_flags: tcp_flag::SYN,
            reason: ReportReason::IdleTimeout,
        }
    }

    #[test]
    fn flow_record_has_ecs_fields() {
        let report = FlowReport {
            key: v4_key(),
            start_ns: 1_000,
            end_ns: 3_000,
            packets: 4,
            bytes: 400,
            tcp_flags: tcp_flag::SYN | tcp_flag::ACK,
            reason: ReportReason::IdleTimeout,
        };
        let rec = enricher().flow_record(&Clock::from_offset(0), &report);
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["source"]["ip"], "192.0.2.1");
        assert_eq!(v["source"]["port"], 40000);
        assert_eq!(v["source"]["bytes"], 400);
        assert_eq!(v["destination"]["port"], 80);
        assert_eq!(v["network"]["transport"], "tcp");
        assert_eq!(v["network"]["type"], "ipv4");
        assert_eq!(v["network"]["iana_number"], "6");
        assert_eq!(v["network"]["packets"], 4);
        assert_eq!(v["network"]["vlan"]["id"], "100");
        assert_eq!(v["network"]["inner"]["vlan"]["id"], "200");
        assert!(
            v["network"]["community_id"]
                .as_str()
                .unwrap()
                .starts_with("1:")
        );
        assert_eq!(v["event"]["duration"], 2_000);
        assert_eq!(v["event"]["type"], serde_json::json!(["connection", "end"]));
        assert_eq!(v["event"]["reason"], "idle-timeout");
        assert_eq!(v["observer"]["ingress"]["interface"]["name"], "veth0");
        assert_eq!(v["observer"]["hostname"], "lb1");
        assert_eq!(v["lbwitness"]["capture"]["xdp_mode"], "native");
        assert_eq!(
            v["lbwitness"]["tcp_flags"],
            serde_json::json!(["ACK", "SYN"])
        );
        assert_eq!(v["@timestamp"], v["event"]["end"]);
    }

    #[test]
    fn icmp_has_no_ports_and_untagged_has_no_vlan() {
        let mut key = v4_key();
        key.protocol = proto::ICMPV6;
        key.ip_version = IP_V6;
        key.vlan_depth = 0;
        key.src_port = 128;
        key.dst_port = 0;
        key.src_addr = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        key.dst_addr = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let report = FlowReport {
            key,
            start_ns: 0,
            end_ns: 0,
            packets: 1,
            bytes: 104,
            tcp_flags: 0,
            reason: ReportReason::Shutdown,
        };
        let v =
            serde_json::to_value(enricher().flow_record(&Clock::from_offset(0), &report)).unwrap();
        assert!(v["source"].get("port").is_none());
        assert!(v["network"].get("vlan").is_none());
        assert_eq!(v["network"]["transport"], "ipv6-icmp");
        assert_eq!(v["source"]["ip"], "2001:db8::1");
        assert_eq!(v["lbwitness"]["icmp"]["type"], 128);
    }

    #[test]
    fn sctp_has_ports_and_the_reference_community_id() {
        let mut key = v4_key();
        key.protocol = proto::SCTP;
        key.vlan_depth = 0;
        key.src_port = 5000;
        key.dst_port = 36412;
        let rec = enricher().flow_record(&Clock::from_offset(0), &flow_report(key));
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["source"]["port"], 5000);
        assert_eq!(v["destination"]["port"], 36412);
        assert_eq!(v["network"]["transport"], "sctp");
        assert!(v["lbwitness"].get("tcp_flags").is_none());
        // Python `communityid` 1.5.0, FlowTuple.make_sctp.
        assert_eq!(
            v["network"]["community_id"],
            "1:DRrUEpdy7DtpC0KHedZfhxf88c4="
        );
    }

    #[test]
    fn flag_names() {
        assert_eq!(
            tcp_flag_names(tcp_flag::SYN | tcp_flag::FIN),
            vec!["SYN", "FIN"]
        );
        assert!(tcp_flag_names(0).is_empty());
    }
}
