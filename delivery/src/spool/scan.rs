//! Scanning a segment's frames after a crash: what is intact, what is
//! damaged (and how many records it held), and where a write was cut short.
//! Pure: the caller decides, with what it knows about durability, whether a
//! cut end is a torn write or lost data.

use super::frame::{self, Header, Parsed};

/// Something found in a segment body, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// A frame whose checksums hold, at `offset`.
    Intact {
        /// Where the frame starts.
        offset: usize,
        /// Its header.
        header: Header,
    },
    /// Bytes that should be frames and are not.
    Damaged(Damage),
}

/// A damaged region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Where it starts (where a frame was expected).
    pub start: usize,
    /// Where the next valid header (or the end) is.
    pub end: usize,
    /// The damaged frame's header, when only its payload was hit: the record
    /// is then known exactly.
    pub header: Option<Header>,
    /// How many records the region held (see [`frame::frames_in`]).
    pub frames: u64,
}

/// A segment body, scanned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Intact frames and damaged regions, in order.
    pub items: Vec<Item>,
    /// Where trailing bytes that hold no complete frame begin: a frame cut
    /// short (its header when that survived), or a zero-filled tail.
    pub cut: Option<Cut>,
}

/// Trailing bytes that are not a complete frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Where they start.
    pub start: usize,
    /// The header of the frame cut short, if it was complete.
    pub header: Option<Header>,
}

impl Scan {
    /// The end of the last intact frame (or `start` when none).
    pub fn intact_end(&self, start: usize) -> usize {
        self.items
            .iter()
            .rev()
            .find_map(|i| match i {
                Item::Intact { offset, header } => Some(offset + header.frame_len()),
                Item::Damaged(_) => None,
            })
            .unwrap_or(start)
    }
}

