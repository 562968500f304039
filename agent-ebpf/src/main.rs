//! lbwitness kernel programs.
//!
//! One file per attach type (`xdp.rs`), every map in `maps.rs`, and every
//! packet access through the bounds-checked helpers in `packet.rs`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the BPF target lacks AtomicU64::fetch_add"
)]

mod maps;
mod packet;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is
    // never called; it exists only to satisfy `no_std`.
    loop {}
}

/// GPL-compatible licence: required for `bpf_ktime_get_ns` and ring buffers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
