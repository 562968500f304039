//! Request capture: the socket events of the load-balancer processes, sent by
//! the request programs (a second eBPF object, `agent-ebpf-requests`) through
//! their own ring buffer `REQ_EVENTS`.
//!
//! Every event starts with an [`EventHeader`] and then `lost`: how many
//! request events this CPU failed to send since its last successful one. The
//! counter is per CPU and reset when an event gets through, so userspace
//! knows a loss happened before this event in time and can taint the
//! correlation windows open then.
//!
//! Layout (all little-endian on the BPF target, `repr(C)`, no implicit
//! padding):
//!
//! ```text
//! DataEvent       0 header | 16 lost | 20 tgid | 24 tid | 28 fd | 32 direction | 33 syscall
//!                 34 tls | 35 pad[5] | 40 sk | 48 ret | 56 enter_ns | 64 captured | 68 pad | 72 data[1024]
//!                 (on the ring: the first 72 + captured bytes; header.len says how many)
//! SockStateEvent  0 header | 16 lost | 20 tgid | 24 tid | 28 pad | 32 sk | 40 oldstate
//!                 41 newstate | 42 family | 44 sport | 46 dport | 48 saddr | 64 daddr  (80)
//! SockCallEvent   0 header | 16 lost | 20 tgid | 24 tid | 28 fd | 32 call | 33 pad[7] | 40 ret
//!                 48 sk | 56 enter_ns | 64 family | 66 port | 68 addr | 84 pad[4]  (88)
//! TcpEvent        0 header | 16 lost | 20 kind | 21 pad[3] | 24 sk | 32 family | 34 sport
//!                 36 dport | 38 pad | 40 saddr | 56 daddr  (72)
//! SpliceEvent     0 header | 16 lost | 20 tgid | 24 tid | 28 sock_fd | 32 pipe_fd
//!                 36 direction | 37 pad[3] | 40 sk | 48 ret | 56 enter_ns  (64)
//! ```

use crate::event::EventHeader;

/// Most payload bytes one [`DataEvent`] carries (`CAPTURE` can only lower it).
pub const DATA_MAX: usize = 1024;
/// Payload bytes captured per data event when the agent sets nothing.
pub const CAPTURE_DEFAULT: u32 = 256;

/// `AF_INET`, as in [`SockStateEvent::family`] and the others.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub mod tcp_state {
    /// ESTABLISHED.
    pub const ESTABLISHED: u8 = 1;
    /// SYN_SENT.
    pub const SYN_SENT: u8 = 2;
    /// SYN_RECV.
    pub const SYN_RECV: u8 = 3;
    /// FIN_WAIT1.
    pub const FIN_WAIT1: u8 = 4;
    /// FIN_WAIT2.
    pub const FIN_WAIT2: u8 = 5;
    /// TIME_WAIT.
    pub const TIME_WAIT: u8 = 6;
    /// CLOSE.
    pub const CLOSE: u8 = 7;
    /// CLOSE_WAIT.
    pub const CLOSE_WAIT: u8 = 8;
    /// LAST_ACK.
    pub const LAST_ACK: u8 = 9;
    /// LISTEN.
    pub const LISTEN: u8 = 10;
    /// CLOSING.
    pub const CLOSING: u8 = 11;
}

/// [`DataEvent::direction`] values.
pub mod direction {
    /// Bytes the process received.
    pub const RECV: u8 = 1;
    /// Bytes the process sent.
    pub const SEND: u8 = 2;
}

