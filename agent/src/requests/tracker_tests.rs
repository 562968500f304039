//! The tracker driven by a simulated load balancer: clients, a proxy with
//! two threads that interleave requests, and backends, as the kernel would
//! report them. The ground truth is what the simulation did.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::{
    correlate::{Mapping, Reason},
    http::Limits,
    input::{Call, CallKind, Data, Input, Layer, State, TcpKind, TcpState, Thread, Way},
    sockets::{Ends, Role},
    tracker::{ClosedBy, ConnOut, ConnectError, Output, RequestOut, Tracker},
};

const TGID: u32 = 100;
const FRONTEND: &str = "192.0.2.1:80";

/// One simulated request: who sent it, how, and which backend served it.
#[derive(Clone, Debug)]
struct Req {
    client: SocketAddr,
    path: String,
    status: u16,
    server: SocketAddr,
    lb_src: SocketAddr,
    tid: u32,
    /// Every server answers the same body (else it names itself).
    same_body: bool,
    /// The proxy adds the exact-mode tag.
    tagged: bool,
}

/// Events of one request, each at an offset from its start.
fn events(n: u32, r: &Req, start: u64, gaps: &[u64; 6], out: &mut Vec<(u64, Input)>) {
    let thread = Thread {
        tgid: TGID,
        tid: r.tid,
    };
    let cfd = 1000 + 2 * n as i32;
    let bfd = cfd + 1;
    let csk = 0x1_0000 + u64::from(n);
    let bsk = 0x2_0000 + u64::from(n);
    let frontend: SocketAddr = FRONTEND.parse().unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: sim/1\r\nAccept: */*\r\n\r\n",
        r.path
    );
    // As HAProxy forwards it: names lowercased, X-Forwarded-For added.
    let tag = if r.tagged {
        format!("x-lbw: {}:{}:{n}\r\n", r.client.ip(), r.client.port())
    } else {
        String::new()
    };
    let fwd = format!(
        "GET {} HTTP/1.1\r\nhost: shop.example\r\nuser-agent: sim/1\r\naccept: */*\r\nx-forwarded-for: {}\r\n{tag}connection: close\r\n\r\n",
        r.path,
        r.client.ip()
    );
    let body = if r.same_body {
        format!("ok {}", r.path)
    } else {
        format!("from {} for {}", r.server, r.path)
    };
    let resp = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\n\r\n{body}",
        r.status,
        body.len()
    );
    let mut t = start;
    let mut at = |dt: u64| {
        t += dt;
        t
    };
    let data = |fd: i32, sk: u64, way: Way, enter: u64, bytes: &str| {
        Input::Data(Data {
            thread,
            fd,
            sk,
            way,
            enter,
            total: bytes.len() as u64,
            captured: bytes.as_bytes().to_vec(),
            layer: Layer::Wire,
        })
    };
    let t0 = at(1);
    out.push((
        t0,
        Input::State(State {
            sk: csk,
            old: TcpState::SynRecv,
            new: TcpState::Established,
            local: frontend,
            remote: r.client,
        }),
    ));
    let t1 = at(gaps[0] + 1);
    out.push((t1, data(cfd, csk, Way::Recv, t1 - 1, &req)));
    let t2 = at(gaps[1] + 1);
    // The connect is stamped at its entry, before its socket's ESTABLISHED.
    out.push((
        t2 + 1,
        Input::State(State {
            sk: bsk,
            old: TcpState::SynSent,
            new: TcpState::Established,
            local: r.lb_src,
            remote: r.server,
        }),
    ));
    out.push((
        t2,
        Input::Call(Call {
            thread,
            kind: CallKind::Connect,
            fd: bfd,
            ret: -115,
            sk: bsk,
            addr: Some(r.server),
        }),
    ));
    let t3 = at(gaps[2] + 2);
    out.push((t3 + 1, data(bfd, bsk, Way::Send, t3, &fwd)));
    let t4 = at(gaps[3] + 2);
    out.push((t4, data(bfd, bsk, Way::Recv, t4 - 1, &resp)));
    let t5 = at(gaps[4] + 1);
    out.push((t5 + 1, data(cfd, csk, Way::Send, t5, &resp)));
    let t6 = at(gaps[5] + 2);
    let close = |fd| {
        Input::Call(Call {
            thread,
            kind: CallKind::Close,
            fd,
            ret: 0,
            sk: 0,
            addr: None,
        })
    };
    out.push((t6, close(bfd)));
    out.push((t6 + 1, close(cfd)));
}

