//! Lifecycle of the real `lbwitness` binary. Every agent runs inside a test
//! network namespace on the load-balancer end of a test veth pair, never on
//! a host interface, and all traffic stays between the test's namespaces.
//!
//! * Clean shutdown on SIGTERM and on SIGINT: exit 0 within 5 s, XDP
//!   detached, final flow records with the right 5-tuples and counts, a
//!   `capture-counters` record, then `agent-stop` and the final signed
//!   checkpoint.
//! * SIGKILL: the kernel drops the bpf_link with the process, and a restart
//!   attaches and records again (three rounds).
//! * An interface that already has an XDP program (another lbwitness, or a
//!   foreign program attached the legacy netlink way, as `ip link` does) is
//!   refused in every `--xdp-mode`, and that program is left in place.
//! * Start-up errors (unknown interface, no privileges, unwritable output,
//!   bad config files, no interface at all): non-zero exit, a message naming
//!   the culprit, nothing attached.
//! * Export while running: idle timeout, end of a closed TCP flow, and
//!   active-timeout interim records that partition a flow's packets.
//!
//! Needs root: run with `cargo test --release -p integration-tests --test
//! agent_lifecycle` as root.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{
        fd::{AsFd as _, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::process::ExitStatusExt,
    },
    process::Stdio,
    time::Duration,
};

use integration_tests::{
    Scratch,
    agent::{Agent, binary, run_to_exit},
    find_program,
    lab::Lab,
    netns::{DEFAULT_A_V4, DEFAULT_A_V6, DEFAULT_B_V4, DEFAULT_B_V6, NetNs, in_netns},
    wait_for,
};
use serde_json::Value;

/// Socket timeouts: traffic between two local namespaces never takes long.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The agent's shutdown promise.
const STOP_BUDGET: Duration = Duration::from_secs(5);
/// IPv4 + UDP headers, and IPv6 + UDP headers: the agent counts IP bytes.
const UDP4_OVERHEAD: u64 = 20 + 8;
const UDP6_OVERHEAD: u64 = 40 + 8;
const XDP_MODES: [&str; 3] = ["auto", "native", "generic"];
/// `ip -j link` XDP attach mode of generic (skb) XDP.
const XDP_ATTACHED_SKB: u64 = 2;

// ---------------------------------------------------------------------------
// Setup

// ---------------------------------------------------------------------------
// Traffic (real sockets, client namespace to lb namespace)

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((DEFAULT_B_V4, port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::from((DEFAULT_B_V6, port))
}

/// One TCP connection from the client to `server` (listening in the lb
/// namespace): the client sends `payload`, half-closes, reads the echo to
/// EOF and closes, so both FINs are exchanged. Returns the client's address.
fn tcp_exchange(lab: &Lab, server: SocketAddr, payload: &[u8]) -> SocketAddr {
    let listener = in_netns(&lab.lb, || TcpListener::bind(server)).expect("bind the TCP server");
    let echo = std::thread::spawn(move || -> io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf)?;
        conn.write_all(&buf)
    });
    let mut stream = in_netns(&lab.client, || {
        TcpStream::connect_timeout(&server, IO_TIMEOUT)
    })
    .unwrap_or_else(|e| panic!("connect to {server}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(payload).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, payload, "the TCP echo came back wrong");
    echo.join().expect("echo thread").expect("echo server");
    stream.local_addr().unwrap()
}

/// Sends `count` datagrams of `payload` from one client socket to `server`
/// (bound in the lb namespace), `gap` apart, checking each arrives. Returns
/// the client's address.
fn udp_flow(
    lab: &Lab,
    server: SocketAddr,
    count: usize,
    payload: &[u8],
    gap: Duration,
) -> SocketAddr {
    let rx = in_netns(&lab.lb, || UdpSocket::bind(server)).expect("bind the UDP server");
    rx.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap();
    let tx = in_netns(&lab.client, || UdpSocket::bind(any)).expect("bind the UDP client");
    let mut buf = vec![0u8; payload.len() + 1];
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(gap);
        }
        tx.send_to(payload, server).unwrap();
        let (n, from) = rx
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} to {server} did not arrive: {e}"));
        assert_eq!(&buf[..n], payload);
        assert_eq!(from.port(), tx.local_addr().unwrap().port());
    }
    let mut client = tx.local_addr().unwrap();
    if server.is_ipv4() {
        client.set_ip(IpAddr::V4(DEFAULT_A_V4));
    } else {
        client.set_ip(IpAddr::V6(DEFAULT_A_V6));
    }
    client
}