/// [`DataEvent::syscall`] values.
pub mod syscall {
    /// read(2).
    pub const READ: u8 = 1;
    /// readv(2).
    pub const READV: u8 = 2;
    /// recvfrom(2) (and recv(2), which libc maps to it).
    pub const RECVFROM: u8 = 3;
    /// recvmsg(2).
    pub const RECVMSG: u8 = 4;
    /// write(2).
    pub const WRITE: u8 = 5;
    /// writev(2).
    pub const WRITEV: u8 = 6;
    /// sendto(2) (and send(2)).
    pub const SENDTO: u8 = 7;
    /// sendmsg(2).
    pub const SENDMSG: u8 = 8;
    /// libssl's `SSL_read` or `SSL_read_ex` returned plaintext (a uprobe,
    /// not a syscall: the bytes are what the TLS layer decrypted).
    pub const SSL_READ: u8 = 9;
    /// libssl's `SSL_write` or `SSL_write_ex` took plaintext.
    pub const SSL_WRITE: u8 = 10;

    /// The direction of a data syscall, `None` for an unknown id.
    pub const fn direction(syscall: u8) -> Option<u8> {
        match syscall {
            READ | READV | RECVFROM | RECVMSG | SSL_READ => Some(super::direction::RECV),
            WRITE | WRITEV | SENDTO | SENDMSG | SSL_WRITE => Some(super::direction::SEND),
            _ => None,
        }
    }

    /// Whether the event is libssl's plaintext rather than a syscall's bytes.
    pub const fn is_tls_plaintext(syscall: u8) -> bool {
        matches!(syscall, SSL_READ | SSL_WRITE)
    }
}

/// [`DataEvent::tls`] values.
pub mod tls {
    /// A plain syscall, or libssl's plaintext.
    pub const NONE: u8 = 0;
    /// A syscall made inside an `SSL_read`/`SSL_write` of the same thread:
    /// its bytes are TLS records, so no payload is sent, only the count.
    pub const CIPHERTEXT: u8 = 1;
}

/// [`SockCallEvent::call`] values.
pub mod call {
    /// accept(2) or accept4(2).
    pub const ACCEPT: u8 = 1;
    /// connect(2).
    pub const CONNECT: u8 = 2;
    /// close(2).
    pub const CLOSE: u8 = 3;
    /// pipe(2) or pipe2(2) made a pipe: `fd` is its read end and `ret` its
    /// write end (the syscall returned 0; a failed one is not sent).
    pub const PIPE: u8 = 4;
}

/// [`TcpEvent::kind`] values.
pub mod tcp_kind {
    /// tcp:tcp_send_reset: this host sent a RST.
    pub const SEND_RESET: u8 = 1;
    /// tcp:tcp_receive_reset: the peer reset the connection.
    pub const RECEIVE_RESET: u8 = 2;
    /// tcp:tcp_retransmit_skb.
    pub const RETRANSMIT: u8 = 3;
    /// tcp:tcp_destroy_sock: the socket is gone; its `sk` may be reused.
    pub const DESTROY: u8 = 4;
}

/// Bytes one process moved through a TCP socket in one syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataEvent {
    /// `kind` is [`crate::event::EventKind::SockData`]; `len` is
    /// [`DataEvent::DATA_OFFSET`] + `captured`.
    pub header: EventHeader,
    /// Request events this CPU failed to send before this one.
    pub lost: u32,
    /// Process (thread group) id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// The file descriptor of the syscall.
    pub fd: i32,
    /// A [`direction`] value.
    pub direction: u8,
    /// A [`syscall`] value.
    pub syscall: u8,
    /// A [`tls`] value.
    pub tls: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 5],
    /// The `struct sock *` sock:sock_{send,recv}_length (or the kprobe on
    /// tcp_{send,recv}msg) saw during this syscall: the socket's identity
    /// for as long as it lives.
    pub sk: u64,
    /// The syscall's return value: bytes moved (> 0).
    pub ret: i64,
    /// `bpf_ktime_get_ns()` at syscall entry; `header.ktime_ns` is its exit.
    pub enter_ns: u64,
    /// Payload bytes in `data`: min(ret, first buffer's length, CAPTURE).
    pub captured: u32,
    /// Explicit padding, always zero.
    pub _pad2: u32,
    /// The first `captured` bytes moved; only those are sent.
    pub data: [u8; DATA_MAX],
}

