//! Property tests: (1) any bytes in any syscall shapes never panic, keep
//! the memory bound and the message grammar; (2) generated valid exchanges,
//! split at random syscall boundaries with full capture, give exactly the
//! generated messages, byte counts and times; (3) a request as HAProxy and
//! as nginx would forward it has the client's fingerprint, and a changed
//! path, method, field value or body prefix tells them apart.

use proptest::prelude::*;

use crate::requests::http::{Conn, DEFAULT_EXCLUDED, Dir, Limits, Message, RequestHead, Version};

// ---------------------------------------------------------------- (1)

/// Pieces that reach deep states more often than random bytes do.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        Just(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        Just(b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
        Just(b"POST /p HTTP/1.1\r\nContent-Length: 40\r\n\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
        Just(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
        Just(b"HTTP/1.0 200 OK\r\n\r\n".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"0\r\nT: 1\r\n\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        // Long lines, to press on the head limit.
        prop::collection::vec(b'a'..=b'z', 200..3000).prop_map(|mut l| {
            l.extend(b"\r\n");
            l
        }),
        prop::collection::vec(
            prop::sample::select(b"GET /HTP1.\r\n: 0a;".to_vec()),
            0..400
        ),
    ]
}

#[derive(Debug, Clone)]
struct Op {
    response: bool,
    bytes: Vec<u8>,
    /// Uncaptured bytes after the captured ones.
    extra: u16,
    /// Captured bytes kept (of `bytes`), as a share: 255 keeps all.
    keep: u8,
}

fn op() -> impl Strategy<Value = Op> {
    (
        any::<bool>(),
        piece(),
        prop_oneof![3 => Just(0u16), 1 => any::<u16>()],
        prop_oneof![3 => Just(255u8), 1 => any::<u8>()],
    )
        .prop_map(|(response, bytes, extra, keep)| Op {
            response,
            bytes,
            extra,
            keep,
        })
}

/// The heap bound of a `Conn` with these limits: per direction a head
/// buffer or a chunk line (each at most `max_head + 1` bytes, twice that in
/// capacity), one held head (strings from one head, a prefix of at most
/// `body_prefix` bytes, doubled for capacity), plus the queue.
fn bound(l: &Limits) -> usize {
    2 * (2 * (l.max_head + 1) + l.max_head + 2 * l.body_prefix) + 2 * 2 * l.max_pipelined * 2
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_input_never_panics_and_stays_bounded(ops in prop::collection::vec(op(), 0..40), close in any::<bool>()) {
        let limits = Limits { max_head: 300, max_pipelined: 4, ..Limits::default() };
        let max = bound(&limits);
        let mut c = Conn::new(limits);
        let mut out = Vec::new();
        for (ts, op) in ops.iter().enumerate() {
            let dir = if op.response { Dir::Response } else { Dir::Request };
            let captured = &op.bytes[..op.bytes.len() * usize::from(op.keep) / 255];
            let total = captured.len() as u64 + u64::from(op.extra);
            c.feed(dir, ts as u64, total, captured, &mut out);
            prop_assert!(c.heap_bytes() <= max, "{} > {max}", c.heap_bytes());
        }
        if close {
            c.close(u64::MAX, &mut out);
        }
        grammar(&out, c.framing_lost().is_some())?;
    }
}

/// Per direction, heads and ends alternate; `Lost` comes once, last.
fn grammar(out: &[Message], lost: bool) -> Result<(), TestCaseError> {
    let (mut req_open, mut resp_open) = (false, false);
    for (i, m) in out.iter().enumerate() {
        match m {
            Message::Request(h) => {
                prop_assert!(!req_open, "two request heads without an end: {out:?}");
                req_open = true;
                if !h.complete {
                    prop_assert!(matches!(out.get(i + 1), Some(Message::Lost(_))), "{out:?}");
                }
            }
            Message::RequestEnd { .. } => {
                prop_assert!(req_open, "an end without a head: {out:?}");
                req_open = false;
            }
            Message::Response(_) => {
                prop_assert!(!resp_open, "{out:?}");
                resp_open = true;
            }
            Message::ResponseEnd { .. } => {
                prop_assert!(resp_open, "{out:?}");
                resp_open = false;
            }
            Message::Interim { status, .. } => prop_assert!((100..200).contains(status)),
            Message::Lost(_) => prop_assert_eq!(i + 1, out.len(), "Lost is last: {:?}", out),
        }
    }
    prop_assert_eq!(lost, matches!(out.last(), Some(Message::Lost(_))));
    Ok(())
}

// ---------------------------------------------------------------- (2)

#[derive(Debug, Clone)]
enum BodyGen {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

impl BodyGen {
    fn data(&self) -> Vec<u8> {
        match self {
            BodyGen::None => Vec::new(),
            BodyGen::Length(b) => b.clone(),
            BodyGen::Chunked(cs) => cs.concat(),
        }
    }

    fn framing_field(&self) -> String {
        match self {
            BodyGen::None => String::new(),
            BodyGen::Length(b) => format!("Content-Length: {}\r\n", b.len()),
            BodyGen::Chunked(_) => "Transfer-Encoding: chunked\r\n".into(),
        }
    }

    fn wire(&self) -> Vec<u8> {
        match self {
            BodyGen::None => Vec::new(),
            BodyGen::Length(b) => b.clone(),
            BodyGen::Chunked(cs) => {
                let mut w = Vec::new();
                for c in cs {
                    w.extend(format!("{:x}\r\n", c.len()).bytes());
                    w.extend(c);
                    w.extend(b"\r\n");
                }
                w.extend(b"0\r\n\r\n");
                w
            }
        }
    }
}

fn body() -> impl Strategy<Value = BodyGen> {
    let bytes = || prop::collection::vec(any::<u8>(), 1..150);
    prop_oneof![
        Just(BodyGen::None),
        bytes().prop_map(BodyGen::Length),
        prop::collection::vec(bytes(), 1..4).prop_map(BodyGen::Chunked),
    ]
}

#[derive(Debug, Clone)]
struct ReqGen {
    method: &'static str,
    target: String,
    host: Option<String>,
    fields: Vec<(&'static str, String)>,
    body: BodyGen,
}

impl ReqGen {
    fn wire(&self) -> Vec<u8> {
        let mut w = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        if let Some(h) = &self.host {
            w.extend(format!("Host: {h}\r\n").bytes());
        }
        for (n, v) in &self.fields {
            w.extend(format!("{n}: {v}\r\n").bytes());
        }
        w.extend(self.body.framing_field().bytes());
        w.extend(b"\r\n");
        w.extend(self.body.wire());
        w
    }

    fn field(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

fn value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9./:=;-]{0,16}"
}

fn request() -> impl Strategy<Value = ReqGen> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
        "/[a-z0-9/._-]{0,20}(\\?[a-z0-9=&]{0,10})?",
        prop::option::of(value()),
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "Accept",
                    "User-Agent",
                    "X-LBW",
                    "Cookie",
                    "X-Trace",
                    "Accept",
                ]),
                value(),
            ),
            0..5,
        ),
        body(),
    )
        .prop_map(|(method, target, host, fields, body)| ReqGen {
            method,
            target,
            host,
            fields,
            body,
        })
}

