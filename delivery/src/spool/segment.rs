//! A segment file's header and name. The header names the groups that the
//! route masks of the segment's frames refer to, so a config change between
//! runs cannot misroute: bits are mapped to today's groups by name.
//!
//! ```text
//! offset  size  field
//!  0       8    magic "LBWSPOOL"
//!  8       2    format version (2: frames carry the previous chain hash), u16 LE
//! 10       4    header length H in bytes, u32 LE (CRC included)
//! 14       8    segment id, u64 LE (also the file name, 16 hex digits + ".seg")
//! 22       1    group count n (1..=64)
//! 23       ..   n × (u8 length, UTF-8 name)
//! H-4      4    CRC-32 over bytes 0..H-4
//! ```
//! Frames follow from offset H.

const MAGIC: &[u8; 8] = b"LBWSPOOL";
/// The format written and read. Version 1 (frames without `prev`) was
/// never released.
pub const VERSION: u16 = 2;
const FIXED: usize = 23;
/// The largest header: 64 names of 255 bytes.
pub const MAX_HEADER: usize = FIXED + 64 * 256 + 4;

/// A decoded segment header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment id.
    pub id: u64,
    /// Group `i` is bit `i` of the route masks in this segment.
    pub groups: Vec<String>,
    /// Header bytes: frames start here.
    pub len: usize,
}

/// Why a header could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The file ends inside the header (a creation cut short by a crash).
    Short,
    /// The header is damaged or not a spool segment.
    Bad,
    /// A spool segment of another format version (the one given).
    Version(u16),
}

/// Encodes a header for segment `id` naming `groups` (checked by settings:
/// 1..=64 names of 1..=255 bytes).
pub fn encode(id: u64, groups: &[String]) -> Vec<u8> {
    let mut b = Vec::with_capacity(FIXED + 4 + groups.iter().map(|g| g.len() + 1).sum::<usize>());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&id.to_le_bytes());
    b.push(groups.len() as u8);
    for g in groups {
        b.push(g.len() as u8);
        b.extend_from_slice(g.as_bytes());
    }
    let len = (b.len() + 4) as u32;
    b[10..14].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the header at the start of a segment file.
pub fn decode(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
    if buf.len() < 14 {
        return if MAGIC.starts_with(&buf[..buf.len().min(8)]) {
            Err(HeaderError::Short)
        } else {
            Err(HeaderError::Bad)
        };
    }
    if &buf[..8] != MAGIC {
        return Err(HeaderError::Bad);
    }
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    let len = u32::from_le_bytes(buf[10..14].try_into().expect("4 bytes")) as usize;
    if !(FIXED + 4..=MAX_HEADER).contains(&len) {
        return Err(HeaderError::Bad);
    }
    if buf.len() < len {
        return Err(HeaderError::Short);
    }
    let crc = u32::from_le_bytes(buf[len - 4..len].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[..len - 4]) != crc {
        return Err(HeaderError::Bad);
    }
    let id = u64::from_le_bytes(buf[14..22].try_into().expect("8 bytes"));
    let count = buf[22] as usize;
    let mut groups = Vec::with_capacity(count);
    let mut at = FIXED;
    for _ in 0..count {
        let n = *buf.get(at).ok_or(HeaderError::Bad)? as usize;
        let name = buf.get(at + 1..at + 1 + n).ok_or(HeaderError::Bad)?;
        groups.push(String::from_utf8(name.to_vec()).map_err(|_| HeaderError::Bad)?);
        at += 1 + n;
    }
    if at != len - 4 || groups.is_empty() {
        return Err(HeaderError::Bad);
    }
    Ok(SegmentHeader { id, groups, len })
}

/// The file name of segment `id`: sorts in id order.
pub fn file_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

/// The id in a segment file name.
pub fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16
        && hex
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    .then(|| u64::from_str_radix(hex, 16).ok())
    .flatten()
}

/// For each of today's groups, the bits of a segment's route masks that
/// mean it (0: the segment names no such group, or its header is lost).
pub fn masks(segment_groups: &[String], groups: &[String]) -> Vec<u64> {
    groups
        .iter()
        .map(|g| {
            segment_groups
                .iter()
                .enumerate()
                .filter(|(_, s)| *s == g)
                .fold(0, |m, (i, _)| m | 1 << i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn round_trip_and_damage() {
        let groups = names(&["siem", "archive", "é"]);
        let b = encode(9, &groups);
        let h = decode(&b).unwrap();
        assert_eq!((h.id, &h.groups, h.len), (9, &groups, b.len()));
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), Err(HeaderError::Short), "cut at {cut}");
        }
        for bit in 0..b.len() * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            // A flip in the length field may make the header look longer
            // than the buffer (short) or fail the CRC; never decode.
            assert!(decode(&d).is_err(), "bit {bit}");
        }
        assert_eq!(decode(b"not a spool segment"), Err(HeaderError::Bad));
        let mut old = b.clone();
        old[8..10].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(decode(&old), Err(HeaderError::Version(1)));
    }

    #[test]
    fn names_sort_by_id() {
        assert_eq!(file_name(10), "000000000000000a.seg");
        assert_eq!(parse_name("000000000000000a.seg"), Some(10));
        for bad in [
            "000000000000000A.seg",
            "a.seg",
            "000000000000000a.idx",
            "index",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        assert!(file_name(9) < file_name(10) && file_name(255) < file_name(256));
    }

    #[test]
    fn masks_follow_names_not_positions() {
        let then = names(&["a", "b", "c"]);
        let now = names(&["c", "a", "new"]);
        assert_eq!(masks(&then, &now), vec![0b100, 0b001, 0]);
    }
}