impl DataEvent {
    /// Offset of `data`: the fixed part of the event.
    pub const DATA_OFFSET: usize = core::mem::offset_of!(DataEvent, data);
}

const _: () = assert!(DataEvent::DATA_OFFSET == 72);
const _: () = assert!(core::mem::size_of::<DataEvent>() == 72 + DATA_MAX);
const _: () = assert!(DATA_MAX.is_power_of_two());

/// A TCP state change (sock:inet_sock_set_state, or the kprobe on tcp_set_state).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockStateEvent {
    /// `kind` is [`crate::event::EventKind::SockState`].
    pub header: EventHeader,
    /// Request events this CPU failed to send before this one.
    pub lost: u32,
    /// The current task's process id: meaningful only in process context
    /// (e.g. CLOSE -> SYN_SENT inside connect()); in softirq it is whatever
    /// task was interrupted.
    pub tgid: u32,
    /// The current task's thread id (same caveat).
    pub tid: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The socket.
    pub sk: u64,
    /// Previous [`tcp_state`].
    pub oldstate: u8,
    /// New [`tcp_state`].
    pub newstate: u8,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// Local port, host order (0 in SYN_SENT: not bound yet).
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    /// Local address, network order (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    /// Remote address, network order (IPv4 in the first 4 bytes).
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<SockStateEvent>() == 80);

/// The end of an accept, connect or close.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockCallEvent {
    /// `kind` is [`crate::event::EventKind::SockCall`].
    pub header: EventHeader,
    /// Request events this CPU failed to send before this one.
    pub lost: u32,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// accept: the listening fd; connect and close: the fd.
    pub fd: i32,
    /// A [`call`] value.
    pub call: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 7],
    /// accept: the new fd or -errno; connect and close: 0 or -errno
    /// (a non-blocking connect returns -EINPROGRESS).
    pub ret: i64,
    /// connect: the socket seen in the CLOSE -> SYN_SENT transition inside
    /// the syscall (or by the kprobe on tcp_v{4,6}_connect); accept: the
    /// accepted socket when the kretprobe on inet_csk_accept runs; else 0.
    pub sk: u64,
    /// `bpf_ktime_get_ns()` at syscall entry.
    pub enter_ns: u64,
    /// Address family of `addr` (0 when there is none).
    pub family: u16,
    /// Port of `addr`, host order.
    pub port: u16,
    /// connect: the destination, read at entry; accept: the peer, when the
    /// caller passed a sockaddr buffer; network order, IPv4 in the first 4.
    pub addr: [u8; 16],
    /// Explicit padding, always zero.
    pub _pad2: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<SockCallEvent>() == 88);

/// A reset, retransmission or destruction of a socket the agent follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEvent {
    /// `kind` is [`crate::event::EventKind::Tcp`].
    pub header: EventHeader,
    /// Request events this CPU failed to send before this one.
    pub lost: u32,
    /// A [`tcp_kind`] value.
    pub kind: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
    /// The socket.
    pub sk: u64,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    /// Explicit padding, always zero.
    pub _pad2: u16,
    /// Local address, network order (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    /// Remote address, network order.
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<TcpEvent>() == 72);

/// A splice(2) of a traced process that moved bytes between a socket and a
/// pipe: how a TCP proxy that splices (HAProxy's `option splice-*`) moves
/// data without a user buffer, so no bytes are captured, only the count.
/// The pipe links the socket the bytes came from to the one they went to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpliceEvent {
    /// `kind` is [`crate::event::EventKind::Splice`].
    pub header: EventHeader,
    /// Request events this CPU failed to send before this one.
    pub lost: u32,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// The socket end's fd: `fd_out` when the bytes went to a socket
    /// ([`direction::SEND`]), else `fd_in`.
    pub sock_fd: i32,
    /// The other end's fd (a pipe, for a splice that names a socket).
    pub pipe_fd: i32,
    /// [`direction::SEND`]: pipe to socket, seen by sock:sock_send_length
    /// (so `sk` is the socket); [`direction::RECV`]: socket to pipe (the
    /// splice read path fires no sock tracepoint, so `sk` is usually 0 and
    /// the agent finds the socket by its fd).
    pub direction: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
    /// The socket, when a sock tracepoint named it during the call; else 0.
    pub sk: u64,
    /// Bytes moved (> 0).
    pub ret: i64,
    /// `bpf_ktime_get_ns()` at syscall entry.
    pub enter_ns: u64,
}

