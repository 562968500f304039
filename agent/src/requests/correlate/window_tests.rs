//! Unit tests of the per-thread windows.

use std::time::Duration;

use super::*;

const FP: [u8; 32] = [0xa; 32];

fn client(tid: u32, id: u64, t_read: u64, t_resp_write: u64) -> ClientSide {
    ClientSide {
        id,
        tgid: 1,
        tid,
        fingerprint: FP,
        req_body: Vec::new(),
        t_read,
        t_resp_write,
        status: 200,
        resp_body: Vec::new(),
        tag: None,
    }
}

fn backend(tid: u32, id: u64, t_write: u64, t_resp_read: u64) -> BackendSide {
    BackendSide {
        id,
        tgid: 1,
        tid,
        fingerprint: FP,
        req_body: Vec::new(),
        t_write,
        t_resp_read,
        status: 200,
        resp_body: Vec::new(),
        tag: None,
    }
}

fn ambiguous(candidates: &[u64], reason: Reason) -> Mapping {
    Mapping::Ambiguous {
        candidates: candidates.to_vec(),
        reason,
    }
}

fn limits(max_requests: usize, timeout_ns: u64) -> WindowLimits {
    WindowLimits::try_new(max_requests, Duration::from_nanos(timeout_ns))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Results of `closed`, which must be one thread's.
fn results(closed: Option<Closed>) -> Vec<(u64, Mapping)> {
    closed.map(|c| c.results).unwrap_or_default()
}

#[test]
fn a_window_closes_when_its_thread_is_idle() {
    let mut w = Windows::default();
    assert_eq!(w.client_started(1, 1, 1, 10), None);
    assert_eq!(w.client_started(1, 1, 2, 50), None);
    assert_eq!(w.backend_done(backend(1, 11, 20, 30)), None);
    assert_eq!(
        w.client_done(client(1, 1, 10, 40)),
        None,
        "client 2 in flight"
    );
    assert_eq!(w.backend_done(backend(1, 12, 60, 70)), None);
    let closed = w.client_done(client(1, 2, 50, 80));
    assert_eq!(
        closed,
        Some(Closed {
            tgid: 1,
            tid: 1,
            results: vec![
                (1, Mapping::Mapped { backend: 11 }),
                (2, Mapping::Mapped { backend: 12 })
            ],
        })
    );
    assert_eq!(w.open_windows(), 0);
    assert_eq!(w.counters().windows_closed, 1);
}

#[test]
fn a_backend_outside_any_window_is_counted_and_dropped() {
    let mut w = Windows::default();
    assert_eq!(w.backend_done(backend(1, 99, 5, 8)), None);
    assert_eq!(w.counters().unmatched_backends, 1);
    w.client_started(1, 1, 1, 10);
    let out = results(w.client_done(client(1, 1, 10, 40)));
    assert_eq!(out, vec![(1, ambiguous(&[], Reason::NoCandidate))]);
}

#[test]
fn threads_have_their_own_windows() {
    let mut w = Windows::default();
    w.client_started(1, 1, 1, 10);
    w.client_started(1, 2, 2, 11);
    assert_eq!(w.open_windows(), 2);
    w.backend_done(backend(2, 12, 21, 31));
    w.backend_done(backend(1, 11, 20, 30));
    let two = results(w.client_done(client(2, 2, 11, 41)));
    assert_eq!(two, vec![(2, Mapping::Mapped { backend: 12 })]);
    let one = results(w.client_done(client(1, 1, 10, 40)));
    assert_eq!(one, vec![(1, Mapping::Mapped { backend: 11 })]);
}

#[test]
fn a_taint_makes_its_window_ambiguous_and_keeps_candidates() {
    let mut w = Windows::default();
    w.client_started(1, 1, 1, 10);
    w.client_started(1, 2, 2, 10);
    w.taint(1, Threads::One(1), Reason::Pipelined);
    w.taint(1, Threads::One(1), Reason::FramingLost);
    w.taint(2, Threads::All, Reason::FramingLost);
    w.backend_done(backend(1, 11, 20, 30));
    w.backend_done(backend(2, 12, 20, 30));
    let one = results(w.client_done(client(1, 1, 10, 40)));
    assert_eq!(
        one,
        vec![(1, ambiguous(&[11], Reason::Pipelined))],
        "first taint wins"
    );
    let two = results(w.client_done(client(2, 2, 10, 40)));
    assert_eq!(two, vec![(2, Mapping::Mapped { backend: 12 })]);
    // The next window on thread 1 is clean again.
    w.client_started(1, 1, 3, 50);
    w.backend_done(backend(1, 13, 60, 70));
    let three = results(w.client_done(client(1, 3, 50, 80)));
    assert_eq!(three, vec![(3, Mapping::Mapped { backend: 13 })]);
}

#[test]
fn lost_events_taint_windows_opening_within_one_timeout() {
    let mut w = Windows::new(limits(4096, 1_000));
    w.client_started(1, 1, 1, 100);
    w.taint(1, Threads::All, Reason::EventsLost);
    w.backend_done(backend(1, 11, 110, 120));
    let first = results(w.client_done(client(1, 1, 100, 130)));
    assert_eq!(first, vec![(1, ambiguous(&[11], Reason::EventsLost))]);
    // Another thread, opening 900 ns after the loss: tainted.
    w.client_started(1, 2, 2, 1_000);
    w.backend_done(backend(2, 12, 1_010, 1_020));
    let second = results(w.client_done(client(2, 2, 1_000, 1_030)));
    assert_eq!(second, vec![(2, ambiguous(&[12], Reason::EventsLost))]);
    // Past one timeout: clean.
    w.client_started(1, 2, 3, 1_200);
    w.backend_done(backend(2, 13, 1_210, 1_220));
    let third = results(w.client_done(client(2, 3, 1_200, 1_230)));
    assert_eq!(third, vec![(3, Mapping::Mapped { backend: 13 })]);
}

#[test]
fn other_taints_do_not_outlive_the_open_windows() {
    let mut w = Windows::default();
    w.taint(1, Threads::All, Reason::Pipelined);
    w.client_started(1, 1, 1, 10);
    w.backend_done(backend(1, 11, 20, 30));
    let out = results(w.client_done(client(1, 1, 10, 40)));
    assert_eq!(out, vec![(1, Mapping::Mapped { backend: 11 })]);
}

#[test]
fn a_window_past_its_bound_reports_early_and_stays_tainted() {
    let mut w = Windows::new(limits(3, 1_000_000));
    w.client_started(1, 1, 1, 10);
    w.client_started(1, 1, 2, 11);
    w.backend_done(backend(1, 11, 20, 30));
    assert_eq!(
        w.client_done(client(1, 1, 10, 40)),
        None,
        "size 3: in bound"
    );
    let spilled = results(w.backend_done(backend(1, 12, 21, 35)));
    assert_eq!(
        spilled,
        vec![(1, ambiguous(&[11, 12], Reason::WindowTooLarge))]
    );
    assert_eq!(w.counters().windows_too_large, 1);
    let rest = results(w.client_done(client(1, 2, 11, 50)));
    assert_eq!(rest, vec![(2, ambiguous(&[], Reason::WindowTooLarge))]);
    assert_eq!(w.open_windows(), 0);
}

#[test]
fn too_many_in_flight_are_given_up_and_reported_when_done() {
    let mut w = Windows::new(limits(2, 1_000_000));
    w.client_started(1, 1, 1, 10);
    w.client_started(1, 1, 2, 11);
    assert_eq!(w.client_started(1, 1, 3, 12), None);
    assert_eq!(w.open_windows(), 0, "given up: nothing in flight");
    assert_eq!(w.counters().given_up, 3);
    for id in 1..=3 {
        let out = results(w.client_done(client(1, id, 9 + id, 40)));
        assert_eq!(out, vec![(id, ambiguous(&[], Reason::WindowTooLarge))]);
    }
    // Reported once: a repeated done is unknown now.
    let again = results(w.client_done(client(1, 1, 10, 40)));
    assert_eq!(again, vec![(1, ambiguous(&[], Reason::StartUnseen))]);
}

#[test]
fn a_request_in_flight_past_the_timeout_is_given_up() {
    let mut w = Windows::new(limits(4096, 1_000));
    w.client_started(1, 1, 1, 0);
    w.client_started(1, 1, 2, 500);
    w.backend_done(backend(1, 12, 510, 520));
    assert_eq!(w.client_done(client(1, 2, 500, 530)), None);
    assert_eq!(w.expire(1_000), vec![], "not yet past the timeout");
    let closed = w.expire(1_001);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0].results,
        vec![(2, ambiguous(&[12], Reason::Timeout))]
    );
    assert_eq!(w.counters().given_up, 1);
    let late = results(w.client_done(client(1, 1, 0, 5_000)));
    assert_eq!(late, vec![(1, ambiguous(&[], Reason::Timeout))]);
}