#[derive(Debug, Clone)]
struct RespGen {
    interim: bool,
    status: u16,
    body: BodyGen,
}

fn response() -> impl Strategy<Value = RespGen> {
    (
        any::<bool>(),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500, 503]),
        body(),
    )
        .prop_map(|(interim, status, body)| RespGen {
            interim,
            status,
            body,
        })
}

/// The response's wire bytes and the body data a `HEAD`/204/304-aware
/// framer must report (none for those).
fn response_wire(
    r: &RespGen,
    head_request: bool,
    until_close: bool,
) -> (Vec<u8>, Option<usize>, Vec<u8>) {
    let mut w = Vec::new();
    let mut interim_len = None;
    if r.interim {
        w.extend(b"HTTP/1.1 100 Continue\r\n\r\n");
        interim_len = Some(w.len());
    }
    let no_body = head_request || r.status == 204 || r.status == 304;
    w.extend(format!("HTTP/1.1 {} X\r\n", r.status).bytes());
    if until_close && !no_body {
        w.extend(b"\r\n");
        w.extend(r.body.data());
        return (w, interim_len, r.body.data());
    }
    match (&r.body, no_body) {
        // A HEAD response announces the length it would have had.
        (BodyGen::Length(b), true) => {
            w.extend(format!("Content-Length: {}\r\n\r\n", b.len()).bytes())
        }
        (_, true) => w.extend(b"\r\n"),
        (b, false) => {
            let b = match b {
                BodyGen::None => &BodyGen::Length(Vec::new()),
                b => b,
            };
            w.extend(b.framing_field().bytes());
            w.extend(b"\r\n");
            w.extend(b.wire());
        }
    }
    let data = if no_body { Vec::new() } else { r.body.data() };
    (w, interim_len, data)
}

/// Splits `stream` into syscalls of the sizes in `sizes` (cycled), each
/// taking the next `ts`; returns (chunk, ts) and the ts of every byte.
fn split<'a>(stream: &'a [u8], sizes: &[usize], ts: &mut u64) -> (Vec<(&'a [u8], u64)>, Vec<u64>) {
    let mut chunks = Vec::new();
    let mut at = Vec::with_capacity(stream.len());
    let mut rest = stream;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (c, r) = rest.split_at(n.min(rest.len()));
        *ts += 1;
        chunks.push((c, *ts));
        at.extend(std::iter::repeat_n(*ts, c.len()));
        rest = r;
    }
    (chunks, at)
}

