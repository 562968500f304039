//! The XDP program under BPF_PROG_TEST_RUN with crafted frames: every header
//! variant, every malformed case and fragments, asserting the flow map, the
//! ring-buffer events and the counters. Needs root (loads eBPF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{
    counter::Counter,
    flow::{FlowEvent, FlowKey, FlowStats, IP_V4, IP_V6, reason},
    names,
};
use aya::{
    Ebpf, TestRun as _, TestRunOptions,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
};
use integration_tests::{
    frames::{
        ETH_HLEN, ExtHeader, Frame, proto, sctp_chunk, sctp_chunk_type, sctp_init_chunk, tcp_flags,
    },
    netns::require_root,
};
use lbwitness::{
    capture,
    decode::{Event, decode},
};

const XDP_PASS: u32 = 2;
/// Without a context, BPF_PROG_TEST_RUN runs XDP on the loopback's rx queue.
const LOOPBACK_IFINDEX: u32 = 1;

const C4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const S4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const C6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const S6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// One freshly loaded copy of the kernel programs, with its own maps.
struct Prog {
    ebpf: Ebpf,
}

impl Prog {
    fn new() -> Self {
        Self::with_ring(64 * 1024)
    }

    fn with_ring(ring_bytes: u32) -> Self {
        Self::load(ring_bytes, true)
    }

    fn load(ring_bytes: u32, lifecycle_events: bool) -> Self {
        require_root();
        let ebpf = capture::load(4096, ring_bytes, lifecycle_events).expect("load the XDP program");
        Self { ebpf }
    }

    /// Runs the program once on `frame`; it must pass the frame.
    fn run(&mut self, frame: &[u8]) {
        self.run_n(frame, 1);
    }

    fn run_n(&mut self, frame: &[u8], repeat: u32) {
        let prog = capture::xdp_program(&mut self.ebpf).expect("program");
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(
            result.return_value, XDP_PASS,
            "capture must never change traffic"
        );
    }

    fn flows(&self) -> Vec<(FlowKey, FlowStats)> {
        let map: BpfHashMap<&MapData, FlowKey, FlowStats> =
            BpfHashMap::try_from(self.ebpf.map(names::FLOW_MAP).expect("flow map")).expect("typed");
        map.iter().map(|r| r.expect("flow entry")).collect()
    }

    fn only_flow(&self) -> (FlowKey, FlowStats) {
        let flows = self.flows();
        assert_eq!(flows.len(), 1, "expected exactly one flow: {flows:?}");
        flows[0]
    }

    fn events(&mut self) -> Vec<FlowEvent> {
        let mut ring =
            RingBuf::try_from(self.ebpf.map_mut(names::EVENTS_MAP).expect("ring")).expect("typed");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            match decode(&item).expect("decodable event") {
                Event::Flow(ev) => out.push(ev),
            }
        }
        out
    }

    fn counter(&self, counter: Counter) -> u64 {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(names::COUNTERS_MAP).expect("counters"))
                .expect("typed");
        map.get(&(counter as u32), 0).expect("counter").iter().sum()
    }

    /// Every counter except `except` is zero. `flows_inserted` counts
    /// successes, not problems; tests that care check it themselves.
    fn assert_counters_zero_except(&self, except: &[Counter]) {
        for c in Counter::ALL {
            if !except.contains(&c) && c != Counter::FlowsInserted {
                assert_eq!(self.counter(c), 0, "counter {} should be 0", c.name());
            }
        }
    }
}