/// The first request record among `out`.
fn first_request(out: &[Output]) -> &RequestOut {
    out.iter()
        .find_map(|o| match o {
            Output::Request(r) => Some(&**r),
            Output::Connection(_) => None,
        })
        .expect("a request record")
}

/// The client connection's record among `out`.
fn client_conn(out: &[Output]) -> &ConnOut {
    out.iter()
        .find_map(|o| match o {
            Output::Connection(c) if c.role == Role::Client => Some(&**c),
            _ => None,
        })
        .expect("a client connection record")
}

fn server(i: usize) -> (SocketAddr, SocketAddr) {
    let base = 4 * (i as u8 % 3);
    (
        SocketAddr::from(([198, 51, 100, base + 2], 8080)),
        SocketAddr::from(([198, 51, 100, base + 1], 30000 + i as u16)),
    )
}

fn run(inputs: &mut [(u64, Input)]) -> Vec<Output> {
    run_mode(inputs, false)
}

fn run_mode(inputs: &mut [(u64, Input)], exact: bool) -> Vec<Output> {
    inputs.sort_by_key(|(t, _)| *t);
    let mut tracker = Tracker::new(Limits::default(), exact);
    let mut out = Vec::new();
    for (t, input) in inputs.iter().cloned() {
        tracker.push(t, input, &mut out);
    }
    tracker.flush(u64::MAX / 2, &mut out);
    out
}

/// Simulates `reqs`, each starting at its offset, and checks every mapped
/// request against the truth. Returns (mapped, ambiguous).
fn check(reqs: &[(Req, u64, [u64; 6])]) -> (usize, usize) {
    let exact = reqs.iter().any(|(r, ..)| r.tagged);
    let mut inputs = Vec::new();
    for (n, (r, start, gaps)) in reqs.iter().enumerate() {
        events(n as u32, r, *start, gaps, &mut inputs);
    }
    let out = run_mode(&mut inputs, exact);
    let (mut mapped, mut ambiguous) = (0, 0);
    let mut conns = 0;
    for o in &out {
        match o {
            Output::Request(r) => {
                let truth = reqs
                    .iter()
                    .find(|(q, ..)| q.client == r.client.remote)
                    .map(|(q, ..)| q)
                    .unwrap();
                assert_eq!(r.head.target, truth.path);
                assert_eq!(r.status, Some(truth.status));
                match &r.mapping {
                    Mapping::Mapped { .. } | Mapping::Exact { .. } => {
                        let b = r.backend.expect("a mapped request names its backend");
                        assert_eq!(
                            (b.remote, b.local),
                            (truth.server, truth.lb_src),
                            "wrong mapping for {}",
                            truth.path
                        );
                        mapped += 1;
                    }
                    Mapping::Ambiguous { .. } => {
                        assert!(r.backend.is_none());
                        ambiguous += 1;
                    }
                }
            }
            Output::Connection(_) => conns += 1,
        }
    }
    assert_eq!(mapped + ambiguous, reqs.len(), "one record per request");
    assert_eq!(conns, 2 * reqs.len(), "one record per connection");
    (mapped, ambiguous)
}

fn req(i: usize, path: String, tid: u32) -> Req {
    let (server, lb_src) = server(i);
    Req {
        client: SocketAddr::from(([192, 0, 2, 10 + (i % 4) as u8], 40000 + i as u16)),
        status: if path.contains("missing") { 404 } else { 200 },
        path,
        server,
        lb_src,
        tid,
        same_body: false,
        tagged: false,
    }
}

#[test]
fn one_request_is_mapped_with_its_connections() {
    let r = req(0, "/cart".into(), 7);
    let (mapped, _) = check(&[(r, 10, [5; 6])]);
    assert_eq!(mapped, 1);
}

