//! Property tests: the matching and the forced edges against brute force,
//! and the whole correlator against generated ground truth.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{
    forced::forced,
    graph::Graph,
    matching::{self, FREE, Matching},
    *,
};

/// A graph of at most 7 + 7 vertices, from an adjacency bit matrix.
fn small_graph() -> impl Strategy<Value = Graph> {
    (
        0usize..=7,
        0usize..=7,
        proptest::collection::vec(any::<bool>(), 49),
    )
        .prop_map(|(n_left, n_right, bits)| {
            let edges: Vec<(u32, u32)> = (0..n_left)
                .flat_map(|l| (0..n_right).map(move |r| (l, r)))
                .filter(|&(l, r)| bits[l * 7 + r])
                .map(|(l, r)| (l as u32, r as u32))
                .collect();
            Graph::from_edges(n_left, n_right, &edges)
        })
}

/// Every maximum matching of `g`, as each left vertex's partner.
fn all_maximum(g: &Graph) -> Vec<Vec<u32>> {
    fn walk(
        g: &Graph,
        l: usize,
        used: &mut Vec<bool>,
        cur: &mut Vec<u32>,
        all: &mut Vec<Vec<u32>>,
    ) {
        if l == g.n_left() {
            all.push(cur.clone());
            return;
        }
        cur[l] = FREE;
        walk(g, l + 1, used, cur, all);
        for &r in g.right_of(l as u32) {
            if !used[r as usize] {
                used[r as usize] = true;
                cur[l] = r;
                walk(g, l + 1, used, cur, all);
                used[r as usize] = false;
            }
        }
        cur[l] = FREE;
    }
    let mut all = Vec::new();
    walk(
        g,
        0,
        &mut vec![false; g.n_right()],
        &mut vec![FREE; g.n_left()],
        &mut all,
    );
    let size = |m: &Vec<u32>| m.iter().filter(|&&r| r != FREE).count();
    let best = all.iter().map(size).max().unwrap_or(0);
    all.retain(|m| size(m) == best);
    all
}

