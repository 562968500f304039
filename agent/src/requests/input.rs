//! What the request stage's core consumes: the kernel's events with their
//! meaning made explicit (addresses as `SocketAddr`, states and calls as
//! enums). [`super::event`] decodes the ring-buffer bytes; this is the
//! shape the socket table and the framer need, and what tests write.

use std::net::SocketAddr;

/// A thread of a traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Thread {
    /// Process id (the kernel's tgid).
    pub tgid: u32,
    /// Thread id (the kernel's pid of the task).
    pub tid: u32,
}

/// Which way a read or write moved bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// The process read from the socket.
    Recv,
    /// The process wrote to the socket.
    Send,
}

/// Which layer a [`Data`] chunk's bytes are from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// A syscall outside any SSL call: what the wire carries (plain HTTP,
    /// or a TLS handshake).
    Wire,
    /// A syscall inside an `SSL_read`/`SSL_write` of the same thread: TLS
    /// records, counted but never framed.
    Ciphertext,
    /// What libssl decrypted or is about to encrypt: framed, not counted
    /// as wire bytes.
    Plaintext,
}

/// One read or write of a traced process on a TCP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// Who.
    pub thread: Thread,
    /// The file descriptor, in `thread.tgid`'s table.
    pub fd: i32,
    /// The socket's kernel address: stable while the socket lives.
    pub sk: u64,
    /// Read or write.
    pub way: Way,
    /// Kernel ns at the syscall's entry (the exit time is the event's time).
    pub enter: u64,
    /// Bytes the syscall moved.
    pub total: u64,
    /// The first bytes of them, as far as the kernel copied.
    pub captured: Vec<u8>,
    /// Wire bytes, TLS records, or TLS plaintext.
    pub layer: Layer,
}

/// A TCP state (the kernel's `TCP_*` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// 1.
    Established,
    /// 2.
    SynSent,
    /// 3.
    SynRecv,
    /// 4.
    FinWait1,
    /// 5.
    FinWait2,
    /// 6.
    TimeWait,
    /// 7.
    Close,
    /// 8.
    CloseWait,
    /// 9.
    LastAck,
    /// 10.
    Listen,
    /// 11.
    Closing,
    /// 12.
    NewSynRecv,
    /// Any other number.
    Other(u8),
}

impl TcpState {
    /// The state for the kernel's number.
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            n => Self::Other(n),
        }
    }
}

/// A TCP state change (`sock:inet_sock_set_state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The socket.
    pub sk: u64,
    /// From.
    pub old: TcpState,
    /// To.
    pub new: TcpState,
    /// This host's end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
}

/// A socket call of a traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// accept/accept4: `ret` is the new fd.
    Accept,
    /// connect: `ret` is 0 or `-errno` (`-EINPROGRESS` when non-blocking).
    Connect,
    /// close.
    Close,
    /// pipe/pipe2: `fd` is the new pipe's read end, `ret` its write end.
    Pipe,
}

/// A socket call that ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Who.
    pub thread: Thread,
    /// Which call.
    pub kind: CallKind,
    /// The fd it was called on (accept: the listener).
    pub fd: i32,
    /// Its return value.
    pub ret: i64,
    /// connect: the socket, from the state change inside the call (0 when
    /// unknown).
    pub sk: u64,
    /// connect: the destination.
    pub addr: Option<SocketAddr>,
}

/// A splice between a socket and a pipe: bytes moved with no user buffer,
/// so none are captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splice {
    /// Who.
    pub thread: Thread,
    /// The socket end's fd.
    pub fd: i32,
    /// The socket, when the kernel named it (a splice to a socket); else 0.
    pub sk: u64,
    /// `Recv`: socket to pipe; `Send`: pipe to socket.
    pub way: Way,
    /// The pipe end's fd.
    pub pipe_fd: i32,
    /// Kernel ns at the syscall's entry.
    pub enter: u64,
    /// Bytes moved.
    pub total: u64,
}

/// What the TCP stack did to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpKind {
    /// This host sent a reset.
    SendReset,
    /// The peer sent one.
    ReceiveReset,
    /// A segment was retransmitted.
    Retransmit,
    /// The socket was freed.
    Destroy,
}

/// One input of the request stage, at a kernel time the caller carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A read or write.
    Data(Data),
    /// A TCP state change.
    State(State),
    /// A socket call.
    Call(Call),
    /// A splice between a socket and a pipe.
    Splice(Splice),
    /// What `/proc` showed of a process when it was first followed: its
    /// connections and pipes older than the agent.
    Seed {
        /// The process.
        tgid: u32,
        /// Its connections and pipes.
        seed: super::seed::Seed,
    },
    /// A TCP stack event.
    Tcp {
        /// The socket.
        sk: u64,
        /// What happened.
        kind: TcpKind,
    },
    /// The kernel failed to send `count` events before this time (the
    /// ring buffer was full): every open window is in doubt.
    Lost {
        /// Events lost.
        count: u64,
    },
    /// An event came after later ones had been released from the reorder
    /// buffer: every open window's order is in doubt.
    OutOfOrder,
}

