//! One record on disk: self-delimiting, with a checksum over its header and
//! one over the whole frame, so a scan can tell a write cut short (the
//! header is intact, the frame runs past the end) from damage (a complete
//! header or frame that fails its checksum) and can find the next frame
//! after either.
//!
//! ```text
//! offset   size  field
//!  0        4    magic F5 4C 42 53 ("\xF5LBS")
//!  4        4    len: payload bytes, u32 little-endian (≤ MAX_PAYLOAD)
//!  8        8    sequence, u64 LE
//! 16        8    routes, u64 LE (bit i = group i of the segment header)
//! 24       32    prev: the chain hash of record sequence − 1
//! 56        4    header CRC-32 (IEEE) over bytes 0..56
//! 60        len  payload: the record's canonical JSON
//! 60+len    4    frame CRC-32 over bytes 0..56 and the payload
//! ```
//!
//! 0xF5 never occurs in UTF-8, so a record's text never contains a frame
//! start: counting magics in a damaged region counts the frames in it.
//!
//! `prev` is in the header, under its own CRC, so that a loss can be tied
//! into the chain: the frame at a loss's first sequence gives the hash
//! before it, and the frame after its last gives the hash it ends at
//! (`docs/SPOOL.md`, "The chain across a loss").

use crc32fast::Hasher;

/// Marks a frame start.
pub const MAGIC: [u8; 4] = [0xF5, b'L', b'B', b'S'];
/// Header bytes before the payload.
pub const HEADER: usize = 60;
/// Header bytes the header CRC covers (everything before it).
const COVERED: usize = HEADER - 4;
/// Header and trailing CRC: a frame is `OVERHEAD + len` bytes.
pub const OVERHEAD: usize = HEADER + 4;
/// The largest payload a frame may carry (16 MiB); a larger length field is
/// damage.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// A frame header that passed its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload bytes.
    pub len: usize,
    /// The record's sequence.
    pub sequence: u64,
    /// The record's route mask.
    pub routes: u64,
    /// The chain hash of record `sequence - 1` (`hash(sequence - 1)` in
    /// docs/AUDIT.md): what this record's hash was computed from.
    pub prev: [u8; 32],
}

impl Header {
    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        OVERHEAD + self.len
    }
}

/// What starts at the beginning of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete frame whose checksums hold.
    Intact(Header),
    /// A complete frame whose header holds but whose payload or trailing
    /// CRC does not: one known record, damaged.
    BadBody(Header),
    /// A valid header whose frame runs past the end of the buffer.
    CutBody(Header),
    /// Fewer than [`HEADER`] bytes.
    CutHeader,
    /// [`HEADER`] bytes that are not a valid header.
    BadHeader,
}

/// Appends one frame to `out`.
///
/// # Panics
/// If `payload` is longer than [`MAX_PAYLOAD`] (the writer checks first).
pub fn encode(out: &mut Vec<u8>, sequence: u64, routes: u64, prev: &[u8; 32], payload: &[u8]) {
    assert!(payload.len() <= MAX_PAYLOAD, "payload over MAX_PAYLOAD");
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&routes.to_le_bytes());
    out.extend_from_slice(prev);
    let head = crc32fast::hash(&out[start..start + COVERED]);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(payload);
    let mut all = Hasher::new();
    all.update(&out[start..start + COVERED]);
    all.update(payload);
    out.extend_from_slice(&all.finalize().to_le_bytes());
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

/// The header at the start of `buf`, if one is there and valid.
pub fn header(buf: &[u8]) -> Option<Header> {
    if buf.len() < HEADER
        || buf[..4] != MAGIC
        || crc32fast::hash(&buf[..COVERED]) != u32_at(buf, COVERED)
    {
        return None;
    }
    let len = u32_at(buf, 4) as usize;
    (len <= MAX_PAYLOAD).then(|| Header {
        len,
        sequence: u64_at(buf, 8),
        routes: u64_at(buf, 16),
        prev: buf[24..56].try_into().expect("32 bytes"),
    })
}

/// Parses the frame at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < HEADER {
        return Parsed::CutHeader;
    }
    let Some(h) = header(buf) else {
        return Parsed::BadHeader;
    };
    let end = h.frame_len();
    if buf.len() < end {
        return Parsed::CutBody(h);
    }
    let mut all = Hasher::new();
    all.update(&buf[..COVERED]);
    all.update(&buf[HEADER..HEADER + h.len]);
    if all.finalize() == u32_at(buf, end - 4) {
        Parsed::Intact(h)
    } else {
        Parsed::BadBody(h)
    }
}

/// The payload of an intact frame at the start of `buf`.
pub fn payload<'a>(buf: &'a [u8], h: &Header) -> &'a [u8] {
    &buf[HEADER..HEADER + h.len]
}