// ---------------------------------------------------------------------------
// Records

fn action(r: &Value) -> &str {
    r["event"]["action"].as_str().unwrap_or_default()
}

fn reason(r: &Value) -> &str {
    r["event"]["reason"].as_str().unwrap_or_default()
}

fn event_types(r: &Value) -> Vec<&str> {
    r["event"]["type"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn packets(r: &Value) -> u64 {
    r["network"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no network.packets in {r}"))
}

fn bytes(r: &Value) -> u64 {
    r["network"]["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no network.bytes in {r}"))
}

fn endpoint_is(e: &Value, addr: SocketAddr) -> bool {
    e["ip"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(addr.ip())
        && e["port"].as_u64() == Some(u64::from(addr.port()))
}

/// Flow records (`event.action == "flow"`) of one 5-tuple, in output order.
fn flows_of<'a>(
    records: &'a [Value],
    transport: &str,
    src: SocketAddr,
    dst: SocketAddr,
) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| {
            action(r) == "flow"
                && r["network"]["transport"] == transport
                && endpoint_is(&r["source"], src)
                && endpoint_is(&r["destination"], dst)
        })
        .collect()
}

/// The records minus counters, one per line, for failure messages.
fn dump(records: &[Value]) -> String {
    records
        .iter()
        .filter(|r| action(r) != "capture-counters")
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts `src -> dst` has exactly one record, final, with `packets` and
/// `bytes` (when given), on `iface`; returns it.
fn assert_one_final_flow<'a>(
    records: &'a [Value],
    transport: &str,
    (src, dst): (SocketAddr, SocketAddr),
    reasons: &[&str],
    iface: &str,
) -> &'a Value {
    let flows = flows_of(records, transport, src, dst);
    assert_eq!(
        flows.len(),
        1,
        "expected one {transport} flow record {src} -> {dst}:\n{}",
        dump(records)
    );
    let r = flows[0];
    assert!(
        reasons.contains(&reason(r)),
        "reason not in {reasons:?}: {r}"
    );
    assert!(event_types(r).contains(&"end"), "not a final record: {r}");
    assert_eq!(r["observer"]["ingress"]["interface"]["name"], iface, "{r}");
    r
}

// ---------------------------------------------------------------------------
// Agent runs

/// Stops `agent` with `signal` and checks a clean stop: exit 0 within the
/// budget, XDP detached, sequence numbers without holes, counters last.
/// Returns the records.
fn stop_cleanly(lab: &Lab, agent: &mut Agent, signal: libc::c_int) -> Vec<Value> {
    let exit = agent.stop_with(signal);
    let log = agent.log_text();
    assert!(
        exit.status.success(),
        "signal {signal}: the agent exited with {}:\n{log}",
        exit.status
    );
    assert!(
        exit.took < STOP_BUDGET,
        "signal {signal}: the agent took {:?} to stop:\n{log}",
        exit.took
    );
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(
        !lab.has_xdp(),
        "XDP still attached after the agent stopped:\n{}",
        lab.lb.ip(&["-d", "link", "show", "dev", lab.iface()])
    );
    let records = agent.records();
    // The shutdown tail: final counters, the stop record, the final
    // signed checkpoint.
    let tail: Vec<&str> = records.iter().rev().take(3).rev().map(action).collect();
    assert_eq!(
        tail,
        ["capture-counters", "agent-stop", "checkpoint"],
        "{}",
        dump(&records)
    );
    let last = records.last().expect("the agent wrote no record");
    assert_eq!(
        last["lbwitness"]["checkpoint"]["final"], true,
        "last record: {last}"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r["event"]["sequence"].as_u64(),
            Some(i as u64 + 1),
            "record {i}: {r}"
        );
    }
    records
}

