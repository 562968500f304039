//! What the tracepoint and kprobe variants share: the process filter, the
//! per-thread scratch, and sending events with their loss count.
//!
//! Every event goes out with `bpf_ringbuf_output` from a value built first
//! (on the stack, or in the per-CPU scratch for the 1 KiB data event), so
//! the `lost` field can be filled just before sending and reset only when
//! the kernel took the event.

use agent_common::{
    event::{EventHeader, EventKind},
    request::{DATA_MAX, DataEvent, RequestCounter, SockStateEvent, syscall, tcp_state},
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_buf},
};

use crate::req_maps::{PROCS, REQ_EVENTS, REQ_LOST, REQ_ON, REQ_SCRATCH, SOCKS, count};

/// Payload bytes captured per data event; the agent rewrites it at load
/// time (`names::requests::CAPTURE_GLOBAL`), at most `DATA_MAX`.
#[unsafe(no_mangle)]
static CAPTURE: u32 = agent_common::request::CAPTURE_DEFAULT;

/// Bytes waiting at which a send wakes the reader
/// (`names::requests::WAKE_GLOBAL`); 0 wakes it on every send.
#[unsafe(no_mangle)]
static WAKE_BYTES: u32 = 0;

/// `bpf_ringbuf_output` flags: wake the reader only once
/// [`WAKE_BYTES`] wait. The reader polls on a timer for less, and since it
/// holds every event for the reorder window anyway, waking it sooner buys
/// nothing.
#[inline(always)]
fn wake_flags() -> u64 {
    // SAFETY: a plain read of a static the loader rewrites in .rodata.
    let wake = unsafe { core::ptr::read_volatile(&raw const WAKE_BYTES) };
    if wake == 0 {
        return 0;
    }
    if REQ_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(wake) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// The capture limit, read volatile so the default is not folded in.
#[inline(always)]
pub fn capture_limit() -> u32 {
    // SAFETY: a plain read of a static the loader rewrites in .rodata.
    unsafe { core::ptr::read_volatile(&raw const CAPTURE) }
}

/// (tgid, tid) of the current task.
#[inline(always)]
pub fn current() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// Whether `tgid` is a followed process.
#[inline(always)]
pub fn followed(tgid: u32) -> bool {
    PROCS.get_ptr(tgid).is_some()
}

/// Whether `sk` is a socket the data or connect paths met.
#[inline(always)]
pub fn known_sock(sk: u64) -> bool {
    SOCKS.get_ptr(sk).is_some()
}

/// Follows `sk` from now on (its state changes, resets, retransmits).
#[inline(always)]
pub fn follow_sock(sk: u64) {
    if sk != 0 && !known_sock(sk) && SOCKS.insert(sk, 1, 0).is_err() {
        count(RequestCounter::SocksInsertFailed);
    }
}

/// A header for an event of `kind` and `len` bytes, stamped now.
#[inline(always)]
pub fn header(kind: EventKind, len: usize) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        len: len as u32,
        ktime_ns: now_ns(),
    }
}

/// `bpf_ktime_get_ns()`.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Events this CPU failed to send since its last successful one.
#[inline(always)]
pub fn lost_so_far() -> u32 {
    match REQ_LOST.get_ptr(0) {
        // SAFETY: per-CPU slot of this CPU.
        Some(slot) => unsafe { *slot },
        None => 0,
    }
}

/// Records the outcome of one send: a success resets this CPU's loss count,
/// a failure adds to it and to the counter.
#[inline(always)]
fn settle(ok: bool) {
    if let Some(slot) = REQ_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            if ok {
                *slot = 0;
            } else {
                *slot = (*slot).saturating_add(1);
            }
        }
    }
    if !ok {
        count(RequestCounter::RingOutputFailed);
    }
}

/// Whether the agent takes events now (see `REQ_ON`).
#[inline(always)]
fn taking() -> bool {
    REQ_ON.get(0).is_some_and(|on| *on != 0)
}

/// Sends a fixed-size event whose `lost` field the caller filled from
/// [`lost_so_far`].
#[inline(always)]
pub fn send<T>(event: &T) {
    if taking() {
        settle(REQ_EVENTS.output::<T>(event, wake_flags()).is_ok());
    }
}

