//! The tracepoint variant of request capture: syscall entry and exit, the
//! sock and tcp tracepoints, and process following.
//!
//! Every offset read here comes from `agent_common::request::layout`, and
//! the agent checks each against the running kernel's tracefs format before
//! it attaches the program, so a changed record makes a hook unavailable
//! instead of read wrong.

use agent_common::{
    event::EventKind,
    request::{
        AF_INET, AF_INET6, RequestCounter, SockCallEvent, SpliceEvent, TcpEvent, call, direction,
        layout::{
            self, TcpTuple, inet_sock_set_state as iss, sched_process_exit, sched_process_fork,
            sock_length, sys_enter, sys_exit, tcp_send_reset,
        },
        syscall, tcp_kind, tcp_state, tls,
    },
};
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};

use crate::{
    req_emit::{
        DataMeta, StateChange, current, emit_data, follow_sock, followed, header, known_sock,
        lost_so_far, now_ns, send, send_state, state_wanted,
    },
    req_maps::{ARGS, Args, PROCS, SOCKS, TLS_CALLS, count},
    uprobe::inside_ssl_call,
};

const IPPROTO_TCP: u16 = 6;
const MSG_PEEK: i32 = 2;
/// `Args::syscall` of a splice in flight: not a data syscall (it sends a
/// [`SpliceEvent`], never a `DataEvent`), but the sock tracepoints fill
/// its `sk` the same way.
const SPLICE_ARGS: u8 = 0x80;

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// The first fields of `struct user_msghdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MsgHdr {
    name: u64,
    namelen: u64,
    iov: u64,
    iovlen: u64,
}

/// Reads a field of the tracepoint record; 0 when the read fails (it cannot:
/// the record is kernel memory the format check vouched for).
#[inline(always)]
fn field<T: Default>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: bpf_probe_read_kernel of the record at a checked offset.
    unsafe { ctx.read_at::<T>(offset) }.unwrap_or_default()
}

#[inline(always)]
pub(crate) fn user<T>(ptr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user copies from a user pointer, failing safely.
    match unsafe { bpf_probe_read_user(ptr as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(RequestCounter::ProbeReadUserFailed);
            None
        }
    }
}

#[inline(always)]
fn empty_args(fd: i32) -> Args {
    Args {
        buf: 0,
        len: 0,
        sk: 0,
        enter_ns: now_ns(),
        fd,
        syscall: 0,
        call: 0,
        family: 0,
        port: 0,
        peek: 0,
        sk_way: 0,
        _pad: [0; 4],
        addr: [0; 16],
    }
}

#[inline(always)]
fn store(tid: u32, args: &Args) {
    if ARGS.insert(tid, args, 0).is_err() {
        count(RequestCounter::ScratchFull);
    }
}

// ---- data syscalls -------------------------------------------------------

/// Entry of a data syscall: keep fd and the (first) user buffer.
#[inline(always)]
fn enter_data(ctx: &TracePointContext, which: u8) -> u32 {
    let (tgid, tid) = current();
    if !followed(tgid) {
        return 0;
    }
    let fd = field::<u64>(ctx, sys_enter::arg(0)) as i32;
    let a1 = field::<u64>(ctx, sys_enter::arg(1));
    let a2 = field::<u64>(ctx, sys_enter::arg(2));
    let mut args = empty_args(fd);
    args.syscall = which;
    let first = match which {
        syscall::READ | syscall::WRITE | syscall::RECVFROM | syscall::SENDTO => {
            Some(Iovec { base: a1, len: a2 })
        }
        syscall::READV | syscall::WRITEV => {
            if a2 == 0 {
                None
            } else {
                user::<Iovec>(a1)
            }
        }
        _ => match user::<MsgHdr>(a1) {
            Some(m) if m.iovlen > 0 => user::<Iovec>(m.iov),
            _ => None,
        },
    };
    if let Some(iov) = first {
        args.buf = iov.base;
        args.len = iov.len;
    }
    store(tid, &args);
    0
}