const _: () = assert!(core::mem::size_of::<SpliceEvent>() == 64);

/// Index into the per-CPU `REQ_COUNTERS` array. Ids are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestCounter {
    /// `bpf_ringbuf_output` failed (ring full): a request event was lost.
    RingOutputFailed = 0,
    /// The per-thread scratch map (`ARGS`) was full: a syscall was not followed.
    ScratchFull = 1,
    /// `bpf_probe_read_user` of a payload, iovec, msghdr or sockaddr failed
    /// (a paged-out or bad user buffer): the event is still sent, with
    /// `captured` 0 or a zero address, so byte counts stay exact.
    ProbeReadUserFailed = 2,
    /// The process filter (`PROCS`) was full: a new child was not followed.
    ProcFilterFull = 3,
    /// A receive with MSG_PEEK: its bytes are read again later, so it sends nothing.
    MsgPeekSkipped = 4,
    /// A send or receive on a socket that is not TCP (UDP, unix...).
    NonTcpSkipped = 5,
    /// The followed-socket map (`SOCKS`) refused an insert.
    SocksInsertFailed = 6,
    /// An IPv6 state change seen by the kprobe on tcp_set_state when the
    /// kernel's BTF gave no offsets for the IPv6 addresses: not sent rather
    /// than sent wrong.
    KprobeV6Skipped = 7,
    /// The per-CPU event scratch buffer was missing (never on a sane kernel).
    ScratchMissing = 8,
    /// Data events sent whose payload was cut at the capture limit.
    Truncated = 9,
    /// Data events produced (sent, or lost and counted in `RingOutputFailed`).
    DataEvents = 10,
    /// libssl moved plaintext on a connection whose socket no syscall of
    /// the call (nor an earlier one of the same `SSL*`) named: not sent.
    TlsSocketUnknown = 11,
    /// The TLS call map (`TLS_CALLS`) was full: an SSL call was not followed.
    TlsCallsFull = 12,
}

impl RequestCounter {
    /// Number of counters; the size of the `REQ_COUNTERS` array.
    pub const COUNT: u32 = 13;

    /// Every counter, in id order.
    pub const ALL: [RequestCounter; Self::COUNT as usize] = [
        Self::RingOutputFailed,
        Self::ScratchFull,
        Self::ProbeReadUserFailed,
        Self::ProcFilterFull,
        Self::MsgPeekSkipped,
        Self::NonTcpSkipped,
        Self::SocksInsertFailed,
        Self::KprobeV6Skipped,
        Self::ScratchMissing,
        Self::Truncated,
        Self::DataEvents,
        Self::TlsSocketUnknown,
        Self::TlsCallsFull,
    ];

    /// Stable snake_case name used in records and telemetry.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RingOutputFailed => "req_ring_output_failed",
            Self::ScratchFull => "req_scratch_full",
            Self::ProbeReadUserFailed => "req_probe_read_user_failed",
            Self::ProcFilterFull => "req_proc_filter_full",
            Self::MsgPeekSkipped => "req_msg_peek_skipped",
            Self::NonTcpSkipped => "req_non_tcp_skipped",
            Self::SocksInsertFailed => "req_socks_insert_failed",
            Self::KprobeV6Skipped => "req_kprobe_v6_skipped",
            Self::ScratchMissing => "req_scratch_missing",
            Self::Truncated => "req_truncated",
            Self::DataEvents => "req_data_events",
            Self::TlsSocketUnknown => "req_tls_socket_unknown",
            Self::TlsCallsFull => "req_tls_calls_full",
        }
    }

    /// What the counter means for the trail (see [`crate::counter::CounterClass`]).
    pub const fn class(self) -> crate::counter::CounterClass {
        use crate::counter::CounterClass;
        match self {
            Self::MsgPeekSkipped | Self::NonTcpSkipped | Self::Truncated | Self::DataEvents => {
                CounterClass::Info
            }
            _ => CounterClass::Loss,
        }
    }
}

