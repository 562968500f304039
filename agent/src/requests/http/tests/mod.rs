//! Tests of the framer as a whole: rules one by one (`conn`), the hostile
//! corpus (`corpus`), and property tests (`props`).

mod conn;
mod corpus;
mod props;

use super::{Conn, Dir, Limits, Message};

/// Feeds `bytes` as one fully captured syscall.
fn feed(c: &mut Conn, dir: Dir, ts: u64, bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    c.feed(dir, ts, bytes.len() as u64, bytes, &mut out);
    out
}

/// Feeds `bytes` as one syscall of which only `captured` bytes were copied.
fn feed_cut(c: &mut Conn, dir: Dir, ts: u64, bytes: &[u8], captured: usize) -> Vec<Message> {
    let mut out = Vec::new();
    c.feed(
        dir,
        ts,
        bytes.len() as u64,
        &bytes[..captured.min(bytes.len())],
        &mut out,
    );
    out
}

fn conn() -> Conn {
    Conn::new(Limits::default())
}
