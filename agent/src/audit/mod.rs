//! The audit stage: sequence numbers, the hash chain, checkpoints, gap and
//! self-audit records. The scheme is specified in docs/AUDIT.md.

pub mod jcs;
