//! The kprobe variant of the TCP-stack hooks, for kernels without the sock
//! tracepoints (or with records the format check refuses). Same events as
//! the tracepoint variant; the syscall tracepoints stay as they are.
//!
//! kprobes bind to kernel functions, not to a stable ABI: only the first
//! fields of `struct sock_common`, stable for many years, are read here
//! (skc_daddr@0, skc_rcv_saddr@4, skc_dport@12 big-endian, skc_num@14,
//! skc_family@16, skc_state@18). The IPv6 addresses sit at offsets that
//! vary with the kernel's config: the agent reads them from the kernel's
//! BTF and sets [`KP_V6_DADDR`] and [`KP_V6_SADDR`] at load time; while they
//! are 0 the tcp_set_state variant skips IPv6 sockets and counts them.

use agent_common::request::{AF_INET, AF_INET6, RequestCounter, call};
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    req_emit::{StateChange, current, follow_sock, send_state, state_wanted},
    req_maps::{ARGS, count},
};

const MSG_PEEK: i32 = 2;
const SKC_DADDR: u64 = 0;
const SKC_RCV_SADDR: u64 = 4;
const SKC_DPORT: u64 = 12;
const SKC_NUM: u64 = 14;
const SKC_FAMILY: u64 = 16;
const SKC_STATE: u64 = 18;

/// Offset of `skc_v6_daddr` in `struct sock_common` (0: unknown).
#[unsafe(no_mangle)]
static KP_V6_DADDR: u32 = 0;
/// Offset of `skc_v6_rcv_saddr` in `struct sock_common` (0: unknown).
#[unsafe(no_mangle)]
static KP_V6_SADDR: u32 = 0;

#[inline(always)]
fn global(g: &u32) -> u64 {
    // SAFETY: a plain read of a static the loader rewrites in .rodata;
    // volatile so the default is not folded in.
    u64::from(unsafe { core::ptr::read_volatile(g) })
}

#[inline(always)]
fn kread<T: Default>(sk: u64, offset: u64) -> T {
    // SAFETY: bpf_probe_read_kernel fails safely on a bad address.
    unsafe { bpf_probe_read_kernel((sk + offset) as *const T) }.unwrap_or_default()
}

/// Gives the thread's in-flight syscall of kind `call` (0: a data syscall)
/// the socket `sk`.
#[inline(always)]
fn claim(sk: u64, want_call: u8, peek: bool) {
    if sk == 0 {
        return;
    }
    let (_, tid) = current();
    let Some(args) = ARGS.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: this thread's own map value.
    unsafe {
        if want_call == 0 {
            if (*args).syscall == 0 {
                return;
            }
            if peek {
                (*args).peek = 1;
                count(RequestCounter::MsgPeekSkipped);
                return;
            }
        } else if (*args).call != want_call {
            return;
        }
        (*args).sk = sk;
    }
    follow_sock(sk);
}

/// kprobe tcp_v4_connect(sk, uaddr, addr_len): the socket of the thread's connect.
#[kprobe]
pub fn lbw_kp_tcp_v4_connect(ctx: ProbeContext) -> u32 {
    claim(ctx.arg::<u64>(0).unwrap_or(0), call::CONNECT, false);
    0
}

/// kprobe tcp_v6_connect(sk, uaddr, addr_len).
#[kprobe]
pub fn lbw_kp_tcp_v6_connect(ctx: ProbeContext) -> u32 {
    claim(ctx.arg::<u64>(0).unwrap_or(0), call::CONNECT, false);
    0
}

/// kretprobe inet_csk_accept: the accepted socket of the thread's accept.
#[kretprobe]
pub fn lbw_kp_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    claim(ctx.ret::<u64>(), call::ACCEPT, false);
    0
}

/// kprobe tcp_sendmsg(sk, msg, size).
#[kprobe]
pub fn lbw_kp_tcp_sendmsg(ctx: ProbeContext) -> u32 {
    claim(ctx.arg::<u64>(0).unwrap_or(0), 0, false);
    0
}

/// kprobe tcp_recvmsg(sk, msg, len, flags, addr_len).
#[kprobe]
pub fn lbw_kp_tcp_recvmsg(ctx: ProbeContext) -> u32 {
    let flags = ctx.arg::<u64>(3).unwrap_or(0) as i32;
    claim(ctx.arg::<u64>(0).unwrap_or(0), 0, flags & MSG_PEEK != 0);
    0
}

/// kprobe tcp_set_state(sk, state): runs before the change, so skc_state
/// is still the old state.
#[kprobe]
pub fn lbw_kp_tcp_set_state(ctx: ProbeContext) -> u32 {
    let sk = ctx.arg::<u64>(0).unwrap_or(0);
    let newstate = ctx.arg::<u64>(1).unwrap_or(0) as u8;
    if sk == 0 {
        return 0;
    }
    let (tgid, tid) = current();
    if !state_wanted(sk, newstate, tgid) {
        return 0;
    }
    let family = kread::<u16>(sk, SKC_FAMILY);
    let (v6_daddr, v6_saddr) = (global(&KP_V6_DADDR), global(&KP_V6_SADDR));
    if family == AF_INET6 && (v6_daddr == 0 || v6_saddr == 0) {
        count(RequestCounter::KprobeV6Skipped);
        return 0;
    }
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let mut change = StateChange {
        sk,
        oldstate: kread::<u8>(sk, SKC_STATE),
        newstate,
        family,
        sport: kread::<u16>(sk, SKC_NUM),
        dport: u16::from_be(kread::<u16>(sk, SKC_DPORT)),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        change.saddr[..4].copy_from_slice(&kread::<[u8; 4]>(sk, SKC_RCV_SADDR));
        change.daddr[..4].copy_from_slice(&kread::<[u8; 4]>(sk, SKC_DADDR));
    } else {
        change.saddr = kread::<[u8; 16]>(sk, v6_saddr);
        change.daddr = kread::<[u8; 16]>(sk, v6_daddr);
    }
    send_state(&change, tgid, tid);
    0
}
