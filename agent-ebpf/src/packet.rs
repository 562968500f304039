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

    /// Pointer to `N` bytes at `offset`, or `None` if they are not all in the
    /// frame.
    #[inline(always)]
    pub fn bytes<const N: usize>(&self, offset: usize) -> Option<*const [u8; N]> {
        if offset > MAX_OFFSET {
            return None;
        }
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        Some(at as *const [u8; N])
    }

    /// A big-endian `u16` at `offset`, returned in host order.
    #[inline(always)]
    pub fn be16_at(&self, offset: usize) -> Option<u16> {
        // SAFETY: `bytes` proved both bytes are inside the frame; the read is
        // unaligned-safe.
        self.bytes::<2>(offset)
            .map(|p| u16::from_be_bytes(unsafe { core::ptr::read_unaligned(p) }))
    }
}
