//! The agent on a veth in a network namespace, with real TCP, UDP, ICMP and
//! IPv6 traffic from the kernel stack plus injected VLAN-tagged and SCTP
//! frames.
//! Oracles from outside the project: tshark's dissection of a capture of the
//! same packets, and Community IDs from the reference Python implementation
//! (`communityid` on PyPI). Needs root.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use integration_tests::{
    agent::Agent,
    flow::{FlowCount, FlowTuple},
    frames::{Frame, sctp_chunk, sctp_chunk_type, sctp_init_chunk, tcp_flags},
    inject::RawSender,
    netns::{
        DEFAULT_A_V4, DEFAULT_A_V6, NetNs, VethPair, disable_offloads, in_netns, require_root,
    },
    tshark::Capture,
};
use serde_json::Value;

const LB_V4: [u8; 4] = [192, 0, 2, 2];

fn lb_v6() -> Ipv6Addr {
    "2001:db8::2".parse().expect("address")
}

/// Echo servers for TCP and UDP on v4 and v6, in the load balancer's namespace.
fn start_servers(lb: &NetNs) {
    let (t4, t6, u4, u6) = in_netns(lb, || {
        (
            TcpListener::bind("192.0.2.2:8080").expect("bind"),
            TcpListener::bind("[2001:db8::2]:8080").expect("bind"),
            UdpSocket::bind("192.0.2.2:5353").expect("bind"),
            UdpSocket::bind("[2001:db8::2]:5353").expect("bind"),
        )
    });
    for listener in [t4, t6] {
        thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    for socket in [u4, u6] {
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], peer);
            }
        });
    }
}

/// Real traffic from the client's kernel stack.
fn client_traffic(client: &NetNs) {
    in_netns(client, || {
        let targets: [SocketAddr; 2] = [(LB_V4, 8080).into(), (lb_v6(), 8080).into()];
        for (i, target) in targets.iter().cycle().take(6).enumerate() {
            let mut s =
                TcpStream::connect_timeout(target, Duration::from_secs(2)).expect("connect");
            let payload = vec![b'x'; 100 + 700 * i];
            s.write_all(&payload).expect("send");
            let mut got = vec![0u8; payload.len()];
            s.read_exact(&mut got).expect("echo");
        }
        let u4 = UdpSocket::bind("192.0.2.1:0").expect("bind");
        let u6 = UdpSocket::bind("[2001:db8::1]:0").expect("bind");
        u4.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        u6.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        for i in 0..20usize {
            u4.send_to(
                &vec![1u8; 10 + i * 50],
                (std::net::Ipv4Addr::from(LB_V4), 5353),
            )
            .expect("send");
            let _ = u4.recv_from(&mut buf);
        }
        for i in 0..10usize {
            u6.send_to(&vec![2u8; 30 + i * 70], (lb_v6(), 5353))
                .expect("send");
            let _ = u6.recv_from(&mut buf);
        }
    });
}

/// Frames the kernel stack cannot make here: VLAN-tagged (no 802.1Q devices
/// in this kernel), QinQ, and ICMP echo requests, injected on the client end.
fn injected_traffic(client: &NetNs, veth: &VethPair) {
    let sender = RawSender::open(Some(client), &veth.a.name).expect("raw socket");
    let base = || {
        Frame::ipv4(DEFAULT_A_V4, LB_V4)
            .src_mac(veth.a.mac)
            .dst_mac(veth.b.mac)
    };
    let mut frames = Vec::new();
    for i in 0..5 {
        frames.push(base().vlan(100).udp(40000, 53).payload_len(20 + i).build());
    }
    for i in 0..3 {
        frames.push(
            base()
                .vlan_ad(200)
                .vlan(300)
                .tcp(40001, 80)
                .tcp_flags(tcp_flags::SYN)
                .payload_len(i)
                .build(),
        );
    }
    for _ in 0..4 {
        frames.push(base().icmpv4(8, 0).payload_len(56).build());
    }
    let v6 = Frame::ipv6(DEFAULT_A_V6, lb_v6())
        .src_mac(veth.a.mac)
        .dst_mac(veth.b.mac)
        .vlan(42)
        .udp(40002, 5353)
        .payload_len(64)
        .build();
    frames.push(v6.clone());
    frames.push(v6);
    sender.send_all(&frames).expect("inject");
}