/// Runs `lbwitness ARGS` in the lb namespace, expecting it to fail at
/// start-up with exit code `code` and one `error:` line; returns stderr.
#[track_caller]
fn start_fails(lab: &Lab, args: &[&str], code: i32) -> String {
    let (status, stderr) = run_to_exit(&lab.lb, args);
    assert_eq!(
        status.code(),
        Some(code),
        "`lbwitness {}`:\n{stderr}",
        args.join(" ")
    );
    assert!(stderr.contains("error: "), "no error line:\n{stderr}");
    stderr
}

/// Asserts the failed start left nothing behind: no XDP program, and no
/// output file (every check runs before the output is opened).
#[track_caller]
fn assert_left_nothing(lab: &Lab, output: &Scratch) {
    assert!(!lab.has_xdp(), "a failed start left XDP attached");
    assert!(
        !output.0.exists(),
        "a failed start created {}",
        output.0.display()
    );
}

// ---------------------------------------------------------------------------
// XDP programs on an interface

/// The XDP program on an interface, as `ip -j -d link show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct XdpProg {
    /// 1 native, 2 generic (skb), 3 offloaded.
    mode: u64,
    id: u64,
    name: String,
}

fn xdp_prog(ns: &NetNs, iface: &str) -> Option<XdpProg> {
    let text = ns.ip(&["-j", "-d", "link", "show", "dev", iface]);
    let json: Value = serde_json::from_str(&text).expect("ip -j link: JSON");
    let xdp = &json[0]["xdp"];
    Some(XdpProg {
        mode: xdp["mode"].as_u64()?,
        id: xdp["prog"]["id"].as_u64()?,
        name: xdp["prog"]["name"].as_str()?.to_owned(),
    })
}