#[test]
fn flush_all_reports_everything_unfinished() {
    let mut w = Windows::default();
    w.client_started(1, 1, 1, 10);
    w.client_started(1, 1, 2, 11);
    w.backend_done(backend(1, 11, 20, 30));
    w.client_done(client(1, 1, 10, 40));
    let out = w.flush_all();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].results,
        vec![
            (2, ambiguous(&[], Reason::Unfinished)),
            (1, ambiguous(&[11], Reason::Unfinished))
        ]
    );
    assert_eq!(w.open_windows(), 0);
}

#[test]
fn a_done_request_whose_start_was_missed() {
    let mut w = Windows::default();
    let alone = results(w.client_done(client(1, 5, 10, 40)));
    assert_eq!(alone, vec![(5, ambiguous(&[], Reason::StartUnseen))]);
    // With a window open on its thread, it joins it.
    w.client_started(1, 1, 1, 5);
    w.backend_done(backend(1, 16, 20, 30));
    assert_eq!(w.client_done(client(1, 6, 10, 40)), None);
    w.backend_done(backend(1, 11, 60, 70));
    let out = results(w.client_done(client(1, 1, 5, 80)));
    assert_eq!(
        out,
        vec![
            (6, Mapping::Mapped { backend: 16 }),
            (1, Mapping::Mapped { backend: 11 })
        ]
    );
}

