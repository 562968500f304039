//! The edges that are in every maximum matching.
//!
//! Given one maximum matching M, orient the graph: matched edges right →
//! left, unmatched edges left → right. A matched edge is in some other
//! maximum matching (so not forced) exactly when it lies
//!
//! - on an even alternating cycle: its two ends are in one strongly
//!   connected component; or
//! - on an even alternating path from a free vertex: its right end is
//!   reachable from a free left vertex, or its left end reaches a free
//!   right vertex (a backward search from the free right vertices).
//!
//! Swapping M along such a cycle or path gives a maximum matching without
//! the edge; without either, every maximum matching contains it (the
//! symmetric difference of two maximum matchings is a union of even cycles
//! and even paths). Unmatched edges are never forced. One Tarjan pass
//! (iterative, so no recursion depth to exhaust) and two BFS: O(V + E).

use super::{
    graph::Graph,
    matching::{FREE, Matching},
};

/// For each left vertex, whether its matched edge is in every maximum
/// matching. `m` must be a maximum matching of `g`.
pub(super) fn forced(g: &Graph, m: &Matching) -> Vec<bool> {
    let comp = components(g, m);
    let n_left = g.n_left();
    let from_free_left = reach_from_free_left(g, m);
    let to_free_right = reach_to_free_right(g, m);
    (0..n_left)
        .map(|l| {
            let r = m.left[l];
            r != FREE
                && comp[l] != comp[n_left + r as usize]
                && !from_free_left[r as usize]
                && !to_free_right[l]
        })
        .collect()
}

/// The successor of vertex `v` at cursor `pos` in the oriented graph, with
/// the cursor to continue from. Vertices `0..n_left` are left, the rest right.
fn successor(g: &Graph, m: &Matching, v: usize, pos: usize) -> Option<(usize, usize)> {
    let n_left = g.n_left();
    if v < n_left {
        let mine = m.left[v];
        let adj = g.right_of(v as u32);
        let skip = usize::from(adj.get(pos) == Some(&mine));
        adj.get(pos + skip)
            .map(|&r| (n_left + r as usize, pos + skip + 1))
    } else {
        let partner = m.right[v - n_left];
        (pos == 0 && partner != FREE).then_some((partner as usize, 1))
    }
}

const UNVISITED: u32 = u32::MAX;

/// Tarjan's strongly connected components, iterative: the component id of
/// every vertex.
fn components(g: &Graph, m: &Matching) -> Vec<u32> {
    let n = g.n_left() + g.n_right();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0u32; n];
    let mut comp = vec![UNVISITED; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut calls: Vec<(usize, usize)> = Vec::new();
    let mut counter = 0u32;
    let mut n_comp = 0u32;
    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        calls.push((root, 0));
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut pos)) = calls.last_mut() {
            if let Some((w, after)) = successor(g, m, v, *pos) {
                *pos = after;
                if index[w] == UNVISITED {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = n_comp;
                    if w == v {
                        break;
                    }
                }
                n_comp += 1;
            }
        }
    }
    comp
}

/// Right vertices reachable from a free left vertex by an alternating path
/// (unmatched edge to a right vertex, then its matched edge back left).
fn reach_from_free_left(g: &Graph, m: &Matching) -> Vec<bool> {
    let mut seen_left = vec![false; g.n_left()];
    let mut seen_right = vec![false; g.n_right()];
    let mut queue: Vec<u32> = (0..g.n_left() as u32)
        .filter(|&l| m.left[l as usize] == FREE)
        .collect();
    queue.iter().for_each(|&l| seen_left[l as usize] = true);
    while let Some(l) = queue.pop() {
        for &r in g.right_of(l) {
            if r == m.left[l as usize] || seen_right[r as usize] {
                continue;
            }
            seen_right[r as usize] = true;
            let l2 = m.right[r as usize];
            if l2 != FREE && !seen_left[l2 as usize] {
                seen_left[l2 as usize] = true;
                queue.push(l2);
            }
        }
    }
    seen_right
}

/// Left vertices from which an alternating path reaches a free right
/// vertex: searched backward from the free right vertices (unmatched edge
/// to a left vertex, then its matched edge to the right).
fn reach_to_free_right(g: &Graph, m: &Matching) -> Vec<bool> {
    let mut seen_left = vec![false; g.n_left()];
    let mut seen_right = vec![false; g.n_right()];
    let mut queue: Vec<u32> = (0..g.n_right() as u32)
        .filter(|&r| m.right[r as usize] == FREE)
        .collect();
    queue.iter().for_each(|&r| seen_right[r as usize] = true);
    while let Some(r) = queue.pop() {
        for &l in g.left_of(r) {
            if l == m.right[r as usize] || seen_left[l as usize] {
                continue;
            }
            seen_left[l as usize] = true;
            let r2 = m.left[l as usize];
            if r2 != FREE && !seen_right[r2 as usize] {
                seen_right[r2 as usize] = true;
                queue.push(r2);
            }
        }
    }
    seen_left
}