/// Attaches `prog` to `ifindex` in `ns` in generic (skb) mode with a plain
/// `RTM_SETLINK IFLA_XDP` request: the legacy attachment `ip link set dev IF
/// xdpgeneric ...` makes, which stays after `prog` is closed.
fn attach_generic_netlink(ns: &NetNs, ifindex: u32, prog: BorrowedFd<'_>) -> io::Result<()> {
    const RTM_SETLINK: u16 = 19;
    const NLMSG_ERROR: u16 = 2;
    const IFLA_XDP: u16 = 43;
    const NLA_F_NESTED: u16 = 1 << 15;
    const IFLA_XDP_FD: u16 = 1;
    const IFLA_XDP_FLAGS: u16 = 3;
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    const LEN: u32 = 16 + 16 + 4 + 8 + 8;

    let mut msg = Vec::with_capacity(LEN as usize);
    // struct nlmsghdr
    msg.extend(LEN.to_ne_bytes());
    msg.extend(RTM_SETLINK.to_ne_bytes());
    msg.extend(((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend(1u32.to_ne_bytes()); // sequence
    msg.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct ifinfomsg
    msg.extend([libc::AF_UNSPEC as u8, 0]);
    msg.extend(0u16.to_ne_bytes());
    msg.extend((ifindex as i32).to_ne_bytes());
    msg.extend(0u32.to_ne_bytes());
    msg.extend(0u32.to_ne_bytes());
    // IFLA_XDP { IFLA_XDP_FD, IFLA_XDP_FLAGS }
    msg.extend(20u16.to_ne_bytes());
    msg.extend((IFLA_XDP | NLA_F_NESTED).to_ne_bytes());
    msg.extend(8u16.to_ne_bytes());
    msg.extend(IFLA_XDP_FD.to_ne_bytes());
    msg.extend(prog.as_raw_fd().to_ne_bytes());
    msg.extend(8u16.to_ne_bytes());
    msg.extend(IFLA_XDP_FLAGS.to_ne_bytes());
    msg.extend(XDP_FLAGS_SKB_MODE.to_ne_bytes());
    assert_eq!(msg.len(), LEN as usize);

    // The socket belongs to the namespace it is created in.
    in_netns(ns, || {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all zeroes is valid.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `msg` and `kernel` outlive the call; lengths match.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if n < 20 || kind != NLMSG_ERROR {
            return Err(io::Error::other(format!(
                "unexpected netlink reply type {kind}, {n} bytes"
            )));
        }
        match i32::from_ne_bytes(buf[16..20].try_into().unwrap()) {
            0 => Ok(()),
            err => Err(io::Error::from_raw_os_error(-err)),
        }
    })
}

/// Asserts a second lbwitness is refused on `lab`'s interface in every
/// mode, and that `holder` stays attached, untouched.
fn assert_refused_in_every_mode(lab: &Lab, holder: &XdpProg) {
    for mode in XDP_MODES {
        let output = Scratch::path("refused.ndjson");
        let stderr = start_fails(
            lab,
            &[
                "run",
                "--iface",
                lab.iface(),
                "--xdp-mode",
                mode,
                "--output",
                output.as_str(),
            ],
            1,
        );
        assert!(
            stderr.contains(&format!(
                "interface `{}` already has an XDP program attached",
                lab.iface()
            )),
            "--xdp-mode {mode}:\n{stderr}"
        );
        assert_eq!(
            xdp_prog(&lab.lb, lab.iface()).as_ref(),
            Some(holder),
            "--xdp-mode {mode}: the program already attached was replaced or removed"
        );
    }
}

// ---------------------------------------------------------------------------
// 1. Clean shutdown

fn clean_shutdown_on(signal: libc::c_int, tag: &str) {
    let lab = Lab::new(tag);
    let mut agent = lab.start_agent(&[]);
    assert!(lab.has_xdp(), "not attached while running");

    let tcp_server = v4(8080);
    let tcp_client = tcp_exchange(&lab, tcp_server, b"GET / HTTP/1.0\r\n\r\n");
    let udp_server = v4(5300);
    let udp_client = udp_flow(&lab, udp_server, 3, &[0x5a; 100], Duration::ZERO);
    let udp6_server = v6(5301);
    let udp6_client = udp_flow(&lab, udp6_server, 2, &[0x6b; 50], Duration::ZERO);

    let records = stop_cleanly(&lab, &mut agent, signal);
    let iface = lab.iface();
    // A closed TCP flow may have reached its end-of-flow timeout already.
    let tcp = assert_one_final_flow(
        &records,
        "tcp",
        (tcp_client, tcp_server),
        &["shutdown", "end-of-flow"],
        iface,
    );
    // SYN, the request, FIN and ACKs: at least three packets client-to-lb.
    assert!(packets(tcp) >= 3, "{tcp}");
    let flags = &tcp["lbwitness"]["tcp_flags"];
    for flag in ["SYN", "FIN", "ACK"] {
        assert!(
            flags
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f == flag)),
            "no {flag} in {tcp}"
        );
    }
    assert_eq!(tcp["network"]["type"], "ipv4", "{tcp}");

    let udp = assert_one_final_flow(
        &records,
        "udp",
        (udp_client, udp_server),
        &["shutdown"],
        iface,
    );
    assert_eq!(packets(udp), 3, "{udp}");
    assert_eq!(bytes(udp), 3 * (UDP4_OVERHEAD + 100), "{udp}");
    assert_eq!(udp["network"]["type"], "ipv4", "{udp}");

    let udp6 = assert_one_final_flow(
        &records,
        "udp",
        (udp6_client, udp6_server),
        &["shutdown"],
        iface,
    );
    assert_eq!(packets(udp6), 2, "{udp6}");
    assert_eq!(bytes(udp6), 2 * (UDP6_OVERHEAD + 50), "{udp6}");
    assert_eq!(udp6["network"]["type"], "ipv6", "{udp6}");

    // Capture is ingress only: nothing from the lb side back to the client.
    assert!(
        flows_of(&records, "udp", udp_server, udp_client).is_empty(),
        "{}",
        dump(&records)
    );
}

#[test]
fn sigterm_stops_cleanly_with_final_records() {
    clean_shutdown_on(libc::SIGTERM, "term");
}

#[test]
fn sigint_stops_cleanly_with_final_records() {
    clean_shutdown_on(libc::SIGINT, "int");
}

// ---------------------------------------------------------------------------
// 2. SIGKILL

#[test]
fn sigkill_leaves_nothing_attached_and_a_restart_works() {
    let lab = Lab::new("kill");
    for round in 0..3u16 {
        let mut doomed = lab.start_agent(&[]);
        assert!(lab.has_xdp(), "round {round}: not attached");
        let exit = doomed.stop_with(libc::SIGKILL);
        assert_eq!(exit.status.signal(), Some(libc::SIGKILL), "round {round}");
        // The kernel releases the bpf_link when the last descriptor closes.
        assert!(
            wait_for(Duration::from_secs(2), || (!lab.has_xdp()).then_some(())).is_some(),
            "round {round}: XDP still attached 2 s after SIGKILL:\n{}",
            lab.lb.ip(&["-d", "link", "show", "dev", lab.iface()])
        );
        drop(doomed);

        // Agent::start panics, with the log, unless the restart attaches.
        let mut agent = lab.start_agent(&[]);
        assert!(lab.has_xdp(), "round {round}: restart not attached");
        let server = v4(6000 + round);
        let client = udp_flow(&lab, server, 2, b"after the kill", Duration::ZERO);
        let records = stop_cleanly(&lab, &mut agent, libc::SIGTERM);
        let udp = assert_one_final_flow(
            &records,
            "udp",
            (client, server),
            &["shutdown"],
            lab.iface(),
        );
        assert_eq!(packets(udp), 2, "round {round}: {udp}");
        assert_eq!(bytes(udp), 2 * (UDP4_OVERHEAD + 14), "round {round}: {udp}");
    }
}

// ---------------------------------------------------------------------------
// 3. Another XDP program on the interface

#[test]
fn second_agent_is_refused_and_the_first_keeps_recording() {
    let lab = Lab::new("busy");
    let mut first = lab.start_agent(&[]);
    let holder = xdp_prog(&lab.lb, lab.iface()).expect("the first agent is attached");
    assert_eq!(holder.name, "lbwitness_xdp");

    assert_refused_in_every_mode(&lab, &holder);

    // The first agent still captures after the refusals.
    let server = v4(7000);
    let client = udp_flow(&lab, server, 4, b"still here", Duration::ZERO);
    let records = stop_cleanly(&lab, &mut first, libc::SIGTERM);
    let udp = assert_one_final_flow(
        &records,
        "udp",
        (client, server),
        &["shutdown"],
        lab.iface(),
    );
    assert_eq!(packets(udp), 4, "{udp}");
}

#[test]
fn foreign_xdp_program_is_never_replaced() {
    let lab = Lab::new("foreign");
    let prog = lbwitness::capture::sys::load_pass_xdp("lbw_foreign")
        .unwrap_or_else(|e| panic!("loading a trivial XDP program with bpf(2): {e}"));
    let fd = prog.fd().expect("loaded").as_fd();
    attach_generic_netlink(&lab.lb, lab.veth.b.ifindex, fd)
        .unwrap_or_else(|e| panic!("attaching it to {} in generic mode: {e}", lab.iface()));
    // The attachment holds the program; our descriptor is not needed.
    drop(prog);
    let foreign = xdp_prog(&lab.lb, lab.iface()).expect("the foreign program is attached");
    assert_eq!(foreign.name, "lbw_foreign");
    assert_eq!(foreign.mode, XDP_ATTACHED_SKB);

    assert_refused_in_every_mode(&lab, &foreign);
    // The foreign program passes traffic, and still does.
    udp_flow(
        &lab,
        v4(7100),
        1,
        b"through the foreign program",
        Duration::ZERO,
    );

    // Once the owner detaches it, lbwitness attaches: the refusals were
    // about the foreign program and nothing else.
    lab.lb
        .ip(&["link", "set", "dev", lab.iface(), "xdpgeneric", "off"]);
    assert!(
        !lab.has_xdp(),
        "`ip link set ... xdpgeneric off` did not detach"
    );
    let mut agent = lab.start_agent(&[]);
    assert_eq!(
        xdp_prog(&lab.lb, lab.iface()).map(|p| p.name).as_deref(),
        Some("lbwitness_xdp")
    );
    stop_cleanly(&lab, &mut agent, libc::SIGTERM);
}

// ---------------------------------------------------------------------------
// 4. Start-up errors

#[test]
fn unknown_interface_is_named() {
    let lab = Lab::new("noif");
    let output = Scratch::path("noif.ndjson");
    let stderr = start_fails(
        &lab,
        &["run", "--iface", "nope0", "--output", output.as_str()],
        1,
    );
    assert!(
        stderr.contains("interface `nope0` does not exist"),
        "{stderr}"
    );
    // It lists what exists, to pick from.
    assert!(stderr.contains(lab.iface()), "{stderr}");
    assert_left_nothing(&lab, &output);

    // A good interface next to a bad one is not attached either.
    let stderr = start_fails(
        &lab,
        &[
            "run",
            "--iface",
            lab.iface(),
            "--iface",
            "nope1",
            "--output",
            output.as_str(),
        ],
        1,
    );
    assert!(
        stderr.contains("interface `nope1` does not exist"),
        "{stderr}"
    );
    assert_left_nothing(&lab, &output);
}

#[test]
fn missing_privileges_name_the_capabilities() {
    let Some(setpriv) = find_program("setpriv") else {
        eprintln!("SKIPPED: setpriv (util-linux) is not installed");
        return;
    };
    let lab = Lab::new("nopriv");
    let output = Scratch::path("nopriv.ndjson");
    let mut cmd = lab.lb.command(setpriv);
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(binary())
    .args(["run", "--iface", lab.iface(), "--output", output.as_str()])
    .stdin(Stdio::null());
    let out = cmd.output().expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: missing capability"), "{stderr}");
    for cap in ["CAP_BPF", "CAP_NET_ADMIN"] {
        assert!(stderr.contains(cap), "{cap} not named:\n{stderr}");
    }
    assert_left_nothing(&lab, &output);
}

#[test]
fn unwritable_output_is_named() {
    let lab = Lab::new("noout");
    let not_a_dir = Scratch::file("not-a-dir", "a regular file\n");
    let under_file = format!("{}/records.ndjson", not_a_dir.as_str());
    for path in [under_file.as_str(), "/proc/version/records.ndjson"] {
        let stderr = start_fails(&lab, &["run", "--iface", lab.iface(), "--output", path], 1);
        assert!(
            stderr.contains(&format!("cannot write records to {path}")),
            "{stderr}"
        );
        assert!(
            !lab.has_xdp(),
            "--output {path}: a failed start left XDP attached"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&not_a_dir.0).unwrap(),
        "a regular file\n"
    );
}

#[test]
fn bad_config_files_are_named() {
    let lab = Lab::new("badcfg");
    let output = Scratch::path("badcfg.ndjson");
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "unknown key",
            "[capture]\nxdp_mode = \"auto\"\nbogus_knob = 1\n",
            &["bogus_knob"],
        ),
        (
            "syntax error",
            "[flows\nidle_timeout_secs = 5\n",
            &["line 1"],
        ),
        (
            "invalid value",
            "[flows]\nidle_timeout_secs = 0\n",
            &["`flows.idle_timeout_secs`", "is 0"],
        ),
        (
            "wrong type",
            "[flows]\nidle_timeout_secs = \"soon\"\n",
            &["idle_timeout_secs"],
        ),
        (
            "closed longer than idle",
            "[flows]\nidle_timeout_secs = 5\nclosed_timeout_secs = 10\n",
            &["`flows.closed_timeout_secs`"],
        ),
    ];
    for (what, text, needles) in cases {
        let config = Scratch::file("bad.toml", text);
        let stderr = start_fails(
            &lab,
            &[
                "run",
                "--iface",
                lab.iface(),
                "--config",
                config.as_str(),
                "--output",
                output.as_str(),
            ],
            2,
        );
        assert!(
            stderr.contains(config.as_str()),
            "{what}: file not named:\n{stderr}"
        );
        for needle in needles {
            assert!(stderr.contains(needle), "{what}: no {needle:?}:\n{stderr}");
        }
        assert_left_nothing(&lab, &output);
    }

    let missing = Scratch::path("missing.toml");
    let stderr = start_fails(
        &lab,
        &[
            "run",
            "--iface",
            lab.iface(),
            "--config",
            missing.as_str(),
            "--output",
            output.as_str(),
        ],
        2,
    );
    assert!(
        stderr.contains(&format!("cannot read config file {}", missing.as_str())),
        "{stderr}"
    );
    assert_left_nothing(&lab, &output);
}

