//! The hostile corpus (`../corpus/`): each file with the outcome it must
//! give, fed whole and a byte at a time (both must agree). `.req` files are
//! a client's bytes; `.resp` files a server's, answering one `GET`.
//! The same files seed the fuzz target (`agent/fuzz/`).

use super::conn;
use crate::requests::http::{Dir, LostReason, Message};

/// What a corpus file must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Framing lost, for this reason.
    Lost(LostReason),
    /// Framed: this many final requests and responses, no loss.
    Framed { requests: usize, responses: usize },
}

use Expect::{Framed, Lost};
use LostReason::{Http2Preface, Malformed, Smuggling, TooLong, UnsolicitedResponse};

const fn ok(requests: usize) -> Expect {
    Framed {
        requests,
        responses: 0,
    }
}

macro_rules! case {
    ($file:literal, $expect:expr) => {
        (
            $file,
            include_bytes!(concat!("../corpus/", $file)).as_slice(),
            None,
            $expect,
        )
    };
    ($file:literal, captured $n:literal, $expect:expr) => {
        (
            $file,
            include_bytes!(concat!("../corpus/", $file)).as_slice(),
            Some($n),
            $expect,
        )
    };
}

type Case = (&'static str, &'static [u8], Option<usize>, Expect);

const CASES: &[Case] = &[
    case!("nul_in_field.req", Lost(Malformed("NUL byte in a head"))),
    case!(
        "nul_in_request_line.req",
        Lost(Malformed("NUL byte in a head"))
    ),
    case!("overlong_request_line.req", Lost(TooLong)),
    case!("overlong_fields.req", Lost(TooLong)),
    case!("too_many_fields.req", Lost(TooLong)),
    case!(
        "cl_te.req",
        Lost(Smuggling("Content-Length with Transfer-Encoding"))
    ),
    case!(
        "te_cl.req",
        Lost(Smuggling("Content-Length with Transfer-Encoding"))
    ),
    case!(
        "duplicate_cl_differing.req",
        Lost(Smuggling("differing Content-Length values"))
    ),
    case!(
        "duplicate_cl_list_differing.req",
        Lost(Smuggling("differing Content-Length values"))
    ),
    case!("duplicate_cl_same.req", ok(1)),
    case!("negative_cl.req", Lost(Smuggling("invalid Content-Length"))),
    case!("plus_cl.req", Lost(Smuggling("invalid Content-Length"))),
    case!("hex_cl.req", Lost(Smuggling("invalid Content-Length"))),
    case!("huge_cl.req", Lost(Smuggling("Content-Length overflows"))),
    case!("bad_chunk_size.req", Lost(Smuggling("invalid chunk size"))),
    case!(
        "negative_chunk_size.req",
        Lost(Smuggling("invalid chunk size"))
    ),
    case!(
        "chunk_size_overflow.req",
        Lost(Smuggling("chunk size overflows"))
    ),
    case!(
        "chunk_without_crlf.req",
        Lost(Smuggling("chunk data not followed by CRLF"))
    ),
    case!(
        "te_not_chunked_last.req",
        Lost(Smuggling("chunked is not the last transfer coding"))
    ),
    case!(
        "te_unknown.req",
        Lost(Smuggling(
            "request Transfer-Encoding whose last coding is not chunked"
        ))
    ),
    case!(
        "te_http10.req",
        Lost(Smuggling("Transfer-Encoding in HTTP/1.0"))
    ),
    case!(
        "te_space_before_colon.req",
        Lost(Malformed("whitespace before a field's colon"))
    ),
    case!(
        "te_vertical_tab.req",
        Lost(Malformed("control character in a field value"))
    ),
    case!(
        "invalid_utf8_request_line.req",
        Lost(Malformed("request line is not UTF-8"))
    ),
    case!("utf8_request_line.req", ok(1)),
    case!("obs_text_value.req", ok(1)),
    case!("http2_preface.req", Lost(Http2Preface)),
    case!("bare_lf.req", ok(1)),
    case!("bare_cr.req", Lost(Malformed("bare CR in a head"))),
    case!("bare_cr_in_value.req", Lost(Malformed("bare CR in a head"))),
    case!(
        "obs_fold.req",
        Lost(Malformed("obs-fold (a line starting with whitespace)"))
    ),
    case!("two_hosts.req", Lost(Malformed("more than one Host field"))),
    case!("http_1_2.req", Lost(Malformed("unsupported HTTP version"))),
    case!(
        "lowercase_version.req",
        Lost(Malformed("unsupported HTTP version"))
    ),
    case!(
        "http_0_9.req",
        Lost(Malformed("request line without three parts"))
    ),
    case!(
        "double_space.req",
        Lost(Malformed("invalid request-target"))
    ),
    case!(
        "tls_client_hello.req",
        Lost(Malformed("not an HTTP/1.x request"))
    ),
    case!("absolute_form.req", ok(1)),
    case!("chunked_with_trailers.req", ok(2)),
    case!("long_cookie_truncated.req", captured 256, Lost(LostReason::HeadTruncated)),
    case!(
        "resp_bad_status.resp",
        Lost(Malformed("invalid status code"))
    ),
    case!(
        "resp_cl_te.resp",
        Lost(Smuggling("Content-Length with Transfer-Encoding"))
    ),
    case!("resp_bad_chunk.resp", Lost(Smuggling("invalid chunk size"))),
    case!("resp_nul.resp", Lost(Malformed("NUL byte in a head"))),
    case!(
        "resp_not_http.resp",
        Lost(Malformed("not an HTTP/1.x response"))
    ),
    case!("resp_two_final.resp", Lost(UnsolicitedResponse)),
    case!(
        "resp_interim_then_final.resp",
        Framed {
            requests: 1,
            responses: 1
        }
    ),
];

