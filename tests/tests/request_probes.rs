//! The request programs on the running kernel: a live TCP exchange on
//! loopback by this test's own thread, read back from the request ring and
//! checked event by event; the process filter, pipes, the capture limit and
//! the vectored syscalls; and every kprobe program through the verifier.
//! Needs root (loads eBPF, may mount tracefs).
//!
//! Tests run on parallel threads of one process, and each loads its own
//! copy of the programs; events are told apart by thread id and fd.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::Duration,
};

use agent_common::request::{AF_INET, RequestCounter, SockCallEvent, SockStateEvent};
use aya::maps::{MapData, RingBuf};
use integration_tests::netns::{NetNs, require_root};
use lbwitness::{
    capture::{
        requests::{
            Hook, ProcFilter, RequestCounters, RequestProbes, RequestSettings, Via, probe_kprobes,
        },
        tracefs,
    },
    requests::event::{Data, ReqEvent, call, decode, direction, syscall, tcp_kind, tcp_state, tls},
};

const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nHost: example.test\r\nUser-Agent: lbw-test\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

struct Probes {
    probes: RequestProbes,
    ring: RingBuf<MapData>,
    procs: ProcFilter,
    counters: RequestCounters,
}

impl Probes {
    fn load(capture: u32) -> Self {
        require_root();
        let settings = RequestSettings::try_new(1 << 20, capture).expect("settings");
        let mut probes = RequestProbes::load(&settings).expect("load the request probes");
        let ring = probes.take_ring().expect("ring");
        let procs = probes.take_procs().expect("procs");
        let counters = probes.take_counters().expect("counters");
        Self {
            probes,
            ring,
            procs,
            counters,
        }
    }

    fn follow_me(mut self) -> Self {
        self.procs.add(std::process::id()).expect("add tgid");
        self
    }

    /// Every event sent so far, in ring order; a bad item fails the test.
    fn drain(&mut self) -> Vec<ReqEvent> {
        std::thread::sleep(Duration::from_millis(50));
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(decode(&item).expect("a well-formed request event"));
        }
        out
    }

    fn counter(&self, which: RequestCounter) -> u64 {
        let all = self.counters.read().expect("counters");
        all.into_iter()
            .find(|(c, _)| *c == which)
            .map_or(0, |(_, n)| n)
    }
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn data_of(events: &[ReqEvent], tid: u32) -> Vec<Data> {
    events
        .iter()
        .filter_map(|e| match e {
            ReqEvent::Data(d) if d.tid == tid => Some(d.clone()),
            _ => None,
        })
        .collect()
}

fn calls_of(events: &[ReqEvent], tid: u32) -> Vec<SockCallEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            ReqEvent::Call(c) if c.tid == tid => Some(*c),
            _ => None,
        })
        .collect()
}

fn states_of(events: &[ReqEvent], sk: u64) -> Vec<SockStateEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            ReqEvent::State(s) if s.sk == sk => Some(*s),
            _ => None,
        })
        .collect()
}

fn v4(addr: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
}

/// A connected pair on loopback, made by this thread: (listener, client, server).
fn pair() -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (listener, client, server)
}

