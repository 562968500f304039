//! The acknowledgement state: per group (by name) the sequence through
//! which it has everything routed to it, the damaged regions already
//! reported (so a restart does not report them twice), and the highest
//! sequence known written (so a damaged last record cut off at open still
//! holds its number).
//!
//! ```text
//! offset  size  field
//!  0       8    magic "LBWSACK1"
//!  8       8    highest sequence known written, u64 LE
//! 16       1    group count n
//! 17       ..   n × (u8 length, UTF-8 name, u64 LE acknowledged-through)
//!  ..      4    reported count m, u32 LE
//!  ..      16×m (segment id, offset) u64 LE each
//!  ..      4    CRC-32 over everything before
//! ```
//! Written like the index (temporary file, fdatasync, rename): a crash
//! leaves the previous state, which only means duplicates later.

const MAGIC: &[u8; 8] = b"LBWSACK1";

/// The acknowledgement state as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckState {
    /// Group name and acknowledged-through sequence.
    pub groups: Vec<(String, u64)>,
    /// Damaged regions already reported: (segment id, offset).
    pub reported: Vec<(u64, u64)>,
    /// The highest sequence known written (0: none).
    pub highest: u64,
}

impl AckState {
    /// The watermark of `group` (0 when it is not stored).
    pub fn acked(&self, group: &str) -> u64 {
        self.groups
            .iter()
            .find(|(g, _)| g == group)
            .map_or(0, |(_, a)| *a)
    }
}

/// Encodes the state (group names are 1..=255 bytes, at most 64 of them).
pub fn encode(s: &AckState) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + s.groups.len() * 40 + s.reported.len() * 16);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&s.highest.to_le_bytes());
    b.push(s.groups.len() as u8);
    for (g, a) in &s.groups {
        b.push(g.len() as u8);
        b.extend_from_slice(g.as_bytes());
        b.extend_from_slice(&a.to_le_bytes());
    }
    b.extend_from_slice(&(s.reported.len() as u32).to_le_bytes());
    for (id, off) in &s.reported {
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the state; `None` if it is damaged or cut short.
pub fn decode(b: &[u8]) -> Option<AckState> {
    let body = b.len().checked_sub(4)?;
    if b.len() < 25 || &b[..8] != MAGIC || crc32fast::hash(&b[..body]).to_le_bytes() != b[body..] {
        return None;
    }
    let b = &b[..body];
    let u64_at = |i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let mut at = 17;
    let mut s = AckState {
        highest: u64_at(8)?,
        ..AckState::default()
    };
    for _ in 0..b[16] {
        let n = *b.get(at)? as usize;
        let name = String::from_utf8(b.get(at + 1..at + 1 + n)?.to_vec()).ok()?;
        s.groups.push((name, u64_at(at + 1 + n)?));
        at += 9 + n;
    }
    let m = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
    at += 4;
    if b.len() != at.checked_add(m.checked_mul(16)?)? {
        return None;
    }
    for k in 0..m {
        s.reported
            .push((u64_at(at + 16 * k)?, u64_at(at + 16 * k + 8)?));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_any_damage_is_refused() {
        let s = AckState {
            groups: vec![("siem".into(), 1_000), ("archive".into(), 0)],
            reported: vec![(3, 4096), (4, 0)],
            highest: 12_345,
        };
        let b = encode(&s);
        assert_eq!(decode(&b), Some(s.clone()));
        assert_eq!(s.acked("siem"), 1_000);
        assert_eq!(s.acked("gone"), 0);
        assert_eq!(
            decode(&encode(&AckState::default())),
            Some(AckState::default())
        );
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), None, "cut at {cut}");
        }
        for bit in 0..b.len() * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&d), None, "bit {bit}");
        }
    }
}
