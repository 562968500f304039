//! The writer, [`Spool`]: owned by one task, it appends sealed records,
//! syncs (group commit), publishes the durable end to readers, and applies
//! the full policies. It composes the parts that own the state: the live
//! segments and the index ([`Catalog`]), the segment being appended to
//! ([`ActiveSegment`]), the groups' acknowledgements ([`AckBook`]) and the
//! space budget ([`SpaceBudget`]).

use std::{
    fs::File,
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use tokio::sync::watch;

use super::{
    Appended, FsyncPolicy, LossReason, Reader, Recovery, SpoolError, SpoolRecord, SpoolSettings,
    SpoolStats,
    active::ActiveSegment,
    book::AckBook,
    catalog::Catalog,
    evict::Doomed,
    frame::{self, Header},
    live::Segment,
    loss::Losses,
    recover::{self, read_at},
    segment,
    shared::{Durable, Shared},
    space::{Refusal, SpaceBudget},
};

/// The spool's writer. See the module docs and `docs/SPOOL.md`.
pub struct Spool {
    settings: SpoolSettings,
    /// The largest record a segment takes.
    max_payload: usize,
    /// The header length of a new segment.
    header_len: u64,
    shared: Arc<Shared>,
    catalog: Catalog,
    active: ActiveSegment,
    book: AckBook,
    budget: SpaceBudget,
    last_sequence: u64,
    durable: watch::Sender<Durable>,
    durable_sequence: Option<u64>,
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool, recovers what a previous run left, and
    /// reports it. Damage is never an error: it is in the [`Recovery`].
    pub fn open(settings: SpoolSettings) -> Result<(Spool, Recovery), SpoolError> {
        settings.validate()?;
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(SpoolError::io(&dir))?;
        let lock = lock(&dir)?;
        let opened = recover::recover(&dir, &settings.groups)?;
        let opened_reported_before = opened.reported_before;
        let mut recovery = opened.recovery;
        let mut segments: std::collections::VecDeque<Segment> = opened.segments.into();
        let header_len = segment::encode(0, &settings.groups).len() as u64;
        let reusable = segments
            .back()
            .is_some_and(|s| s.view().routable() && s.groups() == Some(&settings.groups[..]));
        let active = match opened.last_file {
            Some(f) if reusable => f,
            _ => {
                let id = segments.back().map_or(1, |s| s.id() + 1);
                let (mut seg, file) = Segment::create(&dir, id, &settings.groups)?;
                file.sync_data().map_err(SpoolError::io(&seg.view().path))?;
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
            s.close();
        }
        let a = segments.back().expect("an active segment");
        let (tx, _) = watch::channel(Durable {
            segment: a.id(),
            offset: a.len(),
        });
        let durable_sequence = recovery.last.as_ref().map(|e| e.sequence);
        let last_sequence = recovery.highest_sequence().unwrap_or(0);
        let shared = Arc::new(Shared {
            groups: settings.groups.clone(),
            segments: RwLock::new(
                segments
                    .iter()
                    .map(|s| (s.id(), Arc::clone(s.view())))
                    .collect(),
            ),
            reported: Mutex::new(opened.reported),
        });
        let max_payload = (settings.segment_bytes - header_len) as usize - frame::OVERHEAD;
        let mut spool = Spool {
            max_payload: max_payload.min(frame::MAX_PAYLOAD),
            header_len,
            shared,
            catalog: Catalog::new(segments),
            active: ActiveSegment::new(active),
            book: AckBook::new(settings.groups.clone(), opened.acked, last_sequence),
            budget: SpaceBudget::new(&settings),
            last_sequence,
            durable: tx,
            durable_sequence,
            settings,
            _lock: lock,
        };
        spool.budget.fill_disk_reserve();
        if !spool.budget.has_disk_reserve() {
            recovery
                .problems
                .push("disk full: the disk reserve for gap records is made later".into());
        }
        if let Err(e) = spool.catalog.write(&spool.settings.dir) {
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
        if let Err(e) = spool
            .book
            .write(&spool.settings.dir, opened_reported_before)
        {
            if !e.is_no_space() {
                return Err(e);
            }
            spool.book.mark_dirty();
            recovery
                .problems
                .push("disk full: the ack state is written later".into());
        }
        Ok((spool, recovery))
    }

    /// Appends records in ascending sequence. Does not fsync. When the spool
    /// or the disk is full, applies `on_full` and reports what was dropped.
    ///
    /// Ordinary records stop short of the reserve (`max_bytes` minus
    /// [`super::space::reserve`]) and are refused while the spool refuses;
    /// [`SpoolRecord::essential`] ones may fill the reserve and never start
    /// a segment (so a full disk cannot stop them at a segment's creation).
    pub fn append(&mut self, records: &[SpoolRecord<'_>]) -> Result<Appended, SpoolError> {
        self.check(records)?;
        let mut oldest = Losses::default();
        let mut newest = Losses::default();
        self.active.begin();
        if self.budget.refusing().is_some() {
            self.space_returned(&mut oldest)?;
        }
        for r in records {
            if r.line.len() > self.max_payload {
                // Never fits a segment: dropped alone, the batch goes on.
                refuse(r, &mut newest);
                self.budget.count_oversized();
                continue;
            }
            if !self.admit(r, &mut oldest, &mut newest)? {
                refuse(r, &mut newest);
                self.budget.count_refused();
                continue;
            }
            if newest.is_open() {
                // `r` ends the loss before it in the chain.
                newest.frame(&header(r));
            }
            self.active.push(r, header(r));
            newest.keep();
        }
        // A full disk here reports the unwritten frames itself.
        self.flush(&mut newest)?;
        if let Some(r) = records.last() {
            self.last_sequence = r.sequence;
        }
        oldest.append(newest);
        Ok(Appended {
            dropped: oldest.into_vec(),
            kept_regular: self.active.kept_regular(),
        })
    }

    /// Makes everything appended durable (per the fsync policy) and then
    /// lets readers see it. Call once after appending every queued batch.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let fsync = self.settings.fsync == FsyncPolicy::Always;
        let path = &self.catalog.active().view().path;
        self.active.sync(fsync, path, &self.settings.dir)?;
        self.catalog.mark_synced();
        let a = self.catalog.active();
        let end = Durable {
            segment: a.id(),
            offset: a.len(),
        };
        self.durable_sequence = self.catalog.last_record().or(self.durable_sequence);
        self.durable
            .send_if_modified(|d| std::mem::replace(d, end) != end);
        Ok(())
    }

    /// A reader for `group`, starting after its acknowledged watermark.
    pub fn reader(&self, group: &str) -> Result<Reader, SpoolError> {
        let k = self
            .book
            .position(group)
            .ok_or_else(|| SpoolError::UnknownGroup(group.to_owned()))?;
        let acked = self.book.acked()[k];
        let durable = self.durable.borrow().segment;
        // Skip closed segments the group is wholly past.
        let (start, prev) = self.catalog.reader_start(durable, acked);
        let view = self.catalog.get(start).expect("a live segment").view();
        Ok(Reader::new(
            Arc::clone(&self.shared),
            k,
            self.durable.subscribe(),
            Arc::clone(view),
            acked,
            prev,
        ))
    }

    /// Group `group` has everything routed to it up to and including
    /// `through`. In memory; [`Spool::persist_acks`] makes it durable.
    pub fn ack(&mut self, group: &str, through: u64) {
        self.book.ack(group, through);
    }

    /// Writes the ack state durably (checksummed, through a renamed
    /// temporary file), then deletes the oldest segments every group has
    /// passed, then writes the index. Cheap when nothing changed. A crash
    /// in between loses only ack progress (duplicates later), never records.
    ///
    /// On a full disk the ack file cannot be written (it needs a new file):
    /// the segments are deleted first (every group has their records, so
    /// only ack progress is at risk), which frees space, and the write is
    /// tried again. The index is a cache: on a full disk it waits.
    pub fn persist_acks(&mut self) -> Result<(), SpoolError> {
        let reported: Vec<(u64, u64)> = self
            .shared
            .reported
            .lock()
            .expect("reported set poisoned")
            .iter()
            .copied()
            .collect();
        let dir = &self.settings.dir;
        let mut pending = None;
        if self.book.is_behind(&reported) {
            match self.book.write(dir, reported.clone()) {
                Err(e) if e.is_no_space() => pending = Some(reported),
                other => other?,
            }
        }
        // Oldest first, and never from `keep_from` on.
        let keep = self.keep_from();
        while self
            .catalog
            .oldest_before(keep)
            .is_some_and(|s| self.book.passed(s))
        {
            self.delete_oldest()?;
        }
        let dir = &self.settings.dir;
        if let Some(reported) = pending {
            match self.book.write(dir, reported) {
                Err(e) if e.is_no_space() => {
                    tracing::warn!("spool: disk full, acknowledgements not persisted")
                }
                other => other?,
            }
        }
        if self.catalog.is_dirty() {
            match self.catalog.write(dir) {
                Err(e) if e.is_no_space() => tracing::warn!("spool: disk full, index not written"),
                other => other?,
            }
        }
        Ok(())
    }

    /// Sizes, counts and per-group progress.
    pub fn stats(&self) -> SpoolStats {
        let (dropped_full, dropped_no_space) = self.budget.dropped();
        SpoolStats {
            bytes: self.held(),
            segments: self.catalog.len(),
            records: self.catalog.records(),
            first_sequence: self.catalog.first_sequence(),
            last_sequence: Some(self.last_sequence).filter(|&s| s > 0),
            durable_sequence: self.durable_sequence,
            groups: self
                .book
                .iter()
                .map(|(name, acked)| self.catalog.group_stats(name, acked))
                .collect(),
            dropped_full,
            dropped_no_space,
            refusing: self.budget.refusing().is_some(),
        }
    }

    /// The last record of the oldest segment (tests).
    #[cfg(test)]
    pub(super) fn oldest_segment_last(&self) -> u64 {
        self.catalog.get(0).expect("a segment").last()
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

    /// Segments from this id on are never deleted (see
    /// [`Catalog::keep_from`]).
    fn keep_from(&self) -> u64 {
        self.catalog.keep_from(self.durable.borrow().segment)
    }

    /// Bytes held, including what is buffered for the active segment.
    fn held(&self) -> u64 {
        self.catalog.bytes() + self.active.buffered()
    }

    /// Makes room for `r` under its limit (starting the next segment when
    /// it would overfill the active one); false: refused.
    fn admit(
        &mut self,
        r: &SpoolRecord<'_>,
        oldest: &mut Losses,
        newest: &mut Losses,
    ) -> Result<bool, SpoolError> {
        if self.budget.refusing().is_some() && !r.essential {
            return Ok(false);
        }
        let size = (frame::OVERHEAD + r.line.len()) as u64;
        let a = self.catalog.active();
        let filled = a.len() + self.active.buffered();
        let roll = !r.essential
            && filled > a.view().header_len
            && filled + size > self.settings.segment_bytes;
        let need = size + if roll { self.header_len } else { 0 };
        let limit = self.budget.limit(r.essential);
        if !self.make_room(need, limit, oldest)? {
            return Ok(false);
        }
        Ok(!roll || (self.flush(newest)? && self.roll(oldest)?))
    }

    /// Writes the buffered frames to the active segment. On a full disk,
    /// keeps the complete frames that reached it, cuts the rest off the
    /// file, reports them and returns false.
    fn flush(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        let mut from = 0; // index of the first buffered frame not written
        while !self.active.pending(from).is_empty() {
            let offset = self.catalog.active().len();
            let written = self.active.write(from, offset).map_err(|e| {
                let path = self.catalog.active().view().path.clone();
                SpoolError::io(path)(e)
            })?;
            // Frames that reached the file whole are kept.
            let landed = self.active.landed(from, written);
            let seg = self.catalog.active_mut();
            for (p, at) in &landed {
                seg.append(&p.header, offset + at);
            }
            from += landed.len();
            let Some(&next) = self.active.pending(from).first() else {
                break;
            };
            let a = self.catalog.active();
            let path = a.view().path.clone();
            self.active
                .truncate(a.len())
                .map_err(SpoolError::io(path))?;
            // The disk reserve is for essential records only: freeing it
            // for an ordinary one would leave none for the gap record.
            let freed = if next.essential {
                self.budget.release_disk_reserve()
            } else {
                self.free_disk(dropped)?
            };
            if !freed {
                let lost = self.active.pending(from);
                let n = lost.len() as u64;
                dropped.frame(&lost[0].header);
                dropped.lose(
                    lost[0].header.sequence,
                    lost[lost.len() - 1].header.sequence,
                    n,
                    LossReason::Full,
                );
                self.budget.count_no_space(n);
                self.budget.refuse(Refusal::NoSpace);
                self.active.clear();
                return Ok(false);
            }
        }
        self.active.clear();
        Ok(true)
    }

    /// Closes the active segment and starts the next one.
    fn roll(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        let id = self.catalog.active().id() + 1;
        let (seg, file) = loop {
            match Segment::create(&self.settings.dir, id, &self.settings.groups) {
                Ok(made) => break made,
                Err(e) if e.is_no_space() => {
                    if !self.free_disk(dropped)? {
                        self.budget.refuse(Refusal::NoSpace);
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        self.active
            .roll(file, self.catalog.active().view().path.clone());
        self.shared
            .segments
            .write()
            .expect("segment map poisoned")
            .insert(id, Arc::clone(seg.view()));
        self.catalog.roll(seg);
        Ok(true)
    }

    /// Whether a spool that refused records may take them again (see
    /// [`super::space::headroom`]); with drop_oldest, it first drops old
    /// segments.
    fn space_returned(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        let ok = loop {
            if self.budget.has_returned(self.held())? {
                break true;
            }
            if !self.budget.drops_oldest() || !self.drop_oldest(dropped)? {
                break false;
            }
        };
        if ok {
            self.budget.resume();
        }
        Ok(ok)
    }

    /// Makes room for `need` more bytes under `limit`: drop_oldest drops
    /// old segments; drop_newest (or nothing left to drop) refuses.
    fn make_room(
        &mut self,
        need: u64,
        limit: u64,
        dropped: &mut Losses,
    ) -> Result<bool, SpoolError> {
        while self.held() + need > limit {
            if !self.budget.drops_oldest() || !self.drop_oldest(dropped)? {
                self.budget.refuse(Refusal::Quota);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// After ENOSPC: with drop_oldest, frees disk by dropping the oldest
    /// segment (true: try again); otherwise false.
    fn free_disk(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        Ok(self.budget.drops_oldest() && self.drop_oldest(dropped)?)
    }

    /// Deletes the oldest segment, reporting what some group it was routed
    /// to had not acknowledged. Never one from [`Spool::keep_from`] on.
    /// False when there is none to drop.
    fn drop_oldest(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        let keep = self.keep_from();
        let Some(s) = self.catalog.oldest_before(keep) else {
            return Ok(false);
        };
        let path = &s.view().path;
        let file = File::open(path).map_err(SpoolError::io(path))?;
        let body = read_at(&file, path, 0, s.len())?;
        let next = self.catalog.get(1);
        let doomed = Doomed {
            id: s.id(),
            body: &body,
            header_len: s.view().header_len,
            masks: s.loss_masks(),
            next_first: next.map(Segment::first).filter(|&f| f > 0),
            next_header: next.and_then(|n| n.view().first_header()),
        };
        let reported = self
            .shared
            .reported
            .lock()
            .expect("reported set poisoned")
            .clone();
        doomed.losses(self.book.acked(), &reported, dropped);
        self.delete_oldest()?;
        Ok(true)
    }

    /// Removes the oldest segment's file and forgets it.
    fn delete_oldest(&mut self) -> Result<(), SpoolError> {
        let s = self.catalog.pop_oldest();
        let id = s.id();
        std::fs::remove_file(&s.view().path).map_err(SpoolError::io(&s.view().path))?;
        self.shared
            .segments
            .write()
            .expect("segment map poisoned")
            .remove(&id);
        self.shared
            .reported
            .lock()
            .expect("reported set poisoned")
            .retain(|(sid, _)| *sid != id);
        Ok(())
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

/// Reports `r` refused; consecutive refusals merge into one loss.
fn refuse(r: &SpoolRecord<'_>, newest: &mut Losses) {
    newest.frame(&header(r));
    newest.lose(r.sequence, r.sequence, 1, LossReason::Full);
}

/// The frame header `r` is written with.
fn header(r: &SpoolRecord<'_>) -> Header {
    Header {
        len: r.line.len(),
        sequence: r.sequence,
        routes: r.routes,
        prev: r.prev,
    }
}

/// Takes an exclusive lock on `dir/lock` for the life of the spool.
fn lock(dir: &Path) -> Result<File, SpoolError> {
    use rustix::fs::{FlockOperation, flock};
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(SpoolError::io(&path))?;
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(SpoolError::Locked(dir.to_owned())),
        Err(e) => Err(SpoolError::io(path)(e.into())),
    }
}