#[test]
fn a_live_exchange_gives_the_exact_events() {
    let mut p = Probes::load(256).follow_me();
    for c in p.probes.choices() {
        eprintln!("{c}");
    }
    let tid = gettid();
    let (listener, mut client, mut server) = pair();
    let port = listener.local_addr().unwrap().port();
    let client_port = client.local_addr().unwrap().port();
    let (lfd, cfd, sfd) = (listener.as_raw_fd(), client.as_raw_fd(), server.as_raw_fd());
    client.write_all(REQUEST).unwrap();
    let mut buf = [0u8; 4096];
    let n = server.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], REQUEST);
    server.write_all(RESPONSE).unwrap();
    let n = client.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], RESPONSE);
    drop(client);
    drop(server);
    let events = p.drain();

    let calls = calls_of(&events, tid);
    let connect = calls
        .iter()
        .find(|c| c.call == call::CONNECT)
        .expect("a connect event");
    assert_eq!((connect.fd, connect.ret), (cfd, 0));
    assert_eq!((connect.family, connect.port), (AF_INET, port));
    assert_eq!(v4(&connect.addr), Ipv4Addr::LOCALHOST);
    assert_ne!(
        connect.sk, 0,
        "the CLOSE->SYN_SENT transition names the socket"
    );
    let accept = calls
        .iter()
        .find(|c| c.call == call::ACCEPT)
        .expect("an accept event");
    assert_eq!((accept.fd, accept.ret), (lfd, i64::from(sfd)));
    assert_eq!((accept.family, accept.port), (AF_INET, client_port));
    assert_eq!(v4(&accept.addr), Ipv4Addr::LOCALHOST);
    let closes: Vec<i32> = calls
        .iter()
        .filter(|c| c.call == call::CLOSE)
        .map(|c| c.fd)
        .collect();
    assert_eq!(closes, vec![cfd, sfd]);
    assert!(
        calls
            .iter()
            .filter(|c| c.call == call::CLOSE)
            .all(|c| c.ret == 0)
    );

    let data = data_of(&events, tid);
    assert_eq!(data.len(), 4, "two sends and two receives: {data:?}");
    let expect = [
        (cfd, direction::SEND, syscall::SENDTO, REQUEST),
        (sfd, direction::RECV, syscall::RECVFROM, REQUEST),
        (sfd, direction::SEND, syscall::SENDTO, RESPONSE),
        (cfd, direction::RECV, syscall::RECVFROM, RESPONSE),
    ];
    for (d, (fd, dir, sc, bytes)) in data.iter().zip(expect) {
        assert_eq!((d.fd, d.direction, d.syscall), (fd, dir, sc));
        assert_eq!(d.ret, bytes.len() as i64);
        assert_eq!(d.payload, bytes);
        assert_eq!(d.tgid, std::process::id());
        assert!(d.enter_ns <= d.ktime_ns);
        assert_eq!(d.lost, 0);
    }
    let client_sk = data[0].sk;
    let server_sk = data[1].sk;
    assert_eq!(data[3].sk, client_sk);
    assert_eq!(data[2].sk, server_sk);
    assert_ne!(client_sk, server_sk);
    assert_eq!(
        connect.sk, client_sk,
        "connect's socket is the one the data moved through"
    );

    let est = |sk| {
        states_of(&events, sk)
            .into_iter()
            .find(|s| s.newstate == tcp_state::ESTABLISHED)
            .expect("an ESTABLISHED event")
    };
    let c = est(client_sk);
    assert_eq!((c.oldstate, c.family), (tcp_state::SYN_SENT, AF_INET));
    assert_eq!((c.sport, c.dport), (client_port, port));
    assert_eq!(
        (v4(&c.saddr), v4(&c.daddr)),
        (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
    );
    let s = est(server_sk);
    assert_eq!(s.oldstate, tcp_state::SYN_RECV);
    assert_eq!((s.sport, s.dport), (port, client_port));
    // A followed socket's later states are sent too: the client's close.
    assert!(
        states_of(&events, client_sk)
            .iter()
            .any(|s| s.newstate == tcp_state::FIN_WAIT1),
        "the active close's FIN_WAIT1"
    );

    // Order in kernel time: connect, then data, then closes.
    let first_data = data.iter().map(|d| d.enter_ns).min().unwrap();
    assert!(connect.header.ktime_ns <= first_data);
    let close_c = calls.iter().find(|c| c.call == call::CLOSE).unwrap();
    assert!(close_c.header.ktime_ns >= data[3].ktime_ns);
    assert_eq!(p.counter(RequestCounter::RingOutputFailed), 0);
    assert!(p.counter(RequestCounter::DataEvents) >= 4);
    drop(listener);
}

#[test]
fn a_process_not_followed_sends_nothing() {
    let mut p = Probes::load(256);
    p.procs.add(u32::MAX - 1).expect("an unrelated tgid");
    let (_l, mut client, mut server) = pair();
    client.write_all(REQUEST).unwrap();
    let mut buf = [0u8; 256];
    let _ = server.read(&mut buf).unwrap();
    let me = std::process::id();
    let events = p.drain();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ReqEvent::Data(d) if d.tgid == me)
                || matches!(e, ReqEvent::Call(c) if c.tgid == me)),
        "no data or call event from a process outside the filter"
    );
}

