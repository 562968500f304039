//! A collector group's reader: the group's records in order, from its
//! acknowledged watermark up to the durable end, with its own file handles.

use std::{fs::File, os::unix::fs::FileExt as _, sync::Arc};

use bytes::Bytes;
use tokio::sync::watch;

use super::{
    Loss, LossReason, SpoolError,
    frame::{self, Header, Parsed},
    loss::{Losses, bounds, event_hash},
    shared::{Durable, SegView, Shared},
};
use crate::entry::Entry;

/// Bytes read per `pread` (from the page cache, inline).
const WINDOW: usize = 1 << 20;
/// Bytes examined per call before returning progress, so a group that
/// little is routed to still acknowledges regularly.
const SCAN_BUDGET: usize = 8 << 20;

/// What [`Reader::next`] returns.
#[derive(Clone, Debug, Default)]
pub struct ReadBatch {
    /// This group's records, ascending.
    pub entries: Vec<Entry>,
    /// Every record up to here was examined: acknowledge this once
    /// `entries` are delivered (records routed elsewhere count).
    pub scanned_through: u64,
    /// Damaged records found while reading, each reported once by
    /// whichever reader finds it first.
    pub losses: Vec<Loss>,
}

/// Reads one group's records. Made by [`super::Spool::reader`].
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    group: usize,
    rx: watch::Receiver<Durable>,
    seg: Arc<SegView>,
    file: Option<File>,
    offset: u64,
    acked: u64,
    scanned: u64,
    /// The last sequence seen: the lower bound of a damaged region.
    prev: Option<u64>,
    /// Where the last intact frame starts (segment id, file offset): its
    /// own hash is read when damage without a header follows it.
    last_intact: Option<(u64, u64)>,
    /// A frame longer than the window was found: read at least this much.
    need: usize,
    /// The last window read (file offset, bytes), kept across calls:
    /// durable bytes never change, so a group asking for small batches does
    /// not read the same bytes again.
    window: Option<(u64, Bytes)>,
}

struct Out {
    entries: Vec<Entry>,
    bytes: usize,
    losses: Losses,
    examined: usize,
}

enum Step {
    More,
    Stop,
}

impl Reader {
    pub(super) fn new(
        shared: Arc<Shared>,
        group: usize,
        rx: watch::Receiver<Durable>,
        seg: Arc<SegView>,
        acked: u64,
        prev: Option<u64>,
    ) -> Self {
        Reader {
            shared,
            group,
            rx,
            offset: seg.header_len,
            seg,
            file: None,
            acked,
            scanned: acked,
            prev,
            last_intact: None,
            need: 0,
            window: None,
        }
    }

    /// The group read.
    pub fn group(&self) -> &str {
        &self.shared.groups[self.group]
    }

