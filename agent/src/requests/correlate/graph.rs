//! A bipartite graph in compressed sparse rows, indexed from both sides.
//!
//! Left vertices are client requests, right vertices backend requests, both
//! numbered from 0 within one bucket. `u32` indices halve the memory of
//! `usize` ones; a bucket never holds 2^32 vertices (windows are bounded).

/// An undirected bipartite graph: each edge is listed from both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Graph {
    left_off: Vec<u32>,
    left_adj: Vec<u32>,
    right_off: Vec<u32>,
    right_adj: Vec<u32>,
}

impl Graph {
    /// Builds the graph from distinct edges `(left, right)`, each below
    /// `n_left` and `n_right`. Each adjacency list keeps the edges' order.
    pub(super) fn from_edges(n_left: usize, n_right: usize, edges: &[(u32, u32)]) -> Self {
        let (left_off, left_adj) = csr(n_left, edges.iter().map(|&(l, r)| (l, r)));
        let (right_off, right_adj) = csr(n_right, edges.iter().map(|&(l, r)| (r, l)));
        Graph {
            left_off,
            left_adj,
            right_off,
            right_adj,
        }
    }

    /// Number of left (client) vertices.
    pub(super) fn n_left(&self) -> usize {
        self.left_off.len() - 1
    }

    /// Number of right (backend) vertices.
    pub(super) fn n_right(&self) -> usize {
        self.right_off.len() - 1
    }

    /// The right neighbours of left vertex `l`.
    pub(super) fn right_of(&self, l: u32) -> &[u32] {
        let l = l as usize;
        &self.left_adj[self.left_off[l] as usize..self.left_off[l + 1] as usize]
    }

    /// The left neighbours of right vertex `r`.
    pub(super) fn left_of(&self, r: u32) -> &[u32] {
        let r = r as usize;
        &self.right_adj[self.right_off[r] as usize..self.right_off[r + 1] as usize]
    }
}

/// Counting sort of `(from, to)` pairs into offsets and targets.
fn csr(n: usize, pairs: impl Iterator<Item = (u32, u32)> + Clone) -> (Vec<u32>, Vec<u32>) {
    let mut off = vec![0u32; n + 1];
    for (from, _) in pairs.clone() {
        off[from as usize + 1] += 1;
    }
    for i in 0..n {
        off[i + 1] += off[i];
    }
    let mut next = off.clone();
    let mut adj = vec![0u32; off[n] as usize];
    for (from, to) in pairs {
        let slot = &mut next[from as usize];
        adj[*slot as usize] = to;
        *slot += 1;
    }
    (off, adj)
}
