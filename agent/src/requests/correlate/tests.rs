//! Unit tests of `correlate`: each edge condition, each verdict.

use super::*;

const FP_A: [u8; 32] = [0xa; 32];
const FP_B: [u8; 32] = [0xb; 32];

/// A client request on thread (1, 1) read at `t_read`, answered at
/// `t_resp_write`, with status 200 and no bodies.
fn client(id: u64, fp: [u8; 32], t_read: u64, t_resp_write: u64) -> ClientSide {
    ClientSide {
        id,
        tgid: 1,
        tid: 1,
        fingerprint: fp,
        req_body: Vec::new(),
        t_read,
        t_resp_write,
        status: 200,
        resp_body: Vec::new(),
        tag: None,
    }
}

/// The backend side that matches [`client`]'s defaults.
fn backend(id: u64, fp: [u8; 32], t_write: u64, t_resp_read: u64) -> BackendSide {
    BackendSide {
        id,
        tgid: 1,
        tid: 1,
        fingerprint: fp,
        req_body: Vec::new(),
        t_write,
        t_resp_read,
        status: 200,
        resp_body: Vec::new(),
        tag: None,
    }
}

fn mapped(backend: u64) -> Mapping {
    Mapping::Mapped { backend }
}

fn ambiguous(candidates: &[u64], reason: Reason) -> Mapping {
    Mapping::Ambiguous {
        candidates: candidates.to_vec(),
        reason,
    }
}

/// The mapping of a single client against the given backends.
fn one(c: ClientSide, backends: &[BackendSide]) -> Mapping {
    let out = correlate(&[c], backends);
    assert_eq!(out.len(), 1);
    out.into_iter()
        .next()
        .map(|(_, m)| m)
        .unwrap_or_else(|| unreachable!())
}

#[test]
fn a_lone_pair_is_mapped() {
    let out = correlate(&[client(7, FP_A, 10, 40)], &[backend(70, FP_A, 20, 30)]);
    assert_eq!(out, vec![(7, mapped(70))]);
}