#[test]
fn limits_are_validated() {
    let err = |m, t| WindowLimits::try_new(m, t).map(|_| ()).unwrap_err();
    assert_eq!(err(0, Duration::from_secs(60)), LimitsError::NoRequests);
    assert_eq!(err(1, Duration::ZERO), LimitsError::NoTimeout);
    assert!(matches!(
        err(1, Duration::MAX),
        LimitsError::TimeoutTooLong(_)
    ));
    assert!(err(0, Duration::from_secs(1)).to_string().contains("4096"));
    let ok = limits(7, 9);
    assert_eq!((ok.max_requests(), ok.timeout_ns()), (7, 9));
    let d = WindowLimits::default();
    assert_eq!((d.max_requests(), d.timeout_ns()), (4096, 60_000_000_000));
}

#[test]
fn forgotten_ids_are_bounded() {
    let mut w = Windows::new(limits(1, 1_000_000));
    // Each start alone fits; two in flight exceed the bound of 1.
    for id in 0..10 {
        w.client_started(1, 1, id, id);
    }
    assert!(w.forgotten_len() <= 2);
}

#[test]
fn a_request_cut_short_does_not_move_the_clock() {
    // The lead reports an exchange cut short with `u64::MAX` as its
    // response time; a loss after it must not taint windows forever.
    let mut w = Windows::new(limits(4096, 1_000));
    w.client_started(1, 1, 1, 100);
    w.client_done(client(1, 1, 100, u64::MAX));
    w.taint(1, Threads::All, Reason::EventsLost);
    w.client_started(1, 1, 2, 5_000);
    w.backend_done(backend(1, 12, 5_010, 5_020));
    let out = results(w.client_done(client(1, 2, 5_000, 5_030)));
    assert_eq!(out, vec![(2, Mapping::Mapped { backend: 12 })]);
}