impl Input {
    /// The input a decoded kernel event means, at its kernel time; `None`
    /// for an event with values this build does not know (a state, call
    /// or kind number), which the kernel never sends.
    pub fn from_event(ev: super::event::ReqEvent) -> Option<(u64, Self)> {
        use super::event::{ReqEvent, call, direction, syscall, tcp_kind, tls};
        let mut t = ev.ktime_ns();
        // A close releases its fd early in the syscall; another thread can
        // get the number back from accept or socket and use it before the
        // close returns. So a close takes effect at its entry: stamped at
        // its exit, it would end the connection that reused the fd.
        // A connect takes effect at its entry too: its socket's state
        // changes happen inside the syscall. A refused connect to a backend
        // on this host or next to it is over before connect() returns
        // -EINPROGRESS (the SYN and the peer's RST are processed in the
        // softirq that runs as the syscall re-enables bottom halves), so
        // stamped at its exit the connect would come after the SYN_SENT ->
        // CLOSE and the reset of a socket no connection owns yet, and the
        // refused connect would be reported as a success.
        if let ReqEvent::Call(c) = &ev
            && (c.call == call::CLOSE || c.call == call::CONNECT)
            && c.enter_ns > 0
        {
            t = c.enter_ns;
        }
        let input = match ev {
            ReqEvent::Data(d) => Self::Data(Data {
                thread: Thread {
                    tgid: d.tgid,
                    tid: d.tid,
                },
                fd: d.fd,
                sk: d.sk,
                way: match d.direction {
                    direction::RECV => Way::Recv,
                    direction::SEND => Way::Send,
                    _ => return None,
                },
                enter: d.enter_ns,
                total: u64::try_from(d.ret).ok()?,
                layer: if syscall::is_tls_plaintext(d.syscall) {
                    Layer::Plaintext
                } else if d.tls == tls::CIPHERTEXT {
                    Layer::Ciphertext
                } else {
                    Layer::Wire
                },
                captured: d.payload,
            }),
            ReqEvent::State(s) => Self::State(State {
                sk: s.sk,
                old: TcpState::from_raw(s.oldstate),
                new: TcpState::from_raw(s.newstate),
                local: socket_addr(s.family, &s.saddr, s.sport)?,
                remote: socket_addr(s.family, &s.daddr, s.dport)?,
            }),
            ReqEvent::Call(c) => Self::Call(Call {
                thread: Thread {
                    tgid: c.tgid,
                    tid: c.tid,
                },
                kind: match c.call {
                    call::ACCEPT => CallKind::Accept,
                    call::CONNECT => CallKind::Connect,
                    call::CLOSE => CallKind::Close,
                    call::PIPE => CallKind::Pipe,
                    _ => return None,
                },
                fd: c.fd,
                ret: c.ret,
                sk: c.sk,
                addr: socket_addr(c.family, &c.addr, c.port),
            }),
            ReqEvent::Splice(s) => Self::Splice(Splice {
                thread: Thread {
                    tgid: s.tgid,
                    tid: s.tid,
                },
                fd: s.sock_fd,
                sk: s.sk,
                way: match s.direction {
                    direction::RECV => Way::Recv,
                    direction::SEND => Way::Send,
                    _ => return None,
                },
                pipe_fd: s.pipe_fd,
                enter: s.enter_ns,
                total: u64::try_from(s.ret).ok().filter(|&n| n > 0)?,
            }),
            ReqEvent::Tcp(e) => Self::Tcp {
                sk: e.sk,
                kind: match e.kind {
                    tcp_kind::SEND_RESET => TcpKind::SendReset,
                    tcp_kind::RECEIVE_RESET => TcpKind::ReceiveReset,
                    tcp_kind::RETRANSMIT => TcpKind::Retransmit,
                    tcp_kind::DESTROY => TcpKind::Destroy,
                    _ => return None,
                },
            },
        };
        Some((t, input))
    }
}

/// An address of `family` from the kernel's 16 network-order bytes (IPv4
/// in the first four) and a host-order port.
fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    use agent_common::request::{AF_INET, AF_INET6};
    match family {
        AF_INET => Some(SocketAddr::from((
            [addr[0], addr[1], addr[2], addr[3]],
            port,
        ))),
        // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d: records
        // name them as the IPv4 addresses they are.
        AF_INET6 => Some(SocketAddr::from((
            std::net::Ipv6Addr::from(*addr).to_canonical(),
            port,
        ))),
        _ => None,
    }
}