fn fingerprint_alone(wire: &[u8]) -> [u8; 32] {
    let mut c = Conn::new(Limits::default());
    let mut out = Vec::new();
    c.feed(Dir::Request, 0, wire.len() as u64, wire, &mut out);
    match out.first() {
        Some(Message::Request(h)) => h.fingerprint,
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn valid_exchanges_give_exactly_their_messages(
        batches in prop::collection::vec(prop::collection::vec((request(), response()), 1..4), 1..4),
        sizes in prop::collection::vec(1usize..60, 1..10),
        last_until_close in any::<bool>(),
    ) {
        let mut c = Conn::new(Limits::default());
        let mut got = Vec::new();
        let mut want = Vec::new();
        let mut ts = 0;
        let n_batches = batches.len();
        for (bi, batch) in batches.iter().enumerate() {
            // The client's requests of a batch, back to back (pipelined after
            // the first), then the server's responses.
            let wires: Vec<Vec<u8>> = batch.iter().map(|(q, _)| q.wire()).collect();
            let stream = wires.concat();
            let (chunks, at) = split(&stream, &sizes, &mut ts);
            let mut off = 0;
            for (i, ((q, _), w)) in batch.iter().zip(&wires).enumerate() {
                let mut prefix = q.body.data();
                prefix.truncate(64);
                want.push(Message::Request(RequestHead {
                    ts_first: at[off],
                    method: q.method.into(),
                    target: q.target.clone(),
                    version: Version::Http11,
                    host: q.host.clone(),
                    user_agent: q.field("user-agent"),
                    tag: q.field("x-lbw"),
                    fingerprint: fingerprint_alone(w),
                    body_prefix: prefix,
                    complete: true,
                    pipelined: i > 0,
                }));
                off += w.len();
                want.push(Message::RequestEnd { ts_last: at[off - 1], bytes: w.len() as u64 });
            }
            for (chunk, t) in chunks {
                c.feed(Dir::Request, t, chunk.len() as u64, chunk, &mut got);
            }

            let mut stream = Vec::new();
            let mut spans = Vec::new();
            for (i, (q, r)) in batch.iter().enumerate() {
                let close = last_until_close && bi + 1 == n_batches && i + 1 == batch.len();
                let (w, interim, data) = response_wire(r, q.method == "HEAD", close);
                spans.push((stream.len(), w.len(), interim, data, r.status));
                stream.extend(w);
            }
            let (chunks, at) = split(&stream, &sizes, &mut ts);
            for (start, len, interim, data, status) in spans {
                let mut head_start = start;
                if let Some(n) = interim {
                    want.push(Message::Interim { ts_first: at[start], ts_last: at[start + n - 1], status: 100, bytes: n as u64 });
                    head_start += n;
                }
                let mut prefix = data;
                prefix.truncate(64);
                want.push(Message::Response(crate::requests::http::ResponseHead {
                    ts_first: at[head_start],
                    status,
                    version: Version::Http11,
                    body_prefix: prefix,
                    complete: true,
                }));
                want.push(Message::ResponseEnd { ts_last: at[start + len - 1], bytes: (len - (head_start - start)) as u64 });
            }
            for (chunk, t) in chunks {
                c.feed(Dir::Response, t, chunk.len() as u64, chunk, &mut got);
            }
        }
        c.close(ts + 1, &mut got);
        prop_assert_eq!(c.framing_lost(), None, "{:?}", got);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(c.awaiting(), 0);
    }
}

// ---------------------------------------------------------------- (3)

/// A client's request: fields in the client's order, names as the client
/// capitalised them.
#[derive(Debug, Clone)]
struct Client {
    method: &'static str,
    target: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

fn client() -> impl Strategy<Value = Client> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS"]),
        "/[a-zA-Z0-9/._~%-]{0,30}(\\?[a-z0-9=&%]{0,15})?",
        prop::collection::vec(
            (
                "X-[A-Z][a-zA-Z0-9-]{0,8}|Accept|Accept-Language|Cookie|Authorization|User-Agent"
                    .prop_filter("a name the fingerprint keeps", |n: &String| {
                        !DEFAULT_EXCLUDED.contains(&n.to_ascii_lowercase().as_str())
                    }),
                value(),
            ),
            0..6,
        ),
        prop::collection::vec(any::<u8>(), 0..100),
        any::<bool>(),
    )
        .prop_map(|(method, target, fields, body, chunked)| Client {
            method,
            target,
            fields,
            body,
            chunked,
        })
}

