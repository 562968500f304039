//! What deleting the oldest segment loses (drop_oldest): what some group it
//! was routed to had not acknowledged, and the declarations of spool gap
//! records deleted undelivered, to make again. Pure: the writer reads the
//! segment and deletes it.

use std::collections::BTreeSet;

use super::{
    LossReason, frame,
    frame::Header,
    loss::{Losses, bounds, declaration, event_hash, lost, unacked},
    scan::{self, Item},
};

/// The oldest segment, read whole, and what follows it.
#[derive(Debug)]
pub(super) struct Doomed<'a> {
    /// Its id.
    pub id: u64,
    /// The whole file.
    pub body: &'a [u8],
    /// Where its frames start (0: its header was lost).
    pub header_len: u64,
    /// Its groups' masks for deciding loss (see `Segment::loss_masks`).
    pub masks: Vec<u64>,
    /// The first intact sequence of the next segment.
    pub next_first: Option<u64>,
    /// The header of the next segment's first frame, when intact.
    pub next_header: Option<Header>,
}

impl Doomed<'_> {
    /// Adds to `dropped` what deleting the segment loses, given the groups'
    /// watermarks and the damaged regions already reported.
    pub fn losses(&self, acked: &[u64], reported: &BTreeSet<(u64, u64)>, dropped: &mut Losses) {
        let body = self.body;
        let routable = self.header_len > 0;
        let from = if routable {
            self.header_len as usize
        } else {
            frame::resync(body, 0).unwrap_or(body.len())
        };
        let found = scan::scan(body, from);
        let masks = &self.masks;
        let mut prev = None;
        let mut again = Vec::new();
        for (i, item) in found.items.iter().enumerate() {
            match item {
                Item::Intact { header: h, offset } => {
                    prev = Some(h.sequence);
                    dropped.frame(h);
                    // A segment without its header was reported lost at open.
                    if routable && unacked(h.sequence, h.routes, masks, acked) {
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
                        .or(self.next_first);
                    let (first, last) = d.header.map_or_else(
                        || bounds(prev, next, d.frames),
                        |h| (h.sequence, h.sequence),
                    );
                    prev = Some(last);
                    if !reported.contains(&(self.id, d.start as u64))
                        && lost(d.header.as_ref(), last, masks, acked)
                    {
                        dropped.lose(first, last, d.frames, LossReason::Corrupt);
                    } else {
                        dropped.keep();
                    }
                }
            }
        }
        // What follows the segment ends the last loss in it.
        if let Some(h) = &self.next_header {
            dropped.frame(h);
        }
        dropped.keep();
        for d in again {
            dropped.redeclare(d);
        }
    }
}