#[test]
fn a_pipe_read_sends_no_data_event() {
    let mut p = Probes::load(256).follow_me();
    let tid = gettid();
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) writes two fds into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let msg = b"not a socket";
    // SAFETY: plain read/write on our own pipe with valid buffers.
    unsafe {
        assert_eq!(
            libc::write(fds[1], msg.as_ptr().cast(), msg.len()),
            msg.len() as isize
        );
        let mut buf = [0u8; 64];
        assert_eq!(
            libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()),
            msg.len() as isize
        );
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    let events = p.drain();
    assert!(data_of(&events, tid).is_empty(), "a pipe has no socket");
    let calls = calls_of(&events, tid);
    // The pipe call names both ends (read end in `fd`, write end in `ret`).
    assert_eq!(calls[0].call, call::PIPE);
    assert_eq!((calls[0].fd, calls[0].ret), (fds[0], i64::from(fds[1])));
    assert_eq!(
        calls[1..]
            .iter()
            .map(|c| (c.call, c.fd))
            .collect::<Vec<_>>(),
        vec![(call::CLOSE, fds[0]), (call::CLOSE, fds[1])],
        "closes are sent"
    );
}

/// A splicing relay, as HAProxy's `option splice-*` moves bytes: socket ->
/// pipe -> socket. Each splice is one event with the socket's and the
/// pipe's fds and the exact count; the splice into a socket names it.
#[test]
fn splices_between_sockets_and_a_pipe_are_sent_with_their_fds() {
    let mut p = Probes::load(256).follow_me();
    let tid = gettid();
    let (_listener, mut client, server) = pair();
    let (_l2, upstream, _peer) = pair();
    let mut fds = [0i32; 2];
    // SAFETY: pipe2(2) writes two fds into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
    client.write_all(REQUEST).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (sfd, ufd) = (server.as_raw_fd(), upstream.as_raw_fd());
    // SAFETY: splice(2) between our own sockets and pipe, no offsets.
    let (moved_in, moved_out) = unsafe {
        let null = std::ptr::null_mut();
        let i = libc::splice(sfd, null, fds[1], null, 65536, 0);
        let o = libc::splice(fds[0], null, ufd, null, 65536, 0);
        (i, o)
    };
    assert_eq!(
        (moved_in, moved_out),
        (REQUEST.len() as isize, REQUEST.len() as isize)
    );
    // SAFETY: closing our own pipe.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    let events = p.drain();
    let splices: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ReqEvent::Splice(s) if s.tid == tid => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(splices.len(), 2, "{splices:?}");
    let (into, out) = (splices[0], splices[1]);
    assert_eq!(
        (into.direction, into.sock_fd, into.pipe_fd),
        (direction::RECV, sfd, fds[1])
    );
    assert_eq!(
        (out.direction, out.sock_fd, out.pipe_fd),
        (direction::SEND, ufd, fds[0])
    );
    assert_eq!(
        (into.ret, out.ret),
        (REQUEST.len() as i64, REQUEST.len() as i64)
    );
    assert_ne!(out.sk, 0, "sock_send_length names the socket spliced into");
    // The socket spliced into is the one a plain send names.
    let sent = {
        let mut u = &upstream;
        u.write_all(b"x").unwrap();
        p.drain()
    };
    let data = data_of(&sent, tid);
    assert_eq!(data.last().map(|d| (d.fd, d.sk)), Some((ufd, out.sk)));
    assert!(
        calls_of(&events, tid)
            .iter()
            .any(|c| c.call == call::PIPE && (c.fd, c.ret) == (fds[0], i64::from(fds[1]))),
        "pipe2 names both ends"
    );
}

