//! Loading the kernel programs, attaching them, and reading their events.

pub mod attach;
pub mod pins;
pub mod requests;
pub mod ringbuf;
pub mod sys;
pub mod tracefs;

use agent_common::names;
use aya::{Ebpf, EbpfLoader, programs::Xdp};

/// The kernel programs, built by build.rs and embedded in the binary.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// Failure to load the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The object or one of its maps was refused.
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    /// The verifier or the kernel refused the XDP program.
    #[error("loading the XDP program failed: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// The object lacks the XDP program (a build problem).
    #[error("the embedded eBPF object has no program `{0}`: rebuild with `cargo xtask build`")]
    Missing(&'static str),
}

/// Loads the embedded object with the given map sizes, and loads (verifies)
/// the XDP program. Nothing is attached yet. Without `lifecycle_events` the
/// program sends no events, and the ring buffer gets its smallest size
/// (one page) whatever `ring_buffer_bytes` says.
pub fn load(
    flow_table_entries: u32,
    ring_buffer_bytes: u32,
    lifecycle_events: bool,
) -> Result<Ebpf, LoadError> {
    let ring_bytes = if lifecycle_events {
        ring_buffer_bytes
    } else {
        page_size()
    };
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::FLOW_MAP, flow_table_entries)
        .map_max_entries(names::EVENTS_MAP, ring_bytes)
        .override_global(
            names::LIFECYCLE_EVENTS_GLOBAL,
            &u8::from(lifecycle_events),
            true,
        )
        .load(EBPF_OBJECT)?;
    xdp_program(&mut ebpf)?.load()?;
    Ok(ebpf)
}

/// The smallest ring buffer the kernel accepts: one page.
fn page_size() -> u32 {
    // SAFETY: sysconf reads a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// The XDP capture program of a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let prog = ebpf
        .program_mut(names::XDP_PROGRAM)
        .ok_or(LoadError::Missing(names::XDP_PROGRAM))?;
    Ok(prog.try_into()?)
}
