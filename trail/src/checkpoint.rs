//! Signed checkpoints: when they are due, and how one is built and signed.

use std::time::{Duration, Instant};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::{
    chain::{Chain, SealError},
    keys::key_id,
    record::{
        Record,
        audit::{Checkpoint, NextKey},
    },
};

/// Prefixed to the canonical checkpoint before signing, so a checkpoint
/// signature can never be mistaken for a signature over anything else.
pub const SIGNING_CONTEXT: &[u8] = b"lbwitness-checkpoint-v1\n";

/// The agent's signing key and its id.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    id: String,
}

impl Signer {
    /// Wraps `key`.
    pub fn new(key: SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// Hex SHA-256 of the public key.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}

/// Why a checkpoint is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `checkpoint_records` records since the last one.
    Records,
    /// `checkpoint_interval` since the last one.
    Interval,
    /// The key changes; this checkpoint names the next key.
    Rotation,
    /// The agent stops; this is its last record.
    Stop,
    /// Right after spool gap records, so they are covered even when the
    /// spool refuses the records that follow.
    Gap,
}

impl Reason {
    /// `event.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Records => "records",
            Self::Interval => "interval",
            Self::Rotation => "rotation",
            Self::Stop => "stop",
            Self::Gap => "gap",
        }
    }
}

/// When the next checkpoint is due.
#[derive(Debug)]
pub struct Cadence {
    every_records: u64,
    every: Duration,
    /// Sequence of the latest checkpoint (0: none yet).
    last: u64,
    last_at: Instant,
}

impl Cadence {
    /// Every `every_records` records or `every`, after a checkpoint at
    /// `last`.
    pub fn new(every_records: u64, every: Duration, last: u64, now: Instant) -> Self {
        Self {
            every_records,
            every,
            last,
            last_at: now,
        }
    }

    /// The first sequence the next checkpoint covers.
    pub fn first_uncovered(&self) -> u64 {
        self.last + 1
    }

    /// The latest checkpoint's sequence.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether enough records have passed since the last checkpoint, given
    /// the chain's head.
    pub fn records_due(&self, head: u64) -> bool {
        head.saturating_sub(self.last) >= self.every_records
    }

    /// When the interval runs out.
    pub fn deadline(&self) -> Instant {
        self.last_at + self.every
    }

    /// A checkpoint was sealed at `sequence`.
    pub fn done(&mut self, sequence: u64, now: Instant) {
        self.last = sequence;
        self.last_at = now;
    }

    /// Changes the cadence (config reload).
    pub fn set(&mut self, every_records: u64, every: Duration) {
        self.every_records = every_records;
        self.every = every;
    }
}

/// Fills `record` as the checkpoint that goes next in `chain`, covering
/// `first..=head`, and signs it. The record comes back stamped with its
/// sequence; [`Chain::seal`] must be the next call on `chain`.
pub fn sign(
    chain: &Chain,
    mut record: Record,
    first_sequence: u64,
    signer: &Signer,
    next: Option<&VerifyingKey>,
    is_final: bool,
    scratch: &mut Vec<u8>,
) -> Result<Record, SealError> {
    let head = chain.head();
    record.lbwitness.checkpoint = Some(Checkpoint {
        count: (head.sequence + 1).saturating_sub(first_sequence),
        is_final,
        first_sequence,
        head_hash: hex::encode(head.hash),
        key_id: signer.id.clone(),
        last_sequence: head.sequence,
        next_key: next.map(|k| NextKey {
            key_id: key_id(k),
            public_key: hex::encode(k.as_bytes()),
        }),
        signature: None,
    });
    scratch.clear();
    scratch.extend_from_slice(SIGNING_CONTEXT);
    chain.body(&mut record, scratch)?;
    let signature = signer.key.sign(scratch);
    if let Some(c) = &mut record.lbwitness.checkpoint {
        c.signature = Some(hex::encode(signature.to_bytes()));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signature, Verifier as _};

    use super::*;
    use crate::chain::Head;

    fn base() -> Record {
        Record::for_test("lbwitness.audit", "checkpoint")
    }

    #[test]
    fn signature_covers_the_record_without_signature_and_hash() {
        let signer = Signer::new(SigningKey::from_bytes(&[1; 32]));
        let mut chain = Chain::new("a", Head::GENESIS);
        let mut out = Vec::new();
        for _ in 0..3 {
            chain.seal(&mut base(), &mut out).unwrap();
        }
        let mut scratch = Vec::new();
        let mut rec = sign(&chain, base(), 1, &signer, None, false, &mut scratch).unwrap();
        out.clear();
        chain.seal(&mut rec, &mut out).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let cp = v["lbwitness"]["checkpoint"].clone();
        assert_eq!(cp["first_sequence"], 1);
        assert_eq!(cp["last_sequence"], 3);
        assert_eq!(cp["count"], 3);
        assert_eq!(v["event"]["sequence"], 4);
        // Rebuild the signed message from the line, as a verifier would.
        v["event"].as_object_mut().unwrap().remove("hash");
        let sig_hex = v["lbwitness"]["checkpoint"]
            .as_object_mut()
            .unwrap()
            .remove("signature")
            .unwrap();
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend(serde_json::to_vec(&v).unwrap());
        let mut sig = [0u8; 64];
        hex::decode_to_slice(sig_hex.as_str().unwrap(), &mut sig).unwrap();
        signer
            .public()
            .verify(&msg, &Signature::from_bytes(&sig))
            .unwrap();
    }

    #[test]
    fn cadence() {
        let t0 = Instant::now();
        let mut c = Cadence::new(10, Duration::from_secs(5), 0, t0);
        assert_eq!(c.first_uncovered(), 1);
        assert!(!c.records_due(9));
        assert!(c.records_due(10));
        c.done(11, t0 + Duration::from_secs(1));
        assert_eq!(c.first_uncovered(), 12);
        assert!(!c.records_due(20));
        assert!(c.records_due(21));
        assert_eq!(c.deadline(), t0 + Duration::from_secs(6));
    }
}