/// glibc's nscd lookup and systemd's userdb connect unix sockets from inside
/// an LB process: such a connect names no TCP socket and is not sent, while
/// a TCP connect on the same thread right after it is.
#[test]
fn a_unix_connect_is_not_sent_and_a_tcp_one_is() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

    let mut p = Probes::load(256).follow_me();
    let tid = gettid();
    // An abstract address: nothing on disk to clean up.
    let name = format!("lbw-unix-connect-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let _unix = UnixListener::bind_addr(&addr).expect("bind unix");
    let _u = UnixStream::connect_addr(&addr).expect("connect unix");
    let (listener, _client, _server) = pair();
    let port = listener.local_addr().unwrap().port();
    let connects: Vec<SockCallEvent> = calls_of(&p.drain(), tid)
        .into_iter()
        .filter(|c| c.call == call::CONNECT)
        .collect();
    assert_eq!(connects.len(), 1, "only the TCP connect: {connects:?}");
    assert_eq!(
        (connects[0].port, v4(&connects[0].addr)),
        (port, Ipv4Addr::LOCALHOST)
    );
    assert_ne!(connects[0].sk, 0, "the TCP connect names its socket");
}

#[test]
fn the_capture_limit_cuts_the_payload_not_the_count() {
    let mut p = Probes::load(16).follow_me();
    let tid = gettid();
    let (_l, mut client, mut server) = pair();
    let big: Vec<u8> = (0..100u8).collect();
    client.write_all(&big).unwrap();
    let mut buf = [0u8; 256];
    let mut got = 0;
    while got < big.len() {
        got += server.read(&mut buf[got..]).unwrap();
    }
    let events = p.drain();
    let data = data_of(&events, tid);
    let send = data
        .iter()
        .find(|d| d.direction == direction::SEND)
        .expect("send");
    assert_eq!(send.ret, 100);
    assert_eq!(send.payload, &big[..16]);
    assert!(p.counter(RequestCounter::Truncated) >= 1);
}

fn iov(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }
}

#[test]
fn vectored_and_plain_syscalls_are_captured() {
    let mut p = Probes::load(256).follow_me();
    let tid = gettid();
    let (_l, client, server) = pair();
    let (cfd, sfd) = (client.as_raw_fd(), server.as_raw_fd());
    let head = b"GET /v HTTP/1.1\r\n";
    let tail = b"Host: v\r\n\r\n";
    let mut rbuf = [0u8; 512];
    // SAFETY: the syscalls get valid fds, iovecs and msghdrs pointing at
    // live buffers.
    unsafe {
        let w = [iov(head), iov(tail)];
        assert_eq!(
            libc::writev(cfd, w.as_ptr(), 2),
            (head.len() + tail.len()) as isize
        );
        std::thread::sleep(Duration::from_millis(20));
        let r = [iov(&rbuf)];
        let n = libc::readv(sfd, r.as_ptr(), 1);
        assert_eq!(n, (head.len() + tail.len()) as isize);

        let mut m: libc::msghdr = std::mem::zeroed();
        let body = [iov(RESPONSE)];
        m.msg_iov = body.as_ptr().cast_mut();
        m.msg_iovlen = 1;
        assert_eq!(libc::sendmsg(sfd, &m, 0), RESPONSE.len() as isize);
        let mut m: libc::msghdr = std::mem::zeroed();
        let into = [iov(&rbuf)];
        m.msg_iov = into.as_ptr().cast_mut();
        m.msg_iovlen = 1;
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(libc::recvmsg(cfd, &mut m, 0), RESPONSE.len() as isize);

        assert_eq!(
            libc::write(cfd, head.as_ptr().cast(), head.len()),
            head.len() as isize
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            libc::read(sfd, rbuf.as_mut_ptr().cast(), rbuf.len()),
            head.len() as isize
        );
        // A peek is read again later: it sends nothing.
        assert_eq!(
            libc::send(cfd, tail.as_ptr().cast(), tail.len(), 0),
            tail.len() as isize
        );
        std::thread::sleep(Duration::from_millis(20));
        let n = libc::recv(sfd, rbuf.as_mut_ptr().cast(), rbuf.len(), libc::MSG_PEEK);
        assert_eq!(n, tail.len() as isize);
        assert_eq!(libc::recv(sfd, rbuf.as_mut_ptr().cast(), rbuf.len(), 0), n);
    }
    let events = p.drain();
    let got: Vec<(i32, u8, i64, Vec<u8>)> = data_of(&events, tid)
        .into_iter()
        .map(|d| (d.fd, d.syscall, d.ret, d.payload))
        .collect();
    let full = [&head[..], &tail[..]].concat();
    assert_eq!(
        got,
        vec![
            // writev captures the first iovec only; the count is the whole.
            (cfd, syscall::WRITEV, full.len() as i64, head.to_vec()),
            (sfd, syscall::READV, full.len() as i64, full.clone()),
            (
                sfd,
                syscall::SENDMSG,
                RESPONSE.len() as i64,
                RESPONSE.to_vec()
            ),
            (
                cfd,
                syscall::RECVMSG,
                RESPONSE.len() as i64,
                RESPONSE.to_vec()
            ),
            (cfd, syscall::WRITE, head.len() as i64, head.to_vec()),
            (sfd, syscall::READ, head.len() as i64, head.to_vec()),
            (cfd, syscall::SENDTO, tail.len() as i64, tail.to_vec()),
            (sfd, syscall::RECVFROM, tail.len() as i64, tail.to_vec()),
        ]
    );
    assert!(p.counter(RequestCounter::MsgPeekSkipped) >= 1);
}

