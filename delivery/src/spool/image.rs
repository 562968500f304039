//! A segment image: what recovery reads of one segment file, and no more
//! than it needs. The file's length, its first bytes (where the header
//! is), the frames the index entry vouches with, and everything after the
//! part the index vouches for (the whole body when it vouches for none).
//! Reading is the only I/O of recovery per segment; what the image means
//! is decided by the pure [`super::examine::examine`].

use std::{fs::File, os::unix::fs::FileExt as _, path::Path};

use super::{
    SpoolError,
    frame::{self, Parsed},
    index::IndexEntry,
    loss::{ChainHash, event_hash},
    segment,
};

/// What the bytes of a segment are read from.
pub(super) trait Source {
    /// The file's length.
    fn len(&self) -> u64;
    /// `len` bytes from `offset` (within the file).
    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, SpoolError>;
}

/// A segment file on disk.
pub(super) struct OnDisk<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    pub len: u64,
}

impl Source for OnDisk<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, SpoolError> {
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(SpoolError::io(self.path))?;
        Ok(buf)
    }
}

/// A segment held in memory (tests).
impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, SpoolError> {
        Ok(self[offset as usize..(offset + len) as usize].to_vec())
    }
}

/// One segment as read at open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SegmentImage {
    /// Its id (from its file name).
    pub id: u64,
    /// The file's length.
    pub len: u64,
    /// The first `min(len, segment::MAX_HEADER)` bytes.
    pub head: Vec<u8>,
    /// What the index says of it.
    pub entry: Option<IndexEntry>,
    /// The bytes from the entry's `last_frame` to its `good`, when the
    /// entry's bounds fit the file and it lists records.
    pub last_frame: Option<Vec<u8>>,
    /// The first frame's header bytes, when the index vouches and the
    /// header fits before its `good`.
    pub first_header: Option<Vec<u8>>,
    /// Where `body` starts in the file.
    pub body_start: u64,
    /// The bytes from `body_start` to the end.
    pub body: Vec<u8>,
}

/// What a vouched segment's last frame says about the chain: its `prev`
/// and its own `event.hash` (both `None` for an empty segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Vouched {
    pub prev: Option<ChainHash>,
    pub hash: Option<ChainHash>,
}

impl SegmentImage {
    /// Reads segment `id` from `src`, with the index's `entry` for it.
    pub fn read<S: Source + ?Sized>(
        src: &S,
        id: u64,
        entry: Option<&IndexEntry>,
    ) -> Result<Self, SpoolError> {
        let len = src.len();
        let head = src.read(0, len.min(segment::MAX_HEADER as u64))?;
        let mut image = SegmentImage {
            id,
            len,
            head,
            entry: entry.copied(),
            ..SegmentImage::default()
        };
        let header_len = image.header_len();
        if let Some(e) = entry.filter(|_| header_len > 0)
            && window_fits(e, header_len, len)
        {
            image.last_frame = Some(src.read(e.last_frame, e.good - e.last_frame)?);
        }
        image.body_start = header_len;
        if let Some(e) = entry
            && image.vouched().is_some()
        {
            image.body_start = e.good;
            if e.records > 0 && header_len + frame::HEADER as u64 <= e.good {
                image.first_header = Some(src.read(header_len, frame::HEADER as u64)?);
            }
        }
        image.body = src.read(image.body_start, len - image.body_start)?;
        Ok(image)
    }

    /// The segment header, when it is intact and names this segment.
    pub fn header(&self) -> Result<segment::SegmentHeader, segment::HeaderError> {
        segment::decode(&self.head)
    }

    /// Where frames start: the header's length, 0 when it was lost.
    pub fn header_len(&self) -> u64 {
        self.header()
            .ok()
            .filter(|h| h.id == self.id)
            .map_or(0, |h| h.len as u64)
    }

    /// Whether the index's entry matches the file: its last frame is intact
    /// where it says and ends at its `good` offset. If so, the chain hashes
    /// that frame gives.
    pub fn vouched(&self) -> Option<Vouched> {
        let header_len = self.header_len();
        let e = self.entry.as_ref().filter(|_| header_len > 0)?;
        if e.good < header_len || e.good > self.len {
            return None;
        }
        if e.records == 0 {
            return (e.good == header_len).then_some(Vouched {
                prev: None,
                hash: None,
            });
        }
        let buf = self.last_frame.as_ref()?;
        match frame::parse(buf) {
            Parsed::Intact(h)
                if h.sequence == e.last && h.frame_len() as u64 == e.good - e.last_frame =>
            {
                Some(Vouched {
                    prev: Some(h.prev),
                    hash: event_hash(frame::payload(buf, &h)),
                })
            }
            _ => None,
        }
    }

    /// The `prev` of the vouched part's first frame when it is record
    /// `sequence`.
    pub fn first_prev(&self, sequence: u64) -> Option<ChainHash> {
        let buf = self.first_header.as_ref()?;
        frame::header(buf)
            .filter(|h| h.sequence == sequence)
            .map(|h| h.prev)
    }
}

/// Whether the entry's last frame lies within the file, after the header.
fn window_fits(e: &IndexEntry, header_len: u64, len: u64) -> bool {
    e.good >= header_len
        && e.good <= len
        && e.records > 0
        && e.last_frame >= header_len
        && e.last_frame < e.good
}