/// Scans `buf` from `start`, which must be where a frame begins.
///
/// Rules, in order at each position:
/// - an intact frame is kept;
/// - a valid header whose frame fails its CRC is one damaged record, known
///   by its header;
/// - a valid header whose frame runs past the end, or fewer than a header's
///   bytes, is a cut end;
/// - anything else is damage up to the next valid header; with none, to the
///   end — unless every remaining byte is zero, which is what a file
///   extended by a crash (and not written) holds, so a cut end.
pub fn scan(buf: &[u8], start: usize) -> Scan {
    let mut out = Scan::default();
    let mut at = start;
    while at < buf.len() {
        match frame::parse(&buf[at..]) {
            Parsed::Intact(header) => {
                out.items.push(Item::Intact { offset: at, header });
                at += header.frame_len();
            }
            Parsed::BadBody(header) => {
                let end = at + header.frame_len();
                out.items.push(Item::Damaged(Damage {
                    start: at,
                    end,
                    header: Some(header),
                    frames: 1,
                }));
                at = end;
            }
            Parsed::CutBody(header) => {
                out.cut = Some(Cut {
                    start: at,
                    header: Some(header),
                });
                break;
            }
            Parsed::CutHeader => {
                out.cut = Some(Cut {
                    start: at,
                    header: None,
                });
                break;
            }
            Parsed::BadHeader => {
                let next = frame::resync(buf, at + 1);
                let end = next.unwrap_or(buf.len());
                if next.is_none() && buf[at..].iter().all(|&b| b == 0) {
                    out.cut = Some(Cut {
                        start: at,
                        header: None,
                    });
                    break;
                }
                out.items.push(Item::Damaged(Damage {
                    start: at,
                    end,
                    header: None,
                    frames: frame::frames_in(&buf[at..end]),
                }));
                at = end;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::frame::{HEADER, encode};

    /// Frames for sequences `seqs`, and where each starts.
    fn body(seqs: &[u64]) -> (Vec<u8>, Vec<usize>) {
        let mut b = Vec::new();
        let mut starts = Vec::new();
        for &s in seqs {
            starts.push(b.len());
            encode(
                &mut b,
                s,
                1,
                &[0; 32],
                format!("{{\"seq\":{s},\"pad\":\"{}\"}}", "x".repeat(s as usize % 7)).as_bytes(),
            );
        }
        (b, starts)
    }

    fn intact(s: &Scan) -> Vec<u64> {
        s.items
            .iter()
            .filter_map(|i| match i {
                Item::Intact { header, .. } => Some(header.sequence),
                Item::Damaged(_) => None,
            })
            .collect()
    }

    fn damaged(s: &Scan) -> Vec<Damage> {
        s.items
            .iter()
            .filter_map(|i| match i {
                Item::Damaged(d) => Some(*d),
                Item::Intact { .. } => None,
            })
            .collect()
    }

    #[test]
    fn clean_body() {
        let (b, _) = body(&[1, 2, 3]);
        let s = scan(&b, 0);
        assert_eq!((intact(&s), s.cut), (vec![1, 2, 3], None));
        assert_eq!(s.intact_end(0), b.len());
    }

    #[test]
    fn every_cut_keeps_the_complete_frames() {
        let (b, starts) = body(&[1, 2, 3]);
        for cut in 0..b.len() {
            let s = scan(&b[..cut], 0);
            let complete = starts
                .iter()
                .skip(1)
                .chain([&b.len()])
                .filter(|&&e| e <= cut)
                .count();
            assert_eq!(intact(&s).len(), complete, "cut at {cut}");
            assert!(damaged(&s).is_empty(), "cut at {cut}");
            let start = starts.get(complete).copied();
            assert_eq!(
                s.cut.map(|c| c.start),
                start.filter(|&p| p < cut),
                "cut at {cut}"
            );
            assert_eq!(
                s.cut.and_then(|c| c.header).is_some(),
                start.is_some_and(|p| cut - p >= HEADER),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_one_damaged_record_between_intact_neighbours() {
        let (b, starts) = body(&[10, 11, 12]);
        let (lo, hi) = (starts[1], starts[2]);
        for bit in lo * 8..hi * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            let s = scan(&d, 0);
            assert_eq!(intact(&s), vec![10, 12], "bit {bit}");
            let dam = damaged(&s);
            assert_eq!(dam.len(), 1, "bit {bit}");
            assert_eq!(
                (dam[0].start, dam[0].end, dam[0].frames),
                (lo, hi, 1),
                "bit {bit}"
            );
            let in_header = bit / 8 - lo < HEADER;
            assert_eq!(dam[0].header.is_none(), in_header, "bit {bit}");
            assert_eq!(s.cut, None);
        }
    }

    #[test]
    fn damage_in_the_last_frame_is_not_a_cut() {
        let (b, starts) = body(&[1, 2]);
        for byte in starts[1]..b.len() {
            let mut d = b.clone();
            d[byte] ^= 0x40;
            let s = scan(&d, 0);
            assert_eq!((intact(&s), s.cut), (vec![1], None), "byte {byte}");
            assert_eq!(damaged(&s)[0].frames, 1, "byte {byte}");
        }
    }

    #[test]
    fn a_run_of_damaged_frames_is_counted() {
        let (mut b, starts) = body(&[1, 2, 3, 4, 5]);
        // Smash the headers of 2, 3 and 4 but leave their magics.
        for &p in &starts[1..4] {
            b[p + 9] ^= 0xFF;
        }
        let s = scan(&b, 0);
        assert_eq!(intact(&s), vec![1, 5]);
        assert_eq!(damaged(&s)[0].frames, 3);
        // Overwritten with zeros in the middle: one region, at least one record.
        let (mut z, starts) = body(&[1, 2, 3]);
        z[starts[1]..starts[2]].fill(0);
        let s = scan(&z, 0);
        assert_eq!((intact(&s), damaged(&s)[0].frames), (vec![1, 3], 1));
    }

    #[test]
    fn zero_filled_tail_is_a_cut() {
        let (mut b, starts) = body(&[1, 2]);
        let end = b.len();
        b.extend([0u8; 100]);
        let s = scan(&b, 0);
        assert_eq!(
            (intact(&s), s.cut.map(|c| c.start)),
            (vec![1, 2], Some(end))
        );
        assert!(starts[1] < end);
    }

    #[test]
    fn scan_starts_where_told() {
        let (b, starts) = body(&[1, 2, 3]);
        let s = scan(&b, starts[1]);
        assert_eq!(intact(&s), vec![2, 3]);
        assert_eq!(scan(&b, b.len()), Scan::default());
    }
}
