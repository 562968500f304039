//! lbwitness request capture: the second kernel object (`agent-ebpf-requests`).
//!
//! Loaded apart from the flow object, so the flow agent's programs, maps and
//! load are unchanged, and request events have their own ring buffer.
//! One file per attach type (`tracepoint.rs`, `kprobe.rs`, `uprobe.rs`), every map in
//! `req_maps.rs`, what both share in `req_emit.rs`.
#![no_std]
#![no_main]

mod kprobe;
mod req_emit;
mod req_maps;
mod tracepoint;
mod uprobe;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is
    // never called; it exists only to satisfy `no_std`.
    loop {}
}

/// GPL-compatible licence: required for ring buffers, bpf_probe_read_user
/// and the tracing helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
