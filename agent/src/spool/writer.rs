//! The writer side: one task owns the [`Spool`], appends sealed records,
//! syncs (group commit) and publishes the durable end to readers.

use std::{
    collections::VecDeque,
    fs::File,
    os::unix::fs::FileExt as _,
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::watch;

use super::{
    Appended, FsyncPolicy, LossReason, Reader, Recovery, SpoolError, SpoolRecord, SpoolSettings,
    frame::{self, Header},
    index::IndexEntry,
    loss::Losses,
    recover,
    segment::{self},
    shared::{Durable, SegView, Shared},
    space::{self, Refusal},
};

/// A live segment as the writer tracks it.
#[derive(Debug)]
pub(super) struct Segment {
    /// What readers see.
    pub view: Arc<SegView>,
    /// The groups its header names (None: header lost).
    pub groups: Option<Vec<String>>,
    /// Bytes in the file.
    pub len: u64,
    /// What is durable, as the index may say it (None: never synced).
    pub synced: Option<IndexEntry>,
    /// First and last intact sequence (0: none), intact records, union of
    /// route masks, offset of the last intact frame.
    pub first: u64,
    pub last: u64,
    pub records: u64,
    pub routes: u64,
    pub last_frame: u64,
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

    pub fn id(&self) -> u64 {
        self.view.id
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

/// A frame encoded in the write buffer, not yet written.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub header: Header,
    /// Where it starts in the buffer.
    pub start: usize,
}

/// The spool's writer. See the module docs and `docs/SPOOL.md`.
pub struct Spool {
    pub(super) settings: SpoolSettings,
    pub(super) headroom: u64,
    pub(super) max_payload: usize,
    pub(super) header_len: u64,
    pub(super) shared: Arc<Shared>,
    /// Live segments, oldest first; the last is the active one.
    pub(super) segments: VecDeque<Segment>,
    pub(super) active: File,
    /// Segments closed since the last sync, still to fdatasync.
    pub(super) unsynced: Vec<(PathBuf, File)>,
    pub(super) dir_dirty: bool,
    pub(super) index_dirty: bool,
    pub(super) acked: Vec<u64>,
    pub(super) acks_dirty: bool,
    pub(super) persisted_reported: Vec<(u64, u64)>,
    pub(super) last_sequence: u64,
    /// The highest sequence known written at open (kept in the ack state).
    pub(super) highest: u64,
    pub(super) durable: watch::Sender<Durable>,
    pub(super) durable_sequence: Option<u64>,
    pub(super) refusing: Option<Refusal>,
    pub(super) dropped_full: u64,
    pub(super) dropped_no_space: u64,
    pub(super) buf: Vec<u8>,
    pub(super) pending: Vec<Pending>,
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool, recovers what a previous run left, and
    /// reports it. Damage is never an error: it is in the [`Recovery`].
    pub fn open(settings: SpoolSettings) -> Result<(Spool, Recovery), SpoolError> {
        space::validate(&settings)?;
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(SpoolError::io(&dir))?;
        let lock = space::lock(&dir)?;
        let opened = recover::recover(&dir, &settings.groups)?;
        let opened_reported_before = opened.reported_before;
        let mut recovery = opened.recovery;
        let mut segments: VecDeque<Segment> = opened.segments.into();
        let header_len = segment::encode(0, &settings.groups).len() as u64;
        let reusable = segments
            .back()
            .is_some_and(|s| s.view.routable() && s.groups.as_ref() == Some(&settings.groups));
        let active = match opened.last_file {
            Some(f) if reusable => f,
            _ => {
                let id = segments.back().map_or(1, |s| s.id() + 1);
                let (mut seg, file) = space::create(&dir, id, &settings.groups)?;
                file.sync_data().map_err(SpoolError::io(&seg.view.path))?;
                File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(SpoolError::io(&dir))?;
                seg.mark_synced();
                segments.push_back(seg);
                file
            }
        };
        let n = segments.len();
        for s in segments.iter().take(n - 1) {
            s.view.last.store(s.last, Ordering::Release);
        }
        let a = segments.back().expect("an active segment");
        let (tx, _) = watch::channel(Durable {
            segment: a.id(),
            offset: a.len,
        });
        let durable_sequence = recovery.last.as_ref().map(|e| e.sequence);
        let last_sequence = recovery.highest_sequence().unwrap_or(0);
        let shared = Arc::new(Shared {
            groups: settings.groups.clone(),
            segments: RwLock::new(
                segments
                    .iter()
                    .map(|s| (s.id(), Arc::clone(&s.view)))
                    .collect(),
            ),
            reported: Mutex::new(opened.reported),
        });
        let max_payload = (settings.segment_bytes - header_len) as usize - frame::OVERHEAD;
        let mut spool = Spool {
            headroom: space::headroom(settings.max_bytes),
            max_payload: max_payload.min(frame::MAX_PAYLOAD),
            header_len,
            shared,
            segments,
            active,
            unsynced: Vec::new(),
            dir_dirty: false,
            index_dirty: true,
            acked: opened.acked,
            acks_dirty: false,
            persisted_reported: Vec::new(),
            last_sequence,
            highest: last_sequence,
            durable: tx,
            durable_sequence,
            refusing: None,
            dropped_full: 0,
            dropped_no_space: 0,
            buf: Vec::with_capacity(1 << 20),
            pending: Vec::new(),
            settings,
            _lock: lock,
        };
        if let Err(e) = spool.write_index() {
            if !e.is_no_space() {
                return Err(e);
            }
            recovery
                .problems
                .push("disk full: the index is written later".into());
        }
        // Rewrites the ack state now: it keeps the highest sequence, which
        // matters when a damaged last record was cut off. What this open
        // reported is remembered at the next persist_acks, so a crash before
        // then reports it again rather than never.
        if let Err(e) = spool.write_acks(opened_reported_before) {
            if !e.is_no_space() {
                return Err(e);
            }
            spool.acks_dirty = true;
            recovery
                .problems
                .push("disk full: the ack state is written later".into());
        }
        Ok((spool, recovery))
    }

    pub(super) fn active_seg(&self) -> &Segment {
        self.segments.back().expect("an active segment")
    }

    /// Segments from this id on are never deleted: the one readers are at
    /// the durable end of, and the last one holding a record (a restart
    /// resumes the chain from it).
    pub(super) fn keep_from(&self) -> u64 {
        let durable = self.durable.borrow().segment;
        let last_record = self
            .segments
            .iter()
            .rev()
            .find(|s| s.last > 0)
            .map_or(durable, Segment::id);
        durable.min(last_record)
    }

    /// Bytes held, including what is buffered for the active segment.
    pub(super) fn held(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>() + self.buf.len() as u64
    }

    fn check(&self, records: &[SpoolRecord<'_>]) -> Result<(), SpoolError> {
        let mut last = self.last_sequence;
        let groups = self.settings.groups.len();
        for r in records {
            if r.sequence <= last {
                return Err(SpoolError::OutOfOrder {
                    sequence: r.sequence,
                    last,
                });
            }
            if groups < 64 && r.routes >> groups != 0 {
                return Err(SpoolError::Routes {
                    sequence: r.sequence,
                    routes: r.routes,
                    groups,
                });
            }
            last = r.sequence;
        }
        Ok(())
    }

    /// Appends records in ascending sequence. Does not fsync. When the spool
    /// or the disk is full, applies `on_full` and reports what was dropped.
    pub fn append(&mut self, records: &[SpoolRecord<'_>]) -> Result<Appended, SpoolError> {
        self.check(records)?;
        let mut oldest = Losses::default();
        let mut newest = Losses::default();
        let mut next = 0;
        let refused = self.refusing.is_some() && !self.space_returned(&mut oldest)?;
        while !refused && next < records.len() {
            let r = &records[next];
            if r.line.len() > self.max_payload {
                // Never fits a segment: dropped alone, the batch goes on.
                newest.lose(r.sequence, r.sequence, 1, LossReason::Full);
                self.dropped_full += 1;
                next += 1;
                continue;
            }
            let size = (frame::OVERHEAD + r.line.len()) as u64;
            let a = self.active_seg();
            let filled = a.len + self.buf.len() as u64;
            let roll = filled > a.view.header_len && filled + size > self.settings.segment_bytes;
            let need = size + if roll { self.header_len } else { 0 };
            if !self.make_room(need, &mut oldest)? {
                break;
            }
            if roll && !(self.flush(&mut newest)? && self.roll(&mut oldest)?) {
                break;
            }
            let start = self.buf.len();
            frame::encode(&mut self.buf, r.sequence, r.routes, r.line);
            self.pending.push(Pending {
                header: Header {
                    len: r.line.len(),
                    sequence: r.sequence,
                    routes: r.routes,
                },
                start,
            });
            newest.keep();
            next += 1;
        }
        // A full disk here reports the unwritten frames itself; `next` is
        // already past them.
        self.flush(&mut newest)?;
        if let Some(rest) = records.get(next..).filter(|r| !r.is_empty()) {
            let n = rest.len() as u64;
            newest.lose(
                rest[0].sequence,
                rest[n as usize - 1].sequence,
                n,
                LossReason::Full,
            );
            match self.refusing {
                Some(Refusal::NoSpace) => self.dropped_no_space += n,
                _ => self.dropped_full += n,
            }
        }
        if let Some(r) = records.last() {
            self.last_sequence = r.sequence;
        }
        oldest.append(newest);
        Ok(Appended {
            dropped: oldest.into_vec(),
        })
    }

    /// Writes the buffered frames to the active segment. On a full disk,
    /// keeps the complete frames that reached it, cuts the rest off the
    /// file, reports them and returns false.
    pub(super) fn flush(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        let mut from = 0; // index into `pending` of the first frame not written
        while from < self.pending.len() {
            let start = self.pending[from].start;
            let offset = self.active_seg().len;
            let written = match write_all_at(&self.active, &self.buf[start..], offset) {
                Ok(()) => self.buf.len() - start,
                Err((n, e)) if space::is_no_space(&e) => n,
                Err((_, e)) => {
                    let path = self.active_seg().view.path.clone();
                    let _ = self.active.set_len(offset);
                    self.buf.clear();
                    self.pending.clear();
                    return Err(SpoolError::io(path)(e));
                }
            };
            // Frames that reached the file whole are kept.
            let mut kept = from;
            while kept < self.pending.len()
                && self.pending[kept].start - start + self.pending[kept].header.frame_len()
                    <= written
            {
                let p = self.pending[kept];
                let seg = self.segments.back_mut().expect("an active segment");
                seg.add(&p.header, offset + (p.start - start) as u64);
                seg.len += p.header.frame_len() as u64;
                kept += 1;
            }
            from = kept;
            if from == self.pending.len() {
                break;
            }
            let len = self.active_seg().len;
            let path = self.active_seg().view.path.clone();
            self.active.set_len(len).map_err(SpoolError::io(path))?;
            if !self.free_disk(dropped)? {
                let lost = &self.pending[from..];
                let n = lost.len() as u64;
                dropped.lose(
                    lost[0].header.sequence,
                    lost[lost.len() - 1].header.sequence,
                    n,
                    LossReason::Full,
                );
                self.dropped_no_space += n;
                self.refusing = Some(Refusal::NoSpace);
                self.buf.clear();
                self.pending.clear();
                return Ok(false);
            }
        }
        self.buf.clear();
        self.pending.clear();
        Ok(true)
    }

    /// Closes the active segment and starts the next one.
    fn roll(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        let id = self.active_seg().id() + 1;
        let (seg, file) = loop {
            match space::create(&self.settings.dir, id, &self.settings.groups) {
                Ok(made) => break made,
                Err(SpoolError::Io { source, .. }) if space::is_no_space(&source) => {
                    if !self.free_disk(dropped)? {
                        self.refusing = Some(Refusal::NoSpace);
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let old = std::mem::replace(&mut self.active, file);
        self.unsynced
            .push((self.active_seg().view.path.clone(), old));
        let closed = self.segments.back().expect("an active segment");
        closed.view.last.store(closed.last, Ordering::Release);
        self.shared
            .segments
            .write()
            .expect("segment map poisoned")
            .insert(id, Arc::clone(&seg.view));
        self.segments.push_back(seg);
        self.dir_dirty = true;
        self.index_dirty = true;
        Ok(true)
    }

    /// Makes everything appended durable (per the fsync policy) and then
    /// lets readers see it. Call once after appending every queued batch.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.settings.fsync == FsyncPolicy::Always {
            for (path, f) in &self.unsynced {
                f.sync_data().map_err(SpoolError::io(path))?;
            }
            let path = &self.active_seg().view.path;
            self.active.sync_data().map_err(SpoolError::io(path))?;
            if self.dir_dirty {
                let dir = &self.settings.dir;
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(SpoolError::io(dir))?;
            }
        }
        self.unsynced.clear();
        self.dir_dirty = false;
        for s in self.segments.iter_mut().rev() {
            if s.is_synced() {
                break;
            }
            s.mark_synced();
            self.index_dirty = true;
        }
        let a = self.active_seg();
        let end = Durable {
            segment: a.id(),
            offset: a.len,
        };
        self.durable_sequence = self
            .segments
            .iter()
            .rev()
            .map(|s| s.last)
            .find(|&l| l > 0)
            .or(self.durable_sequence);
        self.durable
            .send_if_modified(|d| std::mem::replace(d, end) != end);
        Ok(())
    }

    /// A reader for `group`, starting after its acknowledged watermark.
    pub fn reader(&self, group: &str) -> Result<Reader, SpoolError> {
        let k = self
            .settings
            .groups
            .iter()
            .position(|g| g == group)
            .ok_or_else(|| SpoolError::UnknownGroup(group.to_owned()))?;
        let acked = self.acked[k];
        let durable = self.durable.borrow().segment;
        // Skip closed segments the group is wholly past.
        let start = self
            .segments
            .iter()
            .position(|s| s.id() >= durable || s.last == 0 || s.last > acked)
            .expect("the active segment qualifies");
        let prev = start
            .checked_sub(1)
            .map(|p| self.segments[p].last)
            .filter(|&l| l > 0);
        Ok(Reader::new(
            Arc::clone(&self.shared),
            k,
            self.durable.subscribe(),
            Arc::clone(&self.segments[start].view),
            acked,
            prev,
        ))
    }

    /// Group `group` has everything routed to it up to and including
    /// `through`. In memory; [`Spool::persist_acks`] makes it durable.
    pub fn ack(&mut self, group: &str, through: u64) {
        match self.settings.groups.iter().position(|g| g == group) {
            Some(k) if through > self.acked[k] => {
                self.acked[k] = through;
                self.acks_dirty = true;
            }
            Some(_) => {}
            None => tracing::warn!(
                group,
                "acknowledgement for a group the spool does not know; ignored"
            ),
        }
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.settings.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// `write_all_at` that says how much was written before an error.
fn write_all_at(
    file: &File,
    mut buf: &[u8],
    mut offset: u64,
) -> Result<(), (usize, std::io::Error)> {
    let mut done = 0;
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err((done, std::io::Error::from_raw_os_error(libc::ENOSPC))),
            Ok(n) => {
                done += n;
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}
