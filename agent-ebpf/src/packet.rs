//! Bounds-checked access to packet bytes. Every read of the frame goes
//! through here, so a truncated header can only ever yield `None`.

use aya_ebpf::programs::XdpContext;

/// Largest offset the parser ever reads at. Bounding offsets keeps them
/// provably small for the verifier (packet pointer arithmetic needs a known
/// maximum); real headers end far below it.
pub const MAX_OFFSET: usize = 512;

/// Packet bounds, read once from the context.
#[derive(Clone, Copy)]
pub struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Bytes from `offset` to the end of the frame (0 when beyond it).
    #[inline(always)]
    pub fn remaining(&self, offset: usize) -> usize {
        (self.end - self.start).saturating_sub(offset)
    }

    /// A `T` read from `offset`, or `None` if it is not all in the frame.
    ///
    /// The load is a plain typed load: one BPF instruction instead of one
    /// per byte. Header fields sit at 2-byte aligned offsets from the
    /// Ethernet header, and wider loads may be unaligned; the verifier allows
    /// unaligned packet loads on architectures with efficient unaligned
    /// access (x86-64, arm64), as every C XDP program relies on.
    #[inline(always)]
    pub fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset > MAX_OFFSET {
            return None;
        }
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: the bytes are inside the frame (checked above).
        Some(unsafe { (at as *const T).read() })
    }

    /// A big-endian `u16` at `offset`, in host order.
    #[inline(always)]
    pub fn be16(&self, offset: usize) -> Option<u16> {
        self.load::<u16>(offset).map(u16::from_be)
    }
}

/// The fixed IPv4 header (RFC 791). Multi-byte fields in network order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub src: u32,
    pub dst: u32,
}

const _: () = assert!(size_of::<Ipv4Hdr>() == 20);

/// The fixed IPv6 header (RFC 8200). Multi-byte fields in network order;
/// addresses as two native words each, copied verbatim into the flow key.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    pub version_tc_flow: u32,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u64; 2],
    pub dst: [u64; 2],
}

const _: () = assert!(size_of::<Ipv6Hdr>() == 40);