fn flag_bits(names: &Value) -> u16 {
    let bit = |n: &str| match n {
        "FIN" => tcp_flags::FIN,
        "SYN" => tcp_flags::SYN,
        "RST" => tcp_flags::RST,
        "PSH" => tcp_flags::PSH,
        "ACK" => tcp_flags::ACK,
        "URG" => tcp_flags::URG,
        "ECE" => tcp_flags::ECE,
        "CWR" => tcp_flags::CWR,
        "NS" => tcp_flags::NS,
        other => panic!("unknown TCP flag name {other}"),
    };
    names
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| bit(n.as_str().expect("flag name")))
                .fold(0, |x, y| x | y)
        })
        .unwrap_or(0)
}

/// The flow tuple of a record, in the oracle's terms.
fn tuple_of(r: &Value) -> FlowTuple {
    let ip = |v: &Value| v.as_str().expect("ip").parse::<IpAddr>().expect("ip");
    let port = |v: &Value| v.as_u64().map_or(0, |p| p as u16);
    let net = &r["network"];
    let protocol: u8 = net["iana_number"]
        .as_str()
        .expect("iana_number")
        .parse()
        .expect("number");
    let icmp = &r["lbwitness"]["icmp"];
    let (src_port, dst_port) = if icmp.is_object() {
        (port(&icmp["type"]), port(&icmp["code"]))
    } else {
        (port(&r["source"]["port"]), port(&r["destination"]["port"]))
    };
    let vlan = |v: &Value| v.as_str().map_or(0, |s| s.parse().expect("vlan id"));
    let outer = vlan(&net["vlan"]["id"]);
    let inner = vlan(&net["inner"]["vlan"]["id"]);
    FlowTuple {
        ip_version: if net["type"] == "ipv4" { 4 } else { 6 },
        src: ip(&r["source"]["ip"]),
        dst: ip(&r["destination"]["ip"]),
        protocol,
        src_port,
        dst_port,
        vlan_outer: outer,
        vlan_inner: inner,
        vlan_depth: u8::from(net.get("vlan").is_some()) + u8::from(net.get("inner").is_some()),
    }
}

/// Sums the agent's flow records per tuple (IPFIX deltas sum to totals).
fn agent_flows(records: &[Value]) -> BTreeMap<FlowTuple, FlowCount> {
    let mut flows: BTreeMap<FlowTuple, FlowCount> = BTreeMap::new();
    for r in records.iter().filter(|r| r["event"]["action"] == "flow") {
        let c = flows.entry(tuple_of(r)).or_default();
        c.packets += r["network"]["packets"].as_u64().expect("packets");
        c.bytes += r["network"]["bytes"].as_u64().expect("bytes");
        assert_eq!(
            r["source"]["bytes"], r["network"]["bytes"],
            "unidirectional flow"
        );
        c.tcp_flags |= flag_bits(&r["lbwitness"]["tcp_flags"]);
    }
    flows
}

/// Flows from the client's own unicast addresses: the traffic this test made.
/// (Link-local neighbour discovery may start before the agent attaches.)
fn ours(t: &FlowTuple) -> bool {
    t.src == IpAddr::V4(DEFAULT_A_V4) || t.src == IpAddr::V6(DEFAULT_A_V6)
}

