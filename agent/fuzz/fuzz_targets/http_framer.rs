//! Fuzzes the HTTP/1.x framer three ways with each input: as a client's
//! bytes in one syscall, as a server's bytes answering one `GET`, and as a
//! script of syscalls in both directions with partial captures. Seeds:
//! `agent/src/requests/http/corpus/`.
//!
//! Besides not crashing, it checks that `Lost` comes once and last, and that
//! nothing comes out after it or after `close`.

#![no_main]

use lbwitness_fuzz::http::{Conn, Dir, Limits, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    whole(Dir::Request, data);
    whole(Dir::Response, data);
    script(data);
});

fn whole(dir: Dir, data: &[u8]) {
    let mut c = Conn::new(Limits::default());
    let mut out = Vec::new();
    if dir == Dir::Response {
        c.feed(Dir::Request, 1, 18, b"GET / HTTP/1.1\r\n\r\n", &mut out);
    }
    c.feed(dir, 2, data.len() as u64, data, &mut out);
    c.close(3, &mut out);
    check(&c, &out);
}

/// Each step: a control byte (bit 0 the direction, bit 1 whether the
/// capture is cut, bits 2..8 how much of it is kept, in 63rds), a 16-bit
/// length, then that many bytes; uncaptured bytes count as much again as
/// the captured share left out, so a count-only tail is exercised too.
fn script(mut data: &[u8]) {
    let limits = Limits {
        max_head: 512,
        max_pipelined: 4,
        ..Limits::default()
    };
    let mut c = Conn::new(limits);
    let mut out = Vec::new();
    let mut ts = 0;
    while let [ctl, lo, hi, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        data = tail;
        let dir = if ctl & 1 == 0 {
            Dir::Request
        } else {
            Dir::Response
        };
        let keep = if ctl & 2 == 0 {
            chunk.len()
        } else {
            chunk.len() * usize::from(ctl >> 2) / 63
        };
        ts += 1;
        let before = out.len();
        let lost = c.framing_lost().is_some();
        c.feed(dir, ts, chunk.len() as u64, &chunk[..keep], &mut out);
        assert!(!lost || out.len() == before, "messages after Lost");
    }
    c.close(ts + 1, &mut out);
    let closed = out.len();
    c.close(ts + 2, &mut out);
    c.feed(Dir::Request, ts + 3, 3, b"GET", &mut out);
    assert_eq!(out.len(), closed, "messages after close");
    check(&c, &out);
}

fn check(c: &Conn, out: &[Message]) {
    let lost_at = out.iter().position(|m| matches!(m, Message::Lost(_)));
    if let Some(i) = lost_at {
        assert_eq!(i + 1, out.len(), "Lost is last");
    }
    assert_eq!(lost_at.is_some(), c.framing_lost().is_some());
}