    /// Waits until records after the cursor are durable, then returns up to
    /// `max_records` / `max_bytes` (at least one record) of this group's
    /// records in order. May return no entries when the newly durable
    /// records were all for other groups: acknowledge `scanned_through`
    /// anyway. Fails with [`SpoolError::Closed`] once the writer is gone.
    pub async fn next(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch, SpoolError> {
        loop {
            if let Some(b) = self.try_next(max_records, max_bytes)? {
                return Ok(b);
            }
            self.rx.changed().await.map_err(|_| SpoolError::Closed)?;
        }
    }

    /// [`Reader::next`] without waiting: `None` when nothing durable is
    /// after the cursor.
    pub fn try_next(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<ReadBatch>, SpoolError> {
        let end = *self.rx.borrow_and_update();
        let mut out = Out {
            entries: Vec::new(),
            bytes: 0,
            losses: Losses::default(),
            examined: 0,
        };
        let before = self.scanned;
        loop {
            if !self.alive() && !self.jump() {
                break;
            }
            let id = self.seg.id;
            if id > end.segment {
                break;
            }
            if !self.seg.routable() {
                // Reported lost at open; nothing in it can be routed.
                self.scanned = self.scanned.max(self.seg.last().unwrap_or(0));
                if !self.advance() {
                    break;
                }
                continue;
            }
            let Some(file) = self.open()? else { continue };
            let limit = if id < end.segment {
                file.metadata()
                    .map_err(SpoolError::io(&self.seg.path))?
                    .len()
            } else {
                end.offset
            };
            if self.offset >= limit {
                if id < end.segment && self.advance() {
                    continue;
                }
                break;
            }
            match self.read(
                limit,
                id < end.segment,
                &mut out,
                max_records.max(1),
                max_bytes,
            )? {
                Step::More => {}
                Step::Stop => break,
            }
        }
        let batch = ReadBatch {
            entries: out.entries,
            scanned_through: self.scanned,
            losses: out.losses.into_vec(),
        };
        let progress =
            !batch.entries.is_empty() || !batch.losses.is_empty() || self.scanned > before;
        Ok(progress.then_some(batch))
    }

    fn alive(&self) -> bool {
        let segs = self.shared.segments.read().expect("segment map poisoned");
        segs.contains_key(&self.seg.id)
    }

    /// The segment was dropped (drop_oldest): resume at the oldest one
    /// after it. False if there is none.
    fn jump(&mut self) -> bool {
        let Some(next) = self.shared.at_or_after(self.seg.id + 1) else {
            return false;
        };
        self.enter(next);
        self.prev = None;
        true
    }

    fn advance(&mut self) -> bool {
        match self.shared.at_or_after(self.seg.id + 1) {
            Some(next) => {
                self.enter(next);
                true
            }
            None => false,
        }
    }

    fn enter(&mut self, seg: Arc<SegView>) {
        self.offset = seg.header_len;
        self.seg = seg;
        self.file = None;
        self.window = None;
    }

    /// The current segment's file; `None` (having moved on) if it was
    /// deleted meanwhile.
    fn open(&mut self) -> Result<Option<&File>, SpoolError> {
        if self.file.is_none() {
            match File::open(&self.seg.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.jump();
                    return Ok(None);
                }
                Err(e) => return Err(SpoolError::io(&self.seg.path)(e)),
            }
        }
        Ok(self.file.as_ref())
    }

    /// Reads one window from the cursor and takes what it holds.
    fn read(
        &mut self,
        limit: u64,
        closed: bool,
        out: &mut Out,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Step, SpoolError> {
        let data = self.data(limit)?;
        let mask = self.seg.masks[self.group];
        let mut at = 0;
        while at < data.len() {
            if out.examined >= SCAN_BUDGET {
                self.offset += at as u64;
                return Ok(Step::Stop);
            }
            match frame::parse(&data[at..]) {
                Parsed::Intact(h) => {
                    if h.sequence > self.acked {
                        if h.routes & mask != 0 {
                            if out.entries.len() >= max_records
                                || (!out.entries.is_empty() && out.bytes + h.len > max_bytes)
                            {
                                self.offset += at as u64;
                                return Ok(Step::Stop);
                            }
                            out.entries.push(Entry {
                                sequence: h.sequence,
                                line: data.slice(at + frame::HEADER..at + frame::HEADER + h.len),
                            });
                            out.bytes += h.len;
                        }
                        self.scanned = self.scanned.max(h.sequence);
                    }
                    self.prev = Some(h.sequence);
                    self.last_intact = Some((self.seg.id, self.offset + at as u64));
                    if out.losses.is_open() {
                        // `h` ends the loss before it in the chain.
                        out.losses.frame(&h);
                    }
                    out.losses.keep();
                    at += h.frame_len();
                    out.examined += h.frame_len();
                    self.need = 0;
                }
                Parsed::BadBody(h) => {
                    out.losses.frame(&h);
                    let start = self.offset + at as u64;
                    self.damaged((start, h.frame_len() as u64), Some(h), 1, None, out);
                    self.chain_after(start + h.frame_len() as u64, limit, closed, out);
                    at += h.frame_len();
                }
                Parsed::CutBody(_) | Parsed::CutHeader
                    if self.offset + (data.len() as u64) < limit =>
                {
                    // The window ends inside a frame: read again from it.
                    let need = match frame::parse(&data[at..]) {
                        Parsed::CutBody(h) => h.frame_len(),
                        _ => frame::HEADER,
                    };
                    if self.offset + (at + need) as u64 <= limit {
                        self.need = need;
                        self.offset += at as u64;
                        self.window = None;
                        return Ok(Step::More);
                    }
                    return self.region(self.offset + at as u64, limit, closed, out);
                }
                Parsed::CutBody(_) | Parsed::CutHeader | Parsed::BadHeader => {
                    return self.region(self.offset + at as u64, limit, closed, out);
                }
            }
        }
        self.offset += at as u64;
        Ok(Step::More)
    }

    /// The durable bytes from the cursor: what is left of the last window,
    /// or a new window of up to [`WINDOW`] bytes (more for a longer frame).
    fn data(&mut self, limit: u64) -> Result<Bytes, SpoolError> {
        if let Some((start, w)) = &self.window {
            let end = start + w.len() as u64;
            if (*start..end).contains(&self.offset) && end - self.offset >= self.need as u64 {
                return Ok(w.slice((self.offset - start) as usize..));
            }
        }
        let want = ((limit - self.offset) as usize).min(WINDOW.max(self.need));
        let mut buf = vec![0u8; want];
        let file = self.file.as_ref().expect("opened");
        file.read_exact_at(&mut buf, self.offset)
            .map_err(SpoolError::io(&self.seg.path))?;
        let data = Bytes::from(buf);
        self.window = Some((self.offset, data.clone()));
        Ok(data)
    }

    /// Damage without a usable header at `start`: finds the next valid
    /// header before `limit`, counts the frames between, reports them.
    fn region(
        &mut self,
        start: u64,
        limit: u64,
        closed: bool,
        out: &mut Out,
    ) -> Result<Step, SpoolError> {
        let mut buf = vec![0u8; (limit - start) as usize];
        let file = self.file.as_ref().expect("opened");
        file.read_exact_at(&mut buf, start)
            .map_err(SpoolError::io(&self.seg.path))?;
        let q = frame::resync(&buf, 1);
        let len = q.unwrap_or(buf.len());
        let next = match q {
            Some(q) => frame::header(&buf[q..]).map(|h| h.sequence),
            None if closed => self
                .shared
                .at_or_after(self.seg.id + 1)
                .and_then(|s| s.first()),
            None => None,
        };
        // The record before the region: its own hash is where the loss
        // starts in the chain.
        if let Some((id, at)) = self.last_intact
            && id == self.seg.id
            && let Some((sequence, hash)) = self.own_hash(at)
            && Some(sequence) == self.prev
        {
            out.losses.hash(sequence, hash);
        }
        self.damaged(
            (start, len as u64),
            None,
            frame::frames_in(&buf[..len]),
            next,
            out,
        );
        self.chain_after(start + len as u64, limit, closed, out);
        self.offset = start + len as u64;
        Ok(Step::More)
    }

    /// Passes the header of the frame at `offset` (in the next segment
    /// when this closed one ends there) to `out`'s losses: its `prev` is
    /// the hash a loss just before it ends at.
    fn chain_after(&self, offset: u64, limit: u64, closed: bool, out: &mut Out) {
        let next = if offset + frame::HEADER as u64 <= limit {
            self.seg.header_at(offset)
        } else if closed && offset >= limit {
            self.shared
                .at_or_after(self.seg.id + 1)
                .and_then(|s| s.first_header())
        } else {
            None
        };
        if let Some(h) = next {
            out.losses.frame(&h);
        }
    }

    /// The sequence and `event.hash` of the intact frame at `offset`.
    fn own_hash(&self, offset: u64) -> Option<(u64, [u8; 32])> {
        let h = self.seg.header_at(offset)?;
        let mut buf = vec![0u8; h.len];
        let file = self.file.as_ref()?;
        file.read_exact_at(&mut buf, offset + frame::HEADER as u64)
            .ok()?;
        Some((h.sequence, event_hash(&buf)?))
    }

    /// Reports a damaged region `(start, len)` if it is this group's loss
    /// and no reader reported it yet. The caller moves past it.
    fn damaged(
        &mut self,
        (start, len): (u64, u64),
        header: Option<Header>,
        frames: u64,
        next: Option<u64>,
        out: &mut Out,
    ) {
        let mask = self.seg.masks[self.group];
        let (first, last) = header.map_or_else(
            || bounds(self.prev, next, frames),
            |h| (h.sequence, h.sequence),
        );
        let mine = match header {
            Some(h) => h.routes & mask != 0 && h.sequence > self.acked,
            None => mask != 0 && last > self.acked,
        };
        if mine && self.shared.report((self.seg.id, start)) {
            out.losses.lose(first, last, frames, LossReason::Corrupt);
        } else {
            out.losses.keep();
        }
        if last > self.acked {
            self.scanned = self.scanned.max(last);
        }
        self.prev = Some(last);
        out.examined += len as usize;
    }
}