#[test]
fn a_reset_of_a_followed_socket_is_sent() {
    let mut p = Probes::load(256).follow_me();
    let (_l, client, server) = pair();
    let tid = gettid();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid linger struct: close() then sends RST.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0);
    // A data exchange makes the kernel side follow both sockets.
    let mut c = &client;
    c.write_all(b"x").unwrap();
    let mut s = &server;
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    drop(client);
    std::thread::sleep(Duration::from_millis(20));
    let events = p.drain();
    let data = data_of(&events, tid);
    let client_sk = data
        .iter()
        .find(|d| d.direction == direction::SEND)
        .expect("send")
        .sk;
    let server_sk = data
        .iter()
        .find(|d| d.direction == direction::RECV)
        .expect("recv")
        .sk;
    let tcp: Vec<(u8, u64)> = events
        .iter()
        .filter_map(|e| match e {
            ReqEvent::Tcp(t) => Some((t.kind, t.sk)),
            _ => None,
        })
        .collect();
    assert!(tcp.contains(&(tcp_kind::SEND_RESET, client_sk)), "{tcp:?}");
    assert!(
        tcp.contains(&(tcp_kind::RECEIVE_RESET, server_sk)),
        "{tcp:?}"
    );
    drop(server);
}

#[test]
fn every_kprobe_program_passes_the_verifier() {
    require_root();
    let results = probe_kprobes();
    assert_eq!(results.len(), 6);
    for (function, result) in &results {
        assert_eq!(result, &Ok(()), "kprobe on {function}");
    }
}

#[test]
fn hooks_are_chosen_with_a_reason() {
    let p = Probes::load(256);
    let choices = p.probes.choices();
    let via = |h: Hook| {
        choices
            .iter()
            .find(|c| c.hook == h)
            .expect("every hook")
            .via
    };
    for h in Hook::ALL {
        let _ = via(h);
    }
    assert_eq!(via(Hook::Syscalls), Via::Tracepoint);
    assert_eq!(via(Hook::SockOfData), Via::Tracepoint);
    assert_eq!(via(Hook::SockState), Via::Tracepoint);
    assert_eq!(via(Hook::SockOfConnect), Via::Tracepoint);
    assert_eq!(via(Hook::ProcessFollow), Via::Tracepoint);
    assert_eq!(via(Hook::TcpResets), Via::Tracepoint);
    assert_eq!(via(Hook::Splice), Via::Tracepoint);
    // This kernel has no kprobes: the only variant of the accept hook loads
    // (the verifier accepts it) but cannot attach, and the choice says so.
    let accept = choices
        .iter()
        .find(|c| c.hook == Hook::SockOfAccept)
        .unwrap();
    if kprobes_configured() {
        assert_eq!(accept.via, Via::Kprobe, "{accept}");
    } else {
        assert_eq!(accept.via, Via::Unavailable, "{accept}");
        assert!(
            accept.why.contains("inet_csk_accept: attach failed"),
            "{accept}"
        );
    }
}

