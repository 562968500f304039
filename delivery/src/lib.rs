//! lbwitness-delivery: from sealed records to collectors, with nothing lost.
//!
//! The modules follow the path of a [`sealed`] record batch (numbered and
//! chained by the agent's audit stage): [`route`] (which
//! collector groups a record goes to) → [`spool`] (the durable on-disk
//! queue) → [`deliver`] (one task per group: read the spool, balance, retry,
//! declare losses) → [`balance`] (which endpoint of a group) → [`sink`] (one
//! module per collector kind: file, syslog/RELP, NATS JetStream).
//!
//! Stable Rust, no eBPF toolchain: nothing here knows about capture. Record
//! types and canonical JSON come from [`lbwitness_trail`].

pub mod balance;
pub mod deliver;
pub mod entry;
pub mod route;
pub mod sealed;
pub mod sink;
pub mod spool;
