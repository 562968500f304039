//! Opening a spool after any stop: reads the ack state and the index, reads
//! each segment's image (from where the index vouches for it, from its
//! start when it does not), lets [`Recovering`] decide what it holds, cuts
//! what a crash tore off the end, and reports the rest of what is not
//! intact as loss. The I/O is here; every decision is in [`Recovering`],
//! [`examine`] and [`settle`], which are pure.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use super::{
    Recovery, SpoolError,
    acks::{self, AckState},
    examine::{Place, examine},
    frame,
    image::{OnDisk, SegmentImage},
    index::{self, IndexEntry},
    live::Segment,
    segment::{self, HeaderError},
    settle::{self, Piece},
};

/// What open found, before the writer takes over.
pub(super) struct Opened {
    /// Live segments, oldest first, with the last one's file.
    pub segments: Vec<Segment>,
    /// The last segment's file, open for writing.
    pub last_file: Option<File>,
    /// Per configured group, acknowledged through.
    pub acked: Vec<u64>,
    /// Damaged regions reported, now or before.
    pub reported: BTreeSet<(u64, u64)>,
    /// Those reported before (what the ack file held), still live.
    pub reported_before: Vec<(u64, u64)>,
    /// The report.
    pub recovery: Recovery,
}

pub(super) fn read_at(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, SpoolError> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(SpoolError::io(path))?;
    Ok(buf)
}

