//! Per-thread windows: the unit the correlator works on.
//!
//! A backend request is written inside its client request's interval, on
//! the client request's thread, so a thread's requests fall into windows
//! that close whenever the thread has no client request in flight: nothing
//! outside a window can pair with anything inside it. The lead feeds events
//! in kernel-time order and gets each window's results when it closes;
//! every client request given to [`Windows::client_done`] is reported
//! exactly once.
//!
//! - A backend request done while its thread has no open window can match
//!   nothing (a health check, say): it is counted and dropped.
//! - A taint makes everything in the window ambiguous with that reason
//!   (candidates still listed). Lost events also taint every window of the
//!   process that opens within one timeout after the loss: a request whose
//!   start was lost may still be in flight and land its backend there.
//! - A thread that is never idle still gets its requests decided: once a
//!   window holds [`EARLY_AT`] done requests (then twice what stayed), the
//!   parts of it no request in flight can join are solved and reported
//!   (see `early`). For that, [`Windows::client_request`] tells what a
//!   request in flight may join.
//! - Memory is bounded. A window past [`WindowLimits::max_requests`] reports
//!   what is done as `window-too-large` and stays tainted until its thread
//!   is idle. [`Windows::expire`] gives up on requests in flight past the
//!   timeout, so their window can close (`timeout`). A request given up on
//!   is reported, with that reason, when it is done.

use std::collections::HashMap;

use super::{
    early::{OpenRequest, final_parts},
    forgotten::Forgotten,
    limits::WindowLimits,
    mapping::{Mapping, Reason},
    side::{BackendSide, ClientSide},
    solve::solve,
};

/// Which threads of a process a taint covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Threads {
    /// One thread (tid).
    One(u32),
    /// Every thread of the process.
    All,
}

impl Threads {
    fn covers(self, tid: u32) -> bool {
        match self {
            Threads::One(t) => t == tid,
            Threads::All => true,
        }
    }
}

/// Results from one thread's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Process.
    pub tgid: u32,
    /// Thread.
    pub tid: u32,
    /// One mapping per client request, by client id.
    pub results: Vec<(u64, Mapping)>,
}

/// What the windows counted, for the stage's telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Backend requests done on a thread with no open window, dropped.
    pub unmatched_backends: u64,
    /// Windows closed, for any reason.
    pub windows_closed: u64,
    /// Times a window outgrew its bound and was emptied early.
    pub windows_too_large: u64,
    /// Client requests given up on while in flight (timeout or bound).
    pub given_up: u64,
}

/// A taint waiting for windows that open before `until` (kernel ns).
#[derive(Debug, Clone, Copy)]
struct Pending {
    tgid: u32,
    threads: Threads,
    reason: Reason,
    until: u64,
}

/// Done requests a window holds before the first try to decide part of it
/// early; each try costs time linear in the window.
pub const EARLY_AT: usize = 16;

/// One thread's open window.
#[derive(Debug)]
struct Window {
    /// Client requests started and not done, by id.
    in_flight: HashMap<u64, OpenRequest>,
    done: Vec<ClientSide>,
    backends: Vec<BackendSide>,
    taint: Option<Reason>,
    /// `done.len()` at which to try deciding part of the window early.
    next_early: usize,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            in_flight: HashMap::new(),
            done: Vec::new(),
            backends: Vec::new(),
            taint: None,
            next_early: EARLY_AT,
        }
    }
}

impl Window {
    fn size(&self) -> usize {
        self.in_flight.len() + self.done.len() + self.backends.len()
    }

    /// The first taint wins: it is the earliest cause.
    fn taint(&mut self, reason: Reason) {
        self.taint.get_or_insert(reason);
    }

    /// Correlates and empties what is done; in-flight requests stay.
    fn drain(&mut self, out: &mut Vec<(u64, Mapping)>) {
        let taint = self.taint;
        out.extend(
            solve(&self.done, &self.backends)
                .into_iter()
                .map(|o| (o.client, o.into_mapping(taint))),
        );
        self.done.clear();
        self.backends.clear();
    }

