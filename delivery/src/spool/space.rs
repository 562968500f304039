//! The space budget: the size bound, the reserve only essential records
//! may use, the disk reserve file, whether the spool refuses records (and
//! why), and the counts of what it refused. The full policies themselves
//! (what to drop) are decided by the [`super::Spool`] that owns the budget;
//! the budget says when there is room.

use std::path::{Path, PathBuf};

use super::{OnFull, SpoolError, SpoolSettings};

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

/// The spool's space: its limits, the reserves, and whether (and why) it
/// refuses records.
#[derive(Debug)]
pub(super) struct SpaceBudget {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    on_full: OnFull,
    /// See [`headroom`].
    headroom: u64,
    /// See [`reserve`].
    reserve: u64,
    /// The disk reserve file holds `reserve` bytes.
    disk_reserve: bool,
    refusing: Option<Refusal>,
    /// Records dropped at `max_bytes` (or too large for a segment).
    dropped_full: u64,
    /// Records dropped on a full disk.
    dropped_no_space: u64,
}

impl SpaceBudget {
    /// The budget of a spool with `settings` (already validated). The disk
    /// reserve is not made yet: see [`SpaceBudget::fill_disk_reserve`].
    pub fn new(settings: &SpoolSettings) -> Self {
        SpaceBudget {
            dir: settings.dir.clone(),
            max_bytes: settings.max_bytes,
            segment_bytes: settings.segment_bytes,
            on_full: settings.on_full,
            headroom: headroom(settings.max_bytes),
            reserve: reserve(settings.max_bytes),
            disk_reserve: false,
            refusing: None,
            dropped_full: 0,
            dropped_no_space: 0,
        }
    }

    /// Whether the full policy is drop_oldest.
    pub fn drops_oldest(&self) -> bool {
        self.on_full == OnFull::DropOldest
    }

    /// Why the spool refuses records, if it does.
    pub fn refusing(&self) -> Option<Refusal> {
        self.refusing
    }

    /// The spool refuses records from now on, until space returns.
    pub fn refuse(&mut self, why: Refusal) {
        self.refusing = Some(why);
    }

    /// The most bytes the spool may hold after taking a record: ordinary
    /// records stop short of the reserve.
    pub fn limit(&self, essential: bool) -> u64 {
        if essential {
            self.max_bytes
        } else {
            self.max_bytes - self.reserve
        }
    }

    /// Counts a record refused while the spool refuses (or that found no
    /// room): on a full disk as such, else as the spool being full.
    pub fn count_refused(&mut self) {
        match self.refusing {
            Some(Refusal::NoSpace) => self.dropped_no_space += 1,
            _ => self.dropped_full += 1,
        }
    }

    /// Counts a record that never fits a segment.
    pub fn count_oversized(&mut self) {
        self.dropped_full += 1;
    }

    /// Counts `n` records cut off a write by a full disk.
    pub fn count_no_space(&mut self, n: u64) {
        self.dropped_no_space += n;
    }

    /// Records dropped since open: (spool full, disk full).
    pub fn dropped(&self) -> (u64, u64) {
        (self.dropped_full, self.dropped_no_space)
    }

    /// Whether a spool that refused records, holding `held` bytes, has room
    /// to take them again (see [`headroom`]): under the quota, and on a full
    /// disk with room for the headroom and for the disk reserve to be made
    /// again, or essential records would find none next time. On the disk,
    /// the headroom is at most a segment: a disk smaller than `max_bytes`
    /// may never have the whole headroom.
    pub fn has_returned(&self, held: u64) -> Result<bool, SpoolError> {
        let refill = if self.disk_reserve { 0 } else { self.reserve };
        let room = self.headroom.min(self.segment_bytes) + refill;
        let disk = self.refusing != Some(Refusal::NoSpace) || disk_free(&self.dir)? >= room;
        let quota = (self.max_bytes - self.reserve).saturating_sub(held) >= self.headroom;
        Ok(quota && disk)
    }

    /// Space returned: take records again, and make the disk reserve whole.
    pub fn resume(&mut self) {
        self.refusing = None;
        self.fill_disk_reserve();
    }

    /// Whether the disk reserve file holds its bytes.
    pub fn has_disk_reserve(&self) -> bool {
        self.disk_reserve
    }

    /// Makes sure the disk reserve file holds [`reserve`] bytes. A full
    /// disk leaves it short; it is filled again when space returns.
    pub fn fill_disk_reserve(&mut self) {
        if self.disk_reserve {
            return;
        }
        let path = self.dir.join(RESERVE_FILE);
        self.disk_reserve = allocate(&path, self.reserve).is_ok();
    }

    /// Empties the disk reserve file for essential records on a full disk;
    /// false when it was already empty.
    pub fn release_disk_reserve(&mut self) -> bool {
        if !std::mem::take(&mut self.disk_reserve) {
            return false;
        }
        let path = self.dir.join(RESERVE_FILE);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .is_ok()
    }
}

/// Bytes the filesystem holding `dir` has free for us.
fn disk_free(dir: &Path) -> Result<u64, SpoolError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| SpoolError::io(dir)(e.into()))?;
    Ok(st.f_bavail * st.f_frsize)
}

/// Makes `path` hold `len` allocated bytes (fallocate, or zeros where the
/// filesystem has no fallocate).
fn allocate(path: &Path, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {}
        Err(e) => {
            let _ = f.set_len(0);
            return Err(e.into());
        }
    }
    let zeros = vec![0; len as usize];
    f.write_all_at(&zeros, 0).inspect_err(|_| {
        let _ = f.set_len(0);
    })
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
