//! The writer side: one task owns the [`Spool`], appends sealed records,
//! syncs (group commit) and publishes the durable end to readers.

use std::{
    collections::VecDeque,
    fs::File,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
};

use tokio::sync::watch;

use super::{
    FsyncPolicy, Reader, Recovery, SpoolError, SpoolSettings,
    append::Pending,
    frame,
    live::Segment,
    recover, segment,
    shared::{Durable, Shared},
    space::{self, Refusal},
};

/// The spool's writer. See the module docs and `docs/SPOOL.md`.
pub struct Spool {
    pub(super) settings: SpoolSettings,
    pub(super) headroom: u64,
    /// See [`space::reserve`].
    pub(super) reserve: u64,
    /// The disk reserve file holds `reserve` bytes.
    pub(super) disk_reserve: bool,
    /// See [`super::Appended::kept_regular`]; set by the current append.
    pub(super) kept_regular: Option<u64>,
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
            reserve: space::reserve(settings.max_bytes),
            disk_reserve: false,
            kept_regular: None,
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
        spool.fill_disk_reserve();
        if !spool.disk_reserve {
            recovery
                .problems
                .push("disk full: the disk reserve for gap records is made later".into());
        }
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
