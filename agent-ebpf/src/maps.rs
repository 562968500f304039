//! Every map of the kernel programs. The agent sets the sizes of `FLOWS` and
//! `EVENTS` at load time from its config (defaults in agent/src/config), so
//! the sizes here only matter to a loader that does not.

use agent_common::{
    counter::Counter,
    flow::{FlowKey, FlowStats},
};
use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};

/// Per-flow accounting. LRU so a full table evicts the stalest flow instead
/// of refusing new ones; the agent detects evictions of flows it knows.
#[map(name = "FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(131_072, 0);

/// Lifecycle events to userspace (256 KiB by default).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Drops and malformed packets by reason, per CPU so counting never contends.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}
