//! Which (client, backend) pairs are candidates: the edge conditions, and
//! the buckets that keep their construction near-linear.
//!
//! An edge needs the same thread, fingerprint and status, so the backends
//! are bucketed by `(tgid, tid, fingerprint, status)`; no edge crosses two
//! buckets, so each bucket is an independent graph. Within a bucket the
//! backends are sorted by `t_write`, and a client only looks at those
//! written inside its own interval (a binary search), never at all pairs.

use std::collections::HashMap;

use super::side::{BackendSide, ClientSide};

/// Whether backend request `b` can have served client request `c`.
///
/// - same process and thread (thread affinity holds per request, even when
///   `http-reuse` shares a backend connection between threads);
/// - same normalized request and agreeing request-body prefixes;
/// - `c.t_read < b.t_write < b.t_resp_read < c.t_resp_write`: the LB can't
///   forward before it reads, nor answer with what it hasn't read;
/// - same status and agreeing response-body prefixes;
/// - if the client expects an exact-mode tag, the backend carries it.
pub(super) fn compatible(c: &ClientSide, b: &BackendSide) -> bool {
    c.tgid == b.tgid
        && c.tid == b.tid
        && c.fingerprint == b.fingerprint
        && c.status == b.status
        && c.t_read < b.t_write
        && b.t_write < b.t_resp_read
        && b.t_resp_read < c.t_resp_write
        && prefixes_agree(&c.req_body, &b.req_body)
        && prefixes_agree(&c.resp_body, &b.resp_body)
        && tags_agree(c.tag.as_deref(), b.tag.as_deref())
}

/// Two prefixes of one byte string agree on their common length.
pub(super) fn prefixes_agree(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// A client with an expected tag (exact mode on for its frontend) needs a
/// backend request carrying that tag: one without it (a health check, say)
/// is not its forwarded copy. A client without one ignores tags.
pub(super) fn tags_agree(client: Option<&str>, backend: Option<&str>) -> bool {
    match client {
        Some(expected) => backend == Some(expected),
        None => true,
    }
}

/// Both tags present and equal: a mapping on this edge is exact.
pub(super) fn tagged(c: &ClientSide, b: &BackendSide) -> bool {
    matches!((&c.tag, &b.tag), (Some(x), Some(y)) if x == y)
}

/// One independent part of the window's graph.
#[derive(Debug, Default)]
pub(super) struct Bucket {
    /// Indices into the clients, in input order.
    pub(super) clients: Vec<usize>,
    /// Indices into the backends, sorted by `t_write` (ties by input order).
    pub(super) backends: Vec<usize>,
}

impl Bucket {
    /// Positions in `self.backends` of the candidates of client `c`, in
    /// `t_write` order.
    pub(super) fn candidates<'a>(
        &'a self,
        c: &'a ClientSide,
        backends: &'a [BackendSide],
    ) -> impl Iterator<Item = usize> + 'a {
        let first = self
            .backends
            .partition_point(|&b| backends[b].t_write <= c.t_read);
        self.backends[first..]
            .iter()
            .take_while(|&&b| backends[b].t_write < c.t_resp_write)
            .enumerate()
            .filter(|&(_, &b)| compatible(c, &backends[b]))
            .map(move |(i, _)| first + i)
    }
}

type Key = (u32, u32, [u8; 32], u16);

/// The clients that have a bucket, grouped with the backends that could
/// serve them. Clients whose key no backend shares are left out: they have
/// no candidate.
pub(super) fn buckets(clients: &[ClientSide], backends: &[BackendSide]) -> Vec<Bucket> {
    let mut by_key: HashMap<Key, usize> = HashMap::new();
    let mut out: Vec<Bucket> = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let key = (b.tgid, b.tid, b.fingerprint, b.status);
        let slot = *by_key.entry(key).or_insert_with(|| {
            out.push(Bucket::default());
            out.len() - 1
        });
        out[slot].backends.push(i);
    }
    for (i, c) in clients.iter().enumerate() {
        if let Some(&slot) = by_key.get(&(c.tgid, c.tid, c.fingerprint, c.status)) {
            out[slot].clients.push(i);
        }
    }
    out.retain(|b| !b.clients.is_empty());
    for bucket in &mut out {
        bucket.backends.sort_by_key(|&b| (backends[b].t_write, b));
    }
    out
}