fn addr(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// Checks the key against what the frame says, field by field.
fn assert_key(key: &FlowKey, frame: &Frame) {
    let (src, dst) = match frame.ip_version() {
        Some(4) => (IpAddr::V4(C4), IpAddr::V4(S4)),
        _ => (IpAddr::V6(C6), IpAddr::V6(S6)),
    };
    assert_eq!(key.src_addr, addr(src));
    assert_eq!(key.dst_addr, addr(dst));
    assert_eq!(key.protocol, frame.protocol().expect("protocol"));
    assert_eq!((key.src_port, key.dst_port), frame.ports());
    assert_eq!(key.ifindex, LOOPBACK_IFINDEX);
    assert_eq!(key._pad, 0);
}

#[test]
fn tcp_lifecycle_counts_and_events() {
    let mut p = Prog::new();
    let syn = Frame::ipv4(C4, S4).tcp(40000, 80).tcp_flags(tcp_flags::SYN);
    p.run(&syn.build());
    let (key, stats) = p.only_flow();
    assert_key(&key, &syn);
    assert_eq!(key.ip_version, IP_V4);
    assert_eq!((key.vlan_depth, key.vlan_outer, key.vlan_inner), (0, 0, 0));
    assert_eq!(stats.packets, 1);
    assert_eq!(stats.bytes, u64::from(syn.ip_len().unwrap()));
    assert_eq!(stats.first_seen_ns, stats.last_seen_ns);
    let events = p.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reasons, reason::NEW | reason::SYN);
    assert_eq!(events[0].key, key);
    assert_eq!(events[0].ip_len, syn.ip_len().unwrap());
    assert_eq!(events[0].header.ktime_ns, stats.first_seen_ns);

    // Mid-flow data: counted, no event.
    let data = Frame::ipv4(C4, S4)
        .tcp(40000, 80)
        .tcp_flags(tcp_flags::ACK | tcp_flags::PSH)
        .payload_len(1000);
    p.run_n(&data.build(), 10);
    assert!(p.events().is_empty(), "mid-flow packets send no events");

    let fin = Frame::ipv4(C4, S4)
        .tcp(40000, 80)
        .tcp_flags(tcp_flags::FIN | tcp_flags::ACK);
    let rst = Frame::ipv4(C4, S4).tcp(40000, 80).tcp_flags(tcp_flags::RST);
    p.run(&fin.build());
    p.run(&rst.build());
    let events = p.events();
    let reasons: Vec<u32> = events.iter().map(|e| e.reasons).collect();
    assert_eq!(reasons, vec![reason::FIN, reason::RST]);

    let (_, stats) = p.only_flow();
    assert_eq!(stats.packets, 13);
    let expect_bytes = syn.ip_len().unwrap()
        + 10 * data.ip_len().unwrap()
        + fin.ip_len().unwrap()
        + rst.ip_len().unwrap();
    assert_eq!(stats.bytes, u64::from(expect_bytes));
    let all = tcp_flags::SYN | tcp_flags::ACK | tcp_flags::PSH | tcp_flags::FIN | tcp_flags::RST;
    assert_eq!(stats.tcp_flags, u32::from(all));
    assert!(stats.last_seen_ns >= stats.first_seen_ns);
    p.assert_counters_zero_except(&[]);
    assert_eq!(p.counter(Counter::FlowsInserted), 1, "one flow, one insert");
}

/// Without lifecycle records the program sends no event at all, so a full
/// ring cannot lose one, and it still counts every flow it inserts (what
/// the agent's eviction count is built on).
#[test]
fn without_lifecycle_events_nothing_is_sent_and_inserts_are_counted() {
    let mut p = Prog::load(64 * 1024, false);
    for port in 1..=3 {
        let syn = Frame::ipv4(C4, S4).tcp(port, 80).tcp_flags(tcp_flags::SYN);
        p.run_n(&syn.build(), 2);
        let fin = Frame::ipv4(C4, S4).tcp(port, 80).tcp_flags(tcp_flags::FIN);
        p.run(&fin.build());
    }
    assert_eq!(p.flows().len(), 3);
    assert!(p.events().is_empty(), "no lifecycle events are sent");
    assert_eq!(p.counter(Counter::FlowsInserted), 3);
    p.assert_counters_zero_except(&[]);
}

#[test]
fn ns_flag_is_kept() {
    let mut p = Prog::new();
    p.run(
        &Frame::ipv4(C4, S4)
            .tcp(1, 2)
            .tcp_flags(tcp_flags::NS | tcp_flags::ACK)
            .build(),
    );
    let (_, stats) = p.only_flow();
    assert_eq!(stats.tcp_flags, u32::from(tcp_flags::NS | tcp_flags::ACK));
}