/// Segment ids present in `dir`, ascending; removes temporary files.
fn list(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir).map_err(SpoolError::io(dir))? {
        let e = e.map_err(SpoolError::io(dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = segment::parse_name(&name) {
            ids.push(id);
        } else if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn read_state(
    dir: &Path,
    ids: &[u64],
    rec: &mut Recovery,
) -> Result<(AckState, BTreeMap<u64, IndexEntry>), SpoolError> {
    let state = match index::read(dir, "acks")? {
        Some(b) => acks::decode(&b).unwrap_or_else(|| {
            rec.problems.push("the acks file is damaged: every group starts again from the oldest record held (duplicates follow)".into());
            AckState::default()
        }),
        None if !ids.is_empty() => {
            rec.problems.push("no acks file: every group starts from the oldest record held (duplicates follow)".into());
            AckState::default()
        }
        None => AckState::default(),
    };
    let entries = match index::read(dir, "index")? {
        Some(b) => index::decode(&b).unwrap_or_else(|| {
            rec.problems
                .push("the index is damaged: rebuilding it by scanning every segment".into());
            rec.index_rebuilt = true;
            Vec::new()
        }),
        None => {
            if !ids.is_empty() {
                rec.problems
                    .push("no index: rebuilding it by scanning every segment".into());
                rec.index_rebuilt = true;
            }
            Vec::new()
        }
    };
    Ok((state, entries.into_iter().map(|e| (e.id, e)).collect()))
}

/// Opens `dir` for `groups`: the I/O around [`Recovering`], which decides.
pub(super) fn recover(dir: &Path, groups: &[String]) -> Result<Opened, SpoolError> {
    let mut rec = Recovery::default();
    let mut ids = list(dir)?;
    let (state, index) = read_state(dir, &ids, &mut rec)?;

    // A segment whose creation was cut short holds no record: remove it.
    // (A header is "short" only within its first MAX_HEADER bytes, so a
    // file that short is read whole.)
    while let Some(&id) = ids.last() {
        let path = dir.join(segment::file_name(id));
        let file = File::open(&path).map_err(SpoolError::io(&path))?;
        let len = file.metadata().map_err(SpoolError::io(&path))?.len();
        let head = read_at(&file, &path, 0, len.min(segment::MAX_HEADER as u64))?;
        let torn = segment::decode(&head) == Err(HeaderError::Short)
            && len == head.len() as u64
            && frame::resync(&head, 0).is_none();
        if !torn {
            break;
        }
        std::fs::remove_file(&path).map_err(SpoolError::io(&path))?;
        rec.torn_bytes += len;
        ids.pop();
    }

    let mut recovering = Recovering::new(groups, &state, index, rec);
    let mut last_file = None;
    for (k, &id) in ids.iter().enumerate() {
        let path = dir.join(segment::file_name(id));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(SpoolError::io(&path))?;
        let len = file.metadata().map_err(SpoolError::io(&path))?.len();
        let src = OnDisk {
            file: &file,
            path: &path,
            len,
        };
        let image = SegmentImage::read(&src, id, recovering.entry(id))?;
        let last = k + 1 == ids.len();
        let cut = recovering.segment(&image, last, path.clone());
        if cut.keep < len {
            file.set_len(cut.keep).map_err(SpoolError::io(&path))?;
        }
        if cut.sync {
            // What was scanned may be sent from now on: make it durable first.
            file.sync_data().map_err(SpoolError::io(&path))?;
        }
        if last {
            last_file = Some(file);
        }
    }
    let decided = recovering.finish();
    let mut rec = decided.recovery;
    if let Some((k, offset)) = decided.last {
        let s: &Segment = &decided.segments[k];
        let path = &s.view().path;
        let file = File::open(path).map_err(SpoolError::io(path))?;
        let head = read_at(&file, path, offset, frame::HEADER as u64)?;
        let h = frame::header(&head).expect("an intact frame found by the scan");
        let buf = read_at(&file, path, offset, h.frame_len() as u64)?;
        rec.last = Some(crate::entry::Entry {
            sequence: h.sequence,
            line: bytes::Bytes::copy_from_slice(frame::payload(&buf, &h)),
        });
    }
    Ok(Opened {
        segments: decided.segments,
        last_file,
        acked: decided.acked,
        reported: decided.reported,
        reported_before: decided.reported_before,
        recovery: rec,
    })
}

/// What to do to a segment file once its image is examined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cut {
    /// The length to cut it to (its length: no cut).
    pub keep: u64,
    /// Make it durable.
    pub sync: bool,
}

/// Recovery's decisions, from segment images in id order to the records
/// kept and the losses. Pure: no I/O, so it runs on images in memory.
#[derive(Debug)]
pub(super) struct Recovering<'a> {
    groups: &'a [String],
    state: &'a AckState,
    index: BTreeMap<u64, IndexEntry>,
    /// Index entries not met yet: ids listed, ascending.
    listed: std::collections::VecDeque<u64>,
    pieces: Vec<Piece>,
    segments: Vec<Segment>,
    rec: Recovery,
}

/// What recovery decided.
#[derive(Debug)]
pub(super) struct Decided {
    /// Live segments, oldest first, at their length after the cuts.
    pub segments: Vec<Segment>,
    /// Where the last intact record is: (segment position, offset).
    pub last: Option<(usize, u64)>,
    /// Per configured group, acknowledged through.
    pub acked: Vec<u64>,
    /// Damaged regions reported, now or before.
    pub reported: BTreeSet<(u64, u64)>,
    /// Those reported before (what the ack file held), still live.
    pub reported_before: Vec<(u64, u64)>,
    /// The report (without its `last`, which is read from the file).
    pub recovery: Recovery,
    /// What was settled, in spool order (for tests).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the property tests"))]
    pub pieces: Vec<Piece>,
}

impl<'a> Recovering<'a> {
    /// Recovery of a spool for `groups` whose ack state and index read as
    /// `state` and `index`, with what reading them found in `rec`.
    pub fn new(
        groups: &'a [String],
        state: &'a AckState,
        index: BTreeMap<u64, IndexEntry>,
        rec: Recovery,
    ) -> Self {
        Recovering {
            groups,
            state,
            listed: index.keys().copied().collect(),
            index,
            pieces: Vec::new(),
            segments: Vec::new(),
            rec,
        }
    }

    /// What the index says of segment `id`.
    pub fn entry(&self, id: u64) -> Option<&IndexEntry> {
        self.index.get(&id)
    }

    /// Takes the next segment (ids ascending): `last` when no other follows.
    pub fn segment(&mut self, image: &SegmentImage, last: bool, path: PathBuf) -> Cut {
        let id = image.id;
        // Listed in the index but gone: not deleted by us (we delete
        // oldest first), so damage. Entries before the oldest segment
        // were deleted by us.
        while let Some(&lid) = self.listed.front()
            && lid < id
        {
            self.listed.pop_front();
            if !self.segments.is_empty() {
                self.missing(lid);
            }
        }
        if self.listed.front() == Some(&id) {
            self.listed.pop_front();
        }
        let place = Place {
            groups: self.groups,
            k: self.segments.len(),
            last,
        };
        let found = examine(image, place, path);
        self.pieces.extend(found.pieces);
        self.rec.problems.extend(found.problems);
        self.rec.index_rebuilt |= found.index_rebuilt;
        self.rec.torn_bytes += found.torn_bytes;
        self.segments.push(found.seg);
        Cut {
            keep: found.keep,
            sync: found.sync,
        }
    }

    /// Settles what was found.
    pub fn finish(mut self) -> Decided {
        if self.segments.is_empty() {
            self.listed.clear();
        }
        while let Some(lid) = self.listed.pop_front() {
            self.missing(lid);
        }
        let acked: Vec<u64> = self.groups.iter().map(|g| self.state.acked(g)).collect();
        let mut reported: BTreeSet<(u64, u64)> = self.state.reported.iter().copied().collect();
        let mut rec = self.rec;
        let masks: Vec<Vec<u64>> = self.segments.iter().map(Segment::loss_masks).collect();
        let settled = settle::settle(&self.pieces, &masks, &acked, &mut reported);
        rec.losses = settled.losses;
        rec.highest = settled
            .highest
            .max(Some(self.state.highest).filter(|&h| h > 0));
        if settled.already > 0 {
            rec.problems.push(format!(
                "{} damaged regions were reported before and are skipped",
                settled.already
            ));
        }
        let live: BTreeSet<u64> = self.segments.iter().map(Segment::id).collect();
        reported.retain(|(id, _)| live.contains(id));
        let reported_before = self
            .state
            .reported
            .iter()
            .copied()
            .filter(|(id, _)| live.contains(id))
            .collect();
        Decided {
            segments: self.segments,
            last: settled.last,
            acked,
            reported,
            reported_before,
            recovery: rec,
            pieces: self.pieces,
        }
    }

    /// The index's segment `id` is gone.
    fn missing(&mut self, id: u64) {
        let e = self.index[&id];
        missing(&e, &mut self.pieces, &mut self.rec);
    }
}

fn missing(e: &IndexEntry, pieces: &mut Vec<Piece>, rec: &mut Recovery) {
    rec.problems.push(format!(
        "segment {} (records {}..={}) is missing: it was deleted or lost outside the agent",
        e.id, e.first, e.last
    ));
    if e.records > 0 {
        pieces.push(Piece::Missing {
            first: Some(e.first),
            last: e.last,
            count: e.records,
        });
    }
}