#[test]
fn no_interface_is_a_config_error() {
    let lab = Lab::new("noiface");
    let output = Scratch::path("noiface.ndjson");
    let stderr = start_fails(&lab, &["run", "--output", output.as_str()], 2);
    assert!(stderr.contains("`capture.interfaces` is empty"), "{stderr}");
    assert_left_nothing(&lab, &output);

    let config = Scratch::file("empty.toml", "[capture]\ninterfaces = []\n");
    let stderr = start_fails(
        &lab,
        &[
            "run",
            "--config",
            config.as_str(),
            "--output",
            output.as_str(),
        ],
        2,
    );
    assert!(stderr.contains("`capture.interfaces` is empty"), "{stderr}");
    assert!(stderr.contains(config.as_str()), "{stderr}");
    assert_left_nothing(&lab, &output);
}

// ---------------------------------------------------------------------------
// 5. and 6. Export while running

#[test]
fn idle_and_closed_flows_are_exported_while_running() {
    let lab = Lab::new("idle");
    let config = Scratch::file(
        "idle.toml",
        "[flows]\nidle_timeout_secs = 1\nclosed_timeout_secs = 1\nsweep_interval_ms = 100\n",
    );
    let mut agent = lab.start_agent(&["--config", config.as_str()]);
    let iface = lab.iface().to_owned();

    const PAYLOAD: usize = 100;
    let udp_server = v4(5400);
    let udp_client = udp_flow(&lab, udp_server, 1, &[7; PAYLOAD], Duration::ZERO);
    let tcp_server = v4(8081);
    let tcp_client = tcp_exchange(&lab, tcp_server, b"short-lived");

    // Both are exported by the sweeps, with the agent still running.
    let exported = |transport, tuple: (SocketAddr, SocketAddr)| {
        wait_for(Duration::from_millis(2500), || {
            let records = agent.records();
            (!flows_of(&records, transport, tuple.0, tuple.1).is_empty()).then_some(records)
        })
    };
    let records = exported("udp", (udp_client, udp_server)).unwrap_or_else(|| {
        panic!(
            "no UDP flow record 2.5 s after one datagram:\n{}",
            dump(&agent.records())
        )
    });
    let udp = assert_one_final_flow(
        &records,
        "udp",
        (udp_client, udp_server),
        &["idle-timeout"],
        &iface,
    );
    assert_eq!(packets(udp), 1, "{udp}");
    assert_eq!(bytes(udp), UDP4_OVERHEAD + PAYLOAD as u64, "{udp}");
    assert_eq!(udp["source"]["packets"], 1, "{udp}");

    let records = exported("tcp", (tcp_client, tcp_server)).unwrap_or_else(|| {
        panic!(
            "no TCP flow record 2.5 s after FIN:\n{}",
            dump(&agent.records())
        )
    });
    let tcp = assert_one_final_flow(
        &records,
        "tcp",
        (tcp_client, tcp_server),
        &["end-of-flow"],
        &iface,
    );
    assert!(
        tcp["lbwitness"]["tcp_flags"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f == "FIN")),
        "{tcp}"
    );
    assert!(
        agent.try_wait().is_none(),
        "the agent exited:\n{}",
        agent.log_text()
    );

    // Exported once: the shutdown flush does not report them again.
    let records = stop_cleanly(&lab, &mut agent, libc::SIGTERM);
    assert_one_final_flow(
        &records,
        "udp",
        (udp_client, udp_server),
        &["idle-timeout"],
        &iface,
    );
    assert_one_final_flow(
        &records,
        "tcp",
        (tcp_client, tcp_server),
        &["end-of-flow"],
        &iface,
    );
}