#[test]
fn every_identity_condition_is_required() {
    let c = client(1, FP_A, 10, 40);
    let b = backend(2, FP_A, 20, 30);
    type Break = (&'static str, fn(&mut BackendSide));
    let breaks: [Break; 4] = [
        ("tgid", |b| b.tgid = 2),
        ("tid", |b| b.tid = 2),
        ("fingerprint", |b| b.fingerprint = FP_B),
        ("status", |b| b.status = 503),
    ];
    for (what, change) in breaks {
        let mut b = b.clone();
        change(&mut b);
        assert_eq!(
            one(c.clone(), &[b]),
            ambiguous(&[], Reason::NoCandidate),
            "{what}"
        );
    }
    assert_eq!(one(c, &[b]), mapped(2));
}

#[test]
fn time_order_is_strict_at_every_step() {
    // c.t_read < b.t_write < b.t_resp_read < c.t_resp_write, at the edges.
    let c = || client(1, FP_A, 10, 40);
    for (t_write, t_resp_read, ok) in [
        (11, 39, true),
        (10, 30, false),
        (9, 30, false),
        (20, 40, false),
        (20, 41, false),
        (20, 20, false),
        (25, 20, false),
    ] {
        let m = one(c(), &[backend(2, FP_A, t_write, t_resp_read)]);
        let want = if ok {
            mapped(2)
        } else {
            ambiguous(&[], Reason::NoCandidate)
        };
        assert_eq!(m, want, "write {t_write} read {t_resp_read}");
    }
}

#[test]
fn body_prefixes_must_agree_on_their_common_length() {
    for (c_req, b_req, c_resp, b_resp, ok) in [
        (
            &b"name=x"[..],
            &b"name=x&more"[..],
            &b"<html>"[..],
            &b"<ht"[..],
            true,
        ),
        (b"", b"anything", b"", b"anything", true),
        (b"name=x", b"name=y", b"", b"", false),
        (b"", b"", b"<html>", b"<body>", false),
    ] {
        let mut c = client(1, FP_A, 10, 40);
        c.req_body = c_req.to_vec();
        c.resp_body = c_resp.to_vec();
        let mut b = backend(2, FP_A, 20, 30);
        b.req_body = b_req.to_vec();
        b.resp_body = b_resp.to_vec();
        let want = if ok {
            mapped(2)
        } else {
            ambiguous(&[], Reason::NoCandidate)
        };
        assert_eq!(
            one(c, &[b]),
            want,
            "{c_req:?} {b_req:?} {c_resp:?} {b_resp:?}"
        );
    }
}

#[test]
fn a_client_expecting_a_tag_needs_it() {
    let tagged_c = |tag: &str| ClientSide {
        tag: Some(tag.into()),
        ..client(1, FP_A, 10, 40)
    };
    let tagged_b = |tag: &str| BackendSide {
        tag: Some(tag.into()),
        ..backend(2, FP_A, 20, 30)
    };
    assert_eq!(
        one(tagged_c("a"), &[tagged_b("a")]),
        Mapping::Exact { backend: 2 }
    );
    assert_eq!(
        one(tagged_c("a"), &[tagged_b("b")]),
        ambiguous(&[], Reason::NoCandidate)
    );
    assert_eq!(
        one(tagged_c("a"), &[backend(2, FP_A, 20, 30)]),
        ambiguous(&[], Reason::NoCandidate),
        "a health check has no tag"
    );
    assert_eq!(one(client(1, FP_A, 10, 40), &[tagged_b("a")]), mapped(2));
}

#[test]
fn tags_break_ties_between_identical_requests() {
    let c = |id: u64| ClientSide {
        tag: Some(format!("10.0.0.1:{id}")),
        ..client(id, FP_A, 10, 100)
    };
    let b = |id: u64, for_client: u64| BackendSide {
        tag: Some(format!("10.0.0.1:{for_client}")),
        ..backend(id, FP_A, 20 + id, 50 + id)
    };
    let out = correlate(&[c(1), c(2)], &[b(11, 2), b(12, 1)]);
    assert_eq!(
        out,
        vec![
            (1, Mapping::Exact { backend: 12 }),
            (2, Mapping::Exact { backend: 11 })
        ]
    );
}

#[test]
fn identical_requests_in_flight_together_tie() {
    let out = correlate(
        &[client(1, FP_A, 10, 100), client(2, FP_A, 11, 101)],
        &[backend(11, FP_A, 20, 50), backend(12, FP_A, 21, 51)],
    );
    assert_eq!(
        out,
        vec![
            (1, ambiguous(&[11, 12], Reason::Tie)),
            (2, ambiguous(&[11, 12], Reason::Tie))
        ]
    );
}

#[test]
fn identical_requests_apart_in_time_are_mapped() {
    let out = correlate(
        &[client(1, FP_A, 10, 40), client(2, FP_A, 50, 80)],
        &[backend(12, FP_A, 60, 70), backend(11, FP_A, 20, 30)],
    );
    assert_eq!(out, vec![(1, mapped(11)), (2, mapped(12))]);
}

#[test]
fn a_pair_forced_by_elimination_is_mapped() {
    // Client 1 could take either backend, client 2 only backend 12: the one
    // perfect matching forces both, though client 1 has two candidates.
    let out = correlate(
        &[client(1, FP_A, 10, 100), client(2, FP_A, 30, 60)],
        &[backend(11, FP_A, 20, 25), backend(12, FP_A, 40, 50)],
    );
    assert_eq!(out, vec![(1, mapped(11)), (2, mapped(12))]);
}

#[test]
fn a_spare_backend_makes_its_rival_ambiguous() {
    // A health check shaped like the request, inside its interval.
    let out = correlate(
        &[client(1, FP_A, 10, 100)],
        &[backend(11, FP_A, 20, 30), backend(12, FP_A, 40, 50)],
    );
    assert_eq!(out, vec![(1, ambiguous(&[11, 12], Reason::Tie))]);
}

#[test]
fn a_spare_client_makes_its_rival_ambiguous() {
    // Client 2's response was generated by the LB, but it could have been
    // served by backend 11 as well as client 1.
    let out = correlate(
        &[client(1, FP_A, 10, 100), client(2, FP_A, 15, 90)],
        &[backend(11, FP_A, 20, 30)],
    );
    assert_eq!(
        out,
        vec![
            (1, ambiguous(&[11], Reason::Tie)),
            (2, ambiguous(&[11], Reason::Tie))
        ]
    );
}

#[test]
fn an_lb_generated_response_has_no_candidate() {
    let mut lb = client(2, FP_B, 15, 90);
    lb.status = 503;
    let out = correlate(
        &[client(1, FP_A, 10, 100), lb],
        &[backend(11, FP_A, 20, 30)],
    );
    assert_eq!(
        out,
        vec![(1, mapped(11)), (2, ambiguous(&[], Reason::NoCandidate))]
    );
}

#[test]
fn the_blind_spot_is_the_documented_assumption() {
    // A client without a backend and a stray backend request shaped exactly
    // like it, inside its interval: nothing distinguishes this from a real
    // pair, so it maps. The module doc states this assumption; if this test
    // starts failing, revisit that text.
    let out = correlate(&[client(1, FP_A, 10, 100)], &[backend(99, FP_A, 20, 30)]);
    assert_eq!(out, vec![(1, mapped(99))]);
}

#[test]
fn threads_are_independent() {
    let other = |mut c: ClientSide| {
        c.tid = 2;
        c
    };
    let mut b2 = backend(12, FP_A, 21, 51);
    b2.tid = 2;
    let out = correlate(
        &[client(1, FP_A, 10, 100), other(client(2, FP_A, 11, 101))],
        &[backend(11, FP_A, 20, 50), b2],
    );
    assert_eq!(out, vec![(1, mapped(11)), (2, mapped(12))]);
}

#[test]
fn a_dense_bucket_past_the_bound_is_too_many_candidates() {
    // n identical requests all in flight at once: n² edges.
    let n = 1025u64;
    assert!(n * n > solve::MAX_BUCKET_EDGES as u64);
    let clients: Vec<_> = (0..n).map(|i| client(i, FP_A, i, 10_000 + i)).collect();
    let mut backends: Vec<_> = (0..n)
        .map(|i| backend(100_000 + i, FP_A, 5_000 + i, 6_000 + i))
        .collect();
    backends.push(backend(1, FP_B, 20, 30));
    let mut others = vec![client(999_999, FP_B, 10, 40)];
    others.extend(clients);
    let out = correlate(&others, &backends);
    assert_eq!(out[0], (999_999, mapped(1)), "other buckets are unaffected");
    assert!(
        out[1..]
            .iter()
            .all(|(_, m)| *m == ambiguous(&[], Reason::TooManyCandidates))
    );
}

#[test]
fn results_follow_the_clients_order_and_cover_each_once() {
    let out = correlate(
        &[
            client(3, FP_B, 1, 2),
            client(1, FP_A, 10, 40),
            client(2, FP_A, 50, 80),
        ],
        &[backend(11, FP_A, 20, 30)],
    );
    let ids: Vec<u64> = out.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![3, 1, 2]);
    assert_eq!(out[1].1, mapped(11));
}