#[test]
fn records_carry_times_sizes_and_roles() {
    let r = req(1, "/missing/x".into(), 7);
    let mut inputs = Vec::new();
    events(0, &r, 1000, &[10; 6], &mut inputs);
    let out = run(&mut inputs);
    let request = first_request(&out);
    assert_eq!(request.status, Some(404));
    assert_eq!(request.head.method, "GET");
    assert_eq!(request.head.host.as_deref(), Some("shop.example"));
    assert!(request.start < request.end);
    let (b0, b1) = request.backend_span.unwrap();
    assert!(request.start < b0 && b0 < b1 && b1 < request.end);
    let roles: Vec<(Role, u64)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Connection(c) => Some((c.role, c.requests)),
            Output::Request(_) => None,
        })
        .collect();
    assert!(roles.contains(&(Role::Client, 1)) && roles.contains(&(Role::Backend, 1)));
    let client = client_conn(&out);
    assert_eq!(
        client.backends.iter().copied().collect::<Vec<Ends>>(),
        [Ends {
            local: r.lb_src,
            remote: r.server
        }]
    );
}

#[test]
fn identical_requests_in_flight_on_one_thread_are_ambiguous_not_guessed() {
    // Two identical requests overlap on one thread, to different servers
    // that answer alike.
    let same = |i| Req {
        same_body: true,
        ..req(i, "/same".into(), 7)
    };
    let (mapped, ambiguous) = check(&[(same(0), 10, [50; 6]), (same(1), 20, [50; 6])]);
    assert_eq!((mapped, ambiguous), (0, 2));
    // Answers that differ tell them apart.
    let (mapped, _) = check(&[
        (req(0, "/same".into(), 7), 10, [50; 6]),
        (req(1, "/same".into(), 7), 20, [50; 6]),
    ]);
    assert_eq!(mapped, 2);
}