#[test]
fn any_reason_given_as_a_taint_is_the_one_reported() {
    for reason in Reason::ALL {
        let mut w = Windows::default();
        w.client_started(1, 1, 1, 10);
        w.taint(1, Threads::One(1), reason);
        w.backend_done(backend(1, 11, 20, 30));
        let out = results(w.client_done(client(1, 1, 10, 40)));
        assert_eq!(out, vec![(1, ambiguous(&[11], reason))], "{reason}");
    }
}

fn open(tid: u32, id: u64, t_read: u64, fingerprint: [u8; 32]) -> OpenRequest {
    OpenRequest {
        id,
        tgid: 1,
        tid,
        t_read,
        head: Some(OpenHead {
            fingerprint,
            req_body: Vec::new(),
            tag: None,
        }),
    }
}

fn fp(n: u64) -> [u8; 32] {
    let mut fp = [0u8; 32];
    fp[..8].copy_from_slice(&n.to_le_bytes());
    fp
}

/// A thread that always has a request in flight (each starts before the
/// previous one is answered) never closes its window; with heads known,
/// what no request in flight can join is decided early, so a bound of 64
/// is never reached over 1 000 requests and every one of them maps.
#[test]
fn a_never_idle_thread_is_decided_early_and_maps_everything() {
    let mut w = Windows::new(limits(64, 1_000_000_000));
    let mut out = Vec::new();
    let n = 1_000u64;
    for i in 0..n {
        let t = 100 * i;
        let id = i + 1;
        out.extend(results(w.client_request(open(1, id, t, fp(i)))));
        if i > 0 {
            // The previous request's backend, then its client, finish
            // after this one started.
            let prev = i;
            let mut b = backend(1, 10_000 + prev, t - 90, t + 10);
            b.fingerprint = fp(prev - 1);
            out.extend(results(w.backend_done(b)));
            let mut c = client(1, prev, t - 100, t + 20);
            c.fingerprint = fp(prev - 1);
            out.extend(results(w.client_done(c)));
        }
        assert!(w.open_windows() <= 1);
    }
    assert!(
        out.len() as u64 >= n - 2 * EARLY_AT as u64,
        "decided while busy: {}",
        out.len()
    );
    for (id, m) in &out {
        assert_eq!(
            *m,
            Mapping::Mapped {
                backend: 10_000 + id
            },
            "client {id}"
        );
    }
    assert_eq!(w.counters().windows_too_large, 0);
    // The stop reports the rest (the last request is still in flight).
    for c in w.flush_all() {
        out.extend(c.results);
    }
    assert_eq!(out.len() as u64, n);
}

/// A done request whose backend an identical request in flight may still
/// claim waits: decided early it would be mapped, but the request in
/// flight may turn out to be a candidate of that backend too.
#[test]
fn a_request_in_flight_that_may_claim_a_backend_holds_its_component() {
    let mut w = Windows::default();
    for id in 1..=EARLY_AT as u64 + 1 {
        let t = id * 1_000;
        assert_eq!(w.client_request(open(1, id, t, fp(id))), None);
    }
    // The long one: same fingerprint as request 1, started before its
    // backend was written.
    assert_eq!(w.client_request(open(1, 99, 1_500, fp(1))), None);
    let mut decided = Vec::new();
    for id in 1..=EARLY_AT as u64 + 1 {
        let t = id * 1_000;
        let mut b = backend(1, 100 + id, t + 600, t + 700);
        b.fingerprint = fp(id);
        decided.extend(results(w.backend_done(b)));
        let mut c = client(1, id, t, 100_000 + t);
        c.fingerprint = fp(id);
        decided.extend(results(w.client_done(c)));
    }
    assert!(!decided.is_empty(), "the other requests are decided early");
    assert!(
        decided.iter().all(|(id, _)| *id != 1),
        "request 1 waits for request 99: {decided:?}"
    );
    let mut c = client(1, 99, 1_500, 200_000);
    c.fingerprint = fp(1);
    let rest = results(w.client_done(c));
    // Both could have used backend 101: neither is mapped. Request 17
    // came after the try at 16 done requests.
    assert_eq!(
        rest,
        vec![
            (1, ambiguous(&[101], Reason::Tie)),
            (17, Mapping::Mapped { backend: 117 }),
            (99, ambiguous(&[101], Reason::Tie))
        ]
    );
}

