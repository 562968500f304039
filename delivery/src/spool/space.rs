//! The size bound and the full policies: making room (drop_oldest), a full
//! disk (ENOSPC), and when a spool that refused records takes them again.

use std::path::Path;

use super::{
    LossReason, OnFull, SpoolError, SpoolSettings, frame,
    loss::{Losses, bounds, declaration, event_hash, lost, unacked},
    recover::read_at,
    scan::{self, Item},
    segment,
    writer::Spool,
};

/// Why the spool refuses records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It reached `max_bytes` (drop_newest).
    Quota,
    /// The disk is full.
    NoSpace,
}

/// Space that must be free before a spool that refused records takes them
/// again: 1/32 of `max_bytes`, at least 16 KiB (a few gap records and then
/// some) and at most 16 MiB, never more than a quarter of the spool.
/// Without it, a spool at its limit would take one record whenever one
/// frame's worth was freed, and the gap record declaring what was refused
/// would race every other record for that space.
pub fn headroom(max_bytes: u64) -> u64 {
    (max_bytes / 32)
        .clamp(16 << 10, 16 << 20)
        .min(max_bytes / 4)
}

/// Room under `max_bytes` that only essential records may use (a spool gap
/// record, the checkpoint covering it, the start and stop records):
/// 1/16 of the spool, at most 64 KiB. Ordinary records stop at
/// `max_bytes - reserve`, so a full spool can still declare its loss; the
/// same number of bytes is kept on the disk in the file `reserve`, released
/// for essential records when the disk is full. 64 KiB holds about 80 gap
/// records or checkpoints; a full spool writes two or three per time space
/// returns, and the reserve is whole again each time.
pub fn reserve(max_bytes: u64) -> u64 {
    (max_bytes / 16).min(64 << 10)
}

/// The file that holds the disk reserve.
const RESERVE_FILE: &str = "reserve";

/// Checks settings.
pub(super) fn validate(s: &SpoolSettings) -> Result<(), SpoolError> {
    let bad = |m: String| Err(SpoolError::Settings(m));
    if s.groups.is_empty() || s.groups.len() > 64 {
        return bad(format!(
            "{} collector groups; the spool takes 1 to 64",
            s.groups.len()
        ));
    }
    for (i, g) in s.groups.iter().enumerate() {
        if g.is_empty() || g.len() > 255 {
            return bad(format!("group name {g:?} must be 1 to 255 bytes"));
        }
        if s.groups[..i].contains(g) {
            return bad(format!("group {g:?} is named twice"));
        }
    }
    let header = segment::encode(0, &s.groups).len() as u64;
    if s.segment_bytes < 4096 || s.segment_bytes < header + frame::OVERHEAD as u64 + 1024 {
        return bad(format!(
            "segment_bytes {} is too small: at least 4 KiB and room for a 1 KiB record after the {header}-byte header",
            s.segment_bytes
        ));
    }
    if s.max_bytes < 2 * s.segment_bytes {
        return bad(format!(
            "max_bytes {} must be at least twice segment_bytes ({}): the segment being written is never dropped",
            s.max_bytes, s.segment_bytes
        ));
    }
    Ok(())
}

/// Takes an exclusive lock on `dir/lock` for the life of the spool.
pub(super) fn lock(dir: &Path) -> Result<std::fs::File, SpoolError> {
    use std::os::fd::AsRawFd as _;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(SpoolError::io(&path))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            SpoolError::Locked(dir.to_owned())
        } else {
            SpoolError::io(path)(e)
        });
    }
    Ok(f)
}

