//! The syslog sink against real collectors; the oracle is what the
//! collector stored.
//!
//! * Every transport to rsyslogd (tcp, tls verifying the server with gtls,
//!   tls with a client certificate the server requires with ossl, relp,
//!   relp over tls) and tcp to syslog-ng: 10 000 record-shaped lines in
//!   batches are stored byte for byte, in order.
//! * RELP with rsyslogd SIGKILLed mid-stream: every batch whose send
//!   returned Ok is in the stored file at the moment of the kill, the batch
//!   in flight fails, and after a restart and resend nothing is missing.
//! * Misbehaving collectors: one that never reads holds the send (the
//!   caller's timeout fires) without the agent's memory growing; garbage
//!   answers are protocol errors; expired, wrong-name and unknown-CA
//!   certificates are TLS errors that say which; a closed port is a
//!   connect error.
//!
//! Run: `cargo test -p integration-tests --test syslog_sink`; the figures:
//! `... -- --ignored --nocapture throughput` (with `--release`).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use integration_tests::collectors::{
    bad::{Listener, TlsServer},
    certs::{EXPIRED_NOT_AFTER, Pki},
    free_port,
    rsyslog::{Driver, Input, Rsyslog, TlsInput},
    syslog_ng::SyslogNg,
};
use lbwitness_delivery::sink::{
    endpoint::{Batch, Connection, Connector, Entry, SinkError},
    syslog::{Facility, SyslogSettings, TlsSettings, Transport, connector},
};
use serde_json::json;
use tokio::time::timeout;

/// Records per delivery test.
const RECORDS: u64 = 10_000;
/// Records per batch.
const BATCH: usize = 500;
/// Limit for any one network step of a test that must not hang.
const STEP: Duration = Duration::from_secs(30);

/// A flow record as the agent writes it: canonical JSON (sorted members, no
/// whitespace), ~900 bytes, with escapes and non-ASCII text in it.
fn record(sequence: u64) -> Bytes {
    let value = json!({
        "@timestamp": format!("2026-03-01T12:{:02}:{:02}.{:09}Z", sequence / 60 % 60, sequence % 60, sequence * 7919 % 1_000_000_000),
        "agent": {"id": "5b0c3f9e-6a57-4c1d-9f43-0d2b1e8a7c55", "type": "lbwitness", "version": "0.1.0"},
        "destination": {"ip": "10.20.30.40", "port": 443},
        "event": {
            "action": "flow", "category": ["network"], "dataset": "lbwitness.flow",
            "duration": 1_234_567_890u64 + sequence, "end": "2026-03-01T12:00:01.234567890Z",
            "hash": format!("{:064x}", u128::from(sequence) * 0x9e37_79b9_7f4a_7c15),
            "kind": "event", "module": "lbwitness", "reason": "idle-timeout",
            "sequence": sequence, "start": "2026-03-01T12:00:00.000000000Z", "type": ["connection", "end"],
        },
        "network": {
            "bytes": 123_456 + sequence, "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            "iana_number": "6", "packets": 42, "transport": "tcp", "type": "ipv4",
        },
        "observer": {
            "hostname": "lb1.example", "ingress": {"interface": {"id": "2", "name": "eth0"}},
            "product": "lbwitness", "type": "sensor",
        },
        "source": {"bytes": 4096, "ip": "192.0.2.17", "packets": 21, "port": 40_000 + sequence % 20_000},
        "url": {"original": format!("/api/v1/items/{sequence}?q=\"quoted\"&path=C:\\tmp\\x&padding={}", "p".repeat(200))},
        "user": {"name": "zoë.ñandú", "roles": ["ops", "sre"]},
    });
    Bytes::from(serde_json::to_vec(&value).expect("serialise"))
}

