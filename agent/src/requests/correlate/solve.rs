//! From a window's two sides to one outcome per client: bucket, build each
//! bucket's graph, match, keep the forced edges.

use super::{
    edges::{self, Bucket},
    forced::forced,
    graph::Graph,
    mapping::{Mapping, Reason},
    matching,
    side::{BackendSide, ClientSide},
};

/// Most edges one bucket may hold. Byte-identical requests all in flight at
/// once on one thread give a dense bucket (n² edges); past this bound its
/// clients are declared ambiguous rather than the memory spent (1 Mi edges
/// are 8 MiB of adjacency plus the candidate lists).
pub(super) const MAX_BUCKET_EDGES: usize = 1 << 20;

/// What the graph says about one client, before any window taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Outcome {
    /// The client's id.
    pub(super) client: u64,
    /// Its candidates' backend ids, in `t_write` order.
    pub(super) candidates: Vec<u64>,
    /// The verdict.
    pub(super) verdict: Verdict,
}

/// The graph's verdict on one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Its matched edge is in every maximum matching.
    Forced {
        /// The backend's id.
        backend: u64,
        /// Both sides carry the same exact-mode tag.
        exact: bool,
    },
    /// It has candidates, none forced.
    Tie,
    /// It has no candidate.
    NoCandidate,
    /// Its bucket had more than [`MAX_BUCKET_EDGES`] edges.
    TooMany,
}

impl Outcome {
    /// The mapping to report: a taint overrides any pairing but keeps the
    /// candidates.
    pub(super) fn into_mapping(self, taint: Option<Reason>) -> Mapping {
        let ambiguous = |candidates, reason| Mapping::Ambiguous { candidates, reason };
        match (taint, self.verdict) {
            (Some(reason), _) => ambiguous(self.candidates, reason),
            (None, Verdict::Forced { backend, exact }) if exact => Mapping::Exact { backend },
            (None, Verdict::Forced { backend, .. }) => Mapping::Mapped { backend },
            (None, Verdict::Tie) => ambiguous(self.candidates, Reason::Tie),
            (None, Verdict::NoCandidate) => ambiguous(Vec::new(), Reason::NoCandidate),
            (None, Verdict::TooMany) => ambiguous(Vec::new(), Reason::TooManyCandidates),
        }
    }
}

/// One outcome per client, in input order.
pub(super) fn solve(clients: &[ClientSide], backends: &[BackendSide]) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = clients
        .iter()
        .map(|c| Outcome {
            client: c.id,
            candidates: Vec::new(),
            verdict: Verdict::NoCandidate,
        })
        .collect();
    for bucket in edges::buckets(clients, backends) {
        solve_bucket(&bucket, clients, backends, &mut out);
    }
    out
}

/// Fills the outcomes of one bucket's clients.
fn solve_bucket(
    bucket: &Bucket,
    clients: &[ClientSide],
    backends: &[BackendSide],
    out: &mut [Outcome],
) {
    // Vertex indices are u32 (see `graph`); no real window comes near.
    let fits = |n: usize| u32::try_from(n).is_ok();
    if !fits(bucket.clients.len()) || !fits(bucket.backends.len()) {
        return too_many(bucket, out);
    }
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for (l, &ci) in bucket.clients.iter().enumerate() {
        for r in bucket.candidates(&clients[ci], backends) {
            if edges.len() == MAX_BUCKET_EDGES {
                return too_many(bucket, out);
            }
            // Both below the sizes checked above.
            edges.push((l as u32, r as u32));
        }
    }
    let graph = Graph::from_edges(bucket.clients.len(), bucket.backends.len(), &edges);
    let m = matching::maximum(&graph);
    let forced = forced(&graph, &m);
    for (l, &ci) in bucket.clients.iter().enumerate() {
        let adj = graph.right_of(l as u32);
        let o = &mut out[ci];
        o.candidates = adj
            .iter()
            .map(|&r| backends[bucket.backends[r as usize]].id)
            .collect();
        o.verdict = if forced[l] {
            let b = &backends[bucket.backends[m.left[l] as usize]];
            Verdict::Forced {
                backend: b.id,
                exact: edges::tagged(&clients[ci], b),
            }
        } else if adj.is_empty() {
            Verdict::NoCandidate
        } else {
            Verdict::Tie
        };
    }
}

/// Declares every client of a bucket too dense to build.
fn too_many(bucket: &Bucket, out: &mut [Outcome]) {
    for &ci in &bucket.clients {
        out[ci].verdict = Verdict::TooMany;
    }
}