/// ENOSPC or EDQUOT.
pub(super) fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Bytes the filesystem holding `dir` has free for us.
fn disk_free(dir: &Path) -> Result<u64, SpoolError> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| SpoolError::Settings(format!("{} has a NUL byte", dir.display())))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(SpoolError::io(dir)(std::io::Error::last_os_error()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

impl Spool {
    /// Whether a spool that refused records may take them again (see
    /// [`headroom`]); with drop_oldest, it first drops old segments.
    pub(super) fn space_returned(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        let quota =
            |s: &Spool| (s.settings.max_bytes - s.reserve).saturating_sub(s.held()) >= s.headroom;
        let ok = loop {
            // Room for the headroom and for the disk reserve to be made
            // again, or essential records would find none next time.
            // On the disk, the headroom is at most a segment: a disk
            // smaller than `max_bytes` may never have the whole headroom.
            let refill = if self.disk_reserve { 0 } else { self.reserve };
            let room = self.headroom.min(self.settings.segment_bytes) + refill;
            let disk =
                self.refusing != Some(Refusal::NoSpace) || disk_free(&self.settings.dir)? >= room;
            if quota(self) && disk {
                break true;
            }
            if self.settings.on_full != OnFull::DropOldest || !self.drop_oldest(dropped)? {
                break false;
            }
        };
        if ok {
            self.refusing = None;
            self.fill_disk_reserve();
        }
        Ok(ok)
    }

    /// Makes room for `need` more bytes under `limit`: drop_oldest drops
    /// old segments; drop_newest (or nothing left to drop) refuses.
    pub(super) fn make_room(
        &mut self,
        need: u64,
        limit: u64,
        dropped: &mut Losses,
    ) -> Result<bool, SpoolError> {
        while self.held() + need > limit {
            if self.settings.on_full != OnFull::DropOldest || !self.drop_oldest(dropped)? {
                self.refusing = Some(Refusal::Quota);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// After ENOSPC: with drop_oldest, frees disk by dropping the oldest
    /// segment (true: try again); otherwise false.
    pub(super) fn free_disk(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        Ok(self.settings.on_full == OnFull::DropOldest && self.drop_oldest(dropped)?)
    }

    /// Makes sure the disk reserve file holds [`reserve`] bytes. A full
    /// disk leaves it short; it is filled again when space returns.
    pub(super) fn fill_disk_reserve(&mut self) {
        if self.disk_reserve {
            return;
        }
        let path = self.settings.dir.join(RESERVE_FILE);
        self.disk_reserve = allocate(&path, self.reserve).is_ok();
    }

    /// Empties the disk reserve file for essential records on a full disk;
    /// false when it was already empty.
    pub(super) fn release_disk_reserve(&mut self) -> bool {
        if !std::mem::take(&mut self.disk_reserve) {
            return false;
        }
        let path = self.settings.dir.join(RESERVE_FILE);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .is_ok()
    }

    /// Deletes the oldest segment, reporting what some group it was routed
    /// to had not acknowledged. Never one from [`Spool::keep_from`] on.
    /// False when there is none to drop.
    pub(super) fn drop_oldest(&mut self, dropped: &mut Losses) -> Result<bool, SpoolError> {
        let keep = self.keep_from();
        let Some(s) = self.segments.front().filter(|s| s.id() < keep) else {
            return Ok(false);
        };
        let path = s.view.path.clone();
        let file = std::fs::File::open(&path).map_err(SpoolError::io(&path))?;
        let body = read_at(&file, &path, 0, s.len)?;
        let routable = s.view.routable();
        let from = if routable {
            s.view.header_len as usize
        } else {
            frame::resync(&body, 0).unwrap_or(body.len())
        };
        let found = scan::scan(&body, from);
        let masks = s.loss_masks();
        let next_first = self.segments.get(1).map(|n| n.first).filter(|&f| f > 0);
        let reported = self
            .shared
            .reported
            .lock()
            .expect("reported set poisoned")
            .clone();
        let mut prev = None;
        let mut again = Vec::new();
        for (i, item) in found.items.iter().enumerate() {
            match item {
                Item::Intact { header: h, offset } => {
                    prev = Some(h.sequence);
                    dropped.frame(h);
                    // A segment without its header was reported lost at open.
                    if routable && unacked(h.sequence, h.routes, &masks, &self.acked) {
                        dropped.lose(h.sequence, h.sequence, 1, LossReason::Full);
                        // A gap record deleted undelivered takes its
                        // declaration with it: declare it again.
                        if let Some(d) = declaration(frame::payload(&body[*offset..], h)) {
                            again.push(d);
                        }
                    } else {
                        dropped.keep();
                    }
                    // Damage without a header next: its `before_hash` is
                    // this record's own hash.
                    if matches!(found.items.get(i + 1), Some(Item::Damaged(d)) if d.header.is_none())
                        && let Some(hash) = event_hash(frame::payload(&body[*offset..], h))
                    {
                        dropped.hash(h.sequence, hash);
                    }
                }
                Item::Damaged(d) => {
                    if let Some(h) = &d.header {
                        dropped.frame(h);
                    }
                    let next = found.items[i + 1..]
                        .iter()
                        .find_map(|it| match it {
                            Item::Intact { header, .. } => Some(header.sequence),
                            Item::Damaged(_) => None,
                        })
                        .or(next_first);
                    let (first, last) = d.header.map_or_else(
                        || bounds(prev, next, d.frames),
                        |h| (h.sequence, h.sequence),
                    );
                    prev = Some(last);
                    if !reported.contains(&(s.id(), d.start as u64))
                        && lost(d.header.as_ref(), last, &masks, &self.acked)
                    {
                        dropped.lose(first, last, d.frames, LossReason::Corrupt);
                    } else {
                        dropped.keep();
                    }
                }
            }
        }
        // What follows the segment ends the last loss in it.
        if let Some(h) = self.segments.get(1).and_then(|n| n.view.first_header()) {
            dropped.frame(&h);
        }
        dropped.keep();
        for d in again {
            dropped.redeclare(d);
        }
        self.delete_front()?;
        Ok(true)
    }

    /// Removes the oldest segment's file and forgets it.
    pub(super) fn delete_front(&mut self) -> Result<(), SpoolError> {
        let s = self.segments.pop_front().expect("a segment to delete");
        let id = s.id();
        std::fs::remove_file(&s.view.path).map_err(SpoolError::io(&s.view.path))?;
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
        self.index_dirty = true;
        Ok(())
    }
}

/// Makes `path` hold `len` allocated bytes (fallocate, or zeros where the
/// filesystem has no fallocate).
fn allocate(path: &Path, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        let _ = f.set_len(0);
        return Err(e);
    }
    use std::os::unix::fs::FileExt as _;
    let zeros = vec![0; len as usize];
    f.write_all_at(&zeros, 0).inspect_err(|_| {
        let _ = f.set_len(0);
    })
}

/// Creates segment `id` with its header (not synced).
pub(super) fn create(
    dir: &Path,
    id: u64,
    groups: &[String],
) -> Result<(super::live::Segment, std::fs::File), SpoolError> {
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
    let seg = super::live::Segment::new(id, path, header.len() as u64, Some(groups), groups);
    Ok((seg, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_bounds() {
        assert_eq!(headroom(64 << 10), 16 << 10);
        assert_eq!(headroom(1 << 30), 16 << 20);
        assert_eq!(headroom(64 << 20), 2 << 20);
        assert_eq!(headroom(1 << 40), 16 << 20);
        assert_eq!(headroom(8 << 10), 2 << 10);
    }

    #[test]
    fn reserve_bounds() {
        assert_eq!(reserve(1 << 20), 64 << 10);
        assert_eq!(reserve(1 << 30), 64 << 10);
        assert_eq!(reserve(8 << 10), 512);
    }
}
