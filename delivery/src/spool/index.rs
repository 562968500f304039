//! The index: per segment, what a scan would find up to the last offset
//! known durable, so that opening the spool reads only what was written
//! since. A cache: missing, damaged or behind, it is rebuilt by scanning.
//!
//! ```text
//! offset  size   field
//!  0       8     magic "LBWSIDX1"
//!  8       4     entry count n, u32 LE
//! 12       56×n  entries: id, first, last, records, good, last_frame, routes (u64 LE each)
//! 12+56n   4     CRC-32 over everything before
//! ```
//! Written to `index.tmp`, fdatasynced and renamed over `index`.

use std::path::Path;

use super::SpoolError;

const MAGIC: &[u8; 8] = b"LBWSIDX1";
const ENTRY: usize = 56;

/// One segment as far as it is known durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexEntry {
    /// Segment id.
    pub id: u64,
    /// Sequence of the first intact record (0: none).
    pub first: u64,
    /// Sequence of the last intact record (0: none).
    pub last: u64,
    /// Intact records before `good`.
    pub records: u64,
    /// Offset up to which the segment was durable and scanned: the end of a
    /// frame (or of the header).
    pub good: u64,
    /// Offset of the last intact frame before `good` (0: none).
    pub last_frame: u64,
    /// Union of the route masks of the records before `good`.
    pub routes: u64,
}

/// Encodes the index.
pub fn encode(entries: &[IndexEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + ENTRY * entries.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        for v in [
            e.id,
            e.first,
            e.last,
            e.records,
            e.good,
            e.last_frame,
            e.routes,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes an index; `None` if it is damaged or cut short.
pub fn decode(b: &[u8]) -> Option<Vec<IndexEntry>> {
    if b.len() < 16 || &b[..8] != MAGIC {
        return None;
    }
    let n = u32::from_le_bytes(b[8..12].try_into().ok()?) as usize;
    let end = 12usize.checked_add(n.checked_mul(ENTRY)?)?;
    if b.len() != end + 4 || crc32fast::hash(&b[..end]).to_le_bytes() != b[end..] {
        return None;
    }
    let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Some(
        (0..n)
            .map(|k| {
                let o = 12 + k * ENTRY;
                IndexEntry {
                    id: u(o),
                    first: u(o + 8),
                    last: u(o + 16),
                    records: u(o + 24),
                    good: u(o + 32),
                    last_frame: u(o + 40),
                    routes: u(o + 48),
                }
            })
            .collect(),
    )
}

/// Writes `data` to `dir/name` through `name.tmp`, fdatasync and rename: a
/// crash leaves the old file or the new one, never a mix. The directory is
/// not fsynced: losing the rename in a power failure leaves the previous
/// version, which every reader of these files accepts.
pub fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> Result<(), SpoolError> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{name}.tmp"));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_data()
    });
    if let Err(e) = written {
        // Do not leave a partial file taking space on a full disk.
        let _ = std::fs::remove_file(&tmp);
        return Err(SpoolError::io(tmp)(e));
    }
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(SpoolError::io(path))
}

/// Reads `dir/name`: `Ok(None)` when it does not exist.
pub fn read(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, SpoolError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SpoolError::io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_any_damage_is_refused() {
        let entries = vec![
            IndexEntry {
                id: 1,
                first: 1,
                last: 90,
                records: 90,
                good: 81_000,
                last_frame: 80_100,
                routes: 3,
            },
            IndexEntry {
                id: 2,
                ..IndexEntry::default()
            },
        ];
        let b = encode(&entries);
        assert_eq!(decode(&b), Some(entries));
        assert_eq!(decode(&encode(&[])), Some(vec![]));
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