/// How one hop writes a request on the wire.
struct Hop {
    version: &'static str,
    host: &'static str,
    /// Fields it puts before the client's, and after them.
    first: &'static [(&'static str, &'static str)],
    last: &'static [(&'static str, &'static str)],
    /// What it does to field names.
    name: fn(&str) -> String,
    /// Whether it reverses the client's fields (a rebuilt header block).
    reorder: bool,
    /// Whether it sends a body chunked (else with Content-Length).
    chunked: bool,
}

impl Hop {
    fn client(c: &Client, last: &'static [(&'static str, &'static str)]) -> Hop {
        Hop {
            version: "1.1",
            host: "shop.example",
            first: &[],
            last,
            name: as_is,
            reorder: false,
            chunked: c.chunked,
        }
    }

    fn render(&self, c: &Client) -> Vec<u8> {
        let name = self.name;
        let mut w = format!("{} {} HTTP/{}\r\n", c.method, c.target, self.version).into_bytes();
        let mut fields: Vec<(String, String)> = self
            .first
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        fields.push(("Host".into(), self.host.into()));
        let mut own = c.fields.clone();
        if self.reorder {
            own.reverse();
        }
        fields.extend(own);
        fields.extend(
            self.last
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string())),
        );
        for (n, v) in fields {
            w.extend(format!("{}: {v}\r\n", name(&n)).bytes());
        }
        if self.chunked && !c.body.is_empty() {
            let te = name("Transfer-Encoding");
            w.extend(format!("{te}: chunked\r\n\r\n{:x}\r\n", c.body.len()).bytes());
            w.extend(&c.body);
            w.extend(b"\r\n0\r\n\r\n");
        } else {
            if !c.body.is_empty() {
                w.extend(format!("{}: {}\r\n", name("Content-Length"), c.body.len()).bytes());
            }
            w.extend(b"\r\n");
            w.extend(&c.body);
        }
        w
    }
}

fn head_of(wire: &[u8]) -> RequestHead {
    let mut c = Conn::new(Limits::default());
    let mut out = Vec::new();
    c.feed(Dir::Request, 1, wire.len() as u64, wire, &mut out);
    match out.into_iter().next() {
        Some(Message::Request(h)) => h,
        other => panic!("{other:?}: {}", String::from_utf8_lossy(wire)),
    }
}

fn as_is(n: &str) -> String {
    n.to_string()
}

fn lower(n: &str) -> String {
    n.to_ascii_lowercase()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_forwarded_request_has_the_clients_fingerprint(c in client(), keep_alive in any::<bool>()) {
        let sent = head_of(&Hop::client(&c, if keep_alive { &[("Connection", "keep-alive")] } else { &[] }).render(&c));
        // HAProxy: names lowercased, Connection removed (or `close` added),
        // X-Forwarded-For appended, the order and the framing kept.
        let haproxy = Hop {
            last: if keep_alive { &[("x-forwarded-for", "192.0.2.7")] } else { &[("connection", "close"), ("x-forwarded-for", "192.0.2.7")] },
            name: lower,
            ..Hop::client(&c, &[])
        };
        let haproxy = head_of(&haproxy.render(&c));
        // nginx: its own fields first (Host rewritten, Connection: close,
        // X-Real-IP), HTTP/1.0, a chunked body buffered into Content-Length.
        let nginx = Hop {
            version: "1.0",
            host: "backend_pool",
            first: &[("X-Real-IP", "192.0.2.7"), ("Connection", "close")],
            last: &[("X-Forwarded-For", "192.0.2.7")],
            name: as_is,
            reorder: true,
            chunked: false,
        };
        let nginx = head_of(&nginx.render(&c));
        prop_assert_eq!(sent.fingerprint, haproxy.fingerprint);
        prop_assert_eq!(sent.fingerprint, nginx.fingerprint);
        prop_assert!(sent.same_request(&haproxy) && sent.same_request(&nginx));
    }

    #[test]
    fn a_changed_request_has_another_fingerprint(c in client(), what in 0..4usize, at in any::<prop::sample::Index>()) {
        let wire = |c: &Client| Hop::client(c, &[]).render(c);
        let sent = head_of(&wire(&c));
        let mut d = c.clone();
        match what {
            0 => d.target.push('x'),
            1 => d.method = if c.method == "GET" { "HEAD" } else { "GET" },
            2 if !d.fields.is_empty() => {
                let i = at.index(d.fields.len());
                d.fields[i].1.push('x');
            }
            2 => d.fields.push(("Accept".into(), "*/*".into())),
            _ if !d.body.is_empty() => {
                let i = at.index(d.body.len().min(64));
                d.body[i] ^= 1;
            }
            _ => d.body.push(b'x'),
        }
        let changed = head_of(&wire(&d));
        prop_assert!(!sent.same_request(&changed), "{:?} vs {:?}", sent, changed);
        if what < 3 {
            prop_assert_ne!(sent.fingerprint, changed.fingerprint);
        }
    }
}