/// Community IDs from the reference implementation, one per tuple.
fn reference_community_ids(tuples: &[FlowTuple]) -> Vec<String> {
    let script = "import sys, communityid\n\
        cid = communityid.CommunityID(seed=0)\n\
        for line in sys.stdin:\n\
        \x20   s, d, p, sp, dp = line.split()\n\
        \x20   p, sp, dp = int(p), int(sp), int(dp)\n\
        \x20   if p == 6: t = communityid.FlowTuple.make_tcp(s, d, sp, dp)\n\
        \x20   elif p == 17: t = communityid.FlowTuple.make_udp(s, d, sp, dp)\n\
        \x20   elif p == 132: t = communityid.FlowTuple.make_sctp(s, d, sp, dp)\n\
        \x20   elif p in (1, 58): t = communityid.FlowTuple(p, s, d, sp, dp)\n\
        \x20   else: t = communityid.FlowTuple(p, s, d)\n\
        \x20   print(cid.calc(t))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (with the communityid package: `cargo xtask setup` installs it)");
    let input: String = tuples
        .iter()
        .map(|t| {
            format!(
                "{} {} {} {} {}\n",
                t.src, t.dst, t.protocol, t.src_port, t.dst_port
            )
        })
        .collect();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "the communityid reference failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn flow_records_match_tshark_and_reference_community_ids() {
    require_root();
    let client = NetNs::new("trc");
    let lb = NetNs::new("trl");
    let veth = VethPair::with_default_addrs(&client, &lb);
    // Wire-level packets: no GRO/TSO aggregation on either side.
    disable_offloads(Some(&client), &veth.a.name).expect("offloads");
    disable_offloads(Some(&lb), &veth.b.name).expect("offloads");
    start_servers(&lb);

    let capture = Capture::start(&lb, &veth.b.name);
    let mut agent = Agent::start(&lb, &veth.b.name, &[]);
    client_traffic(&client);
    injected_traffic(&client, &veth);
    thread::sleep(Duration::from_millis(500));
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(
        exit.status.success(),
        "agent exit: {}\n{}",
        exit.status,
        agent.log_text()
    );
    let records = agent.records();
    let seen = capture.stop_and_dissect(&format!("eth.src == {}", veth.a.mac_string()));

    let expected: BTreeMap<_, _> = seen.flows.into_iter().filter(|(t, _)| ours(t)).collect();
    let got: BTreeMap<_, _> = agent_flows(&records)
        .into_iter()
        .filter(|(t, _)| ours(t))
        .collect();
    // 6 TCP + 2 UDP from the stack, 4 injected flows (VLAN UDP, QinQ TCP,
    // ICMP echo, VLAN v6 UDP); ICMP errors may add more.
    assert!(
        expected.len() >= 12,
        "tshark saw too few flows: {expected:#?}"
    );
    for (tuple, want) in &expected {
        let have = got
            .get(tuple)
            .unwrap_or_else(|| panic!("no record for {tuple}: {want:?}"));
        assert_eq!(
            (have.packets, have.bytes, have.tcp_flags),
            (want.packets, want.bytes, want.tcp_flags),
            "counts for {tuple}"
        );
    }
    let extra: Vec<_> = got.keys().filter(|t| !expected.contains_key(t)).collect();
    assert!(
        extra.is_empty(),
        "records for flows tshark never saw: {extra:?}"
    );
    assert!(
        expected
            .keys()
            .any(|t| t.vlan_depth == 2 && (t.vlan_outer, t.vlan_inner) == (200, 300))
    );
    assert!(
        expected
            .keys()
            .any(|t| t.vlan_depth == 1 && t.ip_version == 6 && t.vlan_outer == 42)
    );

    // Every flow and lifecycle record's Community ID matches the reference.
    assert_reference_community_ids(&records);

    // Lifecycle: every TCP connection from the stack began with a SYN record.
    let syns = records
        .iter()
        .filter(|r| r["event"]["action"] == "tcp-syn" && r["destination"]["port"] == 8080)
        .count();
    assert_eq!(syns, 6);
    // Sequence numbers are 1..=n with no hole.
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["event"]["sequence"].as_u64(), Some(i as u64 + 1));
    }
    let last = records
        .iter()
        .rev()
        .find(|r| r["event"]["action"] == "capture-counters")
        .expect("a final counters record");
    let kernel = &last["lbwitness"]["kernel"];
    for (name, v) in kernel.as_object().expect("kernel counters") {
        if name != "non_ip" && name != "flows_inserted" {
            assert_eq!(v["total"], 0, "kernel counter {name}");
        }
    }
    // Every flow the kernel inserted ended in exactly one final report:
    // the identity the eviction count rests on, with nothing evicted.
    let final_reports = records
        .iter()
        .filter(|r| r["event"]["action"] == "flow" && r["event"]["reason"] != "active-timeout")
        .count() as u64;
    assert_eq!(kernel["flows_inserted"]["total"], final_reports);
}