/// Whether the kernel can create kprobes (the kprobe PMU, or kprobe_events).
fn kprobes_configured() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

#[test]
fn a_forked_child_of_a_followed_process_is_followed() {
    let mut p = Probes::load(256).follow_me();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    // bash's /dev/tcp: connect, write, read, in a child process.
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /child HTTP/1.1\\r\\n\\r\\n' >&3; read -r line <&3"))
        .spawn()
        .expect("bash");
    let child_pid = child.id();
    let (mut server, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let n = server.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"GET /child"));
    server
        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let events = p.drain();
    let connects: Vec<&SockCallEvent> = events
        .iter()
        .filter_map(|e| match e {
            ReqEvent::Call(c) if c.tgid == child_pid && c.call == call::CONNECT => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(connects.len(), 1, "the child's one connect: {connects:?}");
    let connect = *connects[0];
    assert_eq!(
        (connect.port, v4(&connect.addr)),
        (port, *SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).ip())
    );
    // bash writes through fd 1 (`>&3` dups the socket onto it) in two
    // writes, and reads one byte at a time: every event names the socket.
    let child_data: Vec<&Data> = events
        .iter()
        .filter_map(|e| match e {
            ReqEvent::Data(d) if d.tgid == child_pid => Some(d),
            _ => None,
        })
        .collect();
    assert!(child_data.iter().all(|d| d.sk == connect.sk), "one socket");
    let sent: Vec<u8> = child_data
        .iter()
        .filter(|d| d.direction == direction::SEND)
        .flat_map(|d| d.payload.clone())
        .collect();
    assert_eq!(sent, b"GET /child HTTP/1.1\r\n\r\n");
    let read: Vec<u8> = child_data
        .iter()
        .filter(|d| d.direction == direction::RECV)
        .flat_map(|d| d.payload.clone())
        .collect();
    assert_eq!(read, b"HTTP/1.1 204 No Content\r\n");
    // The exited child is forgotten.
    assert!(!p.procs.tgids().contains(&child_pid));
}

/// A TLS client and server in one Python process (its `ssl` module links
/// the system's libssl.so.3), a child of this followed test: the libssl
/// uprobes give the plaintext both ways, on the socket the syscalls inside
/// each SSL call named, and those syscalls send their counts only.
const TLS_PAIR: &str = r#"
import socket, ssl, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(sys.argv[1], sys.argv[2])
cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
cctx.check_hostname = False; cctx.verify_mode = ssl.CERT_NONE
def serve():
    c, _ = srv.accept()
    s = sctx.wrap_socket(c, server_side=True)
    assert s.recv(4096).startswith(b"GET /tls ")
    s.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    s.close()
t = threading.Thread(target=serve); t.start()
c = cctx.wrap_socket(socket.create_connection(srv.getsockname()))
c.sendall(b"GET /tls HTTP/1.1\r\nHost: a\r\n\r\n")
assert c.recv(4096).startswith(b"HTTP/1.1 204")
c.close(); t.join()
"#;