/// The first position at or after `from` where a valid header starts (its
/// frame may run past the end of `buf`).
pub fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < buf.len() {
        let hit = at + memchr::memchr(MAGIC[0], &buf[at..])?;
        if header(&buf[hit..]).is_some() {
            return Some(hit);
        }
        at = hit + 1;
    }
    None
}

/// How many frames a damaged region held: the frame starts in it that have
/// room for a whole header (a shorter one at the end is a torn write, not a
/// record), plus one when the region's own first magic was damaged. At
/// least one: the region began where a frame was expected.
pub fn frames_in(region: &[u8]) -> u64 {
    let mut starts = 0u64;
    let mut at = 0;
    while at + HEADER <= region.len() {
        match memchr::memchr(MAGIC[0], &region[at..region.len() - HEADER + 1]) {
            Some(i) => {
                if region[at + i..].starts_with(&MAGIC) {
                    starts += 1;
                }
                at += i + 1;
            }
            None => break,
        }
    }
    let first_damaged = u64::from(!region.starts_with(&MAGIC));
    (starts + first_damaged).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::chain;

    fn frame(seq: u64, routes: u64, text: &str) -> Vec<u8> {
        let mut b = Vec::new();
        encode(&mut b, seq, routes, &chain(seq - 1), text.as_bytes());
        b
    }

    #[test]
    fn round_trip() {
        let b = frame(42, 0b101, r#"{"a":1}"#);
        assert_eq!(b.len(), OVERHEAD + 7);
        let h = Header {
            len: 7,
            sequence: 42,
            routes: 0b101,
            prev: chain(41),
        };
        assert_eq!(parse(&b), Parsed::Intact(h));
        assert_eq!(payload(&b, &h), br#"{"a":1}"#);
        let empty = frame(1, 0, "");
        assert!(matches!(parse(&empty), Parsed::Intact(h) if h.len == 0));
    }

    #[test]
    fn every_prefix_is_cut_and_every_bit_flip_is_caught() {
        let b = frame(7, 3, "hello, spool");
        for cut in 0..b.len() {
            let want = if cut < HEADER { "header" } else { "body" };
            match parse(&b[..cut]) {
                Parsed::CutHeader => assert_eq!(want, "header", "cut at {cut}"),
                Parsed::CutBody(h) => {
                    assert_eq!((want, h.sequence), ("body", 7), "cut at {cut}")
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        for bit in 0..b.len() * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            match parse(&d) {
                // A flip in the header (or its CRC) spoils the header; the
                // length field is covered, so it can never look cut.
                Parsed::BadHeader => assert!(bit / 8 < HEADER, "bit {bit}"),
                Parsed::BadBody(h) => {
                    assert!(bit / 8 >= HEADER, "bit {bit}");
                    assert_eq!((h.sequence, h.prev), (7, chain(6)));
                }
                other => panic!("bit {bit}: {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_length_is_damage() {
        let mut b = frame(1, 1, "x");
        b[4..8].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        let crc = crc32fast::hash(&b[..COVERED]);
        b[COVERED..HEADER].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(parse(&b), Parsed::BadHeader);
    }

    #[test]
    fn resync_finds_the_next_valid_header() {
        let mut b = frame(1, 1, "first");
        let second = b.len();
        b.extend(frame(2, 1, "second"));
        b[1] ^= 0x10; // spoil the first magic
        assert_eq!(resync(&b, 0), Some(second));
        assert_eq!(resync(&b, second + 1), None);
        // A stray 0xF5 that is not a header is skipped.
        let mut c = vec![0xF5, 0, 0xF5];
        let at = c.len();
        c.extend(frame(3, 0, "x"));
        assert_eq!(resync(&c, 0), Some(at));
        // A header whose frame runs past the end still counts.
        assert_eq!(resync(&c[..at + HEADER], 0), Some(at));
    }

    #[test]
    fn frames_in_counts_starts() {
        let one = frame(1, 1, "one");
        let mut three = one.clone();
        three.extend(frame(2, 1, "two"));
        three.extend(frame(3, 1, "three"));
        assert_eq!(frames_in(&one), 1);
        assert_eq!(frames_in(&three), 3);
        // Damaged first magic: one more than the magics found.
        let mut d = three.clone();
        d[0] = 0;
        assert_eq!(frames_in(&d), 3);
        // A torn header at the end is not a frame.
        let mut t = one.clone();
        t.extend(&frame(9, 1, "torn")[..HEADER - 1]);
        assert_eq!(frames_in(&t), 1);
        assert_eq!(frames_in(&[0u8; 3]), 1);
    }
}