#[test]
fn a_refused_backend_connect_is_a_failed_connection() {
    let thread = Thread { tgid: TGID, tid: 7 };
    let server: SocketAddr = "198.51.100.2:8080".parse().unwrap();
    let mut inputs = vec![
        (
            10,
            Input::Call(Call {
                thread,
                kind: CallKind::Connect,
                fd: 9,
                ret: -115,
                sk: 0xbad,
                addr: Some(server),
            }),
        ),
        (
            11,
            Input::Tcp {
                sk: 0xbad,
                kind: TcpKind::ReceiveReset,
            },
        ),
        (
            12,
            Input::Call(Call {
                thread,
                kind: CallKind::Close,
                fd: 9,
                ret: 0,
                sk: 0,
                addr: None,
            }),
        ),
    ];
    let out = run(&mut inputs);
    let [Output::Connection(c)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(c.role, Role::Backend);
    assert_eq!(c.ends.remote, server);
    assert_eq!(c.connect_error, Some(ConnectError::Refused));
    assert_eq!(c.reset, Some(false));
    assert_eq!(c.closed_by, ClosedBy::Unknown);
}

/// A connect to a backend next door that refuses it: the SYN and the RST
/// are processed inside connect(), so the kernel stamps the state change
/// and the reset before the connect's exit event. Found by the
/// requests_failures test against the real HAProxy, where both refused
/// connects were reported as successes.
#[test]
fn a_connect_refused_before_it_returns_is_a_failed_connection() {
    use agent_common::{
        event::{EventHeader, EventKind},
        request::{SockCallEvent, call},
    };

    use super::event::ReqEvent;

    let server: SocketAddr = "198.51.100.2:8099".parse().unwrap();
    let lb_end: SocketAddr = "198.51.100.1:36592".parse().unwrap();
    let sk = 0xdead;
    let connect = |call: u8, fd: i32, ret: i64, enter_ns: u64, exit_ns: u64| {
        let SocketAddr::V4(v4) = server else {
            unreachable!()
        };
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&v4.ip().octets());
        let event = SockCallEvent {
            header: EventHeader {
                kind: EventKind::SockCall as u32,
                len: std::mem::size_of::<SockCallEvent>() as u32,
                ktime_ns: exit_ns,
            },
            lost: 0,
            tgid: TGID,
            tid: 7,
            fd,
            call,
            _pad: [0; 7],
            ret,
            sk: if call == call::CONNECT { sk } else { 0 },
            enter_ns,
            family: if call == call::CONNECT { 2 } else { 0 },
            port: if call == call::CONNECT { 8099 } else { 0 },
            addr: if call == call::CONNECT { addr } else { [0; 16] },
            _pad2: [0; 4],
        };
        Input::from_event(ReqEvent::Call(event)).unwrap()
    };
    let mut inputs = vec![
        // connect(9) enters at 10 and returns -EINPROGRESS at 13 ...
        connect(call::CONNECT, 9, -115, 10, 13),
        // ... but the RST came back at 11 and closed the socket at 12.
        (
            11,
            Input::Tcp {
                sk,
                kind: TcpKind::ReceiveReset,
            },
        ),
        (
            12,
            Input::State(State {
                sk,
                old: TcpState::SynSent,
                new: TcpState::Close,
                local: lb_end,
                remote: server,
            }),
        ),
        connect(call::CLOSE, 9, 0, 20, 21),
    ];
    let out = run(&mut inputs);
    let [Output::Connection(c)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(c.role, Role::Backend);
    assert_eq!(c.connect_error, Some(ConnectError::Refused));
    assert_eq!(c.reset, Some(false));
    assert_eq!(
        c.ends,
        Ends {
            local: lb_end,
            remote: server
        }
    );
    assert_eq!((c.start, c.end), (10, 20));
}

#[test]
fn a_client_that_aborts_gets_a_record_with_the_failure() {
    let r = req(2, "/slow".into(), 7);
    let mut inputs = Vec::new();
    events(0, &r, 10, &[5; 6], &mut inputs);
    // Cut before the backend answered: drop everything after the backend
    // send, then the client closes (state CLOSE_WAIT) and the LB closes.
    inputs.truncate(5);
    let csk = 0x1_0000;
    inputs.push((
        200,
        Input::State(State {
            sk: csk,
            old: TcpState::Established,
            new: TcpState::CloseWait,
            local: FRONTEND.parse().unwrap(),
            remote: r.client,
        }),
    ));
    inputs.push((
        201,
        Input::Call(Call {
            thread: Thread { tgid: TGID, tid: 7 },
            kind: CallKind::Close,
            fd: 1000,
            ret: 0,
            sk: 0,
            addr: None,
        }),
    ));
    let out = run(&mut inputs);
    let request = first_request(&out);
    assert_eq!(request.failure, Some("client-aborted"));
    assert!(matches!(request.mapping, Mapping::Ambiguous { .. }));
}

/// A backend that resets mid-response: the load balancer forwards the
/// head and part of the body, then closes the client connection. Found by
/// the requests_failures test against the real HAProxy, where the record
/// said `framing-lost` (the framing was whole up to the close) and ended
/// at the request's first byte (duration 0).
#[test]
fn a_response_the_lb_cuts_short_is_lb_closed_and_ends_at_the_close() {
    let r = req(0, "/cart".into(), 7);
    let mut inputs = Vec::new();
    events(0, &r, 10, &[5; 6], &mut inputs);
    // Both copies of the response lose their last bytes.
    for i in [5, 6] {
        let (_, Input::Data(d)) = &mut inputs[i] else {
            panic!("{:?}", inputs[i])
        };
        d.captured.truncate(d.captured.len() - 3);
        d.total -= 3;
    }
    let client_close = inputs.last().unwrap().0;
    let out = run(&mut inputs);
    let request = first_request(&out);
    assert_eq!(request.failure, Some("lb-closed"));
    assert_eq!(request.status, Some(200));
    assert!(matches!(request.mapping, Mapping::Ambiguous { .. }));
    assert_eq!(request.end, client_close);
}

#[test]
fn lost_events_make_open_windows_ambiguous() {
    for (input, reason) in [
        (Input::Lost { count: 3 }, Reason::EventsLost),
        (Input::OutOfOrder, Reason::OutOfOrder),
    ] {
        let r = req(0, "/cart".into(), 7);
        let mut inputs = Vec::new();
        events(0, &r, 10, &[5; 6], &mut inputs);
        inputs.push((17, input));
        let out = run(&mut inputs);
        let request = first_request(&out);
        assert!(
            matches!(request.mapping, Mapping::Ambiguous { reason: r, .. } if r == reason),
            "{:?}",
            request.mapping
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Interleaved requests on two threads: never a wrong mapping, and all
    /// mapped when every request is distinct or exact mode tags them.
    #[test]
    fn interleaved_requests_never_map_wrongly(
        spec in proptest::collection::vec(
            (0u8..3, 0u64..400, any::<[u8; 6]>(), 0u32..2),
            1..24,
        ),
        distinct in any::<bool>(),
        tagged in any::<bool>(),
    ) {
        let reqs: Vec<(Req, u64, [u64; 6])> = spec
            .iter()
            .enumerate()
            .map(|(i, (kind, start, gaps, tid))| {
                let path = if distinct {
                    format!("/r/{i}")
                } else {
                    ["/a", "/b", "/missing/c"][*kind as usize].to_owned()
                };
                let same_body = !distinct && kind % 2 == 0;
                (Req { same_body, tagged, ..req(i, path, 7 + tid) }, *start, gaps.map(u64::from))
            })
            .collect();
        let (mapped, _) = check(&reqs);
        if distinct || tagged {
            prop_assert_eq!(mapped, reqs.len());
        }
    }
}

#[test]
fn exact_mode_tags_name_the_client() {
    use super::tracker::tag_client;
    assert_eq!(
        tag_client("192.0.2.10:40000:17"),
        Some("192.0.2.10:40000".parse().unwrap())
    );
    assert_eq!(
        tag_client("2001:db8::1:443:3"),
        Some("[2001:db8::1]:443".parse().unwrap())
    );
    assert_eq!(
        tag_client("192.0.2.10:40000"),
        Some("192.0.2.10:40000".parse().unwrap())
    );
    assert_eq!(tag_client("nonsense"), None);
}

#[test]
fn data_sorted_before_its_established_is_framed_once_the_tuple_comes() {
    let r = req(0, "/cart".into(), 7);
    let mut inputs = Vec::new();
    events(0, &r, 10, &[5; 6], &mut inputs);
    // The backend's ESTABLISHED stamped after its first send, and no
    // socket in the connect event.
    for (t, input) in inputs.iter_mut() {
        match input {
            Input::State(s) if s.old == TcpState::SynSent => *t += 9,
            Input::Call(c) if c.kind == CallKind::Connect => c.sk = 0,
            _ => {}
        }
    }
    let out = run(&mut inputs);
    let mapped = out
        .iter()
        .filter(|o| matches!(o, Output::Request(r) if matches!(r.mapping, Mapping::Mapped { .. })))
        .count();
    assert_eq!(mapped, 1, "{out:?}");
}

/// A TLS frontend: the client socket carries a handshake, then TLS records
/// read and written inside SSL calls; libssl's plaintext comes as its own
/// chunks. The request is framed from the plaintext only, mapped, and the
/// connection counts the wire bytes, not the plaintext.
#[test]
fn a_tls_client_connection_is_framed_from_the_plaintext() {
    let r = req(2, "/secure".into(), 7);
    let mut plain = Vec::new();
    events(0, &r, 1000, &[10; 6], &mut plain);
    let mut inputs = Vec::new();
    let mut wire = (0u64, 0u64);
    for (t, input) in plain {
        match input {
            Input::Data(d) if d.sk == 0x1_0000 => {
                // The same bytes as TLS records, inside the SSL call, then
                // the plaintext libssl hands over (or took).
                let records = Data {
                    total: d.total + 29,
                    captured: Vec::new(),
                    layer: Layer::Ciphertext,
                    ..d.clone()
                };
                match d.way {
                    Way::Recv => wire.0 += records.total,
                    Way::Send => wire.1 += records.total,
                }
                inputs.push((t, Input::Data(records)));
                inputs.push((
                    t,
                    Input::Data(Data {
                        layer: Layer::Plaintext,
                        ..d
                    }),
                ));
            }
            Input::State(s) if s.sk == 0x1_0000 => {
                inputs.push((t, Input::State(s)));
                // The ClientHello, read by the handshake outside any
                // SSL_read: a wire chunk starting with a handshake record.
                let hello = b"\x16\x03\x01\x00\xf4\x01\x00\x00\xf0\x03\x03";
                inputs.push((
                    t + 1,
                    Input::Data(Data {
                        thread: Thread { tgid: TGID, tid: 7 },
                        fd: 1000,
                        sk: 0x1_0000,
                        way: Way::Recv,
                        enter: t,
                        total: 517,
                        captured: hello.to_vec(),
                        layer: Layer::Wire,
                    }),
                ));
                wire.0 += 517;
            }
            other => inputs.push((t, other)),
        }
    }
    let out = run(&mut inputs);
    let request = first_request(&out);
    assert_eq!(request.head.target, "/secure");
    assert_eq!(request.status, Some(200));
    assert!(
        matches!(request.mapping, Mapping::Mapped { .. }),
        "{:?}",
        request.mapping
    );
    assert_eq!(request.backend.map(|b| b.remote), Some(r.server));
    let client = client_conn(&out);
    assert_eq!((client.bytes_in, client.bytes_out), wire, "wire bytes only");
    assert_eq!(client.requests, 1);
}

/// A TCP-mode proxy that splices: the client's bytes go through a pipe to
/// the backend and the answer through another pipe back, with no payload
/// seen. The accept names the client socket by its peer.
#[test]
fn a_spliced_tcp_relay_names_its_backend_and_has_no_request_records() {
    use super::input::Splice;
    let thread = Thread { tgid: TGID, tid: 7 };
    let frontend: SocketAddr = FRONTEND.parse().unwrap();
    let client: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let (server, lb_src) = server(1);
    let (cfd, bfd, csk, bsk) = (30, 31, 0xc1, 0xb1);
    let call = |kind, fd, ret, sk, addr| {
        Input::Call(Call {
            thread,
            kind,
            fd,
            ret,
            sk,
            addr,
        })
    };
    let splice = |fd, sk, way, pipe_fd, total| {
        Input::Splice(Splice {
            thread,
            fd,
            sk,
            way,
            pipe_fd,
            enter: 0,
            total,
        })
    };
    let state = |sk, old, local, remote| {
        Input::State(State {
            sk,
            old,
            new: TcpState::Established,
            local,
            remote,
        })
    };
    let mut inputs = vec![
        (10, state(csk, TcpState::SynRecv, frontend, client)),
        (
            11,
            call(CallKind::Accept, 5, i64::from(cfd), 0, Some(client)),
        ),
        (12, call(CallKind::Connect, bfd, -115, bsk, Some(server))),
        (13, state(bsk, TcpState::SynSent, lb_src, server)),
        (14, call(CallKind::Pipe, 40, 41, 0, None)),
        (15, call(CallKind::Pipe, 42, 43, 0, None)),
        // Request: client -> pipe 41/40 -> backend.
        (20, splice(cfd, 0, Way::Recv, 41, 300)),
        (21, splice(bfd, bsk, Way::Send, 40, 300)),
        // Response: backend -> pipe 43/42 -> client, in two parts.
        (30, splice(bfd, 0, Way::Recv, 43, 5000)),
        (31, splice(cfd, csk, Way::Send, 42, 4000)),
        (32, splice(cfd, csk, Way::Send, 42, 1000)),
        (40, call(CallKind::Close, bfd, 0, 0, None)),
        (41, call(CallKind::Close, cfd, 0, 0, None)),
    ];
    let out = run(&mut inputs);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Request(_))),
        "a relay has no request records: {out:?}"
    );
    let c = client_conn(&out);
    assert_eq!(c.ends.remote, client);
    assert_eq!((c.bytes_in, c.bytes_out, c.spliced), (300, 5000, 5300));
    assert_eq!(
        c.backends.iter().copied().collect::<Vec<_>>(),
        vec![Ends {
            local: lb_src,
            remote: server
        }]
    );
}

