//! Which backend request served which client request, with zero wrong
//! mappings.
//!
//! On a load balancer each client-side request (read from a client socket)
//! is forwarded as a backend-side request (written to a backend socket).
//! Nothing the kernel sees names the link, so it is inferred from what must
//! hold for the true pair. A pair (client, backend) is a candidate when:
//!
//! - both are on the same process and thread;
//! - they have the same normalized request (fingerprint), and their request
//!   body prefixes agree on their common length;
//! - `c.t_read < b.t_write < b.t_resp_read < c.t_resp_write`;
//! - they have the same status, and their response body prefixes agree;
//! - if the client expects an exact-mode tag, the backend carries that tag.
//!   The tag needs only be unique among requests in flight together: with
//!   `http-request set-header X-LBW %ci:%cp` the requests of one client
//!   connection share it, but they are never in flight at once.
//!
//! The candidates form a bipartite graph. The truth is one maximum matching
//! of it, but not necessarily the one an algorithm finds, so only the edges
//! in **every** maximum matching are mapped (Hopcroft–Karp, then the
//! alternating-path/SCC test); every other client is declared ambiguous,
//! with its candidates and a [`Reason`]. A forced edge whose two sides carry
//! the same tag is [`Mapping::Exact`].
//!
//! Soundness rests on one assumption, which the per-thread [`Windows`] make
//! plausible: every backend request that is a candidate of some client in
//! the window was sent for some client in the window. Then the true pairing
//! covers every backend that has a candidate, so it is a maximum matching,
//! so it holds every forced edge. A client with no backend (a response the
//! load balancer generated) is harmless: it can only remove forcedness. The
//! one case it can't see is a stray backend request (a health check, a
//! retried attempt) shaped exactly like a client request whose own backend
//! request is missing, inside its interval; lost events therefore taint the
//! window, and retries and redispatch are for the lead to taint
//! ([`Reason::Unbalanced`]).
//!
//! Files: `side` (the inputs), `mapping` (the outputs), `edges` (the
//! conditions and buckets), `graph`, `matching` (Hopcroft–Karp), `forced`,
//! `solve` (all of it for one window), `window`, `early`, `limits` and
//! `forgotten` (per-thread windows).

mod early;
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

pub use early::{OpenHead, OpenRequest};
pub use limits::{LimitsError, WindowLimits};
pub use mapping::{Mapping, Reason};
pub use side::{BackendSide, ClientSide};
pub use window::{Closed, Counters, EARLY_AT, Threads, Windows};

/// Maps every client request of one window: one `(client id, mapping)` per
/// client, in input order. Pure; O(E √V) after bucketing.
pub fn correlate(clients: &[ClientSide], backends: &[BackendSide]) -> Vec<(u64, Mapping)> {
    solve::solve(clients, backends)
        .into_iter()
        .map(|o| (o.client, o.into_mapping(None)))
        .collect()
}
