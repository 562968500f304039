//! Telling a TCP-mode relay from an HTTP proxy. Pure.
//!
//! A proxy in TCP mode copies bytes: the first bytes it writes to a new
//! backend connection are the first bytes it read from the client, and the
//! first bytes it writes back are the backend's first answer. An HTTP proxy
//! rewrites both heads (HAProxy lowercases header names and sets
//! `Connection`; nginx rewrites the request line's version, `Host` and
//! `Connection`, and its own headers into the response), so a connection
//! pair whose first bytes are identical both ways is a relay, and so is a
//! pair identical in the request direction whose bytes then go through a
//! pipe (splice).
//!
//! Not every HTTP proxy rewrites visibly, though: nginx in the lab, with
//! `Host` as the client sent it and a backend that is nginx too, forwards
//! heads byte for byte both ways (its own `Server` and `Date` are the
//! backend's). So identity both ways makes a relay only when the client's
//! first bytes are not an HTTP/1 request line (TLS passthrough, databases,
//! any other protocol): HTTP carried by a copying proxy stays HTTP, and its
//! requests are recorded and mapped as any other. A splice is the proxy's
//! own word that it relays, so a twin that splices is a relay whatever it
//! carries.
//!
//! The pairing is by content and thread (a relay forwards a stream on the
//! thread that reads it, as the HTTP proxies do per request), so it is kept
//! only when it is unique: a backend head identical to the heads of two
//! clients of its thread waiting to be paired pairs with neither (identical requests through a TCP proxy stay HTTP
//! exchanges, which the correlator then decides or declares ambiguous).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
};

use super::sockets::ConnId;

/// Shortest prefix two first chunks of different lengths must share (a
/// relay may forward a client's first two reads in one write).
const MIN_PREFIX: usize = 16;

/// The captured start of a chunk, and whether it is the whole chunk. A
/// vectored write is captured from its first buffer only (nginx writes a
/// status line or request line there, and the rewritten headers after), so
/// a short capture proves nothing about the rest of the chunk.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    /// The bytes captured.
    pub bytes: &'a [u8],
    /// Bytes the syscall moved.
    pub total: u64,
}

impl Chunk<'_> {
    fn whole(&self) -> bool {
        self.bytes.len() as u64 == self.total
    }
}

#[derive(Debug)]
struct First {
    /// Client: its first bytes start an HTTP/1 request line.
    http: bool,
    /// Whether `head` is the whole first chunk.
    head_whole: bool,
    /// Whether `reply` is the whole first answer chunk.
    reply_whole: bool,
    tgid: u32,
    /// The thread that read (client) or wrote (backend) the head.
    tid: u32,
    /// The first bytes in the request direction (client: read; backend:
    /// written).
    head: Vec<u8>,
    /// Backend: the first bytes read back.
    reply: Option<Vec<u8>>,
    twin: Option<ConnId>,
    /// Client: its key in `waiting`, while unpaired.
    key: Option<(u32, u64)>,
}

impl First {
    /// A connection's first chunk, read or written on `tid` of `tgid`,
    /// neither paired nor answered yet.
    fn new(tgid: u32, tid: u32, chunk: Chunk<'_>) -> Self {
        Self {
            http: false,
            head_whole: chunk.whole(),
            reply_whole: false,
            tgid,
            tid,
            head: chunk.bytes.to_vec(),
            reply: None,
            twin: None,
            key: None,
        }
    }
}

/// First chunks of the connections not yet told apart, and the pairs
/// whose request heads are identical.
#[derive(Debug, Default)]
pub struct Relays {
    hasher: RandomState,
    firsts: HashMap<ConnId, First>,
    /// Unpaired clients by (tgid, hash of the first [`MIN_PREFIX`] bytes of
    /// their head, or all of a shorter one).
    waiting: HashMap<(u32, u64), Vec<ConnId>>,
}

/// Whether two first chunks are the same bytes, allowing one to be a
/// longer read or write of the same stream. Captures of equal length are
/// compared whole (both whole chunks, or both cut at the capture limit);
/// of different lengths, the shorter must be a whole chunk of at least
/// [`MIN_PREFIX`] bytes, not a first buffer of a vectored write.
fn same(a: (&[u8], bool), b: (&[u8], bool)) -> bool {
    let ((a, a_whole), (b, b_whole)) = (a, b);
    let n = a.len().min(b.len());
    if n == 0 || a[..n] != b[..n] {
        return false;
    }
    if a.len() == b.len() {
        return a_whole == b_whole;
    }
    let shorter_whole = if a.len() < b.len() { a_whole } else { b_whole };
    shorter_whole && n >= MIN_PREFIX
}

