//! What the spool and delivery benchmarks share: a scratch directory and
//! flow-sized record lines.

use std::path::PathBuf;

/// The agent id in every benchmark record.
pub const AGENT: &str = "6f1c2a4e-8b9d-4c3e-9f10-2a3b4c5d6e7f";
/// Bytes per record line (without its newline): a flow record's size.
pub const LEN: usize = 900;

/// A directory under the system temporary directory, removed on drop. It
/// must be on a real disk for fsync figures to mean anything.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new, empty directory named for `what`.
    pub fn new(what: &str) -> Self {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random bytes");
        let dir = std::env::temp_dir().join(format!("lbw-{what}-bench-{}", hex::encode(b)));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A record line of [`LEN`] bytes with `seq` as its `event.sequence`.
pub fn line(seq: u64) -> Vec<u8> {
    let mut l = format!(
        "{{\"agent\":{{\"id\":\"{AGENT}\"}},\"event\":{{\"action\":\"flow-end\",\"sequence\":{seq}}},\"pad\":\""
    )
    .into_bytes();
    l.resize(LEN - 2, b'x');
    l.extend_from_slice(b"\"}");
    l
}
