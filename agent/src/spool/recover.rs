//! Opening a spool after any stop: reads the ack state and the index, scans
//! each segment from where the index vouches for it (from its start when
//! it does not), cuts what a crash tore off the end, and reports the rest
//! of what is not intact as loss.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::unix::fs::FileExt as _,
    path::Path,
};

use super::{
    Recovery, SpoolError,
    acks::{self, AckState},
    frame::{self, Parsed},
    index::{self, IndexEntry},
    scan::{self, Item},
    segment::{self, HeaderError},
    settle::{self, Piece},
    writer::Segment,
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

/// Whether the index's entry matches the file: its last frame is intact
/// where it says and ends at its `good` offset.
fn vouches(
    file: &File,
    path: &Path,
    e: &IndexEntry,
    header_len: u64,
    len: u64,
) -> Result<bool, SpoolError> {
    if e.good < header_len || e.good > len {
        return Ok(false);
    }
    if e.records == 0 {
        return Ok(e.good == header_len);
    }
    if e.last_frame < header_len || e.last_frame >= e.good {
        return Ok(false);
    }
    let buf = read_at(file, path, e.last_frame, e.good - e.last_frame)?;
    Ok(matches!(frame::parse(&buf), Parsed::Intact(h)
        if h.sequence == e.last && h.frame_len() as u64 == e.good - e.last_frame))
}

/// Opens `dir` for `groups`.
pub(super) fn recover(dir: &Path, groups: &[String]) -> Result<Opened, SpoolError> {
    let mut rec = Recovery::default();
    let mut ids = list(dir)?;
    let (state, index) = read_state(dir, &ids, &mut rec)?;
    let acked: Vec<u64> = groups.iter().map(|g| state.acked(g)).collect();
    let mut reported: BTreeSet<(u64, u64)> = state.reported.iter().copied().collect();

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

    let mut pieces = Vec::new();
    let mut segments = Vec::new();
    let mut last_file = None;
    let oldest = ids.first().copied().unwrap_or(u64::MAX);
    let mut listed = index.range(oldest..).peekable();
    for (k, &id) in ids.iter().enumerate() {
        // Listed in the index but gone: not deleted by us (we delete
        // oldest first), so damage.
        while let Some((lid, e)) = listed.next_if(|(lid, _)| **lid < id) {
            debug_assert!(*lid < id);
            missing(e, &mut pieces, &mut rec);
        }
        listed.next_if(|(lid, _)| **lid == id);
        let last = k + 1 == ids.len();
        let (seg, file) = examine(
            dir,
            id,
            index.get(&id),
            groups,
            last,
            segments.len(),
            &mut pieces,
            &mut rec,
        )?;
        if last {
            last_file = Some(file);
        }
        segments.push(seg);
    }
    for (_, e) in listed {
        missing(e, &mut pieces, &mut rec);
    }

    let masks: Vec<Vec<u64>> = segments.iter().map(Segment::loss_masks).collect();
    let settled = settle::settle(&pieces, &masks, &acked, &mut reported);
    rec.losses = settled.losses;
    rec.highest = settled.highest.max(Some(state.highest).filter(|&h| h > 0));
    if settled.already > 0 {
        rec.problems.push(format!(
            "{} damaged regions were reported before and are skipped",
            settled.already
        ));
    }
    if let Some((k, offset)) = settled.last {
        let s: &Segment = &segments[k];
        let path = &s.view.path;
        let file = File::open(path).map_err(SpoolError::io(path))?;
        let head = read_at(&file, path, offset, frame::HEADER as u64)?;
        let h = frame::header(&head).expect("an intact frame found by the scan");
        let buf = read_at(&file, path, offset, h.frame_len() as u64)?;
        rec.last = Some(crate::sink::endpoint::Entry {
            sequence: h.sequence,
            line: bytes::Bytes::copy_from_slice(frame::payload(&buf, &h)),
        });
    }
    let live: BTreeSet<u64> = segments.iter().map(|s| s.view.id).collect();
    reported.retain(|(id, _)| live.contains(id));
    let reported_before = state
        .reported
        .iter()
        .copied()
        .filter(|(id, _)| live.contains(id))
        .collect();
    Ok(Opened {
        segments,
        last_file,
        acked,
        reported,
        reported_before,
        recovery: rec,
    })
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

/// Scans one segment, cuts what must go, and adds what it found to `pieces`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the recovery's state"
)]
fn examine(
    dir: &Path,
    id: u64,
    entry: Option<&IndexEntry>,
    groups: &[String],
    last: bool,
    k: usize,
    pieces: &mut Vec<Piece>,
    rec: &mut Recovery,
) -> Result<(Segment, File), SpoolError> {
    let path = dir.join(segment::file_name(id));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(SpoolError::io(&path))?;
    let len = file.metadata().map_err(SpoolError::io(&path))?.len();
    let head = read_at(&file, &path, 0, len.min(segment::MAX_HEADER as u64))?;
    let header = segment::decode(&head).ok().filter(|h| h.id == id);
    let (header_len, seg_groups) = header.map_or((0, None), |h| (h.len as u64, Some(h.groups)));
    let mut seg = Segment::new(id, path.clone(), header_len, seg_groups.as_deref(), groups);

    // Where the index vouches for the segment up to, and what it says.
    let mut start = header_len;
    let mut truncated = None;
    match entry {
        Some(e) if header_len > 0 && vouches(&file, &path, e, header_len, len)? => {
            start = e.good;
            seg.absorb_entry(e);
            if e.records > 0 {
                // The vouched part, by its ends: neighbours for damage found
                // after it, and where the last record is.
                pieces.push(Piece::Intact {
                    sequence: e.first,
                    at: None,
                    unroutable: None,
                });
                pieces.push(Piece::Intact {
                    sequence: e.last,
                    at: Some((k, e.last_frame)),
                    unroutable: None,
                });
            }
        }
        Some(e) if header_len > 0 => {
            rec.index_rebuilt = true;
            if e.good > len {
                truncated = Some(*e);
                rec.problems.push(format!(
                    "segment {id} is shorter than the index says: records were cut from it"
                ));
            } else {
                rec.problems.push(format!(
                    "the index disagrees with segment {id}: rescanning it"
                ));
            }
        }
        None if header_len > 0 => rec.index_rebuilt = true,
        _ => {}
    }
    let body = read_at(&file, &path, start, len - start)?;
    let from = if header_len > 0 {
        0
    } else {
        frame::resync(&body, 0).unwrap_or(body.len())
    };
    if header_len == 0 {
        rec.problems.push(format!(
            "segment {id}: header damaged; its records cannot be routed and are reported lost"
        ));
    }
    let found = scan::scan(&body, from);
    let first_piece = pieces.len();
    let mut damaged_frames = 0;
    let mut unknown_groups = 0u64;
    for item in &found.items {
        match *item {
            Item::Intact { offset, header } => {
                let offset = start + offset as u64;
                seg.add(&header, offset);
                if header_len > 0 && header.routes & !seg.known_bits() != 0 {
                    unknown_groups += 1;
                }
                pieces.push(Piece::Intact {
                    sequence: header.sequence,
                    at: Some((k, offset)),
                    unroutable: (header_len == 0).then_some(id),
                });
            }
            Item::Damaged(d) => {
                damaged_frames += d.frames;
                pieces.push(Piece::Damaged {
                    segment: k,
                    key: (id, start + d.start as u64),
                    header: d.header,
                    frames: d.frames,
                    hint: 0,
                    cut: false,
                });
            }
        }
    }
    if unknown_groups > 0 {
        rec.problems.push(format!(
            "segment {id}: {unknown_groups} records were routed to groups no longer configured; they are not sent there"
        ));
    } else if seg.routes & !seg.known_bits() != 0 && header_len > 0 {
        rec.problems.push(format!("segment {id}: records were routed to groups no longer configured; they are not sent there"));
    }

    // The end: what follows the last intact frame.
    let mut keep = len;
    if let Some(cut) = found.cut {
        keep = start + cut.start as u64;
        if last && header_len > 0 && truncated.is_none() {
            rec.torn_bytes += len - keep;
        } else if truncated.is_none() {
            // A sealed segment cut short (only a power failure does that,
            // with later segments surviving): the cut record is lost.
            pieces.push(Piece::Damaged {
                segment: k,
                key: (id, keep),
                header: cut.header,
                frames: 1,
                hint: 0,
                cut: true,
            });
        }
    }
    if last && header_len > 0 {
        let intact_end = start + found.intact_end(0) as u64;
        let end = intact_end.max(start);
        for p in &mut pieces[first_piece..] {
            if let Piece::Damaged { key, hint, cut, .. } = p
                && key.1 >= end
            {
                *cut = true;
                *hint = entry.map_or(0, |e| e.last);
            }
        }
        keep = keep.min(end);
    }
    if let Some(e) = truncated {
        let found_frames = seg.records + damaged_frames;
        let lost = e.records.saturating_sub(found_frames);
        if lost > 0 {
            pieces.push(Piece::Missing {
                first: None,
                last: e.last,
                count: lost,
            });
        }
    }
    if keep < len {
        file.set_len(keep).map_err(SpoolError::io(&path))?;
    }
    if start < len {
        // What was scanned may be sent from now on: make it durable first.
        file.sync_data().map_err(SpoolError::io(&path))?;
    }
    seg.len = keep;
    seg.mark_synced();
    Ok((seg, file))
}
