//! The framer's rules, one test each.

use super::{conn, feed, feed_cut};
use crate::requests::http::{
    Conn, Dir, Limits, LostReason, Message, RequestHead, ResponseHead, Version,
};

const GET: &[u8] = b"GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: curl/8\r\nX-LBW: 192.0.2.7:51544:5\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

fn request(m: &Message) -> &RequestHead {
    match m {
        Message::Request(h) => h,
        other => panic!("not a request: {other:?}"),
    }
}

fn response(m: &Message) -> &ResponseHead {
    match m {
        Message::Response(h) => h,
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn a_get_and_its_response() {
    let mut c = conn();
    let out = feed(&mut c, Dir::Request, 10, GET);
    assert_eq!(out.len(), 2);
    let h = request(&out[0]);
    assert_eq!(
        (h.ts_first, h.method.as_str(), h.target.as_str()),
        (10, "GET", "/a?b=1")
    );
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.host.as_deref(), Some("shop.example"));
    assert_eq!(h.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(h.tag.as_deref(), Some("192.0.2.7:51544:5"));
    assert!(h.complete && !h.pipelined && h.body_prefix.is_empty());
    assert_eq!(
        out[1],
        Message::RequestEnd {
            ts_last: 10,
            bytes: GET.len() as u64
        }
    );
    assert_eq!(c.awaiting(), 1);

    let out = feed(&mut c, Dir::Response, 20, OK);
    let r = response(&out[0]);
    assert_eq!(
        (r.ts_first, r.status, r.body_prefix.as_slice()),
        (20, 200, &b"hello"[..])
    );
    assert_eq!(
        out[1],
        Message::ResponseEnd {
            ts_last: 20,
            bytes: OK.len() as u64
        }
    );
    assert_eq!(c.awaiting(), 0);
    assert_eq!(c.framing_lost(), None);
}

#[test]
fn a_head_may_span_fully_captured_syscalls() {
    let mut c = conn();
    let (a, b) = GET.split_at(30);
    assert!(feed(&mut c, Dir::Request, 1, a).is_empty());
    let out = feed(&mut c, Dir::Request, 2, b);
    assert_eq!(request(&out[0]).ts_first, 1);
    assert_eq!(
        out[1],
        Message::RequestEnd {
            ts_last: 2,
            bytes: GET.len() as u64
        }
    );
}

#[test]
fn a_head_cut_by_uncaptured_bytes_is_incomplete_then_lost() {
    let mut c = conn();
    let out = feed_cut(&mut c, Dir::Request, 1, GET, 45);
    assert_eq!(out.len(), 2);
    let h = request(&out[0]);
    assert!(!h.complete);
    assert_eq!((h.method.as_str(), h.target.as_str()), ("GET", "/a?b=1"));
    assert_eq!(h.host.as_deref(), Some("shop.example"));
    assert_eq!(h.user_agent, None, "cut in the middle of User-Agent");
    assert_eq!(h.fingerprint, [0; 32]);
    assert_eq!(out[1], Message::Lost(LostReason::HeadTruncated));
    assert_eq!(c.framing_lost(), Some(LostReason::HeadTruncated));
    // Nothing maps after that.
    assert!(feed(&mut c, Dir::Response, 2, OK).is_empty());
    assert!(feed(&mut c, Dir::Request, 3, GET).is_empty());
}

/// Found by the property test: a cut with a response head half read and a
/// pipelined request head half read. The response answers the earlier
/// request, so it comes out first; the incomplete request is last before
/// `Lost`.
#[test]
fn a_cut_with_both_heads_half_read_puts_the_response_first() {
    let mut c = conn();
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    assert_eq!(feed(&mut c, Dir::Request, 1, get).len(), 2);
    assert!(feed_cut(&mut c, Dir::Response, 2, &ok[..17], 17).is_empty());
    let out = feed_cut(&mut c, Dir::Request, 3, &get[..17], 16);
    assert_eq!(out.len(), 3, "{out:?}");
    match &out[0] {
        Message::Response(h) => assert_eq!((h.status, h.complete), (200, false)),
        m => panic!("the response first, not {m:?}"),
    }
    let h = request(&out[1]);
    assert_eq!(
        (h.target.as_str(), h.complete, h.pipelined),
        ("/", false, true)
    );
    assert_eq!(out[2], Message::Lost(LostReason::HeadTruncated));
}

#[test]
fn a_head_cut_before_its_request_line_ends_is_only_lost() {
    let mut c = conn();
    assert_eq!(
        feed_cut(&mut c, Dir::Request, 1, GET, 10),
        vec![Message::Lost(LostReason::HeadTruncated)]
    );
    let mut c = conn();
    assert_eq!(
        feed_cut(&mut c, Dir::Request, 1, GET, 0),
        vec![Message::Lost(LostReason::HeadTruncated)]
    );
}

#[test]
fn a_partially_captured_chunk_that_still_holds_the_head_is_fine() {
    let mut c = conn();
    let mut bytes = b"POST /p HTTP/1.1\r\nContent-Length: 1000\r\n\r\n".to_vec();
    let head_len = bytes.len();
    bytes.extend(std::iter::repeat_n(b'x', 1000));
    let out = feed_cut(&mut c, Dir::Request, 1, &bytes, head_len + 3);
    assert_eq!(
        request(&out[0]).body_prefix,
        b"xxx",
        "the prefix stops at the first uncaptured byte"
    );
    assert_eq!(
        out[1],
        Message::RequestEnd {
            ts_last: 1,
            bytes: bytes.len() as u64
        }
    );
}

#[test]
fn content_length_bodies_are_skipped_by_count() {
    let mut c = conn();
    let head = b"POST /up HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
    let out = feed(&mut c, Dir::Request, 1, head);
    assert!(out.is_empty(), "the head waits for its body prefix");
    let out = feed_cut(&mut c, Dir::Request, 2, &[b'a'; 3000], 256);
    assert_eq!(request(&out[0]).body_prefix, vec![b'a'; 64]);
    assert_eq!(out.len(), 1);
    let out = feed_cut(&mut c, Dir::Request, 3, &[b'b'; 2000], 0);
    assert_eq!(
        out,
        vec![Message::RequestEnd {
            ts_last: 3,
            bytes: head.len() as u64 + 5000
        }]
    );
    // The next request parses where the count says.
    let out = feed(&mut c, Dir::Request, 4, GET);
    assert!(request(&out[0]).pipelined);
}

#[test]
fn body_prefix_accumulates_over_syscalls_until_the_other_side_moves() {
    let mut c = conn();
    feed(
        &mut c,
        Dir::Request,
        1,
        b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nab",
    );
    assert!(feed(&mut c, Dir::Request, 2, b"cd").is_empty());
    let out = feed(&mut c, Dir::Response, 3, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(request(&out[0]).body_prefix, b"abcd");
    assert_eq!(
        out[1],
        Message::Interim {
            ts_first: 3,
            ts_last: 3,
            status: 100,
            bytes: 25
        }
    );
    let out = feed(&mut c, Dir::Request, 4, &[b'e'; 96]);
    assert_eq!(
        out,
        vec![Message::RequestEnd {
            ts_last: 4,
            bytes: 40 + 100
        }]
    );
}

#[test]
fn expect_100_continue_orders_interim_before_final() {
    let mut c = conn();
    let head = b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    assert!(feed(&mut c, Dir::Request, 1, head).is_empty());
    let out = feed(&mut c, Dir::Response, 2, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(matches!(out[0], Message::Request(_)));
    assert!(matches!(out[1], Message::Interim { status: 100, .. }));
    assert_eq!(
        c.awaiting(),
        1,
        "an interim response does not answer the request"
    );
    let out = feed(&mut c, Dir::Request, 3, b"abc");
    assert_eq!(
        out,
        vec![Message::RequestEnd {
            ts_last: 3,
            bytes: head.len() as u64 + 3
        }]
    );
    let out = feed(
        &mut c,
        Dir::Response,
        4,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(response(&out[0]).status, 201);
    assert!(matches!(out[1], Message::ResponseEnd { .. }));
}

#[test]
fn chunked_bodies_skip_uncaptured_data_but_need_every_size_line() {
    let mut c = conn();
    feed(
        &mut c,
        Dir::Request,
        1,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let mut chunk = b"400\r\n".to_vec();
    chunk.extend([b'z'; 1024]);
    chunk.extend(b"\r\n");
    let out = feed_cut(&mut c, Dir::Request, 2, &chunk[..chunk.len() - 2], 256);
    assert_eq!(
        request(&out[0]).body_prefix,
        vec![b'z'; 64],
        "the prefix is the data, not the size line"
    );
    assert!(feed(&mut c, Dir::Request, 3, b"\r\n0\r\n\r\n").len() == 1);

    let mut c = conn();
    feed(
        &mut c,
        Dir::Request,
        1,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let out = feed_cut(&mut c, Dir::Request, 2, b"3\r\nabc\r\n0\r\n\r\n", 6);
    assert_eq!(request(&out[0]).body_prefix, b"abc");
    assert_eq!(out[1], Message::Lost(LostReason::ChunkUncaptured));
}

#[test]
fn chunked_response_prefix_is_the_decoded_data() {
    let mut c = conn();
    feed(&mut c, Dir::Request, 1, GET);
    let out = feed(
        &mut c,
        Dir::Response,
        2,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
    );
    assert_eq!(response(&out[0]).body_prefix, b"hello");
    assert!(matches!(out[1], Message::ResponseEnd { bytes: 67, .. }));
}

#[test]
fn a_response_without_length_ends_at_close() {
    let mut c = conn();
    feed(&mut c, Dir::Request, 1, b"GET / HTTP/1.0\r\n\r\n");
    let out = feed(&mut c, Dir::Response, 2, b"HTTP/1.0 200 OK\r\n\r\nsome");
    assert!(out.is_empty());
    let out = feed_cut(&mut c, Dir::Response, 3, &[b'x'; 500], 10);
    assert_eq!(response(&out[0]).body_prefix, b"somexxxxxxxxxx");
    let mut out = Vec::new();
    c.close(9, &mut out);
    assert_eq!(
        out,
        vec![Message::ResponseEnd {
            ts_last: 3,
            bytes: 19 + 4 + 500
        }]
    );
    assert_eq!(c.framing_lost(), None);
}

#[test]
fn responses_without_body() {
    for (method, status) in [("HEAD", 200), ("GET", 204), ("GET", 304), ("HEAD", 404)] {
        let mut c = conn();
        feed(
            &mut c,
            Dir::Request,
            1,
            format!("{method} / HTTP/1.1\r\n\r\n").as_bytes(),
        );
        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 99\r\n\r\n");
        let out = feed(&mut c, Dir::Response, 2, resp.as_bytes());
        assert_eq!(out.len(), 2, "{method} {status}");
        assert_eq!(
            out[1],
            Message::ResponseEnd {
                ts_last: 2,
                bytes: resp.len() as u64
            }
        );
        // The next response parses right after.
        feed(&mut c, Dir::Request, 3, GET);
        assert_eq!(
            feed(&mut c, Dir::Response, 4, OK).len(),
            2,
            "{method} {status}"
        );
    }
}

#[test]
fn upgrades_and_tunnels_leave_http() {
    let mut c = conn();
    feed(
        &mut c,
        Dir::Request,
        1,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    let out = feed(
        &mut c,
        Dir::Response,
        2,
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    );
    assert_eq!(out, vec![Message::Lost(LostReason::Upgraded)]);
    let mut c = conn();
    feed(&mut c, Dir::Request, 1, b"CONNECT h:443 HTTP/1.1\r\n\r\n");
    let out = feed(&mut c, Dir::Response, 2, b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(out, vec![Message::Lost(LostReason::Upgraded)]);
}

#[test]
fn pipelined_requests_are_framed_in_order_and_marked() {
    let mut c = conn();
    let two = [GET, b"GET /b HTTP/1.1\r\n\r\n"].concat();
    let out = feed(&mut c, Dir::Request, 1, &two);
    assert_eq!(out.len(), 4);
    assert!(!request(&out[0]).pipelined);
    assert!(request(&out[2]).pipelined);
    assert_eq!(request(&out[2]).target, "/b");
    assert_eq!(c.awaiting(), 2);
    let out = feed(&mut c, Dir::Response, 2, &[OK, OK].concat());
    assert_eq!(out.len(), 4);
    assert_eq!(c.awaiting(), 0);
    // A request sent while a response is still being written is pipelined too.
    feed(&mut c, Dir::Request, 3, GET);
    feed(&mut c, Dir::Response, 4, &OK[..OK.len() - 2]);
    let out = feed(&mut c, Dir::Request, 5, GET);
    assert!(request(&out[1]).pipelined, "{out:?}");
}

#[test]
fn too_many_pipelined_requests_lose_framing() {
    let mut c = Conn::new(Limits {
        max_pipelined: 2,
        ..Limits::default()
    });
    let out = feed(&mut c, Dir::Request, 1, &GET.repeat(3));
    assert_eq!(
        out.last(),
        Some(&Message::Lost(LostReason::TooManyPipelined))
    );
    assert_eq!(out.len(), 5);
}

#[test]
fn a_response_nobody_asked_for_loses_framing() {
    let mut c = conn();
    assert_eq!(
        feed(&mut c, Dir::Response, 1, OK),
        vec![Message::Lost(LostReason::UnsolicitedResponse)]
    );
}

#[test]
fn http2_prior_knowledge_is_named() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04";
    let mut c = conn();
    assert_eq!(
        feed(&mut c, Dir::Request, 1, preface),
        vec![Message::Lost(LostReason::Http2Preface)]
    );
    let mut c = conn();
    assert_eq!(
        feed_cut(&mut c, Dir::Request, 1, preface, 12),
        vec![Message::Lost(LostReason::Http2Preface)]
    );
}

#[test]
fn leading_empty_lines_are_skipped_and_counted() {
    let mut c = conn();
    let out = feed(&mut c, Dir::Request, 1, &[b"\r\n\r\n\n", GET].concat());
    assert_eq!(
        out[1],
        Message::RequestEnd {
            ts_last: 1,
            bytes: 5 + GET.len() as u64
        }
    );
    let mut out = Vec::new();
    let mut c = conn();
    feed(&mut c, Dir::Request, 1, b"\r\n");
    c.close(2, &mut out);
    assert!(out.is_empty(), "empty lines alone are not a message");
}

#[test]
fn a_close_mid_message_loses_framing_after_the_held_head() {
    let mut c = conn();
    feed(
        &mut c,
        Dir::Request,
        1,
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab",
    );
    let mut out = Vec::new();
    c.close(2, &mut out);
    assert_eq!(request(&out[0]).body_prefix, b"ab");
    assert_eq!(out[1], Message::Lost(LostReason::ClosedMidMessage));
    let mut again = Vec::new();
    c.close(3, &mut again);
    assert!(again.is_empty());

    let mut c = conn();
    feed(
        &mut c,
        Dir::Request,
        1,
        b"GET /half HTTP/1.1\r\nHost: a\r\n",
    );
    let mut out = Vec::new();
    c.close(2, &mut out);
    assert!(!request(&out[0]).complete);
    assert_eq!(out[1], Message::Lost(LostReason::ClosedMidMessage));
}

#[test]
fn a_close_between_messages_leaves_unanswered_requests_to_the_caller() {
    let mut c = conn();
    feed(&mut c, Dir::Request, 1, GET);
    let mut out = Vec::new();
    c.close(2, &mut out);
    assert!(out.is_empty());
    assert_eq!(c.awaiting(), 1);
    assert_eq!(c.framing_lost(), None);
    assert!(
        feed(&mut c, Dir::Response, 3, OK).is_empty(),
        "nothing after close"
    );
}

#[test]
fn an_overlong_head_is_too_long_with_its_request_line() {
    let mut c = Conn::new(Limits {
        max_head: 256,
        ..Limits::default()
    });
    let big = format!("GET /x HTTP/1.1\r\nA: {}\r\n\r\n", "a".repeat(400));
    let out = feed(&mut c, Dir::Request, 1, big.as_bytes());
    assert!(!request(&out[0]).complete);
    assert_eq!(out[1], Message::Lost(LostReason::TooLong));
    // Also when it arrives a byte at a time.
    let mut c = Conn::new(Limits {
        max_head: 256,
        ..Limits::default()
    });
    let mut out = Vec::new();
    for (i, b) in big.bytes().enumerate() {
        c.feed(Dir::Request, i as u64, 1, &[b], &mut out);
    }
    assert_eq!(out.last(), Some(&Message::Lost(LostReason::TooLong)));
}

#[test]
fn captured_past_total_and_empty_syscalls_are_harmless() {
    let mut c = conn();
    let mut out = Vec::new();
    c.feed(Dir::Request, 1, 0, b"junk", &mut out);
    assert!(out.is_empty());
    let mut bytes = GET.to_vec();
    bytes.extend(b"GARBAGE AFTER TOTAL");
    c.feed(Dir::Request, 2, GET.len() as u64, &bytes, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[1],
        Message::RequestEnd {
            ts_last: 2,
            bytes: GET.len() as u64
        }
    );
}

#[test]
fn binary_garbage_is_refused_at_once() {
    let mut c = conn();
    let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    assert_eq!(
        feed(&mut c, Dir::Request, 1, hello),
        vec![Message::Lost(LostReason::Malformed(
            "not an HTTP/1.x request"
        ))]
    );
    let mut c = conn();
    feed(&mut c, Dir::Request, 1, GET);
    assert_eq!(
        feed(&mut c, Dir::Response, 2, b"SSH-2.0"),
        vec![Message::Lost(LostReason::Malformed(
            "not an HTTP/1.x response"
        ))]
    );
}

#[test]
fn a_framing_error_after_a_held_head_emits_the_head_first() {
    let mut c = conn();
    feed(
        &mut c,
        Dir::Request,
        1,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let out = feed(&mut c, Dir::Request, 2, b"zz\r\n");
    assert!(request(&out[0]).complete);
    assert_eq!(
        out[1],
        Message::Lost(LostReason::Smuggling("invalid chunk size"))
    );
}

#[test]
fn secrets_are_in_no_message() {
    let mut c = conn();
    let req = b"GET / HTTP/1.1\r\nAuthorization: Bearer TOPSECRET1\r\nCookie: s=TOPSECRET2\r\nProxy-Authorization: Basic TOPSECRET3\r\n\r\n";
    let mut out = feed(&mut c, Dir::Request, 1, req);
    out.extend(feed(
        &mut c,
        Dir::Response,
        2,
        b"HTTP/1.1 204 No\r\nSet-Cookie: s=TOPSECRET4\r\n\r\n",
    ));
    assert_eq!(out.len(), 4);
    let shown = format!("{out:?}");
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    // ... but they do tell requests apart.
    let mut other = conn();
    let req2 = String::from_utf8_lossy(req).replace("TOPSECRET2", "OTHER");
    let out2 = feed(&mut other, Dir::Request, 1, req2.as_bytes());
    assert_ne!(request(&out[0]).fingerprint, request(&out2[0]).fingerprint);
}

#[test]
fn body_prefix_limit_zero_emits_heads_at_once() {
    let mut c = Conn::new(Limits {
        body_prefix: 0,
        ..Limits::default()
    });
    let out = feed(
        &mut c,
        Dir::Request,
        1,
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
    );
    assert!(request(&out[0]).body_prefix.is_empty());
}