fn is_matching_of(g: &Graph, m: &Matching) -> bool {
    (0..g.n_left()).all(|l| {
        let r = m.left[l];
        r == FREE || (g.right_of(l as u32).contains(&r) && m.right[r as usize] == l as u32)
    }) && (0..g.n_right()).all(|r| {
        let l = m.right[r];
        l == FREE || m.left[l as usize] == r as u32
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn hopcroft_karp_finds_a_maximum_matching(g in small_graph()) {
        let m = matching::maximum(&g);
        prop_assert!(is_matching_of(&g, &m));
        let best = all_maximum(&g)[0].iter().filter(|&&r| r != FREE).count();
        prop_assert_eq!(m.size(), best);
    }

    #[test]
    fn forced_is_exactly_the_intersection_of_all_maximum_matchings(g in small_graph()) {
        let m = matching::maximum(&g);
        let got = forced(&g, &m);
        let all = all_maximum(&g);
        for l in 0..g.n_left() {
            let first = all[0][l];
            let in_all = first != FREE && all.iter().all(|mm| mm[l] == first);
            prop_assert_eq!(got[l], in_all, "left {}", l);
            if got[l] {
                prop_assert_eq!(m.left[l], first);
            }
        }
    }
}

// ---- Ground truth: a load balancer's threads, generated. ----

const REQ_BODIES: [&[u8]; 3] = [b"", b"name=alice", b"name=bob"];
/// Backends' pages share a prefix (`<html>`) so short prefixes collide.
const RESP_BODIES: [&[u8]; 3] = [b"<html>ok", b"<html>not found", b"{\"error\":1}"];
/// The LB's own error page: its first byte differs from every backend's.
const LB_BODY: &[u8] = b"LB: 503 Service Unavailable";
const STATUSES: [u16; 3] = [200, 404, 503];

/// Which requests without a partner a case holds. Soundness assumes no
/// stray backend looks exactly like a client whose backend is missing, so
/// where both kinds meet, the LB's page differs from the backends'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strays {
    None,
    /// Clients answered by the LB, looking like any other.
    LbGenerated,
    /// Health checks looking like any client request.
    HealthChecks,
    /// Both, with the LB's own error page.
    Both,
}

/// One client request and (unless the LB answered it) its backend request.
#[derive(Debug, Clone)]
struct Req {
    tid: u32,
    fp: u8,
    req_body: usize,
    status: usize,
    resp_body: usize,
    start: u64,
    /// read → write → resp read → resp write; resp read → backend done;
    /// → client done.
    gaps: [u64; 5],
    /// Prefix lengths kept: client req, backend req, client resp, backend resp.
    cuts: [usize; 4],
    lb_generated: bool,
}

/// A health check: a backend request with no client.
#[derive(Debug, Clone)]
struct Check {
    tid: u32,
    fp: u8,
    status: usize,
    resp_body: usize,
    start: u64,
    len: u64,
}

fn req(threads: u32, fps: u8) -> impl Strategy<Value = Req> {
    (
        (1..=threads, 0..fps, 0usize..3, 0usize..3, 0usize..3),
        (0u64..1_000, proptest::array::uniform5(1u64..200)),
        (
            proptest::array::uniform4(0usize..12),
            proptest::bool::weighted(0.15),
        ),
    )
        .prop_map(
            |((tid, fp, req_body, status, resp_body), (start, gaps), (cuts, lb_generated))| Req {
                tid,
                fp,
                req_body,
                status,
                resp_body,
                start,
                gaps,
                cuts,
                lb_generated,
            },
        )
}

fn check(threads: u32, fps: u8) -> impl Strategy<Value = Check> {
    (
        1..=threads,
        0..fps,
        0usize..3,
        0usize..3,
        0u64..1_500,
        1u64..300,
    )
        .prop_map(|(tid, fp, status, resp_body, start, len)| Check {
            tid,
            fp,
            status,
            resp_body,
            start,
            len,
        })
}

/// A generated case: the two sides, each backend's true client, and the
/// time of every `*_done` event.
#[derive(Debug, Clone)]
struct World {
    clients: Vec<(ClientSide, u64)>,
    backends: Vec<(BackendSide, u64)>,
    /// Backend id → the client it truly served.
    truth: std::collections::HashMap<u64, u64>,
    distinct: bool,
    strays: Strays,
    /// Exact mode: each client expects a tag unique to it, its backend
    /// request carries it; health checks carry none.
    exact: bool,
}

fn fingerprint(n: u64) -> [u8; 32] {
    let mut fp = [0u8; 32];
    fp[..8].copy_from_slice(&n.to_le_bytes());
    fp
}

fn cut(body: &[u8], n: usize) -> Vec<u8> {
    body[..n.min(body.len())].to_vec()
}

fn build(reqs: Vec<Req>, checks: Vec<Check>, modes: (bool, bool), strays: Strays) -> World {
    let (distinct, exact) = modes;
    let lb_allowed = matches!(strays, Strays::LbGenerated | Strays::Both);
    let mut world = World {
        clients: Vec::new(),
        backends: Vec::new(),
        truth: Default::default(),
        distinct,
        strays,
        exact,
    };
    for (i, r) in reqs.iter().enumerate() {
        let id = i as u64 + 1;
        let fp = fingerprint(if distinct {
            1_000 + id
        } else {
            u64::from(r.fp)
        });
        let [g_write, g_backend, g_resp, g_bdone, g_cdone] = r.gaps;
        let t_write = r.start + g_write;
        let t_resp_read = t_write + g_backend;
        let t_resp_write = t_resp_read + g_resp;
        let lb = lb_allowed && r.lb_generated;
        let page = if lb && strays == Strays::Both {
            LB_BODY
        } else {
            RESP_BODIES[r.resp_body]
        };
        let tag = exact.then(|| format!("192.0.2.7:{}", 40_000 + id));
        let client = ClientSide {
            id,
            tgid: 1,
            tid: r.tid,
            fingerprint: fp,
            req_body: cut(REQ_BODIES[r.req_body], r.cuts[0]),
            t_read: r.start,
            t_resp_write,
            status: STATUSES[r.status],
            // Both-flavour pages keep at least one byte so they never agree.
            resp_body: cut(page, r.cuts[2].max(1)),
            tag: tag.clone(),
        };
        let b_done = t_resp_read + g_bdone;
        world
            .clients
            .push((client, t_resp_write.max(b_done) + g_cdone));
        if lb {
            continue;
        }
        let backend = BackendSide {
            id: 10_000 + id,
            tgid: 1,
            tid: r.tid,
            fingerprint: fp,
            req_body: cut(REQ_BODIES[r.req_body], r.cuts[1]),
            t_write,
            t_resp_read,
            status: STATUSES[r.status],
            resp_body: cut(RESP_BODIES[r.resp_body], r.cuts[3].max(1)),
            tag,
        };
        world.truth.insert(backend.id, id);
        world.backends.push((backend, b_done));
    }
    if matches!(strays, Strays::HealthChecks | Strays::Both) {
        for (j, c) in checks.iter().enumerate() {
            let backend = BackendSide {
                id: 50_000 + j as u64,
                tgid: 1,
                tid: c.tid,
                fingerprint: fingerprint(u64::from(c.fp)),
                req_body: Vec::new(),
                t_write: c.start,
                t_resp_read: c.start + c.len,
                status: STATUSES[c.status],
                resp_body: RESP_BODIES[c.resp_body].to_vec(),
                tag: None,
            };
            world.backends.push((backend, c.start + c.len + 1));
        }
    }
    world
}

fn world() -> impl Strategy<Value = World> {
    let strays = prop_oneof![
        Just(Strays::None),
        Just(Strays::LbGenerated),
        Just(Strays::HealthChecks),
        Just(Strays::Both)
    ];
    let modes = (any::<bool>(), proptest::bool::weighted(0.25));
    (1u32..=2, 1u8..=4, modes, strays).prop_flat_map(|(threads, fps, modes, strays)| {
        (
            proptest::collection::vec(req(threads, fps), 1..24),
            proptest::collection::vec(check(threads, fps), 0..6),
        )
            .prop_map(move |(reqs, checks)| build(reqs, checks, modes, strays))
    })
}

impl World {
    fn clients(&self) -> Vec<ClientSide> {
        self.clients.iter().map(|(c, _)| c.clone()).collect()
    }

    fn backends(&self) -> Vec<BackendSide> {
        self.backends.iter().map(|(b, _)| b.clone()).collect()
    }

    /// Whether client `id` has a true backend request.
    fn served(&self, id: u64) -> bool {
        self.truth.values().any(|&c| c == id)
    }

    /// Wrong mappings in `results`, and how many served clients were not
    /// mapped.
    fn score(&self, results: &[(u64, Mapping)]) -> (Vec<(u64, u64)>, usize) {
        let mut wrong = Vec::new();
        let mut unmapped = 0;
        for (client, m) in results {
            match m.backend() {
                Some(b) if self.truth.get(&b) != Some(client) => wrong.push((*client, b)),
                Some(_) if self.exact && !matches!(m, Mapping::Exact { .. }) => unmapped += 1,
                Some(_) => {}
                None if self.served(*client) => unmapped += 1,
                None => {}
            }
        }
        (wrong, unmapped)
    }

    /// Whether every served client must be mapped: exact mode, or distinct
    /// requests and no health check to tie with.
    fn all_must_map(&self) -> bool {
        self.exact || (self.distinct && matches!(self.strays, Strays::None | Strays::LbGenerated))
    }

    /// The lead's events, in kernel-time order (stable for equal times).
    fn events(&self) -> Vec<(u64, Event)> {
        let mut events: Vec<(u64, Event)> = Vec::new();
        for (c, done) in &self.clients {
            events.push((c.t_read, Event::Start(c.clone())));
            events.push((*done, Event::ClientDone(c.clone())));
        }
        for (b, done) in &self.backends {
            events.push((*done, Event::BackendDone(b.clone())));
        }
        events.sort_by_key(|(t, e)| (*t, e.rank()));
        events
    }
}

#[derive(Debug, Clone)]
enum Event {
    Start(ClientSide),
    BackendDone(BackendSide),
    ClientDone(ClientSide),
}

impl Event {
    /// Within one nanosecond: backends finish before the clients they
    /// answer (their last byte is read before the client's is written).
    fn rank(&self) -> u8 {
        match self {
            Event::Start(..) => 0,
            Event::BackendDone(_) => 1,
            Event::ClientDone(_) => 2,
        }
    }
}

/// Feeds one event; `heads`: starts carry the request's head (as the lead
/// gives it once parsed), else only the start time.
fn feed(w: &mut Windows, t: u64, e: Event, heads: bool, out: &mut Vec<(u64, Mapping)>) {
    let closed = match e {
        Event::Start(c) if heads => w.client_request(OpenRequest {
            id: c.id,
            tgid: c.tgid,
            tid: c.tid,
            t_read: t,
            head: Some(OpenHead {
                fingerprint: c.fingerprint,
                req_body: c.req_body,
                tag: c.tag,
            }),
        }),
        Event::Start(c) => w.client_started(c.tgid, c.tid, c.id, t),
        Event::BackendDone(b) => w.backend_done(b),
        Event::ClientDone(c) => w.client_done(c),
    };
    out.extend(closed.into_iter().flat_map(|c| c.results));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn correlate_never_maps_wrongly(world in world()) {
        let results = correlate(&world.clients(), &world.backends());
        prop_assert_eq!(results.len(), world.clients.len());
        let (wrong, unmapped) = world.score(&results);
        prop_assert!(wrong.is_empty(), "wrong mappings {:?}", wrong);
        if world.all_must_map() {
            prop_assert_eq!(unmapped, 0, "{:?}", results);
        }
    }

    #[test]
    fn windows_never_map_wrongly_and_report_each_client_once(
        world in world(),
        max_requests in prop_oneof![Just(4096usize), 2usize..10],
        timeout_ns in prop_oneof![Just(1_000_000u64), 100u64..600],
        loss_at in proptest::option::of(any::<prop::sample::Index>()),
        heads in any::<bool>(),
    ) {
        let limits = WindowLimits::try_new(max_requests, Duration::from_nanos(timeout_ns));
        let mut w = Windows::new(limits.map_err(|e| TestCaseError::fail(e.to_string()))?);
        let events = world.events();
        let loss = loss_at.map(|i| i.index(events.len()));
        let mut out = Vec::new();
        for (i, (t, e)) in events.into_iter().enumerate() {
            if Some(i) == loss {
                w.taint(1, Threads::All, Reason::EventsLost);
            }
            for closed in w.expire(t) {
                out.extend(closed.results);
            }
            feed(&mut w, t, e, heads, &mut out);
        }
        for closed in w.flush_all() {
            out.extend(closed.results);
        }
        prop_assert_eq!(w.open_windows(), 0);
        let mut ids: Vec<u64> = out.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        let want: Vec<u64> = (1..=world.clients.len() as u64).collect();
        prop_assert_eq!(ids, want, "each client exactly once");
        let (wrong, unmapped) = world.score(&out);
        prop_assert!(wrong.is_empty(), "wrong mappings {:?}", wrong);
        let clean = loss.is_none() && max_requests == 4096 && timeout_ns == 1_000_000;
        if clean && world.all_must_map() {
            prop_assert_eq!(unmapped, 0, "{:?}", out);
        }
    }
}

/// 10,000 requests on one thread, in one window (a long request spans them
/// all), few fingerprints: everything is mapped, and fast.
#[test]
fn ten_thousand_requests_in_one_window() {
    let n = 10_000u64;
    let fp = |i: u64| fingerprint(i % 50);
    let mut clients = vec![ClientSide {
        id: 0,
        tgid: 1,
        tid: 1,
        fingerprint: fingerprint(999),
        req_body: Vec::new(),
        t_read: 0,
        t_resp_write: 100 * n + 100,
        status: 200,
        resp_body: Vec::new(),
        tag: None,
    }];
    let mut backends = Vec::new();
    for i in 1..=n {
        let t = 100 * i;
        clients.push(ClientSide {
            id: i,
            fingerprint: fp(i),
            t_read: t,
            t_resp_write: t + 90,
            ..clients[0].clone()
        });
        backends.push(BackendSide {
            id: 100_000 + i,
            tgid: 1,
            tid: 1,
            fingerprint: fp(i),
            req_body: Vec::new(),
            t_write: t + 10,
            t_resp_read: t + 50,
            status: 200,
            resp_body: Vec::new(),
            tag: None,
        });
    }
    let started = Instant::now();
    let out = correlate(&clients, &backends);
    let took = started.elapsed();
    assert_eq!(
        out[0].1,
        Mapping::Ambiguous {
            candidates: vec![],
            reason: Reason::NoCandidate
        }
    );
    for (id, m) in &out[1..] {
        assert_eq!(m.backend(), Some(100_000 + id), "client {id}");
    }
    // Timing only means something optimised.
    if !cfg!(debug_assertions) {
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }
}

/// Dense ties: 300 identical requests all in flight (90,000 edges) still
/// resolve in near-linear time, all honestly ambiguous.
#[test]
fn a_dense_tie_is_ambiguous_and_fast() {
    let n = 300u64;
    let clients: Vec<ClientSide> = (0..n)
        .map(|i| ClientSide {
            id: i,
            tgid: 1,
            tid: 1,
            fingerprint: fingerprint(1),
            req_body: Vec::new(),
            t_read: i,
            t_resp_write: 10_000 + i,
            status: 200,
            resp_body: Vec::new(),
            tag: None,
        })
        .collect();
    let backends: Vec<BackendSide> = (0..n)
        .map(|i| BackendSide {
            id: 1_000 + i,
            tgid: 1,
            tid: 1,
            fingerprint: fingerprint(1),
            req_body: Vec::new(),
            t_write: 1_000 + i,
            t_resp_read: 2_000 + i,
            status: 200,
            resp_body: Vec::new(),
            tag: None,
        })
        .collect();
    let started = Instant::now();
    let out = correlate(&clients, &backends);
    let took = started.elapsed();
    for (_, m) in &out {
        assert!(
            matches!(m, Mapping::Ambiguous { candidates, reason: Reason::Tie } if candidates.len() == n as usize)
        );
    }
    if !cfg!(debug_assertions) {
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }
}
