//! lbwitness: an eBPF/XDP capture agent for load-balancer hosts.
//!
//! The modules follow the data path: [`capture`] (load, attach, ring
//! buffer) → [`decode`] → [`flows`] (sweep and export) → [`enrich`] (ECS
//! records) → [`sink`]. [`run`] wires them together.

pub mod audit;
pub mod balance;
pub mod capture;
pub mod clock;
pub mod config;
pub mod decode;
pub mod deliver;
pub mod enrich;
pub mod flows;
pub mod logging;
pub mod preflight;
pub mod record;
pub mod route;
pub mod run;
pub mod sink;
pub mod spool;
pub mod telemetry;
pub mod verify;
pub mod watch;
