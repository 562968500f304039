//! What the writer shares with readers: the live segments, the durable end
//! (through a `watch` channel owned by the writer) and the damaged regions
//! already reported, so that each is reported once whichever reader finds it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::unix::fs::FileExt as _,
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use super::frame::{self, Header};

/// How far readers may read: everything in segments before `segment`, and
/// `segment` up to `offset` (always the end of a frame).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Durable {
    /// The segment being written.
    pub segment: u64,
    /// Its durable length in bytes.
    pub offset: u64,
}

/// A live segment as readers see it.
#[derive(Debug)]
pub(crate) struct SegView {
    /// Segment id.
    pub id: u64,
    /// Its file.
    pub path: PathBuf,
    /// Where frames start (the header length; 0 when the header was lost).
    pub header_len: u64,
    /// Per configured group, its bits in this segment's route masks; all
    /// zero when the header was lost (nothing in it can be routed).
    pub masks: Vec<u64>,
    /// First intact sequence (0: not known yet).
    pub first: AtomicU64,
    /// Last intact sequence, set once the segment is closed (0: open or none).
    pub last: AtomicU64,
}

impl SegView {
    /// Whether the segment's header survived: without it, where frames
    /// start and what their route masks mean are unknown, and readers skip
    /// the whole segment (its records were reported lost at open).
    pub fn routable(&self) -> bool {
        self.header_len > 0
    }

    pub fn first(&self) -> Option<u64> {
        Some(self.first.load(Ordering::Acquire)).filter(|&s| s > 0)
    }

    pub fn last(&self) -> Option<u64> {
        Some(self.last.load(Ordering::Acquire)).filter(|&s| s > 0)
    }

    /// The header of the frame at `offset`, when it can be read and is
    /// intact. For chain hashes next to a loss: a failed read only leaves
    /// a hash unknown.
    pub fn header_at(&self, offset: u64) -> Option<Header> {
        let file = File::open(&self.path).ok()?;
        let mut buf = [0u8; frame::HEADER];
        file.read_exact_at(&mut buf, offset).ok()?;
        frame::header(&buf)
    }

    /// The header of its first frame (see [`SegView::header_at`]).
    pub fn first_header(&self) -> Option<Header> {
        self.routable()
            .then(|| self.header_at(self.header_len))
            .flatten()
    }
}

/// Shared by the writer and every reader.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Configured group names (index = route bit for new segments).
    pub groups: Vec<String>,
    /// Live segments by id.
    pub segments: RwLock<BTreeMap<u64, Arc<SegView>>>,
    /// Damaged regions already reported: (segment id, offset).
    pub reported: Mutex<BTreeSet<(u64, u64)>>,
}

impl Shared {
    /// The live segment `id`, or else the first one after it.
    pub fn at_or_after(&self, id: u64) -> Option<Arc<SegView>> {
        let segs = self.segments.read().expect("segment map poisoned");
        segs.range(id..).next().map(|(_, s)| Arc::clone(s))
    }

    /// Marks a region reported; false if it already was.
    pub fn report(&self, key: (u64, u64)) -> bool {
        self.reported
            .lock()
            .expect("reported set poisoned")
            .insert(key)
    }
}
