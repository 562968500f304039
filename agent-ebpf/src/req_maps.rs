//! Every map of the request programs (the `agent-ebpf-requests` object). The
//! agent sets the ring size and the capture limit at load time; the sizes
//! here only matter to a loader that does not.

use agent_common::request::{DataEvent, RequestCounter};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// What a syscall's entry saw, kept for its exit (per thread).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Args {
    /// Data syscalls: the user buffer (read/write/recvfrom/sendto) or the
    /// first iovec's base (readv/writev/recvmsg/sendmsg). accept: the
    /// caller's sockaddr buffer (0 when none). pipe/pipe2: the `int[2]`.
    /// splice: `fd_out`.
    pub buf: u64,
    /// Data syscalls: the length of that buffer.
    pub len: u64,
    /// The socket seen during the syscall (0 until then).
    pub sk: u64,
    /// `bpf_ktime_get_ns()` at entry.
    pub enter_ns: u64,
    /// The fd argument.
    pub fd: i32,
    /// A `request::syscall` value for data syscalls, else 0.
    pub syscall: u8,
    /// A `request::call` value for accept/connect/close, else 0.
    pub call: u8,
    /// connect: the destination's family (0 when unread).
    pub family: u16,
    /// connect: the destination's port, host order.
    pub port: u16,
    /// Non-zero when the receive was a MSG_PEEK: no event.
    pub peek: u8,
    /// splice: the `request::direction` of the sock tracepoint that named
    /// `sk` (0 when none fired).
    pub sk_way: u8,
    pub _pad: [u8; 4],
    /// connect: the destination address, network order.
    pub addr: [u8; 16],
}

/// The processes followed, by tgid (value unused, 1). Filled by the agent,
/// followed across fork by `sched_process_fork`.
#[map(name = "PROCS")]
pub static PROCS: HashMap<u32, u32> = HashMap::with_max_entries(8192, 0);

/// Syscalls in flight, by thread id: entry writes, exit reads and deletes.
#[map(name = "ARGS")]
pub static ARGS: HashMap<u32, Args> = HashMap::with_max_entries(16384, 0);

/// Sockets the data and connect paths met, by `struct sock *`: their state
/// changes, resets and retransmits are sent. LRU: a socket that vanished
/// without tcp_destroy_sock (never on a sane kernel) ages out.
#[map(name = "SOCKS")]
pub static SOCKS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Request events to userspace, a ring of their own so request and flow
/// events never starve each other (4 MiB: about 3,000 requests at ~1.3 KiB).
#[map(name = "REQ_EVENTS")]
pub static REQ_EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// 1 while the agent takes events; 0 (the default) until it is ready and
/// from the moment it stops. Every send checks it, so the stop is final at
/// once: it need not wait for the detach, where closing each perf event
/// waits for an RCU grace period (about 76 ms each here).
#[map(name = "REQ_ON")]
pub static REQ_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Drops and skips by reason, per CPU.
#[map(name = "REQ_COUNTERS")]
pub static REQ_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(RequestCounter::COUNT, 0);

/// Events this CPU failed to send since its last successful one.
#[map(name = "REQ_LOST")]
pub static REQ_LOST: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room to build a [`DataEvent`] (1 KiB does not fit the 512-byte stack).
#[map(name = "REQ_SCRATCH")]
pub static REQ_SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

/// An SSL call in flight on a thread: its arguments, and the socket a
/// syscall inside it named.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    /// The `SSL *`.
    pub ssl: u64,
    /// The plaintext buffer.
    pub buf: u64,
    /// Its length (`num`).
    pub len: u64,
    /// `_ex` forms: where libssl writes the bytes moved (`size_t *`).
    pub moved_at: u64,
    /// The socket of a syscall inside the call (0 until one runs).
    pub sk: u64,
    /// `bpf_ktime_get_ns()` at the call.
    pub enter_ns: u64,
    /// That syscall's fd (-1 until one runs).
    pub fd: i32,
    /// 1 for `SSL_write*`, 0 for `SSL_read*`.
    pub write: u8,
    /// 1 for the `_ex` forms.
    pub ex: u8,
    pub _pad: [u8; 2],
}

/// The socket an `SSL *` last moved bytes through, for a call that is
/// served from libssl's buffer without a syscall.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsSock {
    pub sk: u64,
    pub fd: i32,
    pub _pad: u32,
}

/// SSL calls in flight, by thread id: the uprobe writes, the syscalls
/// inside fill `sk`, the return probe reads and deletes.
#[map(name = "TLS_CALLS")]
pub static TLS_CALLS: HashMap<u32, TlsCall> = HashMap::with_max_entries(16384, 0);

/// Each `SSL *`'s socket, by `SSL *`. LRU: a freed `SSL *` ages out, and a
/// reused one is rebound by its first call with a syscall.
#[map(name = "TLS_SOCKS")]
pub static TLS_SOCKS: LruHashMap<u64, TlsSock> = LruHashMap::with_max_entries(65536, 0);

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: RequestCounter) {
    if let Some(slot) = REQ_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}