/// Two clients' bytes in one pipe before it drained link neither; bytes
/// from a pipe made before the agent link nothing either.
#[test]
fn a_pipe_in_doubt_links_no_backend() {
    use super::input::Splice;
    let thread = Thread { tgid: TGID, tid: 7 };
    let frontend: SocketAddr = FRONTEND.parse().unwrap();
    let (server, lb_src) = server(1);
    let mut inputs = Vec::new();
    for (i, port) in [40001u16, 40002].into_iter().enumerate() {
        let client = SocketAddr::from(([203, 0, 113, 9], port));
        let t = 10 * i as u64;
        let fd = 30 + i as i32;
        inputs.push((
            t,
            Input::State(State {
                sk: 0xc0 + i as u64,
                old: TcpState::SynRecv,
                new: TcpState::Established,
                local: frontend,
                remote: client,
            }),
        ));
        inputs.push((
            t + 1,
            Input::Call(Call {
                thread,
                kind: CallKind::Accept,
                fd: 5,
                ret: i64::from(fd),
                sk: 0,
                addr: Some(client),
            }),
        ));
    }
    inputs.push((
        51,
        Input::State(State {
            sk: 0xb1,
            old: TcpState::SynSent,
            new: TcpState::Established,
            local: lb_src,
            remote: server,
        }),
    ));
    inputs.push((
        50,
        Input::Call(Call {
            thread,
            kind: CallKind::Connect,
            fd: 39,
            ret: 0,
            sk: 0xb1,
            addr: Some(server),
        }),
    ));
    inputs.push((
        52,
        Input::Call(Call {
            thread,
            kind: CallKind::Pipe,
            fd: 40,
            ret: 41,
            sk: 0,
            addr: None,
        }),
    ));
    let splice = |fd, sk, way, pipe_fd| {
        Input::Splice(Splice {
            thread,
            fd,
            sk,
            way,
            pipe_fd,
            enter: 0,
            total: 10,
        })
    };
    inputs.push((60, splice(30, 0, Way::Recv, 41)));
    inputs.push((61, splice(31, 0, Way::Recv, 41)));
    inputs.push((62, splice(39, 0xb1, Way::Send, 40)));
    inputs.push((63, splice(39, 0xb1, Way::Send, 40)));
    // A pipe the agent never saw made.
    inputs.push((70, splice(30, 0, Way::Recv, 77)));
    inputs.push((71, splice(39, 0xb1, Way::Send, 76)));
    let out = run(&mut inputs);
    let clients: Vec<&ConnOut> = out
        .iter()
        .filter_map(|o| match o {
            Output::Connection(c) if c.role == Role::Client => Some(&**c),
            _ => None,
        })
        .collect();
    assert_eq!(clients.len(), 2);
    assert!(clients.iter().all(|c| c.backends.is_empty()), "{clients:?}");
    assert_eq!(clients.iter().map(|c| c.bytes_in).sum::<u64>(), 30);
}

