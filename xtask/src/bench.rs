//! `cargo xtask bench`: the XDP per-packet cost against a no-op program,
//! measured by the kernel (BPF_PROG_TEST_RUN). See tests/benches/xdp.rs.

use anyhow::Result;

use crate::{setup, util};

/// Builds and runs every benchmark.
pub fn run() -> Result<()> {
    setup::build_tools()?;
    util::require_root("BPF_PROG_TEST_RUN loads eBPF programs")?;
    util::cargo(&["bench", "-p", "integration-tests", "--bench", "xdp"])
}
