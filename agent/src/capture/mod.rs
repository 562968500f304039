//! Loading the kernel programs, attaching them, and reading their events.

pub mod attach;
pub mod pins;
pub mod ringbuf;
pub mod sys;

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
/// the XDP program. Nothing is attached yet.
pub fn load(flow_table_entries: u32, ring_buffer_bytes: u32) -> Result<Ebpf, LoadError> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::FLOW_MAP, flow_table_entries)
        .map_max_entries(names::EVENTS_MAP, ring_buffer_bytes)
        .load(EBPF_OBJECT)?;
    xdp_program(&mut ebpf)?.load()?;
    Ok(ebpf)
}

/// The XDP capture program of a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let prog = ebpf
        .program_mut(names::XDP_PROGRAM)
        .ok_or(LoadError::Missing(names::XDP_PROGRAM))?;
    Ok(prog.try_into()?)
}