fn batches(first: u64, count: u64, size: usize) -> Vec<Batch> {
    let entries: Vec<Entry> = (first..first + count)
        .map(|sequence| Entry {
            sequence,
            line: record(sequence),
        })
        .collect();
    entries
        .chunks(size)
        .map(|chunk| Batch {
            agent_id: "5b0c3f9e-6a57-4c1d-9f43-0d2b1e8a7c55".into(),
            entries: chunk.to_vec(),
        })
        .collect()
}

fn lines(batches: &[Batch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| &b.entries)
        .map(|e| String::from_utf8(e.line.to_vec()).unwrap())
        .collect()
}

fn settings(address: &str, transport: Transport, tls: Option<TlsSettings>) -> SyslogSettings {
    SyslogSettings {
        address: address.to_owned(),
        transport,
        tls,
        app_name: "lbwitness".into(),
        facility: Facility::Local0,
    }
}

fn tls_to(pki: &Pki, client_cert: bool) -> TlsSettings {
    TlsSettings {
        ca_file: Some(pki.ca.clone()),
        server_name: None,
        client_cert: client_cert.then(|| pki.client.cert.clone()),
        client_key: client_cert.then(|| pki.client.key.clone()),
    }
}

async fn connect(c: &dyn Connector) -> Result<Box<dyn Connection>, SinkError> {
    timeout(STEP, c.connect()).await.expect("connect hung")
}

/// Sends every batch over one connection and closes it.
async fn deliver(c: &dyn Connector, batches: &[Batch]) -> Result<(), SinkError> {
    let mut conn = connect(c).await?;
    for batch in batches {
        timeout(STEP, conn.send(batch)).await.expect("send hung")?;
    }
    timeout(STEP, conn.close()).await.expect("close hung")
}