#[test]
fn each_transport_is_one_flow_with_exact_fields() {
    let cases = [
        Frame::ipv4(C4, S4).udp(5353, 53).payload_len(30),
        Frame::ipv4(C4, S4).icmpv4(8, 0).payload_len(56),
        Frame::ipv4(C4, S4).other(proto::GRE).payload_len(20),
        Frame::ipv6(C6, S6)
            .tcp(40000, 443)
            .tcp_flags(tcp_flags::ACK)
            .payload_len(100),
        Frame::ipv6(C6, S6).udp(1000, 2000).payload_len(8),
        Frame::ipv6(C6, S6).icmpv6(128, 0).payload_len(8),
        Frame::ipv4(C4, S4).udp(1, 2).pad(),
    ];
    for frame in cases {
        let mut p = Prog::new();
        p.run(&frame.build());
        let (key, stats) = p.only_flow();
        assert_key(&key, &frame);
        assert_eq!(stats.packets, 1, "{frame:?}");
        // Bytes are the IP length, never the (padded) frame length.
        assert_eq!(stats.bytes, u64::from(frame.ip_len().unwrap()), "{frame:?}");
        assert_eq!(p.events().len(), 1);
        p.assert_counters_zero_except(&[]);
    }
}

#[test]
fn ipv4_options_are_skipped() {
    for words in 1..=10u8 {
        let mut p = Prog::new();
        let frame = Frame::ipv4(C4, S4)
            .ipv4_options(vec![1; usize::from(words) * 4])
            .tcp(1234, 80)
            .tcp_flags(tcp_flags::SYN);
        p.run(&frame.build());
        let (key, stats) = p.only_flow();
        assert_key(&key, &frame);
        assert_eq!(stats.bytes, u64::from(frame.ip_len().unwrap()));
    }
}

#[test]
fn ipv6_extension_headers_are_followed() {
    let chains: Vec<Vec<ExtHeader>> = vec![
        vec![ExtHeader::HopByHop(vec![])],
        vec![ExtHeader::Routing {
            routing_type: 4,
            segments_left: 0,
            data: vec![0; 20],
        }],
        vec![ExtHeader::DestOpts(vec![])],
        vec![ExtHeader::Fragment {
            offset: 0,
            more: true,
            id: 7,
        }],
        vec![
            ExtHeader::HopByHop(vec![]),
            ExtHeader::DestOpts(vec![]),
            ExtHeader::Routing {
                routing_type: 4,
                segments_left: 1,
                data: vec![0; 36],
            },
            ExtHeader::Fragment {
                offset: 0,
                more: false,
                id: 1,
            },
            ExtHeader::DestOpts(vec![]),
        ],
    ];
    for chain in chains {
        let mut p = Prog::new();
        let mut frame = Frame::ipv6(C6, S6);
        for ext in chain.clone() {
            frame = frame.ext(ext);
        }
        let frame = frame.udp(1000, 2000).payload_len(10);
        p.run(&frame.build());
        let (key, stats) = p.only_flow();
        assert_key(&key, &frame);
        assert_eq!(key.ip_version, IP_V6);
        assert_eq!(key.protocol, proto::UDP, "{chain:?}");
        assert_eq!(stats.bytes, u64::from(frame.ip_len().unwrap()));
        p.assert_counters_zero_except(&[]);
    }
}

/// `n` extension headers of every kind the parser follows, in turn.
fn ext_chain(n: usize) -> Frame {
    let mut frame = Frame::ipv6(C6, S6);
    for i in 0..n {
        frame = frame.ext(match i % 4 {
            0 => ExtHeader::HopByHop(vec![]),
            1 => ExtHeader::DestOpts(vec![0; 6]),
            2 => ExtHeader::Routing {
                routing_type: 4,
                segments_left: 0,
                data: vec![0; 4],
            },
            _ => ExtHeader::Fragment {
                offset: 0,
                more: true,
                id: i as u32,
            },
        });
    }
    frame
}

