//! The header every ring-buffer event starts with.

/// Kind of a ring-buffer event. Ids are never reused: a retired kind keeps
/// its number, so an old agent never misreads a new kernel object's events.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A flow lifecycle event: [`crate::flow::FlowEvent`].
    Flow = 1,
    /// Bytes through a TCP socket: [`crate::request::DataEvent`].
    SockData = 2,
    /// A TCP state change: [`crate::request::SockStateEvent`].
    SockState = 3,
    /// An accept, connect or close: [`crate::request::SockCallEvent`].
    SockCall = 4,
    /// A reset, retransmission or socket destruction: [`crate::request::TcpEvent`].
    Tcp = 5,
    /// A splice between a socket and a pipe: [`crate::request::SpliceEvent`].
    Splice = 6,
}

impl EventKind {
    /// The kind for a raw id, or `None` for an id this build does not know.
    pub const fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Flow),
            2 => Some(Self::SockData),
            3 => Some(Self::SockState),
            4 => Some(Self::SockCall),
            5 => Some(Self::Tcp),
            6 => Some(Self::Splice),
            _ => None,
        }
    }
}

/// Common header of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32` (kept raw so unknown kinds can be counted).
    pub kind: u32,
    /// Size in bytes of the whole event, header included.
    pub len: u32,
    /// `bpf_ktime_get_ns()` when the event was produced (CLOCK_MONOTONIC, ns).
    pub ktime_ns: u64,
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 16);