/// A TCP-mode proxy that copies a protocol other than HTTP (here a TLS
/// passthrough) with read and write: the first bytes each way are the same
/// on both connections, so the pair is a relay, and the client's record
/// names the backend.
#[test]
fn a_copying_tcp_relay_names_its_backend_and_has_no_request_records() {
    let thread = Thread { tgid: TGID, tid: 7 };
    let frontend: SocketAddr = FRONTEND.parse().unwrap();
    let client: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let (server, lb_src) = server(1);
    let (cfd, bfd, csk, bsk) = (30, 31, 0xc1, 0xb1);
    let req = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03 a client hello's random";
    let resp = b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03 a server hello";
    let data = |fd, sk, way, bytes: &[u8]| {
        Input::Data(Data {
            thread,
            fd,
            sk,
            way,
            enter: 0,
            total: bytes.len() as u64,
            captured: bytes.to_vec(),
            layer: Layer::Wire,
        })
    };
    let state = |sk, old, local, remote| {
        Input::State(State {
            sk,
            old,
            new: TcpState::Established,
            local,
            remote,
        })
    };
    let call = |kind, fd, ret, sk, addr| {
        Input::Call(Call {
            thread,
            kind,
            fd,
            ret,
            sk,
            addr,
        })
    };
    let mut inputs = vec![
        (10, state(csk, TcpState::SynRecv, frontend, client)),
        (
            11,
            call(CallKind::Accept, 5, i64::from(cfd), 0, Some(client)),
        ),
        (12, call(CallKind::Connect, bfd, -115, bsk, Some(server))),
        (13, state(bsk, TcpState::SynSent, lb_src, server)),
        (20, data(cfd, csk, Way::Recv, req)),
        (21, data(bfd, bsk, Way::Send, req)),
        (30, data(bfd, bsk, Way::Recv, resp)),
        (31, data(cfd, csk, Way::Send, resp)),
        // The second request on the same connection, copied too.
        (40, data(cfd, csk, Way::Recv, req)),
        (41, data(bfd, bsk, Way::Send, req)),
        (50, call(CallKind::Close, bfd, 0, 0, None)),
        (51, call(CallKind::Close, cfd, 0, 0, None)),
    ];
    let out = run(&mut inputs);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Request(_))),
        "a relay has no request records: {out:?}"
    );
    let c = client_conn(&out);
    assert_eq!(c.requests, 0);
    assert_eq!(c.bytes_in, 2 * req.len() as u64);
    assert_eq!(
        c.backends.iter().copied().collect::<Vec<_>>(),
        vec![Ends {
            local: lb_src,
            remote: server
        }]
    );
}