/// Exit of a data syscall: one [`DataEvent`] when a TCP socket moved bytes.
#[inline(always)]
fn exit_data(ctx: &TracePointContext) -> u32 {
    let (tgid, tid) = current();
    let Some(ptr) = ARGS.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: a map value of this thread; copied before it is deleted.
    let args = unsafe { *ptr };
    let _ = ARGS.remove(tid);
    if args.syscall == 0 || args.sk == 0 || args.peek != 0 {
        return 0;
    }
    // Inside an SSL call of this thread, the socket is the call's, and
    // its bytes are TLS records: sent as a count only.
    let tls = if inside_ssl_call(tid, args.sk, args.fd) {
        tls::CIPHERTEXT
    } else {
        tls::NONE
    };
    let ret = field::<i64>(ctx, sys_exit::RET);
    if ret <= 0 {
        return 0;
    }
    let meta = DataMeta {
        tgid,
        tid,
        fd: args.fd,
        syscall: args.syscall,
        tls,
        sk: args.sk,
        ret,
        enter_ns: args.enter_ns,
    };
    emit_data(&meta, args.buf, if tls == tls::NONE { args.len } else { 0 });
    0
}

macro_rules! data_syscall {
    ($enter:ident, $exit:ident, $which:expr) => {
        #[doc = concat!("Entry of the `", stringify!($which), "` syscall.")]
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            enter_data(&ctx, $which)
        }

        #[doc = concat!("Exit of the `", stringify!($which), "` syscall.")]
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            exit_data(&ctx)
        }
    };
}

data_syscall!(lbw_enter_read, lbw_exit_read, syscall::READ);
data_syscall!(lbw_enter_readv, lbw_exit_readv, syscall::READV);
data_syscall!(lbw_enter_recvfrom, lbw_exit_recvfrom, syscall::RECVFROM);
data_syscall!(lbw_enter_recvmsg, lbw_exit_recvmsg, syscall::RECVMSG);
data_syscall!(lbw_enter_write, lbw_exit_write, syscall::WRITE);
data_syscall!(lbw_enter_writev, lbw_exit_writev, syscall::WRITEV);
data_syscall!(lbw_enter_sendto, lbw_exit_sendto, syscall::SENDTO);
data_syscall!(lbw_enter_sendmsg, lbw_exit_sendmsg, syscall::SENDMSG);

// ---- splice ----------------------------------------------------------------

/// Entry of splice(2): both fds. Followed for the sock tracepoint inside,
/// which names the socket when the bytes go to one.
#[tracepoint]
pub fn lbw_enter_splice(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    if !followed(tgid) {
        return 0;
    }
    let mut args = empty_args(field::<u64>(&ctx, sys_enter::arg(0)) as i32);
    args.syscall = SPLICE_ARGS;
    args.buf = field::<u64>(&ctx, sys_enter::arg(2));
    store(tid, &args);
    0
}

/// Exit of splice(2): one [`SpliceEvent`] when bytes moved. A splice to a
/// socket fires sock:sock_send_length (splice_to_socket -> sock_sendmsg),
/// so its socket is known; a splice from a socket reads through
/// tcp_splice_read, which fires no sock tracepoint (6.18), so the socket
/// is the `fd_in` the agent already knows.
#[tracepoint]
pub fn lbw_exit_splice(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    let Some(ptr) = ARGS.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: this thread's own map value, copied before it is deleted.
    let args = unsafe { *ptr };
    let _ = ARGS.remove(tid);
    if args.syscall != SPLICE_ARGS {
        return 0;
    }
    let ret = field::<i64>(&ctx, sys_exit::RET);
    if ret <= 0 {
        return 0;
    }
    let fd_out = args.buf as i32;
    let to_socket = args.sk_way == direction::SEND;
    let event = SpliceEvent {
        header: header(EventKind::Splice, core::mem::size_of::<SpliceEvent>()),
        lost: lost_so_far(),
        tgid,
        tid,
        sock_fd: if to_socket { fd_out } else { args.fd },
        pipe_fd: if to_socket { args.fd } else { fd_out },
        direction: if to_socket {
            direction::SEND
        } else {
            direction::RECV
        },
        _pad: [0; 3],
        sk: args.sk,
        ret,
        enter_ns: args.enter_ns,
    };
    send(&event);
    0
}

/// Entry of pipe(2).
#[tracepoint]
pub fn lbw_enter_pipe(ctx: TracePointContext) -> u32 {
    enter_call(&ctx, call::PIPE)
}