    /// Solves and removes the parts no request in flight can join, then
    /// sets when to try again: when the done requests have doubled, so the
    /// tries cost O(1) per request.
    fn decide_early(&mut self, out: &mut Vec<(u64, Mapping)>) {
        let open: Vec<&OpenRequest> = self.in_flight.values().collect();
        let (clients, backends) = final_parts(&self.done, &self.backends, &open);
        if !clients.is_empty() {
            let done = take(&mut self.done, &clients);
            let backends = take(&mut self.backends, &backends);
            let taint = self.taint;
            out.extend(
                solve(&done, &backends)
                    .into_iter()
                    .map(|o| (o.client, o.into_mapping(taint))),
            );
        } else if !backends.is_empty() {
            // Backends nothing can take any more: drop them.
            take(&mut self.backends, &backends);
        }
        self.next_early = EARLY_AT.max(2 * self.done.len());
    }
}

/// Removes the items at `indices` (ascending) from `v`, in order.
fn take<T>(v: &mut Vec<T>, indices: &[usize]) -> Vec<T> {
    let mut taken = Vec::with_capacity(indices.len());
    let mut wanted = indices.iter().peekable();
    let mut kept = Vec::with_capacity(v.len() - indices.len());
    for (i, item) in std::mem::take(v).into_iter().enumerate() {
        if wanted.next_if_eq(&&i).is_some() {
            taken.push(item);
        } else {
            kept.push(item);
        }
    }
    *v = kept;
    taken
}

/// Every thread's open window, fed in kernel-time order.
#[derive(Debug)]
pub struct Windows {
    limits: WindowLimits,
    open: HashMap<(u32, u32), Window>,
    pending: Vec<Pending>,
    forgotten: Forgotten,
    /// A lower bound of the current kernel time: the latest start seen
    /// (`t_read`, `t_write`, a start, `expire`'s `now`). Ends are left out:
    /// a request cut short may carry `u64::MAX` as its response time.
    now: u64,
    counters: Counters,
}

impl Default for Windows {
    fn default() -> Self {
        Windows::new(WindowLimits::default())
    }
}

impl Windows {
    /// No windows open yet.
    pub fn new(limits: WindowLimits) -> Self {
        Windows {
            limits,
            open: HashMap::new(),
            pending: Vec::new(),
            forgotten: Forgotten::with_cap(limits.max_requests().saturating_mul(2)),
            now: 0,
            counters: Counters::default(),
        }
    }

    /// What was counted so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Number of ids remembered as given up on.
    #[cfg(test)]
    pub(super) fn forgotten_len(&self) -> usize {
        self.forgotten.len()
    }

    /// Number of threads with an open window.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// A client request's first byte was read at `t` (kernel ns); its head
    /// is not known yet, so it may join any backend written after `t`.
    pub fn client_started(&mut self, tgid: u32, tid: u32, id: u64, t: u64) -> Option<Closed> {
        self.client_request(OpenRequest {
            id,
            tgid,
            tid,
            t_read: t,
            head: None,
        })
    }

    /// A client request is in flight with what is known of it: its start,
    /// and its head once parsed. A second call for the same id adds the
    /// head and keeps the first start.
    pub fn client_request(&mut self, open: OpenRequest) -> Option<Closed> {
        self.advance(open.t_read);
        let key = (open.tgid, open.tid);
        let window = self.window(open.tgid, open.tid);
        match window.in_flight.get_mut(&open.id) {
            Some(known) => known.head = open.head.or(known.head.take()),
            None => {
                window.in_flight.insert(open.id, open);
            }
        }
        self.settle(key)
    }

    /// A client request's response was written in full, or its connection
    /// ended. Closes the window if the thread has nothing else in flight.
    pub fn client_done(&mut self, c: ClientSide) -> Option<Closed> {
        self.advance(c.t_read);
        let key = (c.tgid, c.tid);
        let in_flight = self
            .open
            .get(&key)
            .is_some_and(|w| w.in_flight.contains_key(&c.id));
        if !in_flight && let Some(reason) = self.forgotten.take(c.id) {
            return Some(closed(key, vec![(c.id, unknown(reason))]));
        }
        let Some(window) = self.open.get_mut(&key) else {
            // Its start was never seen and its window, if any, is gone with
            // its backend: nothing can be said.
            return Some(closed(key, vec![(c.id, unknown(Reason::StartUnseen))]));
        };
        // A done request whose start wasn't seen still joins the open
        // window: its own times are in `c`, and a client without its
        // backend only removes forcedness.
        window.in_flight.remove(&c.id);
        window.done.push(c);
        self.settle(key)
    }