/// Connections open before the agent: no ESTABLISHED or connect was seen,
/// but `/proc` named their fds, so their requests are framed and mapped,
/// and their records say they are older than the agent.
#[test]
fn connections_older_than_the_agent_are_seeded_from_proc() {
    use super::seed::{Seed, SeededConn};
    let r = req(0, "/old".into(), 7);
    let mut inputs = Vec::new();
    events(0, &r, 100, &[1; 6], &mut inputs);
    inputs.retain(|(_, i)| {
        !matches!(
            i,
            Input::State(_)
                | Input::Call(Call {
                    kind: CallKind::Connect,
                    ..
                })
        )
    });
    let frontend: SocketAddr = FRONTEND.parse().unwrap();
    let seed = Seed {
        conns: vec![
            SeededConn {
                fd: 1000,
                ends: Ends {
                    local: frontend,
                    remote: r.client,
                },
                role: Role::Client,
            },
            SeededConn {
                fd: 1001,
                ends: Ends {
                    local: r.lb_src,
                    remote: r.server,
                },
                role: Role::Backend,
            },
        ],
        pipes: Vec::new(),
    };
    inputs.push((50, Input::Seed { tgid: TGID, seed }));
    let out = run(&mut inputs);
    let request = first_request(&out);
    assert!(
        matches!(request.mapping, Mapping::Mapped { .. }),
        "{request:?}"
    );
    assert_eq!(request.backend.map(|b| b.remote), Some(r.server));
    let c = client_conn(&out);
    assert!(c.before_agent);
    assert_eq!(c.start, 50, "found at the snapshot");
}