/// Exit of pipe(2).
#[tracepoint]
pub fn lbw_exit_pipe(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

/// Entry of pipe2(2).
#[tracepoint]
pub fn lbw_enter_pipe2(ctx: TracePointContext) -> u32 {
    enter_call(&ctx, call::PIPE)
}

/// Exit of pipe2(2).
#[tracepoint]
pub fn lbw_exit_pipe2(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

// ---- the socket of a send or receive -------------------------------------

/// sock:sock_{send,recv}_length fire inside the syscall, on its thread:
/// their `sk` is the socket behind the syscall's fd.
#[inline(always)]
fn sock_length(ctx: &TracePointContext, recv: bool) -> u32 {
    let (_, tid) = current();
    let Some(args) = ARGS.get_ptr_mut(tid) else {
        return 0;
    };
    if field::<u16>(ctx, sock_length::PROTOCOL) != IPPROTO_TCP {
        count(RequestCounter::NonTcpSkipped);
        return 0;
    }
    if recv && field::<i32>(ctx, sock_length::FLAGS) & MSG_PEEK != 0 {
        count(RequestCounter::MsgPeekSkipped);
        // SAFETY: this thread's own map value.
        unsafe { (*args).peek = 1 };
        return 0;
    }
    let sk = field::<u64>(ctx, sock_length::SK);
    // SAFETY: as above.
    unsafe {
        if (*args).syscall == 0 {
            return 0;
        }
        (*args).sk = sk;
        (*args).sk_way = if recv {
            direction::RECV
        } else {
            direction::SEND
        };
    }
    follow_sock(sk);
    0
}

/// sock:sock_send_length.
#[tracepoint]
pub fn lbw_sock_send_length(ctx: TracePointContext) -> u32 {
    sock_length(&ctx, false)
}

/// sock:sock_recv_length.
#[tracepoint]
pub fn lbw_sock_recv_length(ctx: TracePointContext) -> u32 {
    sock_length(&ctx, true)
}

// ---- accept, connect, close ----------------------------------------------

#[inline(always)]
fn enter_call(ctx: &TracePointContext, which: u8) -> u32 {
    let (tgid, tid) = current();
    if !followed(tgid) {
        return 0;
    }
    let mut args = empty_args(field::<u64>(ctx, sys_enter::arg(0)) as i32);
    args.call = which;
    // close(2) has one argument: its record ends before arg(1).
    match which {
        call::ACCEPT => args.buf = field::<u64>(ctx, sys_enter::arg(1)),
        call::PIPE => args.buf = field::<u64>(ctx, sys_enter::arg(0)),
        call::CONNECT => {
            let addr = field::<u64>(ctx, sys_enter::arg(1));
            let family = read_sockaddr(addr, &mut args.family, &mut args.port, &mut args.addr);
            // Only an IP connect can open a TCP connection. A unix or
            // netlink one (glibc's nscd lookup, systemd's userdb) is not
            // sent: it would name no socket and no address.
            if family.is_some_and(|f| f != AF_INET && f != AF_INET6) {
                return 0;
            }
        }
        _ => {}
    }
    store(tid, &args);
    0
}

/// Reads a user `sockaddr_in` or `sockaddr_in6`; leaves zeros for others.
/// Returns the family read, if the user memory could be read.
#[inline(always)]
fn read_sockaddr(ptr: u64, family: &mut u16, port: &mut u16, addr: &mut [u8; 16]) -> Option<u16> {
    if ptr == 0 {
        return None;
    }
    let fam = user::<u16>(ptr)?;
    let Some(p) = user::<u16>(ptr + 2) else {
        return Some(fam);
    };
    if fam == AF_INET {
        if let Some(a) = user::<[u8; 4]>(ptr + 4) {
            addr[..4].copy_from_slice(&a);
        } else {
            return Some(fam);
        }
    } else if fam == AF_INET6 {
        match user::<[u8; 16]>(ptr + 8) {
            Some(a) => *addr = a,
            None => return Some(fam),
        }
    } else {
        return Some(fam);
    }
    *family = fam;
    *port = u16::from_be(p);
    Some(fam)
}

#[inline(always)]
fn exit_call(ctx: &TracePointContext) -> u32 {
    let (tgid, tid) = current();
    let Some(ptr) = ARGS.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: this thread's own map value, copied before it is deleted.
    let mut args = unsafe { *ptr };
    let _ = ARGS.remove(tid);
    if args.call == 0 {
        return 0;
    }
    let mut ret = field::<i64>(ctx, sys_exit::RET);
    if args.call == call::PIPE {
        // The pipe's ends, as the kernel wrote them to the caller's int[2]:
        // `fd` is the read end, `ret` the write end.
        if ret != 0 {
            return 0;
        }
        let Some(fds) = user::<[i32; 2]>(args.buf) else {
            return 0;
        };
        args.fd = fds[0];
        ret = i64::from(fds[1]);
    }
    if args.call == call::ACCEPT && ret >= 0 {
        let _ = read_sockaddr(args.buf, &mut args.family, &mut args.port, &mut args.addr);
    }
    if args.call == call::CONNECT {
        follow_sock(args.sk);
    }
    let event = SockCallEvent {
        header: header(EventKind::SockCall, core::mem::size_of::<SockCallEvent>()),
        lost: lost_so_far(),
        tgid,
        tid,
        fd: args.fd,
        call: args.call,
        _pad: [0; 7],
        ret,
        sk: args.sk,
        enter_ns: args.enter_ns,
        family: args.family,
        port: args.port,
        addr: args.addr,
        _pad2: [0; 4],
    };
    send(&event);
    0
}

/// Entry of accept(2).
#[tracepoint]
pub fn lbw_enter_accept(ctx: TracePointContext) -> u32 {
    enter_call(&ctx, call::ACCEPT)
}

/// Entry of accept4(2).
#[tracepoint]
pub fn lbw_enter_accept4(ctx: TracePointContext) -> u32 {
    enter_call(&ctx, call::ACCEPT)
}

/// Entry of connect(2).
#[tracepoint]
pub fn lbw_enter_connect(ctx: TracePointContext) -> u32 {
    enter_call(&ctx, call::CONNECT)
}

/// Entry of close(2).
#[tracepoint]
pub fn lbw_enter_close(ctx: TracePointContext) -> u32 {
    enter_call(&ctx, call::CLOSE)
}

/// Exit of accept(2).
#[tracepoint]
pub fn lbw_exit_accept(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

/// Exit of accept4(2).
#[tracepoint]
pub fn lbw_exit_accept4(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

/// Exit of connect(2).
#[tracepoint]
pub fn lbw_exit_connect(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

/// Exit of close(2).
#[tracepoint]
pub fn lbw_exit_close(ctx: TracePointContext) -> u32 {
    exit_call(&ctx)
}

// ---- state changes -------------------------------------------------------

/// sock:inet_sock_set_state.
#[tracepoint]
pub fn lbw_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if field::<u16>(&ctx, iss::PROTOCOL) != IPPROTO_TCP {
        return 0;
    }
    let (tgid, tid) = current();
    let sk = field::<u64>(&ctx, iss::SKADDR);
    let oldstate = field::<i32>(&ctx, iss::OLDSTATE) as u8;
    let newstate = field::<i32>(&ctx, iss::NEWSTATE) as u8;
    if oldstate == tcp_state::CLOSE && newstate == tcp_state::SYN_SENT {
        // Inside connect(), on the caller's thread: the socket of its fd.
        if let Some(args) = ARGS.get_ptr_mut(tid) {
            // SAFETY: this thread's own map value.
            let in_connect = unsafe {
                let in_connect = (*args).call == call::CONNECT;
                if in_connect {
                    (*args).sk = sk;
                }
                in_connect
            };
            // Followed from here, not from the connect's exit: a refused
            // connect's RST and its SYN_SENT -> CLOSE can come before
            // connect() returns, in the softirq the syscall runs.
            if in_connect {
                follow_sock(sk);
            }
        }
    }
    if !state_wanted(sk, newstate, tgid) {
        return 0;
    }
    let family = field::<u16>(&ctx, iss::FAMILY);
    let mut change = StateChange {
        sk,
        oldstate,
        newstate,
        family,
        sport: field::<u16>(&ctx, iss::SPORT),
        dport: field::<u16>(&ctx, iss::DPORT),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        change.saddr[..4].copy_from_slice(&field::<[u8; 4]>(&ctx, iss::SADDR));
        change.daddr[..4].copy_from_slice(&field::<[u8; 4]>(&ctx, iss::DADDR));
    } else {
        change.saddr = field::<[u8; 16]>(&ctx, iss::SADDR_V6);
        change.daddr = field::<[u8; 16]>(&ctx, iss::DADDR_V6);
    }
    send_state(&change, tgid, tid);
    0
}

// ---- resets, retransmits, destruction ------------------------------------

#[inline(always)]
fn tcp_event(sk: u64, kind: u8) -> TcpEvent {
    TcpEvent {
        header: header(EventKind::Tcp, core::mem::size_of::<TcpEvent>()),
        lost: lost_so_far(),
        kind,
        _pad: [0; 3],
        sk,
        family: 0,
        sport: 0,
        dport: 0,
        _pad2: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    }
}

/// A tcp tracepoint with `TP_STORE_ADDR_PORTS` fields, for followed sockets.
#[inline(always)]
fn tcp_tuple(ctx: &TracePointContext, at: &TcpTuple, kind: u8) -> u32 {
    let sk = field::<u64>(ctx, at.skaddr);
    if sk == 0 || !known_sock(sk) {
        return 0;
    }
    let mut event = tcp_event(sk, kind);
    event.family = field::<u16>(ctx, at.family);
    event.sport = field::<u16>(ctx, at.sport);
    event.dport = field::<u16>(ctx, at.dport);
    if event.family == AF_INET {
        event.saddr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, at.saddr));
        event.daddr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, at.daddr));
    } else {
        event.saddr = field::<[u8; 16]>(ctx, at.saddr_v6);
        event.daddr = field::<[u8; 16]>(ctx, at.daddr_v6);
    }
    send(&event);
    if kind == tcp_kind::DESTROY {
        let _ = SOCKS.remove(sk);
    }
    0
}