/// The bound both ways: up to 8 extension headers are followed (the README
/// promises 8), a ninth or more is counted as too deep.
#[test]
fn extension_header_bound_is_eight() {
    for n in 0..=8 {
        let mut p = Prog::new();
        let frame = ext_chain(n).udp(1000, 2000).payload_len(4);
        p.run(&frame.build());
        let (key, stats) = p.only_flow();
        assert_key(&key, &frame);
        assert_eq!(
            stats.bytes,
            u64::from(frame.ip_len().unwrap()),
            "{n} headers"
        );
        p.assert_counters_zero_except(&[]);
    }
    for n in 9..=10 {
        let mut p = Prog::new();
        p.run(&ext_chain(n).udp(1, 2).build());
        assert!(p.flows().is_empty(), "{n} headers made a flow");
        assert_eq!(p.counter(Counter::Ipv6ExtTooDeep), 1, "{n} headers");
        p.assert_counters_zero_except(&[Counter::Ipv6ExtTooDeep]);
    }
    // Eight destination-options headers, then SCTP: ports still parsed.
    let mut frame = Frame::ipv6(C6, S6);
    for _ in 0..8 {
        frame = frame.ext(ExtHeader::DestOpts(vec![]));
    }
    let frame = frame.sctp(7, 8).payload(sctp_init_chunk(1));
    let mut p = Prog::new();
    p.run(&frame.build());
    assert_key(&p.only_flow().0, &frame);
}

/// SCTP ports sit where TCP's and UDP's do: two associations between the
/// same hosts are two flows, each with its own ports.
#[test]
fn sctp_associations_are_flows_with_ports() {
    let mut p = Prog::new();
    let a = Frame::ipv4(C4, S4)
        .sctp(5000, 36412)
        .payload(sctp_init_chunk(1));
    let b = Frame::ipv4(C4, S4)
        .sctp(5001, 36412)
        .payload(sctp_init_chunk(2));
    let data = Frame::ipv4(C4, S4)
        .sctp(5000, 36412)
        .sctp_verification_tag(7)
        .payload(sctp_chunk(sctp_chunk_type::DATA, 3, &[0; 100]));
    p.run(&a.build());
    p.run(&b.build());
    p.run_n(&data.build(), 3);
    let mut flows = p.flows();
    flows.sort_by_key(|(k, _)| k.src_port);
    assert_eq!(flows.len(), 2, "{flows:?}");
    assert_key(&flows[0].0, &a);
    assert_key(&flows[1].0, &b);
    assert_eq!(flows[0].1.packets, 4);
    assert_eq!(
        flows[0].1.bytes,
        u64::from(a.ip_len().unwrap() + 3 * data.ip_len().unwrap())
    );
    assert_eq!(flows[0].1.tcp_flags, 0);
    assert_eq!(flows[1].1.packets, 1);
    assert_eq!(p.events().len(), 2, "one flow-start each");
    p.assert_counters_zero_except(&[]);

    let mut p = Prog::new();
    let v6 = Frame::ipv6(C6, S6)
        .vlan(10)
        .sctp(2905, 2905)
        .payload(sctp_init_chunk(3));
    p.run(&v6.build());
    assert_key(&p.only_flow().0, &v6);
    p.assert_counters_zero_except(&[]);
}

#[test]
fn vlan_tags_are_parsed_up_to_two() {
    let single = Frame::ipv4(C4, S4)
        .vlan(100)
        .tcp(1, 80)
        .tcp_flags(tcp_flags::SYN);
    let qinq = Frame::ipv6(C6, S6).vlan_ad(200).vlan(100).udp(1, 53);
    let q_in_q = Frame::ipv4(C4, S4).vlan(300).vlan(4094).udp(1, 53);
    for (frame, depth, outer, inner) in [
        (single, 1, 100, 0),
        (qinq, 2, 200, 100),
        (q_in_q, 2, 300, 4094),
    ] {
        let mut p = Prog::new();
        p.run(&frame.build());
        let (key, stats) = p.only_flow();
        assert_key(&key, &frame);
        assert_eq!(
            (key.vlan_depth, key.vlan_outer, key.vlan_inner),
            (depth, outer, inner)
        );
        assert_eq!(stats.bytes, u64::from(frame.ip_len().unwrap()));
    }
    let mut p = Prog::new();
    p.run(
        &Frame::ipv4(C4, S4)
            .vlan_ad(1)
            .vlan(2)
            .vlan(3)
            .udp(1, 2)
            .build(),
    );
    assert!(p.flows().is_empty());
    p.assert_counters_zero_except(&[Counter::VlanTooDeep]);
    assert_eq!(p.counter(Counter::VlanTooDeep), 1);
}

