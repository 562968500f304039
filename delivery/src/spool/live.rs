//! A live segment as the writer tracks it: what it holds, and what of it is
//! durable (what the index may say about it).

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{SpoolError, frame::Header, index::IndexEntry, segment, shared::SegView};

/// A live segment as the writer tracks it.
#[derive(Debug)]
pub(super) struct Segment {
    /// What readers see.
    view: Arc<SegView>,
    /// The groups its header names (None: header lost).
    groups: Option<Vec<String>>,
    /// Bytes in the file.
    len: u64,
    /// What is durable, as the index may say it (None: never synced).
    synced: Option<IndexEntry>,
    /// First and last intact sequence (0: none), intact records, union of
    /// route masks, offset of the last intact frame.
    first: u64,
    last: u64,
    records: u64,
    routes: u64,
    last_frame: u64,
}

impl Segment {
    pub fn new(
        id: u64,
        path: PathBuf,
        header_len: u64,
        seg_groups: Option<&[String]>,
        groups: &[String],
    ) -> Self {
        let masks = seg_groups.map_or_else(|| vec![0; groups.len()], |g| segment::masks(g, groups));
        Segment {
            view: Arc::new(SegView {
                id,
                path,
                header_len,
                masks,
                first: AtomicU64::new(0),
                last: AtomicU64::new(0),
            }),
            groups: seg_groups.map(<[String]>::to_vec),
            len: header_len,
            synced: None,
            first: 0,
            last: 0,
            records: 0,
            routes: 0,
            last_frame: 0,
        }
    }

    /// Creates segment `id` in `dir` with its header for `groups` (not
    /// synced), and opens it for appending.
    pub fn create(dir: &Path, id: u64, groups: &[String]) -> Result<(Self, File), SpoolError> {
        use std::io::Write as _;
        let path = dir.join(segment::file_name(id));
        let header = segment::encode(id, groups);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(SpoolError::io(&path))?;
        if let Err(e) = file.write_all(&header) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(SpoolError::io(path)(e));
        }
        let seg = Segment::new(id, path, header.len() as u64, Some(groups), groups);
        Ok((seg, file))
    }

    pub fn id(&self) -> u64 {
        self.view.id
    }

    /// What readers see of it.
    pub fn view(&self) -> &Arc<SegView> {
        &self.view
    }

    /// The groups its header names (None: header lost).
    pub fn groups(&self) -> Option<&[String]> {
        self.groups.as_deref()
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file is `len` bytes long now.
    pub fn set_len(&mut self, len: u64) {
        self.len = len;
    }

    /// The first intact sequence (0: none).
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The last intact sequence (0: none).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Intact records.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Union of the intact records' route masks.
    pub fn routes(&self) -> u64 {
        self.routes
    }

    /// What is durable, as the index may say it (None: never synced).
    pub fn synced(&self) -> Option<IndexEntry> {
        self.synced
    }

    /// The segment is closed: readers learn its last record.
    pub fn close(&self) {
        self.view.last.store(self.last, Ordering::Release);
    }

    /// Counts an intact frame appended at `offset`, at the end of the file.
    pub fn append(&mut self, h: &Header, offset: u64) {
        self.add(h, offset);
        self.len += h.frame_len() as u64;
    }

    /// Takes what the index says about the segment's durable part.
    pub fn absorb_entry(&mut self, e: &IndexEntry) {
        (self.first, self.last, self.records) = (e.first, e.last, e.records);
        (self.routes, self.last_frame) = (e.routes, e.last_frame);
        self.synced = Some(*e);
        self.view.first.store(e.first, Ordering::Release);
    }

    /// Counts an intact frame at `offset`.
    pub fn add(&mut self, h: &Header, offset: u64) {
        if self.first == 0 {
            self.first = h.sequence;
            self.view.first.store(h.sequence, Ordering::Release);
        }
        self.last = h.sequence;
        self.records += 1;
        self.routes |= h.routes;
        self.last_frame = offset;
    }

    /// Route bits that mean a configured group.
    pub fn known_bits(&self) -> u64 {
        self.view.masks.iter().fold(0, |a, m| a | m)
    }

    /// Masks for deciding loss: with the header lost, any group may have
    /// been meant.
    pub fn loss_masks(&self) -> Vec<u64> {
        if self.view.routable() {
            self.view.masks.clone()
        } else {
            vec![u64::MAX; self.view.masks.len()]
        }
    }

    /// Everything in the file is durable now.
    pub fn mark_synced(&mut self) {
        self.synced = Some(IndexEntry {
            id: self.id(),
            first: self.first,
            last: self.last,
            records: self.records,
            good: self.len,
            last_frame: self.last_frame,
            routes: self.routes,
        });
    }

    /// Whether everything in the file is durable.
    pub fn is_synced(&self) -> bool {
        self.synced.is_some_and(|e| e.good == self.len)
    }
}