/// Feeds a case in syscalls of `step` bytes (all captured unless the case
/// says), then closes; returns the messages and the loss.
fn run(
    name: &str,
    bytes: &[u8],
    captured: Option<usize>,
    step: usize,
) -> (Vec<Message>, Option<LostReason>) {
    let mut c = conn();
    let mut out = Vec::new();
    let dir = if name.ends_with(".resp") {
        c.feed(Dir::Request, 1, 18, b"GET / HTTP/1.1\r\n\r\n", &mut out);
        Dir::Response
    } else {
        Dir::Request
    };
    match captured {
        Some(n) => c.feed(dir, 2, bytes.len() as u64, &bytes[..n], &mut out),
        None => {
            for chunk in bytes.chunks(step) {
                c.feed(dir, 2, chunk.len() as u64, chunk, &mut out);
            }
        }
    }
    c.close(3, &mut out);
    (out, c.framing_lost())
}

#[test]
fn every_corpus_file_has_its_outcome() {
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/requests/http/corpus"
    ));
    if let Ok(files) = files {
        // In the agent crate: no corpus file may be left out of the table.
        let count = files.filter(|f| f.is_ok()).count();
        assert_eq!(
            count,
            CASES.len(),
            "every file in corpus/ needs a row in CASES"
        );
    }
    for &(name, bytes, captured, expect) in CASES {
        let (out, lost) = run(name, bytes, captured, bytes.len().max(1));
        let got = match lost {
            Some(reason) => {
                assert_eq!(
                    out.last(),
                    Some(&Message::Lost(reason)),
                    "{name}: Lost is the last message"
                );
                Lost(reason)
            }
            None => Framed {
                requests: out
                    .iter()
                    .filter(|m| matches!(m, Message::Request(_)))
                    .count(),
                responses: out
                    .iter()
                    .filter(|m| matches!(m, Message::Response(_)))
                    .count(),
            },
        };
        assert_eq!(got, expect, "{name}: {out:?}");
        if captured.is_none() {
            assert_eq!(
                run(name, bytes, None, 1),
                (out, lost),
                "{name}: a byte at a time"
            );
        }
    }
}

#[test]
fn the_truncated_cookie_request_keeps_its_request_line_and_not_its_cookie() {
    let (_, bytes, captured, _) = CASES
        .iter()
        .find(|c| c.0 == "long_cookie_truncated.req")
        .copied()
        .expect("the case exists");
    let (out, _) = run("long_cookie_truncated.req", bytes, captured, 0);
    let Message::Request(h) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(!h.complete);
    assert_eq!(
        (h.target.as_str(), h.host.as_deref()),
        ("/account", Some("shop.example"))
    );
    assert!(!format!("{out:?}").contains("xxxx"));
}
