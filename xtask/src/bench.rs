//! `cargo xtask bench`: the XDP per-packet cost against a no-op program,
//! measured by the kernel (BPF_PROG_TEST_RUN, tests/benches/xdp.rs), the
//! audit chain's cost per record (agent/benches/chain.rs),
//! `lbwitness verify` throughput (trail/benches/verify.rs) and the spool's
//! append, group-commit fsync and read throughput (delivery/benches/spool.rs),
//! and delivery from the spool to a TCP collector: throughput on one core and
//! spool-to-acknowledgement latency at 50 000 records/s
//! (agent/benches/delivery.rs), the agent's memory at 100 000 and
//! 1 000 000 flows (tests/benches/agent_memory.rs), and the real agent's
//! stop time with 100 000, 500 000 and 1 000 000 open flows
//! (tests/benches/stop.rs), and request capture (#12): HAProxy's throughput
//! and p99 under `wrk` with the real agent attached and detached in the
//! same run, with the agent's CPU per 1 000 requests/s and its ring-buffer
//! bytes per request (tests/benches/requests_lb.rs, needs haproxy, nginx
//! and wrk from `cargo xtask setup`), and the request correlator's
//! throughput on one core (agent/benches/correlate.rs).

use anyhow::Result;

use crate::{setup, util};

/// Builds and runs every benchmark.
pub fn run() -> Result<()> {
    setup::build_tools()?;
    util::require_root("BPF_PROG_TEST_RUN loads eBPF programs")?;
    // The stop and requests_lb benchmarks run the real agent binary.
    util::build_release()?;
    util::cargo(&[
        "bench",
        "-p",
        "integration-tests",
        "--bench",
        "xdp",
        "--bench",
        "agent_memory",
        "--bench",
        "stop",
        "--bench",
        "requests_lb",
    ])?;
    util::cargo(&["bench", "-p", "lbwitness-trail", "--bench", "verify"])?;
    util::cargo(&["bench", "-p", "lbwitness-delivery", "--bench", "spool"])?;
    util::cargo(&[
        "bench",
        "-p",
        "lbwitness",
        "--bench",
        "chain",
        "--bench",
        "delivery",
        "--bench",
        "correlate",
    ])
}