/// A socket address the kernel reused: another process's socket at `sk`
/// reached ESTABLISHED from SYN_SENT in a softirq that ran on the load
/// balancer's thread (so it was sent), then died unseen; the load
/// balancer's next connect gets the same address. Its connection must have
/// its own tuple, not the stale one (seen in the lab as backend-side
/// records carrying a client's tuple).
#[test]
fn a_connect_never_takes_a_stale_tuple_left_at_its_socket_address() {
    let r = req(0, "/fresh".into(), 7);
    let mut inputs = Vec::new();
    events(0, &r, 1000, &[1; 6], &mut inputs);
    let bsk = 0x2_0000;
    let frontend: SocketAddr = FRONTEND.parse().unwrap();
    // The foreign socket, at the backend socket's address, long before.
    inputs.push((
        10,
        Input::State(State {
            sk: bsk,
            old: TcpState::SynSent,
            new: TcpState::Established,
            local: SocketAddr::from(([203, 0, 113, 50], 50000)),
            remote: frontend,
        }),
    ));
    let out = run(&mut inputs);
    let backend = out
        .iter()
        .find_map(|o| match o {
            Output::Connection(c) if c.role == Role::Backend => Some(&**c),
            _ => None,
        })
        .expect("a backend connection record");
    assert_eq!(backend.ends.remote, r.server, "{backend:?}");
    assert_eq!(backend.ends.local, r.lb_src);
    let backends = out
        .iter()
        .filter(|o| matches!(o, Output::Connection(c) if c.role == Role::Backend))
        .count();
    assert_eq!(backends, 1, "no phantom: {out:?}");
    assert!(matches!(
        first_request(&out).mapping,
        Mapping::Mapped { .. }
    ));
}
