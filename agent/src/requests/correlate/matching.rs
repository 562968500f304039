//! Maximum bipartite matching by Hopcroft–Karp, O(E √V).
//!
//! Each phase finds a maximal set of vertex-disjoint shortest augmenting
//! paths: a BFS layers the graph from the free left vertices, then a DFS
//! (iterative, so a long path can't overflow the stack) augments along
//! the layers.

use super::graph::Graph;

/// Marks an unmatched vertex.
pub(super) const FREE: u32 = u32::MAX;

/// A matching: each vertex's partner on the other side, or [`FREE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Matching {
    /// Partner (right index) of each left vertex.
    pub(super) left: Vec<u32>,
    /// Partner (left index) of each right vertex.
    pub(super) right: Vec<u32>,
}

impl Matching {
    /// Number of matched pairs.
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.left.iter().filter(|&&r| r != FREE).count()
    }
}

const UNREACHED: u32 = u32::MAX;

/// A maximum matching of `g`.
pub(super) fn maximum(g: &Graph) -> Matching {
    let mut m = greedy(g);
    let n_left = g.n_left();
    let mut dist = vec![UNREACHED; n_left];
    let mut next = vec![0usize; n_left];
    let mut queue = Vec::with_capacity(n_left);
    let mut stack: Vec<u32> = Vec::new();
    loop {
        let Some(limit) = layer(g, &m, &mut dist, &mut queue) else {
            return m;
        };
        next.iter_mut().for_each(|i| *i = 0);
        for start in 0..n_left as u32 {
            if m.left[start as usize] == FREE {
                augment_from(g, &mut m, &mut dist, &mut next, &mut stack, start, limit);
            }
        }
    }
}

/// A quick first matching, so the phases start from most of the answer.
fn greedy(g: &Graph) -> Matching {
    let mut m = Matching {
        left: vec![FREE; g.n_left()],
        right: vec![FREE; g.n_right()],
    };
    for l in 0..g.n_left() as u32 {
        if let Some(&r) = g.right_of(l).iter().find(|&&r| m.right[r as usize] == FREE) {
            m.left[l as usize] = r;
            m.right[r as usize] = l;
        }
    }
    m
}

/// BFS from the free left vertices along alternating paths. Returns the
/// layer of the left vertices adjacent to a free right vertex (the length
/// of the shortest augmenting paths), or `None` if there is none.
fn layer(g: &Graph, m: &Matching, dist: &mut [u32], queue: &mut Vec<u32>) -> Option<u32> {
    queue.clear();
    for (l, d) in dist.iter_mut().enumerate() {
        if m.left[l] == FREE {
            *d = 0;
            queue.push(l as u32);
        } else {
            *d = UNREACHED;
        }
    }
    let mut limit = None;
    let mut head = 0;
    while let Some(&l) = queue.get(head) {
        head += 1;
        let d = dist[l as usize];
        if limit.is_some_and(|lim| d >= lim) {
            break;
        }
        for &r in g.right_of(l) {
            match m.right[r as usize] {
                FREE => limit = Some(limit.unwrap_or(d)),
                l2 if dist[l2 as usize] == UNREACHED => {
                    dist[l2 as usize] = d + 1;
                    queue.push(l2);
                }
                _ => {}
            }
        }
    }
    limit
}

/// One DFS along the layers from the free vertex `start`; augments the
/// matching if it reaches a free right vertex. Dead ends leave the layering
/// (`dist = UNREACHED`) so the phase never walks them twice.
fn augment_from(
    g: &Graph,
    m: &mut Matching,
    dist: &mut [u32],
    next: &mut [usize],
    stack: &mut Vec<u32>,
    start: u32,
    limit: u32,
) {
    stack.clear();
    stack.push(start);
    while let Some(&l) = stack.last() {
        let li = l as usize;
        let adj = g.right_of(l);
        let Some(&r) = adj.get(next[li]) else {
            dist[li] = UNREACHED;
            stack.pop();
            continue;
        };
        next[li] += 1;
        let d = dist[li];
        match m.right[r as usize] {
            FREE if d == limit => {
                // Each vertex on the stack took the edge before its cursor.
                for &v in stack.iter() {
                    let rv = g.right_of(v)[next[v as usize] - 1];
                    m.left[v as usize] = rv;
                    m.right[rv as usize] = v;
                }
                return;
            }
            FREE => {}
            l2 if d < limit && dist[l2 as usize] == d + 1 => stack.push(l2),
            _ => {}
        }
    }
}