#[test]
fn tls_plaintext_comes_from_the_libssl_uprobes_on_the_right_socket() {
    let mut p = Probes::load(256).follow_me();
    let tls_hook = p
        .probes
        .choices()
        .iter()
        .find(|c| c.hook == Hook::TlsPlaintext)
        .cloned()
        .expect("the TLS hook");
    assert_eq!(tls_hook.via, Via::Uprobe, "{tls_hook}");
    let dir = integration_tests::temp_path("tls-pair");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let out = std::process::Command::new("python3")
        .args(["-c", TLS_PAIR])
        .arg(&cert)
        .arg(&key)
        .output()
        .expect("python3");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = p.drain();
    let data: Vec<&Data> = events
        .iter()
        .filter_map(|e| match e {
            ReqEvent::Data(d) if d.sk != 0 => Some(d),
            _ => None,
        })
        .collect();
    let plain = |call: u8, prefix: &[u8]| {
        data.iter()
            .find(|d| d.syscall == call && d.payload.starts_with(prefix))
            .copied()
            .unwrap_or_else(|| panic!("no {call} event starting {prefix:?}: {data:#?}"))
    };
    let sent = plain(syscall::SSL_WRITE, b"GET /tls HTTP/1.1\r\n");
    let got = plain(syscall::SSL_READ, b"GET /tls HTTP/1.1\r\n");
    let answer = plain(syscall::SSL_WRITE, b"HTTP/1.1 204");
    let answered = plain(syscall::SSL_READ, b"HTTP/1.1 204");
    assert_eq!(
        (sent.direction, got.direction),
        (direction::SEND, direction::RECV)
    );
    assert_eq!(sent.ret, 30, "the plaintext's exact length");
    assert_eq!(sent.sk, answered.sk, "the client's socket both ways");
    assert_eq!(got.sk, answer.sk, "the server's socket both ways");
    assert_ne!(sent.sk, got.sk);
    // The TLS records of those sockets went out as counts, no payload.
    for sk in [sent.sk, got.sk] {
        let records: Vec<&&Data> = data
            .iter()
            .filter(|d| d.sk == sk && d.tls == tls::CIPHERTEXT)
            .collect();
        assert!(!records.is_empty(), "ciphertext counted on {sk:#x}");
        assert!(records.iter().all(|d| d.payload.is_empty() && d.ret > 0));
    }
    assert!(
        data.iter()
            .filter(|d| d.tls == tls::CIPHERTEXT)
            .all(|d| !syscall::is_tls_plaintext(d.syscall))
    );
}

/// Set for the copy of this binary that `ip netns exec` runs.
const INNER: &str = "LBW_REQUEST_PROBES_INNER";

/// `ip netns exec` mounts a fresh /sys, where /sys/kernel/tracing is an
/// empty directory: the loader must mount tracefs itself there, then
/// capture as anywhere else. Runs this binary's `inside_a_fresh_sys` in a
/// namespace of its own.
#[test]
fn under_ip_netns_exec_tracefs_is_mounted_and_capture_works() {
    require_root();
    let ns = NetNs::new("reqtfs");
    let exe = std::env::current_exe().expect("test binary");
    let out = ns
        .command(&exe)
        .args([
            "--exact",
            "inside_a_fresh_sys",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .output()
        .expect("run the inner test");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inner test failed:\n{text}");
    assert!(text.contains("1 passed"), "the inner test ran:\n{text}");
    assert!(text.contains("tracefs at /sys/kernel/tracing"), "{text}");
}

#[test]
#[ignore = "run by under_ip_netns_exec_tracefs_is_mounted_and_capture_works inside a namespace"]
fn inside_a_fresh_sys() {
    assert!(
        std::env::var_os(INNER).is_some(),
        "only inside the namespace"
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        tracefs::tracefs_mounts(&info)
            .iter()
            .all(|m| !m.join("events").is_dir()),
        "no usable tracefs before the loader runs"
    );
    let mut p = Probes::load(256).follow_me();
    let root = tracefs::root().expect("tracefs");
    println!("tracefs at {}", root.display());
    let tid = gettid();
    let (_l, mut client, mut server) = pair();
    client.write_all(REQUEST).unwrap();
    let mut buf = [0u8; 256];
    let n = server.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], REQUEST);
    let data = data_of(&p.drain(), tid);
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(data.iter().all(|d| d.payload == REQUEST));
}

/// A copy of the tracefs files the loader reads (`events/<cat>/<name>/{id,format}`),
/// removed on drop.
struct FakeTracefs {
    root: std::path::PathBuf,
}

