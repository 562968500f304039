//! The agent's pure parsers, compiled on their own for fuzzing.
//!
//! The modules are included by path rather than by depending on the
//! `lbwitness` crate: that crate's build script builds the eBPF programs
//! (nightly, bpf-linker), which a fuzz build doesn't need. The HTTP framer
//! uses only std, `sha2` and `thiserror`, so it compiles here unchanged.

#[path = "../../src/requests/http/mod.rs"]
pub mod http;
