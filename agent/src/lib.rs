//! lbwitness: the eBPF/XDP capture agent for load-balancer hosts, as a
//! library behind the `lbwitness` binary.
//!
//! The modules follow the data path: [`capture`] (load, attach, ring
//! buffer) → [`decode`] → [`flows`] (sweep and export) → [`enrich`] (ECS
//! records) → [`audit`] (sequence, chain, checkpoints, gaps) → delivery
//! ([`lbwitness_delivery`]: route, spool, balance, sinks). [`watch`] records
//! changes to the load balancer's files, [`run`] wires the stages together,
//! and [`config`] reads the one TOML file. The record schema and the
//! verifier are in [`lbwitness_trail`].

pub mod audit;
pub mod capture;
pub mod clock;
pub mod config;
pub mod decode;
pub mod doctor;
pub mod enrich;
pub mod flows;
pub mod logging;
pub mod preflight;
pub mod privacy;
#[cfg(test)]
mod record_kinds;
pub mod requests;
pub mod run;
pub mod telemetry;
pub mod watch;
