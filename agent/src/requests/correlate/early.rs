//! Deciding part of a window before its thread is idle.
//!
//! A thread that always has a request in flight (a busy HAProxy thread with
//! many keep-alive clients) never closes its window, so without this it
//! would grow to its bound and be reported `window-too-large`. But part of
//! an open window is already final: a connected component of its candidate
//! graph that no request still in flight can join.
//!
//! Why such a component is final, with events fed in kernel-time order and
//! `now` the latest time fed:
//! - a done client's candidates all have `t_resp_read < t_resp_write <=
//!   now`, so every one of them was already fed: no later backend joins it;
//! - a backend already fed has `t_write < now`, and a client starting later
//!   has `t_read > now`: no later client joins it;
//! - a client in flight may join any backend written after its start whose
//!   request could be its own (same fingerprint, agreeing body prefix and
//!   tag; its status is not known yet, so it is not compared). Those
//!   components wait. A client whose head is not known yet may join every
//!   backend written after its start.
//!
//! Components are independent in the matching, so the forced edges of a
//! final component are those the whole window would give at its close.

use std::collections::HashMap;

use super::edges::{self, prefixes_agree, tags_agree};
use super::side::{BackendSide, ClientSide};

/// What is known of a client request still in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The lead's id for this client request.
    pub id: u64,
    /// Process that read it.
    pub tgid: u32,
    /// Thread that read it.
    pub tid: u32,
    /// Kernel ns: its first byte was read.
    pub t_read: u64,
    /// Its head, once parsed; `None` while it is still being read.
    pub head: Option<OpenHead>,
}

/// The parts of a request head a backend request is compared on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenHead {
    /// As [`ClientSide::fingerprint`].
    pub fingerprint: [u8; 32],
    /// As [`ClientSide::req_body`] (what is known so far).
    pub req_body: Vec<u8>,
    /// As [`ClientSide::tag`].
    pub tag: Option<String>,
}

impl OpenRequest {
    /// Whether a backend request could still become this request's partner.
    fn may_join(&self, b: &BackendSide) -> bool {
        b.t_write > self.t_read
            && self.head.as_ref().is_none_or(|h| {
                h.fingerprint == b.fingerprint
                    && prefixes_agree(&h.req_body, &b.req_body)
                    && tags_agree(h.tag.as_deref(), b.tag.as_deref())
            })
    }
}

/// Which done clients and backends form components no request in flight
/// can join: indices into `done` and `backends`, ascending. A backend no
/// client can take is final too (it is dropped with its component).
pub(super) fn final_parts(
    done: &[ClientSide],
    backends: &[BackendSide],
    in_flight: &[&OpenRequest],
) -> (Vec<usize>, Vec<usize>) {
    let n = done.len() + backends.len();
    let mut sets = Sets::new(n);
    for bucket in edges::buckets(done, backends) {
        for &ci in &bucket.clients {
            for r in bucket.candidates(&done[ci], backends) {
                sets.union(ci, done.len() + bucket.backends[r]);
            }
        }
    }
    // Backends a request in flight may join, by fingerprint so that a
    // request with a head looks only at its own kind.
    let mut by_print: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for (i, b) in backends.iter().enumerate() {
        by_print.entry(b.fingerprint).or_default().push(i);
    }
    let mut blocked = vec![false; n];
    for open in in_flight {
        let mut block = |i: usize| {
            if open.may_join(&backends[i]) {
                blocked[done.len() + i] = true;
            }
        };
        match &open.head {
            Some(h) => by_print
                .get(&h.fingerprint)
                .into_iter()
                .flatten()
                .for_each(|&i| block(i)),
            None => (0..backends.len()).for_each(block),
        }
    }
    let mut root_blocked = vec![false; n];
    for (v, _) in blocked.iter().enumerate().filter(|(_, b)| **b) {
        let r = sets.find(v);
        root_blocked[r] = true;
    }
    let mut free = |v: usize| {
        let r = sets.find(v);
        !root_blocked[r]
    };
    let clients = (0..done.len()).filter(|&c| free(c)).collect();
    let backs = (0..backends.len())
        .filter(|&b| free(done.len() + b))
        .collect();
    (clients, backs)
}

/// Disjoint sets with path halving and union by size.
struct Sets {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl Sets {
    fn new(n: usize) -> Self {
        Sets {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut v: usize) -> usize {
        while self.parent[v] != v {
            self.parent[v] = self.parent[self.parent[v]];
            v = self.parent[v];
        }
        v
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }
}