impl FakeTracefs {
    fn copy_of(real: &std::path::Path) -> Self {
        let root = std::env::temp_dir().join(format!("lbw-fake-tracefs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for cat in ["syscalls", "sock", "tcp", "sched"] {
            for entry in std::fs::read_dir(real.join("events").join(cat)).expect("events") {
                let entry = entry.unwrap();
                if !entry.path().join("format").exists() {
                    continue;
                }
                let dir = root.join("events").join(cat).join(entry.file_name());
                std::fs::create_dir_all(&dir).unwrap();
                for f in ["id", "format"] {
                    std::fs::copy(entry.path().join(f), dir.join(f)).unwrap();
                }
            }
        }
        Self { root }
    }

    fn edit(&self, cat: &str, name: &str, from: &str, to: &str) {
        let path = self.root.join("events").join(cat).join(name).join("format");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from} in {}", path.display());
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }
}

impl Drop for FakeTracefs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A record whose field moved (as a future kernel might) makes its hook
/// unavailable with the reason, after trying the kprobe variant; the
/// programs are never attached to read the wrong bytes.
#[test]
fn a_changed_record_makes_its_hook_unavailable_never_a_wrong_read() {
    require_root();
    let real = tracefs::root().expect("tracefs");
    let fake = FakeTracefs::copy_of(real);
    fake.edit(
        "sock",
        "inet_sock_set_state",
        "int oldstate;\toffset:16",
        "int oldstate;\toffset:12",
    );
    fake.edit("tcp", "tcp_destroy_sock", "__u16 family", "__u16 fam");
    let settings = RequestSettings::try_new(1 << 16, 256).unwrap();
    let probes = RequestProbes::load_with_tracefs(&settings, &fake.root).expect("load");
    let find = |h: Hook| {
        probes
            .choices()
            .iter()
            .find(|c| c.hook == h)
            .unwrap()
            .clone()
    };
    let state = find(Hook::SockState);
    assert_ne!(state.via, Via::Tracepoint, "{state}");
    assert!(
        state.why.contains(
            "record differs: field `oldstate` is at offset 12 size 4, the program reads 16/4"
        ),
        "{state}"
    );
    if !kprobes_configured() {
        assert_eq!(state.via, Via::Unavailable, "{state}");
        assert!(
            state.why.contains("kprobe: tcp_set_state: attach failed"),
            "{state}"
        );
        let connect = find(Hook::SockOfConnect);
        assert_eq!(connect.via, Via::Unavailable, "{connect}");
    }
    let destroy = find(Hook::TcpDestroy);
    assert_eq!(destroy.via, Via::Unavailable, "{destroy}");
    assert!(
        destroy.why.contains("field `family` is missing"),
        "{destroy}"
    );
    // Everything else is unchanged.
    assert_eq!(find(Hook::Syscalls).via, Via::Tracepoint);
    assert_eq!(find(Hook::SockOfData).via, Via::Tracepoint);
    assert_eq!(find(Hook::TcpResets).via, Via::Tracepoint);
}

/// `[requests] tls_libraries`: each configured libssl is probed, and one
/// that is missing is named in the hook's reason (the others still serve);
/// with only missing ones the hook is unavailable, saying why.
#[test]
fn configured_tls_libraries_are_probed_and_a_missing_one_is_named() {
    require_root();
    let system = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libssl.so.3")
        .expect("Debian's libssl.so.3");
    let missing = std::path::PathBuf::from("/nonexistent/libssl.so.3");
    let tls = |libraries: Vec<std::path::PathBuf>| {
        let settings = RequestSettings::try_new(1 << 16, 256)
            .unwrap()
            .with_tls_libraries(libraries);
        let probes = RequestProbes::load(&settings).expect("load");
        probes
            .choices()
            .iter()
            .find(|c| c.hook == Hook::TlsPlaintext)
            .cloned()
            .expect("the TLS hook")
    };
    let both = tls(vec![missing.clone(), system.clone()]);
    assert_eq!(both.via, Via::Uprobe, "{both}");
    assert!(both.why.contains(&*system.to_string_lossy()), "{both}");
    assert!(
        both.why.contains("not probed: /nonexistent/libssl.so.3"),
        "{both}"
    );
    let none = tls(vec![missing]);
    assert_eq!(none.via, Via::Unavailable, "{none}");
    assert!(none.why.contains("/nonexistent/libssl.so.3"), "{none}");
}
