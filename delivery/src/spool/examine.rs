//! Deciding what one segment image holds: where the index vouches for it
//! up to, what the scan of the rest finds, what a crash tore off the end
//! (or what is damaged past the last intact record of the spool), and the
//! pieces recovery settles. Pure: the image was read before, and the cut
//! it decides is made after, by `recover`.

use super::{
    frame,
    image::SegmentImage,
    live::Segment,
    loss::event_hash,
    scan::{self, Item},
    segment,
    settle::Piece,
};

/// Where the image sits in the spool.
#[derive(Clone, Copy, Debug)]
pub(super) struct Place<'a> {
    /// The configured groups.
    pub groups: &'a [String],
    /// Its position among the segments found (for [`Piece`]s).
    pub k: usize,
    /// It is the last segment (the one a crash may have torn).
    pub last: bool,
}

/// What one segment holds, decided.
#[derive(Debug)]
pub(super) struct Examined {
    /// The segment as the writer tracks it, at its length after the cut.
    pub seg: Segment,
    /// What recovery settles, in file order.
    pub pieces: Vec<Piece>,
    /// Notes for the log.
    pub problems: Vec<String>,
    /// The index did not vouch for it.
    pub index_rebuilt: bool,
    /// Bytes a crash tore off the end (never durable).
    pub torn_bytes: u64,
    /// The length the file must be cut to (its length: no cut).
    pub keep: u64,
    /// Bytes were scanned that readers may send from now on: the file must
    /// be made durable.
    pub sync: bool,
}

/// Decides what `image`, at `place`, holds; `path` is its file.
pub(super) fn examine(
    image: &SegmentImage,
    place: Place<'_>,
    path: std::path::PathBuf,
) -> Examined {
    let (id, len, k) = (image.id, image.len, place.k);
    let mut problems = Vec::new();
    let mut index_rebuilt = false;
    let decoded = image.header();
    if let Err(segment::HeaderError::Version(v)) = decoded {
        problems.push(format!(
            "segment {id} is in spool format {v}; this lbwitness reads format {}",
            segment::VERSION
        ));
    }
    let header = decoded.ok().filter(|h| h.id == id);
    let (header_len, seg_groups) = header.map_or((0, None), |h| (h.len as u64, Some(h.groups)));
    let mut seg = Segment::new(id, path, header_len, seg_groups.as_deref(), place.groups);
    let mut pieces = Vec::new();

    // Where the index vouches for the segment up to, and what it says.
    let entry = image.entry.as_ref();
    let start = image.body_start;
    let mut truncated = None;
    match (entry, image.vouched()) {
        (Some(e), Some(last)) => {
            seg.absorb_entry(e);
            if e.records > 0 {
                // The vouched part, by its ends: neighbours for damage found
                // after it, where the last record is, and the chain hashes
                // on either side of it.
                pieces.push(Piece::Intact {
                    sequence: e.first,
                    at: None,
                    unroutable: None,
                    prev: image.first_prev(e.first),
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
            index_rebuilt = true;
            if e.good > len {
                truncated = Some(*e);
                problems.push(format!(
                    "segment {id} is shorter than the index says: records were cut from it"
                ));
            } else {
                problems.push(format!(
                    "the index disagrees with segment {id}: rescanning it"
                ));
            }
        }
        (None, _) if header_len > 0 => index_rebuilt = true,
        _ => {}
    }
    let body = &image.body;
    let from = if header_len > 0 {
        0
    } else {
        frame::resync(body, 0).unwrap_or(body.len())
    };
    if header_len == 0 {
        problems.push(format!(
            "segment {id}: header damaged; its records cannot be routed and are reported lost"
        ));
    }
    let found = scan::scan(body, from);
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
                let at = offset;
                let offset = start + offset as u64;
                seg.add(&header, offset);
                if header_len > 0 && header.routes & !seg.known_bits() != 0 {
                    unknown_groups += 1;
                }
                let hash = if own_hash_needed(i) {
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
        problems.push(format!(
            "segment {id}: {unknown_groups} records were routed to groups no longer configured; they are not sent there"
        ));
    } else if seg.routes() & !seg.known_bits() != 0 && header_len > 0 {
        problems.push(format!("segment {id}: records were routed to groups no longer configured; they are not sent there"));
    }

    // The end: what follows the last intact frame.
    let mut keep = len;
    let mut torn_bytes = 0;
    if let Some(cut) = found.cut {
        keep = start + cut.start as u64;
        if place.last && header_len > 0 && truncated.is_none() {
            torn_bytes += len - keep;
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
    if place.last && header_len > 0 {
        let intact_end = start + found.intact_end(0) as u64;
        let end = intact_end.max(start);
        for p in &mut pieces {
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
        let found_frames = seg.records() + damaged_frames;
        let lost = e.records.saturating_sub(found_frames);
        if lost > 0 {
            pieces.push(Piece::Missing {
                first: None,
                last: e.last,
                count: lost,
            });
        }
    }
    seg.set_len(keep);
    seg.mark_synced();
    Examined {
        seg,
        pieces,
        problems,
        index_rebuilt,
        torn_bytes,
        keep,
        sync: start < len,
    }
}