#[test]
fn vlan_priority_bits_are_not_part_of_the_id() {
    let mut p = Prog::new();
    p.run(
        &Frame::ipv4(C4, S4)
            .vlan_tag(0x8100, 42, 7)
            .udp(1, 2)
            .build(),
    );
    assert_eq!(p.only_flow().0.vlan_outer, 42);
}

#[test]
fn fragments() {
    // First fragments carry the transport header: a normal flow.
    let mut p = Prog::new();
    let first = Frame::ipv4(C4, S4).mf().udp(1, 2).payload_len(100);
    p.run(&first.build());
    assert_key(&p.only_flow().0, &first);

    // Non-first fragments: counted, never a flow.
    let mut p = Prog::new();
    p.run(
        &Frame::ipv4(C4, S4)
            .frag_offset(185)
            .udp(1, 2)
            .payload_len(100)
            .build(),
    );
    p.run(
        &Frame::ipv4(C4, S4)
            .mf()
            .frag_offset(1)
            .other(proto::UDP)
            .payload_len(100)
            .build(),
    );
    p.run(
        &Frame::ipv6(C6, S6)
            .ext(ExtHeader::Fragment {
                offset: 100,
                more: false,
                id: 9,
            })
            .udp(1, 2)
            .build(),
    );
    assert!(p.flows().is_empty());
    assert_eq!(p.counter(Counter::NonFirstFragment), 3);
    p.assert_counters_zero_except(&[Counter::NonFirstFragment]);
}

#[test]
fn non_ip_is_counted_not_recorded() {
    let mut p = Prog::new();
    p.run(&Frame::non_ip(0x0806, vec![0; 28]).build());
    assert!(p.flows().is_empty() && p.events().is_empty());
    assert_eq!(p.counter(Counter::NonIp), 1);
}

/// Cuts a frame at every length short of complete: each cut is counted under
/// the reason its position implies, and none becomes a flow.
#[test]
fn every_truncation_is_counted_by_reason() {
    let frames: Vec<(Frame, &dyn Fn(usize) -> Counter)> = vec![
        (
            Frame::ipv4(C4, S4).tcp(1, 2).payload_len(10),
            &|cut| match cut {
                14..34 => Counter::MalformedIpv4,
                _ => Counter::MalformedIpv4Length,
            },
        ),
        (
            Frame::ipv4(C4, S4)
                .vlan_ad(5)
                .vlan(6)
                .udp(1, 2)
                .payload_len(4),
            &|cut| match cut {
                14..22 => Counter::MalformedVlan,
                22..42 => Counter::MalformedIpv4,
                _ => Counter::MalformedIpv4Length,
            },
        ),
        (
            Frame::ipv6(C6, S6)
                .ext(ExtHeader::HopByHop(vec![]))
                .icmpv6(128, 0),
            &|_| Counter::MalformedIpv6,
        ),
        (
            Frame::ipv4(C4, S4).sctp(1, 2).payload(sctp_init_chunk(1)),
            &|cut| match cut {
                14..34 => Counter::MalformedIpv4,
                _ => Counter::MalformedIpv4Length,
            },
        ),
    ];
    for (frame, expected) in frames {
        let bytes = frame.build();
        // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet
        // header (EINVAL), as drivers drop such runts before XDP; the
        // program still checks, and counts `malformed_ethernet`.
        for cut in ETH_HLEN..bytes.len() {
            let mut p = Prog::new();
            p.run(&bytes[..cut]);
            assert!(p.flows().is_empty(), "cut {cut} of {frame:?} made a flow");
            let want = expected(cut);
            assert_eq!(
                p.counter(want),
                1,
                "cut {cut} of {frame:?}: {}",
                want.name()
            );
            p.assert_counters_zero_except(&[want]);
        }
    }
}

