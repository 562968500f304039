//! lbwitness-trail: what an lbwitness audit trail is, and how to prove one.
//!
//! Everything here is pure code on stable Rust, with no eBPF toolchain and
//! no privileges, so an auditor can `cargo install --path trail` and run
//! `lbwitness-verify` on any OS. The agent (`lbwitness`) uses the same code
//! to write the trail and for `lbwitness verify`. The scheme is specified in
//! docs/AUDIT.md.
//!
//! * [`record`]: the record schema (ECS fields) whose canonical form the
//!   chain hashes;
//! * [`jcs`]: RFC 8785 canonical JSON, serialising and strictly parsing;
//! * [`chain`]: `event.hash` over each record and its predecessor;
//! * [`checkpoint`]: signed checkpoint payloads and their cadence;
//! * [`keys`]: Ed25519 signing keys and key ids;
//! * [`verify`]: the verifier: lines in, a report and an exit code out.

pub mod chain;
pub mod checkpoint;
pub mod jcs;
pub mod keys;
pub mod record;
pub mod verify;
