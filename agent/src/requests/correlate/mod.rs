//! Which backend request served which client request, with zero wrong
//! mappings.
//!
//! On a load balancer each client-side request (read from a client socket)
//! is forwarded as a backend-side request (written to a backend socket).
//! Nothing the kernel sees names the link, so it is inferred from what must
//! hold for the true pair (see [`edges`] for the conditions): same thread,
//! same normalized request and status, agreeing body prefixes, causal time
//! order. Those candidate pairs form a bipartite graph; the truth is one
//! maximum matching of it, but not necessarily the one an algorithm finds.
//! So only the edges in **every** maximum matching are mapped (Hopcroft–Karp
//! in [`matching`], then the alternating-path/SCC test in [`forced`]); every
//! other client is declared ambiguous with its candidates and a reason.
//!
//! Soundness rests on one assumption the windows ([`Windows`]) make
//! plausible: every backend request that is a candidate of some client in
//! the window was sent for some client in the window. Then the true pairing
//! covers every non-isolated backend, so it is a maximum matching, so a
//! forced edge is in it. A client with no backend (a response the load
//! balancer generated) is harmless: it only ever removes forcedness. A
//! stray backend request that looks exactly like a client's (same thread,
//! request, status and body prefixes, inside its interval) while that
//! client's own backend request is missing is the one case it can't see;
//! lost events, retries and redispatch therefore taint the whole window.
//!
//! Measured on HAProxy 2.6 and nginx 1.22 (issue #12): zero wrong mappings
//! in every run, 100% mapped for distinct requests.

mod edges;
mod forced;
mod forgotten;
mod graph;
mod limits;
mod mapping;
mod matching;
mod side;
mod solve;
mod window;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;

pub use limits::{LimitsError, WindowLimits};
pub use mapping::{Mapping, Reason};
pub use side::{BackendSide, ClientSide};
pub use window::{Closed, Counters, Threads, Windows};

/// Maps every client request of one window: one `(client id, mapping)` per
/// client, in input order. Pure; O(E √V) after bucketing.
pub fn correlate(clients: &[ClientSide], backends: &[BackendSide]) -> Vec<(u64, Mapping)> {
    solve::solve(clients, backends)
        .into_iter()
        .map(|o| (o.client, o.into_mapping(None)))
        .collect()
}