/// tcp:tcp_receive_reset.
#[tracepoint]
pub fn lbw_tcp_receive_reset(ctx: TracePointContext) -> u32 {
    tcp_tuple(&ctx, &layout::TCP_SK_TUPLE, tcp_kind::RECEIVE_RESET)
}

/// tcp:tcp_destroy_sock.
#[tracepoint]
pub fn lbw_tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    tcp_tuple(&ctx, &layout::TCP_SK_TUPLE, tcp_kind::DESTROY)
}

/// tcp:tcp_retransmit_skb.
#[tracepoint]
pub fn lbw_tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    tcp_tuple(&ctx, &layout::TCP_RETRANSMIT, tcp_kind::RETRANSMIT)
}

/// Reads a sockaddr kept in a tracepoint record: family@0, port@2 (big
/// endian), IPv4 address@4 or IPv6 address@8.
#[inline(always)]
fn record_sockaddr(ctx: &TracePointContext, at: usize) -> (u16, u16, [u8; 16]) {
    let family = field::<u16>(ctx, at);
    let port = u16::from_be(field::<u16>(ctx, at + 2));
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, at + 4));
    } else if family == AF_INET6 {
        addr = field::<[u8; 16]>(ctx, at + 8);
    }
    (family, port, addr)
}

/// tcp:tcp_send_reset (the record keeps sockaddrs, not TP_STORE_ADDR_PORTS).
#[tracepoint]
pub fn lbw_tcp_send_reset(ctx: TracePointContext) -> u32 {
    let sk = field::<u64>(&ctx, tcp_send_reset::SKADDR);
    if sk == 0 || !known_sock(sk) {
        return 0;
    }
    let mut event = tcp_event(sk, tcp_kind::SEND_RESET);
    let (family, sport, saddr) = record_sockaddr(&ctx, tcp_send_reset::SADDR);
    let (_, dport, daddr) = record_sockaddr(&ctx, tcp_send_reset::DADDR);
    event.family = family;
    event.sport = sport;
    event.dport = dport;
    event.saddr = saddr;
    event.daddr = daddr;
    send(&event);
    0
}

// ---- following processes -------------------------------------------------

/// sched:sched_process_fork, in the parent: a child of a followed process
/// is followed at once (new workers, reloads). A new thread is inserted too
/// (its id is unique while it lives) and removed when it exits.
#[tracepoint]
pub fn lbw_sched_process_fork(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current();
    if !followed(tgid) {
        return 0;
    }
    let child = field::<i32>(&ctx, sched_process_fork::CHILD_PID) as u32;
    if PROCS.insert(child, 1, 0).is_err() {
        count(RequestCounter::ProcFilterFull);
    }
    0
}

/// sched:sched_process_exit: forget the thread's scratch (syscall and SSL
/// call) and, when the whole group dies (`group_dead`, not merely the
/// leader), the process.
#[tracepoint]
pub fn lbw_sched_process_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    let _ = ARGS.remove(tid);
    // A thread that dies inside an SSL call never returns from it.
    let _ = TLS_CALLS.remove(tid);
    if tid != tgid {
        let _ = PROCS.remove(tid);
    }
    if field::<u8>(&ctx, sched_process_exit::GROUP_DEAD) != 0 {
        let _ = PROCS.remove(tgid);
    }
    0
}