/// Whether `head` starts an HTTP/1 request line: a method token, a space,
/// a target, a space and `HTTP/1.` (within the captured bytes).
fn is_request_line(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(u8::is_ascii_uppercase)
        && !target.is_empty()
        && version.starts_with(b"HTTP/1.")
}

impl Relays {
    fn key(&self, tgid: u32, head: &[u8]) -> (u32, u64) {
        (
            tgid,
            self.hasher.hash_one(&head[..head.len().min(MIN_PREFIX)]),
        )
    }

    /// Client connection `id` read its first bytes on thread `tid` of `tgid`.
    pub fn client_head(&mut self, id: ConnId, tgid: u32, tid: u32, chunk: Chunk<'_>) {
        let head = chunk.bytes;
        if head.is_empty() || self.firsts.contains_key(&id) {
            return;
        }
        let key = self.key(tgid, head);
        self.waiting.entry(key).or_default().push(id);
        self.firsts.insert(
            id,
            First {
                http: is_request_line(head),
                key: Some(key),
                ..First::new(tgid, tid, chunk)
            },
        );
    }

    /// Backend connection `id` wrote its first bytes on thread `tid` of
    /// `tgid`: it pairs with the one unpaired client whose head that
    /// thread read is the same.
    pub fn backend_head(&mut self, id: ConnId, tgid: u32, tid: u32, chunk: Chunk<'_>) {
        let head = chunk.bytes;
        if head.is_empty() || self.firsts.contains_key(&id) {
            return;
        }
        let key = self.key(tgid, head);
        let matches: Vec<ConnId> = self
            .waiting
            .get(&key)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| {
                self.firsts.get(c).is_some_and(|f| {
                    f.tid == tid && same((&f.head, f.head_whole), (head, chunk.whole()))
                })
            })
            .collect();
        let twin = match matches.as_slice() {
            &[c] => Some(c),
            _ => None,
        };
        if let Some(c) = twin {
            self.unwait(c);
            if let Some(f) = self.firsts.get_mut(&c) {
                f.twin = Some(id);
            }
        }
        self.firsts.insert(
            id,
            First {
                twin,
                ..First::new(tgid, tid, chunk)
            },
        );
    }

    /// Backend connection `id` read its first bytes back.
    pub fn backend_reply(&mut self, id: ConnId, reply: Chunk<'_>) {
        if let Some(f) = self.firsts.get_mut(&id)
            && f.twin.is_some()
            && f.reply.is_none()
        {
            f.reply = Some(reply.bytes.to_vec());
            f.reply_whole = reply.whole();
        }
    }

    /// Client connection `id` wrote its first bytes: its twin backend, when
    /// they are that backend's first answer and the client's first bytes
    /// were not HTTP (the pair is a relay).
    pub fn client_reply(&self, id: ConnId, reply: Chunk<'_>) -> Option<ConnId> {
        if self.firsts.get(&id)?.http {
            return None;
        }
        let b = self.twin(id)?;
        let f = self.firsts.get(&b)?;
        let theirs = f.reply.as_deref()?;
        same((theirs, f.reply_whole), (reply.bytes, reply.whole())).then_some(b)
    }

    /// The connection whose first request bytes were the same as `id`'s.
    pub fn twin(&self, id: ConnId) -> Option<ConnId> {
        let f = self.firsts.get(&id)?;
        let twin = f.twin?;
        // Both alive and of one process.
        (self.firsts.get(&twin)?.tgid == f.tgid).then_some(twin)
    }

    /// Connection `id` ended, or was told apart: forgets it.
    pub fn forget(&mut self, id: ConnId) {
        self.unwait(id);
        if let Some(f) = self.firsts.remove(&id)
            && let Some(twin) = f.twin
            && let Some(t) = self.firsts.get_mut(&twin)
        {
            t.twin = None;
        }
    }

    /// Connections remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.firsts.len()
    }

    fn unwait(&mut self, id: ConnId) {
        let Some(key) = self.firsts.get_mut(&id).and_then(|f| f.key.take()) else {
            return;
        };
        if let Some(ids) = self.waiting.get_mut(&key) {
            ids.retain(|&c| c != id);
            if ids.is_empty() {
                self.waiting.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

    /// A whole chunk.
    fn ch(bytes: &[u8]) -> Chunk<'_> {
        Chunk {
            bytes,
            total: bytes.len() as u64,
        }
    }

    #[test]
    fn identical_heads_both_ways_are_a_relay_unless_they_are_http() {
        let mut r = Relays::default();
        r.client_head(1, 100, 1, ch(REQ));
        r.backend_head(2, 100, 1, ch(REQ));
        assert_eq!(r.twin(1), Some(2));
        assert_eq!(r.twin(2), Some(1));
        r.backend_reply(2, ch(RESP));
        assert_eq!(r.client_reply(1, ch(RESP)), None, "HTTP stays HTTP");
        let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 random bytes of a hello";
        r.client_head(5, 100, 1, ch(hello));
        r.backend_head(6, 100, 1, ch(hello));
        r.backend_reply(6, ch(b"\x16\x03\x03 server hello"));
        assert_eq!(r.client_reply(5, ch(b"\x16\x03\x03 server hello")), Some(6));
        r.forget(5);
        r.forget(6);
        assert_eq!(
            r.client_reply(1, ch(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")),
            None
        );
        r.forget(1);
        assert_eq!(r.twin(2), None);
        r.forget(2);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_rewritten_head_another_process_or_two_identical_clients_pair_nothing() {
        let mut r = Relays::default();
        r.client_head(1, 100, 1, ch(REQ));
        r.backend_head(2, 100, 1, ch(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"));
        assert_eq!(r.twin(1), None, "rewritten");
        r.backend_head(3, 101, 1, ch(REQ));
        assert_eq!(r.twin(1), None, "another process");
        r.client_head(4, 100, 1, ch(REQ));
        r.backend_head(5, 100, 1, ch(REQ));
        assert_eq!((r.twin(1), r.twin(4), r.twin(5)), (None, None, None));
        // Another thread's identical client is no candidate.
        r.client_head(6, 100, 2, ch(REQ));
        r.client_head(7, 100, 3, ch(REQ));
        r.backend_head(8, 100, 3, ch(REQ));
        assert_eq!((r.twin(6), r.twin(7)), (None, Some(8)));
    }

    #[test]
    fn a_forwarded_write_may_join_two_reads_but_a_short_prefix_is_not_enough() {
        let mut r = Relays::default();
        r.client_head(1, 100, 1, ch(&REQ[..20]));
        r.backend_head(2, 100, 1, ch(REQ));
        assert_eq!(r.twin(1), Some(2));
        r.client_head(3, 100, 1, ch(b"GET "));
        r.backend_head(4, 100, 1, ch(b"GET /b"));
        assert_eq!(r.twin(3), None);
        assert!(!same((b"", true), (b"", true)));
        assert!(is_request_line(REQ) && is_request_line(b"PRI * HTTP/1.1"));
        assert!(!is_request_line(b"\x16\x03\x01") && !is_request_line(b"get / HTTP/1.1"));
    }

    /// nginx writes the upstream request with writev: the capture is its
    /// first buffer (the request line), the same start as the client's
    /// request but not the same bytes. No twin.
    #[test]
    fn a_first_buffer_of_a_vectored_write_is_no_proof() {
        let mut r = Relays::default();
        r.client_head(1, 100, 1, ch(REQ));
        let line = &REQ[..17];
        r.backend_head(
            2,
            100,
            1,
            Chunk {
                bytes: line,
                total: 200,
            },
        );
        assert_eq!(r.twin(1), None);
        // Both cut at the capture limit: compared whole.
        let long = [b'x'; 300];
        let cut = |id: u64| Chunk {
            bytes: &long[..256],
            total: 300 + id,
        };
        r.client_head(3, 100, 1, cut(0));
        r.backend_head(4, 100, 1, cut(1));
        assert_eq!(r.twin(3), Some(4));
    }

    #[test]
    fn a_paired_client_is_not_paired_again() {
        let mut r = Relays::default();
        r.client_head(1, 100, 1, ch(REQ));
        r.backend_head(2, 100, 1, ch(REQ));
        r.backend_head(3, 100, 1, ch(REQ));
        assert_eq!((r.twin(1), r.twin(3)), (Some(2), None));
    }
}