const _: () = assert!(RequestCounter::ALL.len() == RequestCounter::COUNT as usize);

/// The tracepoint fields the request programs read, defined once: the
/// programs read at these offsets, and the agent checks each against the
/// running kernel's tracefs format before attaching (a mismatch makes the
/// hook unavailable, never a wrong read).
pub mod layout {
    /// One field of a tracepoint's record.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Field {
        /// Name in the format file.
        pub name: &'static str,
        /// Byte offset in the record.
        pub offset: usize,
        /// Size in bytes.
        pub size: usize,
    }

    const fn f(name: &'static str, offset: usize, size: usize) -> Field {
        Field { name, offset, size }
    }

    /// Syscall tracepoints (`syscalls:sys_enter_*`): argument `n` is an
    /// 8-byte field at `ARG0 + 8 * n` whatever its name.
    pub mod sys_enter {
        /// First argument.
        pub const ARG0: usize = 16;
        /// Byte offset of argument `n`.
        pub const fn arg(n: usize) -> usize {
            ARG0 + 8 * n
        }
    }

    /// `syscalls:sys_exit_*`.
    pub mod sys_exit {
        use super::{Field, f};
        /// `long ret`.
        pub const RET: usize = 16;
        /// Fields read.
        pub const FIELDS: &[Field] = &[f("ret", RET, 8)];
    }

    /// `sock:sock_send_length` and `sock:sock_recv_length`.
    pub mod sock_length {
        use super::{Field, f};
        /// `void *sk`.
        pub const SK: usize = 8;
        /// `__u16 protocol`.
        pub const PROTOCOL: usize = 18;
        /// `int flags` (MSG_PEEK).
        pub const FLAGS: usize = 24;
        /// Fields read.
        pub const FIELDS: &[Field] = &[
            f("sk", SK, 8),
            f("protocol", PROTOCOL, 2),
            f("flags", FLAGS, 4),
        ];
    }

    /// `sock:inet_sock_set_state`.
    pub mod inet_sock_set_state {
        use super::{Field, f};
        /// `const void *skaddr`.
        pub const SKADDR: usize = 8;
        /// `int oldstate`.
        pub const OLDSTATE: usize = 16;
        /// `int newstate`.
        pub const NEWSTATE: usize = 20;
        /// `__u16 sport` (host order).
        pub const SPORT: usize = 24;
        /// `__u16 dport` (host order).
        pub const DPORT: usize = 26;
        /// `__u16 family`.
        pub const FAMILY: usize = 28;
        /// `__u16 protocol`.
        pub const PROTOCOL: usize = 30;
        /// `__u8 saddr[4]`.
        pub const SADDR: usize = 32;
        /// `__u8 daddr[4]`.
        pub const DADDR: usize = 36;
        /// `__u8 saddr_v6[16]`.
        pub const SADDR_V6: usize = 40;
        /// `__u8 daddr_v6[16]`.
        pub const DADDR_V6: usize = 56;
        /// Fields read.
        pub const FIELDS: &[Field] = &[
            f("skaddr", SKADDR, 8),
            f("oldstate", OLDSTATE, 4),
            f("newstate", NEWSTATE, 4),
            f("sport", SPORT, 2),
            f("dport", DPORT, 2),
            f("family", FAMILY, 2),
            f("protocol", PROTOCOL, 2),
            f("saddr", SADDR, 4),
            f("daddr", DADDR, 4),
            f("saddr_v6", SADDR_V6, 16),
            f("daddr_v6", DADDR_V6, 16),
        ];
    }

    /// A tcp tracepoint that stores `skaddr`, ports, family and both
    /// address forms (`TP_STORE_ADDR_PORTS`), at its own offsets.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TcpTuple {
        /// `const void *skaddr`.
        pub skaddr: usize,
        /// `__u16 sport` (host order).
        pub sport: usize,
        /// `__u16 dport`.
        pub dport: usize,
        /// `__u16 family`.
        pub family: usize,
        /// `__u8 saddr[4]`.
        pub saddr: usize,
        /// `__u8 daddr[4]`.
        pub daddr: usize,
        /// `__u8 saddr_v6[16]`.
        pub saddr_v6: usize,
        /// `__u8 daddr_v6[16]`.
        pub daddr_v6: usize,
    }

    impl TcpTuple {
        /// The fields, for the format check.
        pub const fn fields(&self) -> [Field; 8] {
            [
                f("skaddr", self.skaddr, 8),
                f("sport", self.sport, 2),
                f("dport", self.dport, 2),
                f("family", self.family, 2),
                f("saddr", self.saddr, 4),
                f("daddr", self.daddr, 4),
                f("saddr_v6", self.saddr_v6, 16),
                f("daddr_v6", self.daddr_v6, 16),
            ]
        }
    }

    /// `tcp:tcp_receive_reset` and `tcp:tcp_destroy_sock` (same record).
    pub const TCP_SK_TUPLE: TcpTuple = TcpTuple {
        skaddr: 8,
        sport: 16,
        dport: 18,
        family: 20,
        saddr: 22,
        daddr: 26,
        saddr_v6: 30,
        daddr_v6: 46,
    };

    /// `tcp:tcp_retransmit_skb`.
    pub const TCP_RETRANSMIT: TcpTuple = TcpTuple {
        skaddr: 16,
        sport: 28,
        dport: 30,
        family: 32,
        saddr: 34,
        daddr: 38,
        saddr_v6: 42,
        daddr_v6: 58,
    };

    /// `tcp:tcp_send_reset` (6.10+: the addresses are `sockaddr_in6`-sized
    /// buffers holding a `sockaddr_in` or `sockaddr_in6`).
    pub mod tcp_send_reset {
        use super::{Field, f};
        /// `const void *skaddr` (NULL for a reset without a socket).
        pub const SKADDR: usize = 16;
        /// `__u8 saddr[28]`: a sockaddr (family@0, port@2 big-endian, v4
        /// address@4 or v6 address@8).
        pub const SADDR: usize = 32;
        /// `__u8 daddr[28]`.
        pub const DADDR: usize = 60;
        /// Fields read.
        pub const FIELDS: &[Field] = &[
            f("skaddr", SKADDR, 8),
            f("saddr", SADDR, 28),
            f("daddr", DADDR, 28),
        ];
    }

    /// `sched:sched_process_fork`.
    pub mod sched_process_fork {
        use super::{Field, f};
        /// `pid_t child_pid` (the new task's id; its tgid for a new process).
        pub const CHILD_PID: usize = 20;
        /// Fields read.
        pub const FIELDS: &[Field] = &[f("child_pid", CHILD_PID, 4)];
    }

    /// `sched:sched_process_exit`.
    pub mod sched_process_exit {
        use super::{Field, f};
        /// `bool group_dead` (6.x): the last thread of the group is exiting.
        pub const GROUP_DEAD: usize = 32;
        /// Fields read.
        pub const FIELDS: &[Field] = &[f("group_dead", GROUP_DEAD, 1)];
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with explicit padding, valid for any bytes.
    unsafe impl aya::Pod for super::DataEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockStateEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockCallEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpEvent {}
}
