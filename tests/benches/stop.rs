//! Stop time of the real agent with large flow tables: 100 000, 500 000 and
//! 1 000 000 open flows, filled by BPF_PROG_TEST_RUN of the agent's own
//! attached XDP program (tests/flood). Prints, per size,
//! `stop flows=<n> took_ms=<t> budget_ms=<b> shutdown_records=<r> unflushed=<u> exit=<code>`:
//! the time from SIGTERM to exit, the stop budget for that many flows,
//! how many flows got a `shutdown` record and how many the agent declared
//! it could not flush in time.

#[path = "../tests/flood/mod.rs"]
mod flood;

use std::time::Duration;

use integration_tests::{Scratch, lab::Lab, netns::require_root};

use crate::flood::{Tally, attached_program, fill};

fn main() {
    require_root();
    for flows in [100_000u32, 500_000, 1_000_000] {
        let lab = Lab::new("bstp");
        // Twice the flows, so the LRU never evicts one before the stop.
        let config = Scratch::file(
            "stop.toml",
            &format!(
                "[capture]\nflow_table_entries = {}\n\
                 [flows]\nidle_timeout_secs = 3600\nlifecycle_records = false\n\
                 [audit]\nwatch_files = []\n",
                flows * 2
            ),
        );
        let mut agent = lab.start_agent(&["--config", config.0.to_str().unwrap()]);
        let prog = attached_program(&lab.lb, lab.iface());
        fill(&prog, 0..flows, |_| 1);
        // One sweep over the full table before the stop, as in steady state.
        std::thread::sleep(Duration::from_secs(2));
        let budget = lbwitness::run::stop_budget(u64::from(flows));
        let exit = agent.stop_within(libc::SIGTERM, budget + Duration::from_secs(30));
        let tally = Tally::read(&agent.output);
        println!(
            "stop flows={flows} took_ms={} budget_ms={} shutdown_records={} unflushed={} exit={}",
            exit.took.as_millis(),
            budget.as_millis(),
            tally.with_reason("shutdown"),
            tally.gap("shutdown-unflushed"),
            exit.status.code().unwrap_or(-1),
        );
    }
}