    /// A backend request's response was read.
    pub fn backend_done(&mut self, b: BackendSide) -> Option<Closed> {
        self.advance(b.t_write);
        let key = (b.tgid, b.tid);
        let Some(window) = self.open.get_mut(&key) else {
            self.counters.unmatched_backends += 1;
            return None;
        };
        window.backends.push(b);
        self.settle(key)
    }

    /// Takes back client request `id` of thread (`tgid`, `tid`): it turned
    /// out to be bytes a TCP proxy relayed, not a request the proxy parsed
    /// and forwarded, so it gets no result. Closes the window if nothing
    /// else is in flight. Its relayed partner is taken back with
    /// [`Windows::withdraw_backend`]: the two were each other's only
    /// partners, so what the rest of the window forces is unchanged.
    pub fn withdraw_client(&mut self, tgid: u32, tid: u32, id: u64) -> Option<Closed> {
        let key = (tgid, tid);
        let window = self.open.get_mut(&key)?;
        let before = window.done.len();
        window.done.retain(|c| c.id != id);
        let removed = window.in_flight.remove(&id).is_some() || window.done.len() != before;
        if !removed {
            return None;
        }
        self.settle(key)
    }

    /// Takes back backend request `id` of thread (`tgid`, `tid`): see
    /// [`Windows::withdraw_client`].
    pub fn withdraw_backend(&mut self, tgid: u32, tid: u32, id: u64) {
        if let Some(window) = self.open.get_mut(&(tgid, tid)) {
            window.backends.retain(|b| b.id != id);
        }
    }

    /// Makes the open windows of `threads` of process `tgid` ambiguous with
    /// `reason`. For [`Reason::EventsLost`], windows opening within one
    /// timeout from now are tainted too.
    pub fn taint(&mut self, tgid: u32, threads: Threads, reason: Reason) {
        for (_, window) in self
            .open
            .iter_mut()
            .filter(|((g, t), _)| *g == tgid && threads.covers(*t))
        {
            window.taint(reason);
        }
        if reason == Reason::EventsLost {
            let until = self.now.saturating_add(self.limits.timeout_ns());
            let same = |p: &&mut Pending| p.tgid == tgid && p.threads == threads;
            match self.pending.iter_mut().find(same) {
                Some(p) => p.until = p.until.max(until),
                None => self.pending.push(Pending {
                    tgid,
                    threads,
                    reason,
                    until,
                }),
            }
        }
    }

    /// Gives up on requests in flight since before `now - timeout` (kernel
    /// ns); their windows are tainted (`timeout`) and close once nothing
    /// else is in flight. Scans every in-flight request: call it on a timer
    /// (say once a second), not per event.
    pub fn expire(&mut self, now: u64) -> Vec<Closed> {
        self.advance(now);
        let Some(deadline) = now.checked_sub(self.limits.timeout_ns()) else {
            return Vec::new();
        };
        let mut stale: Vec<(u32, u32)> = self
            .open
            .iter()
            .filter(|(_, w)| w.in_flight.values().any(|o| o.t_read < deadline))
            .map(|(&k, _)| k)
            .collect();
        // Deterministic output, whatever the map's order.
        stale.sort_unstable();
        let mut out = Vec::new();
        for key in stale {
            self.give_up(key, Reason::Timeout, |start| start < deadline);
            out.extend(self.close_if_idle(key, Vec::new()));
        }
        out
    }