/// Sends the first `DATA_OFFSET + captured` bytes of the scratch data event.
#[inline(always)]
fn send_data(event: *mut DataEvent, captured: u32) {
    if !taking() {
        return;
    }
    // Masked, not only compared: the verifier needs a bound it can see on
    // the register passed as the size (DATA_MAX is a power of two, and the
    // caller already capped `captured` at it).
    let len = DataEvent::DATA_OFFSET as u64
        + (u64::from(captured) & (agent_common::request::DATA_MAX as u64 * 2 - 1))
            .min(agent_common::request::DATA_MAX as u64);
    // SAFETY: `event` is the per-CPU scratch value, at least `len` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(event.cast::<u8>(), len as usize) };
    let rc = REQ_EVENTS.output::<[u8]>(bytes, wake_flags()).is_ok();
    settle(rc);
}

/// The fixed fields of one data event, from a syscall's exit or an SSL
/// call's return.
pub struct DataMeta {
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub syscall: u8,
    pub tls: u8,
    pub sk: u64,
    /// Bytes moved (> 0).
    pub ret: i64,
    pub enter_ns: u64,
}

/// Builds a [`DataEvent`] in the per-CPU scratch with the first
/// min(ret, len, CAPTURE) bytes of the user buffer `buf`, and sends it.
#[inline(always)]
pub fn emit_data(meta: &DataMeta, buf: u64, len: u64) {
    let Some(ev) = REQ_SCRATCH.get_ptr_mut(0) else {
        count(RequestCounter::ScratchMissing);
        return;
    };
    let limit = u64::from(capture_limit()).min(DATA_MAX as u64);
    let mut captured = (meta.ret as u64).min(len).min(limit) as u32;
    if u64::from(captured) < (meta.ret as u64).min(len) {
        count(RequestCounter::Truncated);
    }
    // SAFETY: the per-CPU scratch of this CPU, written only by this program run.
    unsafe {
        if captured > 0 {
            let n = (captured as usize) & (DATA_MAX * 2 - 1);
            let n = if n > DATA_MAX { DATA_MAX } else { n };
            let dst = &mut (&mut (*ev).data)[..n];
            if bpf_probe_read_user_buf(buf as *const u8, dst).is_err() {
                count(RequestCounter::ProbeReadUserFailed);
                captured = 0;
            }
        }
        (*ev).header = header(
            EventKind::SockData,
            DataEvent::DATA_OFFSET + captured as usize,
        );
        (*ev).lost = lost_so_far();
        (*ev).tgid = meta.tgid;
        (*ev).tid = meta.tid;
        (*ev).fd = meta.fd;
        (*ev).direction = syscall::direction(meta.syscall).unwrap_or(0);
        (*ev).syscall = meta.syscall;
        (*ev).tls = meta.tls;
        (*ev)._pad = [0; 5];
        (*ev).sk = meta.sk;
        (*ev).ret = meta.ret;
        (*ev).enter_ns = meta.enter_ns;
        (*ev).captured = captured;
        (*ev)._pad2 = 0;
    }
    count(RequestCounter::DataEvents);
    send_data(ev, captured);
}

/// The fields of a state change, from whichever hook saw it.
pub struct StateChange {
    pub sk: u64,
    pub oldstate: u8,
    pub newstate: u8,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Whether a state change of `sk` is sent: every move to ESTABLISHED (the
/// passive side's runs in softirq before the process touches the socket),
/// and any move of a followed socket or inside a followed process.
#[inline(always)]
pub fn state_wanted(sk: u64, newstate: u8, tgid: u32) -> bool {
    newstate == tcp_state::ESTABLISHED || known_sock(sk) || followed(tgid)
}

/// Sends a [`SockStateEvent`].
#[inline(always)]
pub fn send_state(change: &StateChange, tgid: u32, tid: u32) {
    let event = SockStateEvent {
        header: header(EventKind::SockState, core::mem::size_of::<SockStateEvent>()),
        lost: lost_so_far(),
        tgid,
        tid,
        _pad: 0,
        sk: change.sk,
        oldstate: change.oldstate,
        newstate: change.newstate,
        family: change.family,
        sport: change.sport,
        dport: change.dport,
        saddr: change.saddr,
        daddr: change.daddr,
    };
    send(&event);
}
