//! The hash chain: numbers each record, hashes its canonical form together
//! with the previous record's hash, and writes the NDJSON line with
//! `event.hash` in place. Pure: bytes in, bytes out.

use sha2::{Digest as _, Sha256};

use crate::jcs;
use crate::record::Record;

/// A SHA-256 chain hash.
pub type Hash = [u8; 32];

/// The chain's latest record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its sequence (0 before the first record).
    pub sequence: u64,
    /// Its hash (32 zero bytes before the first record).
    pub hash: Hash,
}

impl Head {
    /// Before an agent's first record.
    pub const GENESIS: Self = Self {
        sequence: 0,
        hash: [0; 32],
    };
}

/// A record could not be serialised. Not expected: records are plain data.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// serde_json failed.
    #[error("cannot serialise a record: {0}")]
    Serialise(#[from] serde_json::Error),
    /// The serialised record has no `event.kind` to place the hash before.
    #[error("a serialised record has no event.kind member; the record schema is broken")]
    NoHashSlot,
}

/// One agent's chain.
#[derive(Debug)]
pub struct Chain {
    agent_id: &'static str,
    head: Head,
}

impl Chain {
    /// A chain for `agent_id` continuing after `head`.
    pub fn new(agent_id: &'static str, head: Head) -> Self {
        Self { agent_id, head }
    }

    /// The latest record.
    pub fn head(&self) -> Head {
        self.head
    }

    /// Sets the fields the chain owns (`agent.id`, `event.sequence`) to the
    /// values the next [`seal`](Self::seal) gives them, so a checkpoint can be
    /// signed over exactly what will be hashed.
    pub fn stamp(&self, record: &mut Record) {
        record.agent.id = self.agent_id;
        record.event.sequence = self.head.sequence + 1;
    }

    /// Canonical JSON of `record` as stamped, without `event.hash`.
    pub fn body(&self, record: &mut Record, out: &mut Vec<u8>) -> Result<(), SealError> {
        self.stamp(record);
        jcs::to_canonical_vec(record, out)?;
        Ok(())
    }

    /// Numbers `record`, chains it and appends its NDJSON line to `out`.
    /// Returns its sequence.
    pub fn seal(&mut self, record: &mut Record, out: &mut Vec<u8>) -> Result<u64, SealError> {
        const HASH_MEMBER: usize = b"\"hash\":\"\",".len() + 64;
        let start = out.len();
        if let Err(e) = self.body(record, out) {
            out.truncate(start);
            return Err(e);
        }
        let Some(slot) = hash_slot(&out[start..]).map(|s| start + s) else {
            out.truncate(start);
            return Err(SealError::NoHashSlot);
        };
        let hash: Hash = Sha256::new()
            .chain_update(self.head.hash)
            .chain_update(&out[start..])
            .finalize()
            .into();
        // Open a gap for the member at its sorted place and fill it.
        let end = out.len();
        out.resize(end + HASH_MEMBER + 1, 0);
        out.copy_within(slot..end, slot + HASH_MEMBER);
        let member = &mut out[slot..slot + HASH_MEMBER];
        member[..8].copy_from_slice(b"\"hash\":\"");
        hex::encode_to_slice(hash, &mut member[8..72]).expect("64 bytes for 32");
        member[72..].copy_from_slice(b"\",");
        *out.last_mut().expect("just resized") = b'\n';
        self.head = Head {
            sequence: record.event.sequence,
            hash,
        };
        Ok(self.head.sequence)
    }
}

/// Where `"hash"` goes in a canonical record: before `"kind"` inside the
/// top-level `event` object, its place in sorted order. The members sorted
/// before `event` (`@timestamp`, `agent`, `destination`) and the ones before
/// `kind` inside it (`action`, `category`, `dataset`, `duration`, `end`) hold
/// no object named `event` or member named `kind`, and string contents can't
/// contain an unescaped `"`, so the first matches are the right ones.
fn hash_slot(body: &[u8]) -> Option<usize> {
    let event = memchr::memmem::find(body, b"\"event\":{")?;
    let kind = memchr::memmem::find(&body[event..], b"\"kind\":")?;
    Some(event + kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn record(action: &'static str) -> Record {
        Record::for_test("lbwitness.audit", action)
    }

    /// Recomputes a line's hash the way docs/AUDIT.md says, with
    /// serde_json's own parser as the independent reader.
    fn spec_hash(prev: &Hash, line: &[u8]) -> (u64, Hash, String) {
        let mut v: serde_json::Value = serde_json::from_slice(line).unwrap();
        let stored = v["event"]["hash"].as_str().unwrap().to_owned();
        v["event"].as_object_mut().unwrap().remove("hash");
        // serde_json's map is sorted (no preserve_order) and our names are
        // ASCII, so this is JCS for these records.
        let body = serde_json::to_vec(&v).unwrap();
        let h: Hash = Sha256::new()
            .chain_update(prev)
            .chain_update(&body)
            .finalize()
            .into();
        (v["event"]["sequence"].as_u64().unwrap(), h, stored)
    }

    #[test]
    fn lines_follow_the_spec() {
        let mut chain = Chain::new("agent-1", Head::GENESIS);
        let mut out = Vec::new();
        for action in ["agent-start", "hook-attach", "agent-stop"] {
            chain.seal(&mut record(action), &mut out).unwrap();
        }
        let mut prev = [0u8; 32];
        for (i, line) in out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let (seq, h, stored) = spec_hash(&prev, line);
            assert_eq!(seq, i as u64 + 1);
            assert_eq!(hex::encode(h), stored);
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(v["agent"]["id"], "agent-1");
            // The line is canonical as written: re-serialising sorted changes nothing.
            assert_eq!(serde_json::to_vec(&v).unwrap(), line);
            prev = h;
        }
        assert_eq!(chain.head().sequence, 3);
        assert_eq!(chain.head().hash, prev);
    }

    #[test]
    fn continues_from_a_head() {
        let mut a = Chain::new("x", Head::GENESIS);
        let mut out = Vec::new();
        a.seal(&mut record("one"), &mut out).unwrap();
        let mut b = Chain::new("x", a.head());
        let mut out2 = Vec::new();
        a.seal(&mut record("two"), &mut out).unwrap();
        b.seal(&mut record("two"), &mut out2).unwrap();
        assert!(out.ends_with(&out2));
    }
}
