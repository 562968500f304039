//! Types shared by the lbwitness kernel programs (`agent-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]` with explicit padding fields, so its layout
//! is the same for the BPF target and the host, and a `const` assertion pins
//! its size. Userspace-only impls live behind the `user` feature.
#![no_std]

pub mod counter;
pub mod event;
pub mod flow;

/// Names of the maps and programs in the eBPF object, shared so the agent
/// never looks one up by a string the kernel side does not define.
pub mod names {
    /// The XDP capture program.
    pub const XDP_PROGRAM: &str = "lbwitness_xdp";
    /// LRU hash map of [`crate::flow::FlowKey`] to [`crate::flow::FlowStats`].
    pub const FLOW_MAP: &str = "FLOWS";
    /// Ring buffer carrying [`crate::flow::FlowEvent`]s.
    pub const EVENTS_MAP: &str = "EVENTS";
    /// Per-CPU array of `u64` indexed by [`crate::counter::Counter`].
    pub const COUNTERS_MAP: &str = "COUNTERS";
    /// Read-only global (`u8`): non-zero when the XDP program sends
    /// lifecycle events. The agent sets it at load time from
    /// `flows.lifecycle_records`.
    pub const LIFECYCLE_EVENTS_GLOBAL: &str = "LIFECYCLE_EVENTS";
}