/// Headers that lie about their own sizes.
#[test]
fn malformed_headers_are_counted_by_reason() {
    let cases: Vec<(Frame, Counter)> = vec![
        (
            Frame::ipv4(C4, S4).ip_version_nibble(5).udp(1, 2),
            Counter::MalformedIpv4,
        ),
        (
            Frame::ipv4(C4, S4).ipv4_ihl(4).udp(1, 2),
            Counter::MalformedIpv4,
        ),
        (
            Frame::ipv4(C4, S4).ipv4_total_len(19).udp(1, 2),
            Counter::MalformedIpv4Length,
        ),
        (
            Frame::ipv4(C4, S4).ipv4_total_len(1500).udp(1, 2),
            Counter::MalformedIpv4Length,
        ),
        // IHL says 60 bytes of header but the datagram is shorter.
        (
            Frame::ipv4(C4, S4).ipv4_ihl(15).udp(1, 2),
            Counter::MalformedIpv4Length,
        ),
        (
            Frame::ipv6(C6, S6).ip_version_nibble(4).udp(1, 2),
            Counter::MalformedIpv6,
        ),
        (
            Frame::ipv6(C6, S6).ipv6_payload_len(2000).udp(1, 2),
            Counter::MalformedIpv6,
        ),
        (
            Frame::ipv4(C4, S4).tcp(1, 2).tcp_data_offset(4),
            Counter::MalformedTcp,
        ),
        // Data offset beyond the IP datagram.
        (
            Frame::ipv4(C4, S4).tcp(1, 2).tcp_data_offset(15),
            Counter::MalformedTcp,
        ),
        // The IP datagram ends inside the transport header (frame padded).
        (
            Frame::ipv4(C4, S4).tcp(1, 2).ipv4_total_len(30).pad(),
            Counter::MalformedTcp,
        ),
        (
            Frame::ipv4(C4, S4).udp(1, 2).ipv4_total_len(24).pad(),
            Counter::MalformedUdp,
        ),
        (
            Frame::ipv4(C4, S4).icmpv4(8, 0).ipv4_total_len(24).pad(),
            Counter::MalformedIcmp,
        ),
        (
            Frame::ipv6(C6, S6).icmpv6(128, 0).ipv6_payload_len(2).pad(),
            Counter::MalformedIcmp,
        ),
        // The datagram ends inside SCTP's 12-byte common header.
        (
            Frame::ipv4(C4, S4).sctp(1, 2).ipv4_total_len(20 + 8).pad(),
            Counter::MalformedSctp,
        ),
        (
            Frame::ipv6(C6, S6).sctp(1, 2).ipv6_payload_len(11).pad(),
            Counter::MalformedSctp,
        ),
        (
            // A hop-by-hop header claiming 2 KiB.
            Frame::ipv6(C6, S6)
                .ext(ExtHeader::Raw {
                    header_type: 0,
                    bytes: vec![0, 255, 0, 0, 0, 0, 0, 0],
                })
                .udp(1, 2),
            Counter::MalformedIpv6Ext,
        ),
    ];
    for (frame, want) in cases {
        let mut p = Prog::new();
        p.run(&frame.build());
        assert!(p.flows().is_empty(), "{frame:?} made a flow");
        assert_eq!(p.counter(want), 1, "{frame:?}: {}", want.name());
        p.assert_counters_zero_except(&[want]);
    }
}

/// A full ring buffer loses events, and every lost one is counted: what the
/// reader gets plus what the kernel counted equals what was sent.
#[test]
fn ring_buffer_overflow_is_counted_exactly() {
    let mut p = Prog::with_ring(4096);
    let sent = 500u32;
    for port in 0..sent {
        p.run(&Frame::ipv4(C4, S4).udp(10_000 + port as u16, 53).build());
    }
    let received = p.events().len() as u64;
    let lost = p.counter(Counter::RingbufReserveFailed);
    assert!(lost > 0, "a 4 KiB ring must overflow with {sent} events");
    assert_eq!(received + lost, u64::from(sent));
    assert_eq!(p.flows().len(), sent as usize);
}