/// Delivers [`RECORDS`] records in batches of `batch` and checks that the
/// stored copy is the same lines in the same order.
async fn round_trip(
    settings: SyslogSettings,
    batch: usize,
    wait: impl Fn(usize) -> anyhow::Result<Vec<String>>,
) {
    let c = connector(&settings).expect("connector");
    let batches = batches(1, RECORDS, batch);
    deliver(&*c, &batches)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stored = wait(RECORDS as usize).unwrap_or_else(|e| panic!("{e:#}"));
    let sent = lines(&batches);
    assert_eq!(stored.len(), sent.len(), "{}: stored count", c.endpoint());
    if let Some(i) = (0..sent.len()).find(|&i| stored[i] != sent[i]) {
        panic!(
            "{}: line {i} differs:\nsent   {}\nstored {}",
            c.endpoint(),
            sent[i],
            stored[i]
        );
    }
}

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_rsyslog() {
    let r = Rsyslog::start(&Input::Tcp).unwrap();
    round_trip(settings(&r.address(), Transport::Tcp, None), BATCH, |n| {
        r.wait_for_lines(n, WAIT)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_rsyslog_gtls_verifying_the_server() {
    let pki = Pki::new().unwrap();
    let input = Input::Tls(TlsInput::with_pki(&pki, Driver::Gtls, false));
    let r = Rsyslog::start(&input).unwrap();
    let s = settings(&r.address(), Transport::Tls, Some(tls_to(&pki, false)));
    round_trip(s, BATCH, |n| r.wait_for_lines(n, WAIT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_rsyslog_ossl_requiring_a_client_certificate() {
    let pki = Pki::new().unwrap();
    let input = Input::Tls(TlsInput::with_pki(&pki, Driver::Ossl, true));
    let r = Rsyslog::start(&input).unwrap();
    let s = settings(&r.address(), Transport::Tls, Some(tls_to(&pki, true)));
    round_trip(s, BATCH, |n| r.wait_for_lines(n, WAIT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_to_rsyslog() {
    let r = Rsyslog::start(&Input::Relp).unwrap();
    // Batches larger than the RELP window: the send waits for answers.
    round_trip(settings(&r.address(), Transport::Relp, None), 2500, |n| {
        r.wait_for_lines(n, WAIT)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_over_tls_to_rsyslog() {
    let pki = Pki::new().unwrap();
    let input = Input::RelpTls(TlsInput::with_pki(&pki, Driver::Gtls, true));
    let r = Rsyslog::start(&input).unwrap();
    let s = settings(&r.address(), Transport::Relp, Some(tls_to(&pki, true)));
    round_trip(s, BATCH, |n| r.wait_for_lines(n, WAIT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_syslog_ng() {
    let s = SyslogNg::start().unwrap();
    round_trip(settings(&s.address(), Transport::Tcp, None), BATCH, |n| {
        s.wait_for_lines(n, WAIT)
    })
    .await;
}

/// Without the client certificate the server requires, the connection
/// fails with a TLS error that says so, and nothing is stored. With TLS 1.3
/// the server refuses after the client has finished its handshake, so the
/// refusal (an alert) may surface on the first send instead of connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_required_client_certificate_fails() {
    let pki = Pki::new().unwrap();
    let input = Input::Tls(TlsInput::with_pki(&pki, Driver::Ossl, true));
    let r = Rsyslog::start(&input).unwrap();
    let c = connector(&settings(
        &r.address(),
        Transport::Tls,
        Some(tls_to(&pki, false)),
    ))
    .unwrap();
    let batch = &batches(1, 10, 10)[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match connect(&*c).await {
            Err(e) => break e,
            Ok(mut conn) => match timeout(STEP, conn.send(batch)).await.expect("send hung") {
                Err(e) => break e,
                Ok(()) => assert!(Instant::now() < deadline, "sends keep succeeding"),
            },
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(&err, SinkError::Tls { message, .. } if message.contains("client certificate")),
        "{err}"
    );
    assert!(r.stored().lines().is_empty(), "nothing is stored");
}

/// The `event.sequence` of a stored line.
fn sequence_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    v["event"]["sequence"].as_u64().expect("event.sequence")
}

/// RELP with rsyslogd SIGKILLed while batches flow: what was acknowledged
/// was stored; the batch in flight fails; resending after a restart leaves
/// nothing missing (duplicates allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_crash_loses_nothing_acknowledged() {
    const TOTAL: u64 = 20_000;
    let mut r = Rsyslog::start(&Input::Relp).unwrap();
    let c = connector(&settings(&r.address(), Transport::Relp, None)).unwrap();
    let all = batches(1, TOTAL, 200);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (acked, failures) = (acked.clone(), failures.clone());
        let all = all.clone();
        tokio::spawn(async move {
            // What the delivery stage does: resend a failed batch on a new
            // connection until it is acknowledged.
            let mut conn: Option<Box<dyn Connection>> = None;
            for batch in &all {
                loop {
                    if conn.is_none() {
                        match timeout(STEP, c.connect()).await.expect("connect hung") {
                            Ok(new) => conn = Some(new),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let open = conn.as_mut().expect("connected");
                    match timeout(STEP, open.send(batch)).await.expect("send hung") {
                        Ok(()) => {
                            acked
                                .lock()
                                .unwrap()
                                .extend(batch.entries.iter().map(|e| e.sequence));
                            break;
                        }
                        Err(e) => {
                            eprintln!("send failed as expected: {e}");
                            failures.fetch_add(1, Ordering::SeqCst);
                            conn = None;
                        }
                    }
                }
            }
        })
    };
    r.wait_for_lines(5_000, WAIT).unwrap();
    r.kill();
    // Acknowledged means stored: the crashed collector's file holds every
    // record whose batch returned Ok (no answer can arrive after the kill).
    let stored: BTreeSet<u64> = r.stored().lines().iter().map(|l| sequence_of(l)).collect();
    let acked_at_kill = acked.lock().unwrap().clone();
    assert!(
        acked_at_kill.len() >= 1_000,
        "{} acknowledged",
        acked_at_kill.len()
    );
    let lost: Vec<_> = acked_at_kill.difference(&stored).take(5).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}...");
    let deadline = Instant::now() + WAIT;
    while failures.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no send failed after the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        acked.lock().unwrap().len() < TOTAL as usize,
        "a batch failed"
    );
    r.restart().unwrap();
    timeout(Duration::from_secs(120), sender)
        .await
        .expect("sender finished")
        .unwrap();

    let sent = lines(&all);
    let known: BTreeSet<&str> = sent.iter().map(String::as_str).collect();
    let stored = r.stored().lines();
    let bad: Vec<_> = stored
        .iter()
        .filter(|l| !known.contains(l.as_str()))
        .take(3)
        .collect();
    assert!(bad.is_empty(), "stored lines that were never sent: {bad:?}");
    let have: BTreeSet<u64> = stored.iter().map(|l| sequence_of(l)).collect();
    let missing: Vec<_> = (1..=TOTAL).filter(|s| !have.contains(s)).take(5).collect();
    assert!(missing.is_empty(), "missing after resend: {missing:?}...");
    eprintln!(
        "{} stored for {TOTAL} sent ({} duplicates), {} failed send(s)",
        stored.len(),
        stored.len() - TOTAL as usize,
        failures.load(Ordering::SeqCst)
    );
}

/// Counts the heap bytes live per thread, so a test can bound what its own
/// thread holds while other tests of this binary run in parallel.
struct PerThread;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn account(delta: i64) {
    // try_with: allocations during thread teardown are not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// bookkeeping touches only const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is the system's.
        unsafe { System.dealloc(ptr, layout) };
        account(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator, which is the system's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: PerThread = PerThread;

/// A collector that accepts and never reads: the send never completes (the
/// caller's timeout fires) and the agent does not buffer the batch. The
/// batch is 300 000 records sharing one line's bytes (~12 MB of entries);
/// frames built for all of it at once would take ~300 MB. The runtime is
/// this thread alone, so its heap peak is the sink's.
#[tokio::test(flavor = "current_thread")]
async fn a_collector_that_never_reads_holds_the_send_not_memory() {
    let silent = Listener::silent().unwrap();
    let line = record(1);
    let big = Batch {
        agent_id: "a".into(),
        entries: (1..=300_000)
            .map(|sequence| Entry {
                sequence,
                line: line.clone(),
            })
            .collect(),
    };
    let c = connector(&settings(silent.address(), Transport::Tcp, None)).unwrap();
    let baseline = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(baseline));
    let started = Instant::now();
    let mut attempts = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let mut conn = connect(&*c).await.unwrap();
        let outcome = timeout(Duration::from_millis(250), conn.send(&big)).await;
        assert!(
            outcome.is_err(),
            "the send to a collector that never reads completed: {outcome:?}"
        );
        attempts += 1;
    }
    let grew = PEAK.with(Cell::get) - baseline;
    eprintln!("{attempts} attempts, heap peak {grew} bytes above the baseline");
    assert!(silent.accepted() >= attempts);
    assert!(
        grew < 4 << 20,
        "the sending thread's heap grew by {grew} bytes"
    );

    // RELP: the open handshake itself never completes.
    let c = connector(&settings(silent.address(), Transport::Relp, None)).unwrap();
    assert!(
        timeout(Duration::from_millis(250), c.connect())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_are_protocol_errors() {
    let garbage =
        Listener::garbage(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").unwrap();
    let c = connector(&settings(garbage.address(), Transport::Relp, None)).unwrap();
    let err = connect(&*c)
        .await
        .err()
        .expect("RELP open to an HTTP server fails");
    assert!(
        matches!(&err, SinkError::Protocol { detail, .. } if detail.contains("HTTP/1.1 400")),
        "{err}"
    );

    // Plain TCP: syslog receivers never answer, so an answer is an error at
    // the next send.
    let c = connector(&settings(garbage.address(), Transport::Tcp, None)).unwrap();
    let mut conn = connect(&*c).await.unwrap();
    let batch = &batches(1, 5, 5)[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        if let Err(e) = timeout(STEP, conn.send(batch)).await.expect("send hung") {
            break e;
        }
        assert!(Instant::now() < deadline, "the garbage was never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(&err, SinkError::Protocol { detail, .. } if detail.contains("HTTP/1.1 400")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_tls_errors_that_say_why() {
    let pki = Pki::new().unwrap();
    let cases = [
        (
            &pki.expired,
            pki.ca.clone(),
            &*format!("expired at {EXPIRED_NOT_AFTER}"),
        ),
        (
            &pki.wrong_name,
            pki.ca.clone(),
            "expected name \"127.0.0.1\"",
        ),
        (&pki.server, pki.other_ca.clone(), "unknown issuer"),
    ];
    for (served, ca, reason) in cases {
        let server = TlsServer::start(&served.cert, &served.key, None).unwrap();
        for transport in [Transport::Tls, Transport::Relp] {
            let tls = TlsSettings {
                ca_file: Some(ca.clone()),
                ..TlsSettings::default()
            };
            let c = connector(&settings(&server.address(), transport, Some(tls))).unwrap();
            let err = connect(&*c).await.err().expect("the handshake fails");
            eprintln!("{err}");
            let SinkError::Tls { message, .. } = &err else {
                panic!("not a TLS error: {err}");
            };
            assert!(message.contains(reason), "{reason:?} not in: {err}");
            if reason == "unknown issuer" {
                assert!(message.contains(&*ca.to_string_lossy()), "{err}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_a_connect_error() {
    let port = free_port().unwrap();
    for transport in [Transport::Tcp, Transport::Relp] {
        let c = connector(&settings(&format!("127.0.0.1:{port}"), transport, None)).unwrap();
        let err = connect(&*c).await.err().expect("nothing listens");
        assert!(
            matches!(&err, SinkError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
            "{err}"
        );
    }
}

/// Figures for the report: records/s and MiB/s of record text (the JSON
/// lines; the wire adds ~80 bytes of header and framing per record) over
/// loopback, batches of 1000, one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release -- --ignored --nocapture throughput"]
async fn throughput() {
    const N: u64 = 100_000;
    let all = batches(1, N, 1000);
    let mib = all.iter().map(Batch::bytes).sum::<usize>() as f64 / f64::from(1 << 20);
    let report = |what: &str, took: Duration| {
        let s = took.as_secs_f64();
        eprintln!(
            "{what:<44} {N} records in {s:.2} s: {:>8.0} records/s {:>6.1} MiB/s",
            N as f64 / s,
            mib / s
        );
    };

    // A Rust reader that discards: the sink's own ceiling on plain TCP.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            match std::io::Read::read(&mut stream, &mut buf).unwrap() {
                0 => return total,
                n => total += n,
            }
        }
    });
    let c = connector(&settings(&address, Transport::Tcp, None)).unwrap();
    let started = Instant::now();
    deliver(&*c, &all).await.unwrap();
    let wire = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    report("tcp -> discarding reader", started.elapsed());
    assert!(wire > all.iter().map(Batch::bytes).sum::<usize>());

    let pki = Pki::new().unwrap();
    let gtls = Input::Tls(TlsInput::with_pki(&pki, Driver::Gtls, false));
    for (name, input, transport, tls) in [
        (
            "tcp -> rsyslog imtcp (until stored)",
            Input::Tcp,
            Transport::Tcp,
            None,
        ),
        (
            "tls -> rsyslog imtcp gtls (until stored)",
            gtls,
            Transport::Tls,
            Some(tls_to(&pki, false)),
        ),
        (
            "relp -> rsyslog imrelp (until acknowledged)",
            Input::Relp,
            Transport::Relp,
            None,
        ),
    ] {
        let r = Rsyslog::start(&input).unwrap();
        let c = connector(&settings(&r.address(), transport, tls)).unwrap();
        let started = Instant::now();
        deliver(&*c, &all).await.unwrap();
        let stored = tokio::task::block_in_place(|| r.wait_for_lines(N as usize, WAIT)).unwrap();
        report(name, started.elapsed());
        assert_eq!(stored.len(), N as usize);
    }
}