#[test]
fn active_timeout_records_partition_a_long_flow() {
    let lab = Lab::new("active");
    let config = Scratch::file(
        "active.toml",
        "[flows]\nactive_timeout_secs = 1\nsweep_interval_ms = 100\n",
    );
    let mut agent = lab.start_agent(&["--config", config.as_str()]);

    const DATAGRAMS: usize = 30;
    const PAYLOAD: usize = 64;
    let server = v4(5500);
    let client = udp_flow(
        &lab,
        server,
        DATAGRAMS,
        &[1; PAYLOAD],
        Duration::from_millis(100),
    );
    let records = stop_cleanly(&lab, &mut agent, libc::SIGTERM);

    let flows = flows_of(&records, "udp", client, server);
    let all = flows
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let (last, interim) = flows
        .split_last()
        .unwrap_or_else(|| panic!("no flow record:\n{}", dump(&records)));
    assert!(
        interim.len() >= 2,
        "expected at least two interim records:\n{all}"
    );
    for r in interim {
        assert_eq!(reason(r), "active-timeout", "{r}");
        assert!(
            event_types(r).contains(&"info"),
            "interim record not `info`: {r}"
        );
    }
    assert_eq!(reason(last), "shutdown", "{last}");
    assert!(event_types(last).contains(&"end"), "{last}");

    // IPFIX deltas: the records add up to exactly what was sent...
    assert_eq!(
        flows.iter().copied().map(packets).sum::<u64>(),
        DATAGRAMS as u64,
        "{all}"
    );
    assert_eq!(
        flows.iter().copied().map(bytes).sum::<u64>(),
        (DATAGRAMS * (PAYLOAD + UDP4_OVERHEAD as usize)) as u64,
        "{all}"
    );
    // ...and their intervals follow each other without gap or overlap.
    for pair in flows.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(packets(a) > 0, "an empty interim record: {a}");
        assert_eq!(
            a["event"]["end"], b["event"]["start"],
            "record {} ends where record {} starts:\n{a}\n{b}",
            a["event"]["sequence"], b["event"]["sequence"]
        );
    }
    for r in &flows {
        let (start, end) = (r["event"]["start"].as_str(), r["event"]["end"].as_str());
        assert!(start.is_some() && start <= end, "interval backwards: {r}");
    }
}

/// Keeps the helpers honest: a record with another port or transport does
/// not match.
#[test]
fn flow_matching_is_exact() {
    let r: Value = serde_json::json!({
        "event": {"action": "flow"},
        "network": {"transport": "udp"},
        "source": {"ip": "192.0.2.1", "port": 4000},
        "destination": {"ip": "192.0.2.2", "port": 53},
    });
    let records = [r];
    let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let dst: SocketAddr = "192.0.2.2:53".parse().unwrap();
    assert_eq!(flows_of(&records, "udp", src, dst).len(), 1);
    assert!(flows_of(&records, "tcp", src, dst).is_empty());
    assert!(flows_of(&records, "udp", dst, src).is_empty());
    assert!(flows_of(&records, "udp", src, "192.0.2.2:54".parse().unwrap()).is_empty());
}
