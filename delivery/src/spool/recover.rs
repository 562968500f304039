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
    examine::examine,
    frame,
    index::{self, IndexEntry},
    live::Segment,
    segment::{self, HeaderError},
    settle::{self, Piece},
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
        rec.last = Some(crate::entry::Entry {
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
