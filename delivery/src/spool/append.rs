//! Appending: encoding a batch into one buffer, writing it to the active
//! segment, starting the next segment, and applying the full policy on the
//! way (see `space`).

use std::{fs::File, os::unix::fs::FileExt as _, sync::Arc, sync::atomic::Ordering};

use super::{
    Appended, LossReason, SpoolError, SpoolRecord,
    frame::{self, Header},
    loss::Losses,
    space::{self, Refusal},
    writer::Spool,
};

/// A frame encoded in the write buffer, not yet written.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub header: Header,
    /// Where it starts in the buffer.
    pub start: usize,
    /// See [`SpoolRecord::essential`].
    pub essential: bool,
}

impl Spool {
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
    ///
    /// Ordinary records stop short of the reserve (`max_bytes` minus
    /// [`space::reserve`]) and are refused while the spool refuses;
    /// [`SpoolRecord::essential`] ones may fill the reserve and never start
    /// a segment (so a full disk cannot stop them at a segment's creation).
    pub fn append(&mut self, records: &[SpoolRecord<'_>]) -> Result<Appended, SpoolError> {
        self.check(records)?;
        let mut oldest = Losses::default();
        let mut newest = Losses::default();
        self.kept_regular = None;
        if self.refusing.is_some() {
            self.space_returned(&mut oldest)?;
        }
        for r in records {
            if r.line.len() > self.max_payload {
                // Never fits a segment: dropped alone, the batch goes on.
                self.refuse(r, &mut newest);
                self.dropped_full += 1;
                continue;
            }
            if !self.admit(r, &mut oldest, &mut newest)? {
                self.refuse(r, &mut newest);
                match self.refusing {
                    Some(Refusal::NoSpace) => self.dropped_no_space += 1,
                    _ => self.dropped_full += 1,
                }
                continue;
            }
            if newest.is_open() {
                // `r` ends the loss before it in the chain.
                newest.frame(&header(r));
            }
            let start = self.buf.len();
            frame::encode(&mut self.buf, r.sequence, r.routes, &r.prev, r.line);
            self.pending.push(Pending {
                header: header(r),
                start,
                essential: r.essential,
            });
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
            kept_regular: self.kept_regular,
        })
    }

    /// Reports `r` refused; consecutive refusals merge into one loss.
    fn refuse(&mut self, r: &SpoolRecord<'_>, newest: &mut Losses) {
        newest.frame(&header(r));
        newest.lose(r.sequence, r.sequence, 1, LossReason::Full);
    }

    /// Makes room for `r` under its limit (starting the next segment when
    /// it would overfill the active one); false: refused.
    fn admit(
        &mut self,
        r: &SpoolRecord<'_>,
        oldest: &mut Losses,
        newest: &mut Losses,
    ) -> Result<bool, SpoolError> {
        if self.refusing.is_some() && !r.essential {
            return Ok(false);
        }
        let size = (frame::OVERHEAD + r.line.len()) as u64;
        let a = self.active_seg();
        let filled = a.len + self.buf.len() as u64;
        let roll = !r.essential
            && filled > a.view.header_len
            && filled + size > self.settings.segment_bytes;
        let need = size + if roll { self.header_len } else { 0 };
        let limit = if r.essential {
            self.settings.max_bytes
        } else {
            self.settings.max_bytes - self.reserve
        };
        if !self.make_room(need, limit, oldest)? {
            return Ok(false);
        }
        Ok(!roll || (self.flush(newest)? && self.roll(oldest)?))
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
                if !p.essential {
                    self.kept_regular = Some(p.header.sequence);
                }
                kept += 1;
            }
            from = kept;
            if from == self.pending.len() {
                break;
            }
            let len = self.active_seg().len;
            let path = self.active_seg().view.path.clone();
            self.active.set_len(len).map_err(SpoolError::io(path))?;
            // The disk reserve is for essential records only: freeing it
            // for an ordinary one would leave none for the gap record.
            let freed = if self.pending[from].essential {
                self.release_disk_reserve()
            } else {
                self.free_disk(dropped)?
            };
            if !freed {
                let lost = &self.pending[from..];
                let n = lost.len() as u64;
                dropped.frame(&lost[0].header);
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
