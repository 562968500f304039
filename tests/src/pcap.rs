//! Classic pcap files (not pcapng): enough to hand crafted frames to tshark
//! and to read back what dumpcap captured with `-P`.

use std::path::Path;

use anyhow::{Context, bail, ensure};

/// Link type of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Capture time, seconds since the epoch.
    pub ts_sec: u32,
    /// Sub-second part, in microseconds (or nanoseconds for a
    /// nanosecond-resolution file).
    pub ts_frac: u32,
    /// Length of the frame on the wire (can exceed `data.len()` when the
    /// capture was cut at a snaplen).
    pub orig_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Writes Ethernet `frames` to a new pcap file at `path`, one microsecond
/// apart, with `orig_len` equal to each frame's length.
pub fn write_pcap<F: AsRef<[u8]>>(path: &Path, frames: &[F]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&262_144u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, frame) in frames.iter().enumerate() {
        let data = frame.as_ref();
        let len = u32::try_from(data.len()).context("frame too long for pcap")?;
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&(i as u32 % 1_000_000).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(data);
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a classic pcap file of either byte order and timestamp resolution.
/// Returns the link type and the records.
pub fn read_pcap(path: &Path) -> anyhow::Result<(u32, Vec<Record>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        bytes.len() >= 24,
        "{}: shorter than a pcap header",
        path.display()
    );
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let big_endian = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => false,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => true,
        0x0a0d_0d0a => bail!("{}: pcapng, not pcap (use dumpcap -P)", path.display()),
        other => bail!("{}: not a pcap file (magic {other:#x})", path.display()),
    };
    let u32_at = |at: usize| -> u32 {
        let raw: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
        if big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        }
    };
    let linktype = u32_at(20);
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        ensure!(
            at + 16 <= bytes.len(),
            "{}: truncated record header at byte {at}",
            path.display()
        );
        let incl = u32_at(at + 8) as usize;
        let start = at + 16;
        ensure!(
            start + incl <= bytes.len(),
            "{}: truncated record at byte {at}",
            path.display()
        );
        records.push(Record {
            ts_sec: u32_at(at),
            ts_frac: u32_at(at + 4),
            orig_len: u32_at(at + 12),
            data: bytes[start..start + incl].to_vec(),
        });
        at = start + incl;
    }
    Ok((linktype, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let path = crate::temp_path("roundtrip.pcap");
        let frames = vec![vec![1u8; 60], vec![2u8; 1514], vec![]];
        write_pcap(&path, &frames).unwrap();
        let (linktype, records) = read_pcap(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(linktype, LINKTYPE_ETHERNET);
        let data: Vec<_> = records.iter().map(|r| r.data.clone()).collect();
        assert_eq!(data, frames);
        assert_eq!(records[1].orig_len, 1514);
    }
}