/// Every record with network fields has the reference Community ID.
fn assert_reference_community_ids(records: &[Value]) {
    let flows: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("network").is_some())
        .collect();
    let tuples: Vec<FlowTuple> = flows.iter().map(|r| tuple_of(r)).collect();
    let reference = reference_community_ids(&tuples);
    assert_eq!(reference.len(), flows.len());
    for ((r, t), want) in flows.iter().zip(&tuples).zip(&reference) {
        assert_eq!(
            r["network"]["community_id"].as_str(),
            Some(want.as_str()),
            "{t}"
        );
    }
}

/// SCTP associations injected on the wire (no SCTP stack is needed to
/// send them): each association is its own flow with its ports, as tshark
/// dissects them, and its Community ID is the reference's.
#[test]
fn sctp_associations_are_flows_with_ports() {
    require_root();
    let client = NetNs::new("tsc");
    let lb = NetNs::new("tsl");
    let veth = VethPair::with_default_addrs(&client, &lb);
    disable_offloads(Some(&client), &veth.a.name).expect("offloads");
    disable_offloads(Some(&lb), &veth.b.name).expect("offloads");

    let capture = Capture::start(&lb, &veth.b.name);
    let mut agent = Agent::start(&lb, &veth.b.name, &[]);
    let v4 = |sport: u16| {
        Frame::ipv4(DEFAULT_A_V4, LB_V4)
            .src_mac(veth.a.mac)
            .dst_mac(veth.b.mac)
            .sctp(sport, 36412)
    };
    let data = |frame: Frame, tag: u32, len: usize| {
        frame.sctp_verification_tag(tag).payload(sctp_chunk(
            sctp_chunk_type::DATA,
            3,
            &vec![7; 12 + len],
        ))
    };
    let mut frames = vec![
        v4(5000).payload(sctp_init_chunk(11)).build(),
        v4(5001).payload(sctp_init_chunk(12)).build(),
    ];
    for i in 0..3 {
        frames.push(data(v4(5000), 11, 100 * i).build());
    }
    frames.push(data(v4(5001), 12, 40).build());
    let v6 = Frame::ipv6(DEFAULT_A_V6, lb_v6())
        .src_mac(veth.a.mac)
        .dst_mac(veth.b.mac)
        .sctp(2905, 2905);
    frames.push(v6.clone().payload(sctp_init_chunk(13)).build());
    frames.push(data(v6, 13, 8).build());
    RawSender::open(Some(&client), &veth.a.name)
        .expect("raw socket")
        .send_all(&frames)
        .expect("inject");
    thread::sleep(Duration::from_millis(500));
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(
        exit.status.success(),
        "agent exit: {}\n{}",
        exit.status,
        agent.log_text()
    );
    let records = agent.records();
    let seen = capture.stop_and_dissect(&format!("eth.src == {}", veth.a.mac_string()));

    let sctp = |t: &FlowTuple| ours(t) && t.protocol == 132;
    let expected: BTreeMap<_, _> = seen.flows.into_iter().filter(|(t, _)| sctp(t)).collect();
    let got: BTreeMap<_, _> = agent_flows(&records)
        .into_iter()
        .filter(|(t, _)| sctp(t))
        .collect();
    let ports: Vec<(u16, u16)> = got.keys().map(|t| (t.src_port, t.dst_port)).collect();
    assert_eq!(
        ports,
        [(5000, 36412), (5001, 36412), (2905, 2905)],
        "one flow per association: {got:#?}"
    );
    assert_eq!(got, expected, "the agent's SCTP flows against tshark's");
    assert_eq!(got.values().map(|c| c.packets).sum::<u64>(), 8);
    assert_reference_community_ids(&records);
    let last = records
        .iter()
        .rev()
        .find(|r| r["event"]["action"] == "capture-counters")
        .expect("a final counters record");
    assert_eq!(last["lbwitness"]["kernel"]["malformed_sctp"]["total"], 0);
}
