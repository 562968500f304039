//! Opening one segment: where the index vouches for it up to, scanning the
//! rest, cutting what a crash tore off (or what is damaged past the last
//! intact record of the spool), and the pieces recovery settles.

use std::{fs::File, path::Path};

use super::{
    Recovery, SpoolError,
    frame::{self, Parsed},
    index::IndexEntry,
    live::Segment,
    loss::{ChainHash, event_hash},
    recover::read_at,
    scan::{self, Item},
    segment,
    settle::Piece,
};

/// What a vouched segment's last frame says about the chain: its `prev`
/// and its own `event.hash` (both `None` for an empty segment).
struct Vouched {
    prev: Option<ChainHash>,
    hash: Option<ChainHash>,
}

/// Whether the index's entry matches the file: its last frame is intact
/// where it says and ends at its `good` offset. If so, the chain hashes
/// that frame gives.
fn vouches(
    file: &File,
    path: &Path,
    e: &IndexEntry,
    header_len: u64,
    len: u64,
) -> Result<Option<Vouched>, SpoolError> {
    if e.good < header_len || e.good > len {
        return Ok(None);
    }
    if e.records == 0 {
        return Ok((e.good == header_len).then_some(Vouched {
            prev: None,
            hash: None,
        }));
    }
    if e.last_frame < header_len || e.last_frame >= e.good {
        return Ok(None);
    }
    let buf = read_at(file, path, e.last_frame, e.good - e.last_frame)?;
    Ok(match frame::parse(&buf) {
        Parsed::Intact(h)
            if h.sequence == e.last && h.frame_len() as u64 == e.good - e.last_frame =>
        {
            Some(Vouched {
                prev: Some(h.prev),
                hash: event_hash(frame::payload(&buf, &h)),
            })
        }
        _ => None,
    })
}

/// The `prev` of the frame at `offset` when it is record `sequence`.
fn prev_at(
    file: &File,
    path: &Path,
    (offset, end): (u64, u64),
    sequence: u64,
) -> Result<Option<ChainHash>, SpoolError> {
    if offset + frame::HEADER as u64 > end {
        return Ok(None);
    }
    let buf = read_at(file, path, offset, frame::HEADER as u64)?;
    Ok(frame::header(&buf)
        .filter(|h| h.sequence == sequence)
        .map(|h| h.prev))
}

/// Scans one segment, cuts what must go, and adds what it found to `pieces`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the recovery's state"
)]
pub(super) fn examine(
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
    let decoded = segment::decode(&head);
    if let Err(segment::HeaderError::Version(v)) = decoded {
        rec.problems.push(format!(
            "segment {id} is in spool format {v}; this lbwitness reads format {}",
            segment::VERSION
        ));
    }
    let header = decoded.ok().filter(|h| h.id == id);
    let (header_len, seg_groups) = header.map_or((0, None), |h| (h.len as u64, Some(h.groups)));
    let mut seg = Segment::new(id, path.clone(), header_len, seg_groups.as_deref(), groups);

    // Where the index vouches for the segment up to, and what it says.
    let mut start = header_len;
    let mut truncated = None;
    let vouched = match entry {
        Some(e) if header_len > 0 => vouches(&file, &path, e, header_len, len)?,
        _ => None,
    };
    match (entry, vouched) {
        (Some(e), Some(last)) => {
            start = e.good;
            seg.absorb_entry(e);
            if e.records > 0 {
                // The vouched part, by its ends: neighbours for damage found
                // after it, where the last record is, and the chain hashes
                // on either side of it.
                pieces.push(Piece::Intact {
                    sequence: e.first,
                    at: None,
                    unroutable: None,
                    prev: prev_at(&file, &path, (header_len, e.good), e.first)?,
                    hash: None,
                });
                pieces.push(Piece::Intact {
                    sequence: e.last,
                    at: Some((k, e.last_frame)),
                    unroutable: None,
                    prev: last.prev,
                    hash: last.hash,
                });
            }
        }
        (Some(e), None) if header_len > 0 => {
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
        (None, _) if header_len > 0 => rec.index_rebuilt = true,
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
    // An intact record's own hash is read where damage without a header,
    // or the segment's end, follows it: the `before_hash` of what may be
    // lost next.
    let own_hash_needed = |i: usize| match found.items.get(i + 1) {
        None => true,
        Some(Item::Damaged(d)) => d.header.is_none(),
        Some(Item::Intact { .. }) => false,
    };
    for (i, item) in found.items.iter().enumerate() {
        match *item {
            Item::Intact { offset, header } => {
                let offset = start + offset as u64;
                seg.add(&header, offset);
                if header_len > 0 && header.routes & !seg.known_bits() != 0 {
                    unknown_groups += 1;
                }
                let hash = if own_hash_needed(i) {
                    let at = offset as usize - start as usize;
                    event_hash(frame::payload(&body[at..], &header))
                } else {
                    None
                };
                pieces.push(Piece::Intact {
                    sequence: header.sequence,
                    at: Some((k, offset)),
                    unroutable: (header_len == 0).then_some(id),
                    prev: Some(header.prev),
                    hash,
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