    /// Closes every window (the agent is stopping): requests still in
    /// flight are reported, with everything sharing their window, as
    /// `unfinished`.
    pub fn flush_all(&mut self) -> Vec<Closed> {
        let mut open: Vec<_> = std::mem::take(&mut self.open).into_iter().collect();
        open.sort_unstable_by_key(|(key, _)| *key);
        let mut out = Vec::new();
        for (key, mut window) in open {
            let mut ids: Vec<u64> = window.in_flight.drain().map(|(id, _)| id).collect();
            ids.sort_unstable();
            let mut results: Vec<(u64, Mapping)> = ids
                .into_iter()
                .map(|id| (id, unknown(Reason::Unfinished)))
                .collect();
            if !results.is_empty() {
                window.taint(Reason::Unfinished);
            }
            window.drain(&mut results);
            self.counters.windows_closed += 1;
            out.push(closed(key, results));
        }
        out
    }

    fn advance(&mut self, t: u64) {
        self.now = self.now.max(t);
    }

    /// The thread's open window, opening one (with any pending taint).
    fn window(&mut self, tgid: u32, tid: u32) -> &mut Window {
        let now = self.now;
        self.pending.retain(|p| p.until >= now);
        let pending = &self.pending;
        self.open.entry((tgid, tid)).or_insert_with(|| Window {
            taint: pending
                .iter()
                .find(|p| p.tgid == tgid && p.threads.covers(tid))
                .map(|p| p.reason),
            ..Window::default()
        })
    }

    /// After a change to a window: enforce its bound, decide what is final
    /// if it is time to, then close it if idle.
    fn settle(&mut self, key: (u32, u32)) -> Option<Closed> {
        let mut results = self.spill_if_large(key);
        if let Some(window) = self.open.get_mut(&key)
            && !window.in_flight.is_empty()
            && window.done.len() >= window.next_early
        {
            window.decide_early(&mut results);
        }
        self.close_if_idle(key, results)
    }

    /// Empties a window that outgrew its bound: what is done is reported
    /// now, and the window stays tainted until its thread is idle. If the
    /// in-flight requests alone exceed the bound, they are given up on too.
    fn spill_if_large(&mut self, key: (u32, u32)) -> Vec<(u64, Mapping)> {
        let max = self.limits.max_requests();
        let mut results = Vec::new();
        let Some(window) = self.open.get_mut(&key) else {
            return results;
        };
        if window.size() <= max {
            return results;
        }
        self.counters.windows_too_large += 1;
        window.taint(Reason::WindowTooLarge);
        window.drain(&mut results);
        if window.in_flight.len() > max {
            let reason = window.taint.unwrap_or(Reason::WindowTooLarge);
            self.give_up(key, reason, |_| true);
        }
        results
    }

    /// Forgets the window's in-flight requests selected by `stale` (by
    /// start time) and taints the window: their backends may be in it.
    fn give_up(&mut self, key: (u32, u32), reason: Reason, stale: impl Fn(u64) -> bool) {
        let Some(window) = self.open.get_mut(&key) else {
            return;
        };
        let forgotten = &mut self.forgotten;
        let counters = &mut self.counters;
        window.in_flight.retain(|&id, open| {
            let give_up = stale(open.t_read);
            if give_up {
                forgotten.insert(id, reason);
                counters.given_up += 1;
            }
            !give_up
        });
        window.taint(reason);
    }

    /// Closes the window if nothing is in flight; returns `results` plus its
    /// own, or `results` alone (if any) when it stays open.
    fn close_if_idle(
        &mut self,
        key: (u32, u32),
        mut results: Vec<(u64, Mapping)>,
    ) -> Option<Closed> {
        if let Some(window) = self.open.get_mut(&key)
            && window.in_flight.is_empty()
        {
            window.drain(&mut results);
            self.open.remove(&key);
            self.counters.windows_closed += 1;
        }
        (!results.is_empty()).then(|| closed(key, results))
    }
}

/// Ambiguous with no candidate listed.
fn unknown(reason: Reason) -> Mapping {
    Mapping::Ambiguous {
        candidates: Vec::new(),
        reason,
    }
}

fn closed((tgid, tid): (u32, u32), results: Vec<(u64, Mapping)>) -> Closed {
    Closed { tgid, tid, results }
}
