//! The active segment as the writer appends to it: its open file, the
//! frames of the current append encoded in one buffer and not yet written,
//! and what is still to fdatasync (segments closed since the last sync, the
//! directory when a segment was created).

use std::{fs::File, os::unix::fs::FileExt as _, path::Path, path::PathBuf};

use super::{
    SpoolError, SpoolRecord,
    frame::{self, Header},
    is_no_space,
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

/// The file being appended to and what is buffered for it.
#[derive(Debug)]
pub(super) struct ActiveSegment {
    file: File,
    /// Segments closed since the last sync, still to fdatasync.
    unsynced: Vec<(PathBuf, File)>,
    /// A segment was created since the last sync: the directory too.
    dir_dirty: bool,
    buf: Vec<u8>,
    pending: Vec<Pending>,
    /// See [`super::Appended::kept_regular`]; set by the current append.
    kept_regular: Option<u64>,
}

impl ActiveSegment {
    /// Appends to `file` (the last segment, open for writing).
    pub fn new(file: File) -> Self {
        ActiveSegment {
            file,
            unsynced: Vec::new(),
            dir_dirty: false,
            buf: Vec::with_capacity(1 << 20),
            pending: Vec::new(),
            kept_regular: None,
        }
    }

    /// An append starts: nothing regular written by it yet.
    pub fn begin(&mut self) {
        self.kept_regular = None;
    }

    /// The highest regular sequence this append has written.
    pub fn kept_regular(&self) -> Option<u64> {
        self.kept_regular
    }

    /// Bytes buffered, not yet written.
    pub fn buffered(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Encodes `r` into the buffer.
    pub fn push(&mut self, r: &SpoolRecord<'_>, header: Header) {
        let start = self.buf.len();
        frame::encode(&mut self.buf, r.sequence, r.routes, &r.prev, r.line);
        self.pending.push(Pending {
            header,
            start,
            essential: r.essential,
        });
    }

    /// The buffered frames from index `from` on.
    pub fn pending(&self, from: usize) -> &[Pending] {
        &self.pending[from..]
    }

    /// Writes the buffered frames from index `from` on at file `offset`.
    /// Returns the bytes written: all of them, or on a full disk what
    /// reached the file. On another error the file is cut back to `offset`
    /// and the buffer emptied.
    pub fn write(&mut self, from: usize, offset: u64) -> std::io::Result<usize> {
        let start = self.pending[from].start;
        match write_all_at(&self.file, &self.buf[start..], offset) {
            Ok(()) => Ok(self.buf.len() - start),
            Err((n, e)) if is_no_space(&e) => Ok(n),
            Err((_, e)) => {
                let _ = self.file.set_len(offset);
                self.clear();
                Err(e)
            }
        }
    }

    /// Of the frames from index `from` on, those that reached the file
    /// whole when `written` bytes were written from the first one's start,
    /// with their offsets from it. Notes the regular ones as kept.
    pub fn landed(&mut self, from: usize, written: usize) -> Vec<(Pending, u64)> {
        let start = self.pending[from].start;
        let mut out = Vec::new();
        for p in &self.pending[from..] {
            if p.start - start + p.header.frame_len() > written {
                break;
            }
            if !p.essential {
                self.kept_regular = Some(p.header.sequence);
            }
            out.push((*p, (p.start - start) as u64));
        }
        out
    }

    /// Cuts the file to `len` (what a short write left past it).
    pub fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    /// Forgets the buffered frames.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pending.clear();
    }

    /// Appends to `file`, a new segment, from now on; `closed` is the path
    /// of the segment written until now, to fdatasync at the next sync.
    pub fn roll(&mut self, file: File, closed: PathBuf) {
        let old = std::mem::replace(&mut self.file, file);
        self.unsynced.push((closed, old));
        self.dir_dirty = true;
    }

    /// With `fsync`, fdatasyncs the segments closed since the last sync,
    /// this one (at `path`), and `dir` when a segment was created. Then
    /// nothing is left to sync.
    pub fn sync(&mut self, fsync: bool, path: &Path, dir: &Path) -> Result<(), SpoolError> {
        if fsync {
            for (path, f) in &self.unsynced {
                f.sync_data().map_err(SpoolError::io(path))?;
            }
            self.file.sync_data().map_err(SpoolError::io(path))?;
            if self.dir_dirty {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(SpoolError::io(dir))?;
            }
        }
        self.unsynced.clear();
        self.dir_dirty = false;
        Ok(())
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
            Ok(0) => return Err((done, rustix::io::Errno::NOSPC.into())),
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
