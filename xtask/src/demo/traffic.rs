//! The lab's traffic: echo servers in the load balancer's namespace, and
//! rounds of client traffic (TCP and UDP over v4 and v6, ICMP, a refused
//! connection, and VLAN-tagged frames injected on the veth).

use std::{
    io::{Read, Write},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::Result;
use integration_tests::{
    frames::Frame,
    inject::RawSender,
    netns::{NetNs, VethPair, in_netns},
};

/// Time between rounds.
const ROUND: Duration = Duration::from_millis(700);

/// A port nothing listens on in the lb namespace: a SYN to it is a probe
/// (routed to the security stream).
const CLOSED_PORT: u16 = 8081;

/// TCP and UDP echo servers in the load balancer's namespace, for v4 and
/// v6. Their threads live as long as the process.
pub fn start_servers(lb: &NetNs) {
    for addr in ["192.0.2.2:8080", "[2001:db8::2]:8080"] {
        let listener = in_netns(lb, move || TcpListener::bind(addr)).expect("bind TCP server");
        thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 512];
                let n = conn.read(&mut buf).unwrap_or(0);
                let _ = conn.write_all(&buf[..n]);
            }
        });
    }
    for addr in ["192.0.2.2:5353", "[2001:db8::2]:5353"] {
        let socket = in_netns(lb, move || UdpSocket::bind(addr)).expect("bind UDP server");
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], peer);
            }
        });
    }
}

/// Sends rounds of traffic from `client` until `stop` is set.
pub fn run(client: &NetNs, veth: &VethPair, stop: &AtomicBool) -> Result<()> {
    let sender = RawSender::open(Some(client), &veth.a.name)?;
    let mut round = 0u16;
    while !stop.load(Ordering::SeqCst) {
        round = round.wrapping_add(1);
        in_netns(client, || client_round(round));
        // A VLAN-tagged frame: no VLAN device exists, so it is injected.
        let tagged = Frame::ipv4([192, 0, 2, 1], [192, 0, 2, 2])
            .src_mac(veth.a.mac)
            .dst_mac(veth.b.mac)
            .vlan(100)
            .udp(40000 + round % 4, 53)
            .payload_len(32)
            .build();
        sender.send(&tagged)?;
        thread::sleep(ROUND);
    }
    Ok(())
}

/// One round of client traffic (runs inside the client namespace).
fn client_round(round: u16) {
    let v6: Ipv6Addr = "2001:db8::2".parse().expect("address");
    let targets: [SocketAddr; 2] = [([192, 0, 2, 2], 8080).into(), (v6, 8080).into()];
    for target in targets {
        if let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            let _ = s.write_all(format!("GET /{round} HTTP/1.0\r\n\r\n").as_bytes());
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
        }
    }
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(b"query", "192.0.2.2:5353");
    }
    if let Ok(s) = UdpSocket::bind("[::]:0") {
        let _ = s.send_to(b"query", "[2001:db8::2]:5353");
    }
    if round.is_multiple_of(3) {
        let _ = Command::new("ping")
            .args(["-c", "1", "-W", "1", "192.0.2.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if round.is_multiple_of(5) {
        // A probe of a port nothing serves: the SYN is what the agent sees
        // (XDP sees the lb's ingress; the RST answering it leaves the lb).
        let closed = SocketAddr::from(([192, 0, 2, 2], CLOSED_PORT));
        let _ = TcpStream::connect_timeout(&closed, Duration::from_secs(1));
    }
    if round % 5 == 2
        && let Ok(s) = TcpStream::connect_timeout(&targets[0], Duration::from_secs(1))
    {
        abort(s);
    }
}

/// Closes `s` with a RST instead of a FIN (SO_LINGER with a zero timeout),
/// as a client aborting a connection does.
fn abort(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}
