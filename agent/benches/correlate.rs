//! The request correlator's throughput on one core, pure (no kernel):
//! synthetic requests through `lbwitness::requests::correlate`.
//!
//! - `correlate` on one closed window of [`IN_FLIGHT`] client requests and
//!   their backend requests in one burst on one thread (every read before
//!   every backend write, so time order rules nothing out), with
//!   distinct fingerprints (every pair forced) and with identical ones
//!   (the densest graph: every backend is a candidate of every client).
//! - `Windows` fed in kernel-time order, as the request stage feeds it: 2
//!   threads of one process, each with [`IN_FLIGHT`] requests in flight at
//!   every moment (a thread that is never idle, so its windows are decided
//!   early), distinct and identical fingerprints. Requests are answered in
//!   the order they came, so time order alone tells identical ones apart.
//!
//! Prints one line per case: requests/s on one core and how the requests
//! were decided (mapped / ambiguous), the latter as a check that the
//! synthetic load is what it claims (distinct requests must all map).

use std::{hint::black_box, time::Instant};

use lbwitness::requests::correlate::{
    BackendSide, ClientSide, Closed, Mapping, OpenHead, OpenRequest, Windows, correlate,
};

/// Requests in flight per thread.
const IN_FLIGHT: u64 = 64;
/// Threads of the load balancer.
const THREADS: u32 = 2;
/// Requests per thread fed to `Windows`.
const REQUESTS: u64 = 100_000;
/// Repetitions of the one-window case.
const REPEATS: u32 = 2_000;
/// Kernel ns between two request starts on one thread.
const STEP: u64 = 10_000;

/// The fingerprint of request `i`: distinct per request, or one for all.
fn fingerprint(i: u64, identical: bool) -> [u8; 32] {
    let mut fp = [0u8; 32];
    if !identical {
        fp[..8].copy_from_slice(&i.to_le_bytes());
    }
    fp
}

/// Request `i` on thread `tid`: read at `i * STEP`, written to the backend
/// just after, answered `IN_FLIGHT` steps later, so `IN_FLIGHT` requests
/// overlap at every moment.
fn sides(tid: u32, i: u64, identical: bool) -> (ClientSide, BackendSide) {
    let t_read = i * STEP;
    let t_resp_read = (i + IN_FLIGHT - 1) * STEP + 2;
    let id = u64::from(tid) << 40 | i;
    let fingerprint = fingerprint(i, identical);
    let client = ClientSide {
        id,
        tgid: 100,
        tid,
        fingerprint,
        req_body: Vec::new(),
        t_read,
        t_resp_write: t_resp_read + 1,
        status: 200,
        resp_body: b"s1 /r/".to_vec(),
        tag: None,
    };
    let backend = BackendSide {
        id,
        tgid: 100,
        tid,
        fingerprint,
        req_body: Vec::new(),
        t_write: t_read + 1,
        t_resp_read,
        status: 200,
        resp_body: b"s1 /r/".to_vec(),
        tag: None,
    };
    (client, backend)
}

/// Mapped and ambiguous results.
#[derive(Default)]
struct Tally {
    mapped: u64,
    ambiguous: u64,
}

impl Tally {
    fn add<'a>(&mut self, results: impl IntoIterator<Item = &'a Mapping>) {
        for m in results {
            match m {
                Mapping::Mapped { .. } | Mapping::Exact { .. } => self.mapped += 1,
                Mapping::Ambiguous { .. } => self.ambiguous += 1,
            }
        }
    }

    fn closed(&mut self, closed: impl IntoIterator<Item = Closed>) {
        for c in closed {
            self.add(c.results.iter().map(|(_, m)| m));
        }
    }
}

/// [`IN_FLIGHT`] requests in one burst: every client read before any
/// backend write, every backend answer before any client answer, so time
/// order rules nothing out and only content tells them apart.
fn burst(identical: bool) -> (Vec<ClientSide>, Vec<BackendSide>) {
    let span = IN_FLIGHT * STEP;
    (0..IN_FLIGHT)
        .map(|i| {
            let (mut c, mut b) = sides(1, i, identical);
            c.t_read = i;
            b.t_write = span + i;
            b.t_resp_read = 2 * span + i;
            c.t_resp_write = 3 * span + i;
            (c, b)
        })
        .unzip()
}

fn one_window(identical: bool) {
    let (clients, backends) = burst(identical);
    let mut tally = Tally::default();
    tally.add(correlate(&clients, &backends).iter().map(|(_, m)| m));
    let start = Instant::now();
    for _ in 0..REPEATS {
        black_box(correlate(black_box(&clients), black_box(&backends)));
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        identical || tally.mapped == IN_FLIGHT,
        "distinct requests must all map"
    );
    let rps = f64::from(REPEATS) * IN_FLIGHT as f64 / secs;
    report(
        &format!("correlate, one burst of {IN_FLIGHT}"),
        identical,
        rps,
        &tally,
    );
}

fn windows(identical: bool) {
    let mut windows = Windows::default();
    let mut tally = Tally::default();
    let start = Instant::now();
    for step in 0..REQUESTS + IN_FLIGHT - 1 {
        for tid in 1..=THREADS {
            // Request `step` starts; request `step - IN_FLIGHT + 1` is
            // answered by its backend, then to its client.
            if step < REQUESTS {
                let (c, _) = sides(tid, step, identical);
                let open = OpenRequest {
                    id: c.id,
                    tgid: c.tgid,
                    tid,
                    t_read: c.t_read,
                    head: Some(OpenHead {
                        fingerprint: c.fingerprint,
                        req_body: Vec::new(),
                        tag: None,
                    }),
                };
                tally.closed(windows.client_request(open));
            }
            if let Some(done) = (step + 1).checked_sub(IN_FLIGHT) {
                let (c, b) = sides(tid, done, identical);
                tally.closed(windows.backend_done(b));
                tally.closed(windows.client_done(c));
            }
        }
    }
    tally.closed(windows.flush_all());
    let secs = start.elapsed().as_secs_f64();
    let total = REQUESTS * u64::from(THREADS);
    assert_eq!(
        tally.mapped + tally.ambiguous,
        total,
        "every request decided once"
    );
    assert!(
        identical || tally.mapped == total,
        "distinct requests must all map"
    );
    report(
        &format!("Windows, {THREADS} threads x {IN_FLIGHT} in flight"),
        identical,
        total as f64 / secs,
        &tally,
    );
}

fn report(case: &str, identical: bool, rps: f64, tally: &Tally) {
    let kind = if identical { "identical" } else { "distinct" };
    println!(
        "{case:<38} {kind:<9} {rps:>12.0} requests/s  mapped={} ambiguous={}",
        tally.mapped, tally.ambiguous
    );
}

fn main() {
    for identical in [false, true] {
        one_window(identical);
    }
    for identical in [false, true] {
        windows(identical);
    }
}