/// A request whose head is not parsed yet may be any request: every
/// backend written after its start waits with it.
/// Request `id` at `id` µs, with its own fingerprint, served by backend
/// `100 + id` within 30 ns: what the windows decided meanwhile.
fn quick_request(w: &mut Windows, id: u64) -> Vec<(u64, Mapping)> {
    let t = id * 1_000;
    let mut decided = results(w.client_request(open(1, id, t, fp(id))));
    let mut b = backend(1, 100 + id, t + 10, t + 20);
    b.fingerprint = fp(id);
    decided.extend(results(w.backend_done(b)));
    let mut c = client(1, id, t, t + 30);
    c.fingerprint = fp(id);
    decided.extend(results(w.client_done(c)));
    decided
}

#[test]
fn a_request_without_a_head_holds_every_backend_after_its_start() {
    let mut w = Windows::default();
    assert_eq!(w.client_started(1, 1, 500, 5), None);
    let mut decided = Vec::new();
    for id in 1..=2 * EARLY_AT as u64 {
        decided.extend(quick_request(&mut w, id));
    }
    assert_eq!(decided, Vec::new());
    // Its head comes: it is a different request, so the rest is final,
    // and decided at the next try (the done requests have doubled).
    decided.extend(results(w.client_request(open(1, 500, 5, fp(9_999)))));
    for id in 2 * EARLY_AT as u64 + 1..=4 * EARLY_AT as u64 {
        decided.extend(quick_request(&mut w, id));
    }
    assert_eq!(decided.len(), 4 * EARLY_AT, "{decided:?}");
    assert!(
        decided
            .iter()
            .all(|(id, m)| *m == Mapping::Mapped { backend: 100 + id })
    );
    assert_eq!(w.open_windows(), 1, "request 500 is still in flight");
}

#[test]
fn a_withdrawn_relay_pair_leaves_the_rest_of_the_window_as_it_was() {
    let mut w = Windows::default();
    // 1 and 2 are identical; 2 and its backend 12 were a TCP relay.
    w.client_started(1, 1, 1, 10);
    w.client_started(1, 1, 2, 15);
    w.backend_done(backend(1, 11, 20, 30));
    w.backend_done(backend(1, 12, 22, 32));
    w.withdraw_backend(1, 1, 12);
    assert_eq!(w.withdraw_client(1, 1, 3), None, "not in the window");
    assert_eq!(w.withdraw_client(1, 1, 2), None, "1 still in flight");
    let closed = w.client_done(client(1, 1, 10, 40));
    assert_eq!(results(closed), vec![(1, Mapping::Mapped { backend: 11 })]);
    assert_eq!(w.open_windows(), 0);
    // Withdrawing the last request in flight closes its window.
    w.client_started(1, 1, 5, 100);
    w.client_started(1, 1, 6, 101);
    w.client_done(client(1, 5, 100, 120));
    let closed = w.withdraw_client(1, 1, 6);
    assert_eq!(
        results(closed),
        vec![(5, ambiguous(&[], Reason::NoCandidate))]
    );
    assert_eq!(w.open_windows(), 0);
}
