//! `lbwitness run`: checks, load, attach, the pipeline tasks, reloads on
//! SIGHUP, and a clean shutdown on SIGINT or SIGTERM.
//!
//! ```text
//! ring buffer ─▶ capture::ringbuf ─▶ flows (sweeps FLOWS, reads COUNTERS) ─▶ audit ─▶ spooler ─▶ groups ─▶ collectors
//!                                            run (hooks, reloads), watch ──┘
//! ```
//!
//! [`Agent`] owns a run: [`Agent::start`] (`resume`: the chain's state;
//! `hooks`: the eBPF object, attached and pinned; `prelude`: the first
//! records; `delivery`: spool and groups), [`Agent::supervise`] (`signals`,
//! `reload`) and [`Agent::stop`].

mod agent;
pub mod delivery;
mod hooks;
mod prelude;
mod reload;
mod resume;
mod signals;

use std::time::Duration;

pub use agent::{Agent, Ending};

use crate::config::{Config, Overrides};

/// Channel depths: enough to ride out a burst, small enough to push back.
const EVENT_BATCHES: usize = 64;
const RECORDS: usize = 8192;
const BATCHES: usize = 16;
const CONTROL: usize = 256;
const WATCH_CHANGES: usize = 64;
/// What a stop needs after the final flow flush: the audit stage's last
/// records, the final checkpoint, the spool's last fsync, and the groups'
/// 2.5 s to deliver what is spooled (`run::delivery::DRAIN`).
const STOP_TAIL: Duration = Duration::from_millis(3000);

/// What the stop's last part always gets, even after an overrun: the
/// audit stage's queued records, the final checkpoint, and the groups'
/// 2.5 s to deliver (`run::delivery::DRAIN`).
const TAIL_FLOOR: Duration = Duration::from_secs(4);

/// The longest a clean stop takes with `open_flows` flows in the kernel
/// map: 4.5 s with few flows, growing by 10 µs per open flow (the final
/// flush's [`crate::flows::flush_budget`]).
pub fn stop_budget(open_flows: u64) -> Duration {
    crate::flows::flush_budget(open_flows) + STOP_TAIL
}

/// Runs the agent until SIGINT or SIGTERM. `overrides` are the command
/// line's, applied again on every reload.
pub async fn run(config: Config, overrides: Overrides) -> anyhow::Result<()> {
    let mut agent = Agent::start(config, overrides).await?;
    let ending = agent.supervise().await;
    agent.stop(ending).await
}