#[test]
fn reasons_and_kinds_have_stable_distinct_kebab_names() {
    let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    for name in &names {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit()),
            "{name}"
        );
        assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name}");
    }
    assert_eq!(Reason::WindowTooLarge.to_string(), "window-too-large");
    assert_eq!(Reason::EventsLost.as_str(), "events-lost");
    assert_eq!(mapped(1).kind(), "mapped");
    assert_eq!(Mapping::Exact { backend: 1 }.backend(), Some(1));
    assert_eq!(ambiguous(&[1], Reason::Tie).backend(), None);
    assert_eq!(ambiguous(&[1], Reason::Tie).kind(), "ambiguous");
}

#[test]
fn one_connection_s_requests_share_a_tag_and_are_told_apart_by_time() {
    // `X-LBW %ci:%cp`: keep-alive requests of one connection, identical,
    // one after the other; a health check without the tag in between.
    let c = |id: u64, t: u64| ClientSide {
        tag: Some("192.0.2.7:51544".into()),
        ..client(id, FP_A, t, t + 30)
    };
    let b = |id: u64, t: u64| BackendSide {
        tag: Some("192.0.2.7:51544".into()),
        ..backend(id, FP_A, t + 10, t + 20)
    };
    let out = correlate(
        &[c(1, 0), c(2, 100)],
        &[b(11, 0), backend(99, FP_A, 12, 18), b(12, 100)],
    );
    assert_eq!(
        out,
        vec![
            (1, Mapping::Exact { backend: 11 }),
            (2, Mapping::Exact { backend: 12 })
        ]
    );
}
