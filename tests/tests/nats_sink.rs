//! The NATS JetStream sink against real nats-server processes: what the
//! stream stored (read back through JetStream's own API) is the oracle.
//!
//! TLS (nats-server's `tls {}` block, certificates from [`Pki`]): 10 000
//! records stored over a `tls://` URL; a required client certificate works
//! when given and its absence is explained; expired, wrong-name and
//! unknown-CA certificates, TLS configured against a plain server and a
//! TLS-only server without TLS configured each fail with their own
//! [`SinkError::Tls`] message; servers a TLS cluster advertises are
//! reached over TLS once the configured one is dead.
//!
//! Figures (records/s, MiB/s) are printed with `--nocapture`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_tests::collectors::certs::{EXPIRED_NOT_AFTER, Pki};
use integration_tests::collectors::nats::{
    JsClient, NatsCluster, NatsServer, StoredMessage, StreamSpec, poll,
};
use lbwitness::sink::endpoint::{Batch, Connection, Connector, Entry, Guarantee, SinkError};
use lbwitness::sink::nats::{NatsSettings, connector};
use lbwitness::sink::tls::TlsSettings;
use serde_json::json;
use sha2::{Digest, Sha256};

const AGENT: &str = "0b6e6f3c-6d2f-4a39-9c1e-2a4e1d6f0a11";
const SUBJECT: &str = "lbwitness.audit";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// `count` chained flow records shaped like the agent's (~900 bytes of
/// canonical JSON each), numbered from 1.
fn records(count: u64) -> Vec<Entry> {
    let mut previous = [0u8; 32];
    (1..=count)
        .map(|sequence| {
            let mut record = json!({
                "@timestamp": format!("2026-11-21T06:{:02}:{:02}.{:06}Z", sequence / 60 % 60, sequence % 60, sequence),
                "agent": {"id": AGENT, "type": "lbwitness", "version": "0.1.0"},
                "destination": {"ip": "10.20.0.7", "port": 8443, "bytes": 51234 + sequence, "packets": 41},
                "event": {"action": "flow", "category": ["network"], "dataset": "lbwitness.flow",
                          "duration": 1_250_000_000u64 + sequence, "end": "2026-11-21T06:00:01.25Z",
                          "kind": "event", "sequence": sequence,
                          "start": "2026-11-21T06:00:00Z", "type": ["connection", "end"]},
                "lbwitness": {"flow": {"close_reason": "fin",
                              "rtt_us": 412, "retransmits": 0}},
                "network": {"bytes": 61234 + sequence, "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
                            "direction": "ingress", "iana_number": "6", "packets": 77, "transport": "tcp",
                            "type": "ipv4"},
                "observer": {"hostname": "lb-fra-03", "ingress": {"interface": {"name": "ens5f0"}},
                             "type": "sensor"},
                "source": {"ip": format!("198.51.100.{}", sequence % 250), "port": 30000 + sequence % 30000,
                           "bytes": 10000, "packets": 36},
            });
            let body = serde_json::to_vec(&record).expect("plain JSON");
            let hash: [u8; 32] = Sha256::new().chain_update(previous).chain_update(&body).finalize().into();
            previous = hash;
            record["event"]["hash"] = json!(hex::encode(hash));
            Entry {
                sequence,
                line: Bytes::from(serde_json::to_vec(&record).expect("plain JSON")),
            }
        })
        .collect()
}

fn batch(entries: &[Entry]) -> Batch {
    Batch {
        agent_id: Arc::from(AGENT),
        entries: entries.to_vec(),
    }
}

fn settings(urls: Vec<String>, stream: Option<&str>) -> NatsSettings {
    let mut settings = NatsSettings::new(urls);
    settings.stream = stream.map(Into::into);
    settings
}

fn create_stream(client: &mut JsClient, name: &str, replicas: u32) {
    let spec = StreamSpec {
        name: name.into(),
        subjects: vec![SUBJECT.into()],
        replicas,
        duplicate_window: Duration::from_secs(120),
    };
    poll(Duration::from_secs(30), "the stream to be created", || {
        Ok(client.create_stream(&spec).ok())
    })
    .unwrap();
}

async fn connect(connector: &dyn Connector) -> Result<Box<dyn Connection>, SinkError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect()).await {
        Ok(result) => result,
        Err(_) => Err(SinkError::Timeout {
            endpoint: connector.endpoint().into(),
            timeout: CONNECT_TIMEOUT,
            doing: "connecting",
        }),
    }
}

async fn send(connection: &mut dyn Connection, batch: &Batch) -> Result<(), SinkError> {
    match tokio::time::timeout(SEND_TIMEOUT, connection.send(batch)).await {
        Ok(result) => result,
        Err(_) => Err(SinkError::Timeout {
            endpoint: "the connection".into(),
            timeout: SEND_TIMEOUT,
            doing: "sending",
        }),
    }
}

/// The stored messages are exactly `entries`, in order, each with its
/// `Nats-Msg-Id`.
fn assert_stored_exactly(stored: &[StoredMessage], entries: &[Entry]) {
    assert_eq!(stored.len(), entries.len(), "stored message count");
    for (message, entry) in stored.iter().zip(entries) {
        let want_id = format!("{AGENT}:{}", entry.sequence);
        assert_eq!(
            message.msg_id.as_deref(),
            Some(want_id.as_str()),
            "message {}",
            message.seq
        );
        assert!(
            message.data == entry.line,
            "payload of record {} differs",
            entry.sequence
        );
    }
}

fn rate(what: &str, records: usize, bytes: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "{what}: {records} records, {:.1} MiB in {:.2} s: {:.0} records/s, {:.1} MiB/s",
        bytes as f64 / 1048576.0,
        secs,
        records as f64 / secs,
        bytes as f64 / 1048576.0 / secs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_server_stores_every_record_in_order() {
    let server = NatsServer::start().unwrap();
    create_stream(&mut server.client(), "AUDIT", 1);
    let sink = connector(&settings(vec![server.url()], Some("AUDIT"))).unwrap();
    assert_eq!(sink.guarantee(), Guarantee::Acknowledged);
    assert_eq!(
        sink.endpoint(),
        format!("nats://127.0.0.1:{}", server.port())
    );
    let entries = records(10_000);
    let size = entries.iter().map(|e| e.line.len()).sum::<usize>();
    let average = size / entries.len();
    assert!(
        (850..1000).contains(&average),
        "records are ~900 bytes, not {average}"
    );

    let mut connection = connect(&*sink).await.unwrap();
    let start = Instant::now();
    for chunk in entries.chunks(500) {
        send(&mut *connection, &batch(chunk)).await.unwrap();
    }
    rate(
        "single server, R1 file store",
        entries.len(),
        size,
        start.elapsed(),
    );
    connection.close().await.unwrap();

    let stored = server.client().stored_messages("AUDIT").unwrap();
    assert_stored_exactly(&stored, &entries);
}

#[tokio::test]
async fn resent_records_are_stored_once() {
    let server = NatsServer::start().unwrap();
    create_stream(&mut server.client(), "AUDIT", 1);
    let sink = connector(&settings(vec![server.url()], None)).unwrap();
    let entries = records(1500);
    let first = batch(&entries[..1000]);

    let mut connection = connect(&*sink).await.unwrap();
    send(&mut *connection, &first).await.expect("first send");
    send(&mut *connection, &first)
        .await
        .expect("the same batch again");
    drop(connection);
    let mut connection = connect(&*sink).await.unwrap();
    send(&mut *connection, &first)
        .await
        .expect("again on a new connection");
    // Overlapping: 501..=1500, of which 501..=1000 are duplicates.
    send(&mut *connection, &batch(&entries[500..]))
        .await
        .expect("overlap");

    let stored = server.client().stored_messages("AUDIT").unwrap();
    assert_stored_exactly(&stored, &entries);
}

#[test]
fn cluster_failover_loses_nothing() {
    let began = Instant::now();
    let mut cluster = NatsCluster::start(3).unwrap();
    create_stream(&mut cluster.client(), "AUDIT", 3);
    eprintln!("cluster and R3 stream ready after {:?}", began.elapsed());
    let leader = poll(Duration::from_secs(30), "a stream leader", || {
        let info = cluster.client().stream_info("AUDIT")?;
        Ok(info["cluster"]["leader"]
            .as_str()
            .and_then(|n| cluster.index_of(n)))
    })
    .unwrap();
    // The leader first: the sink connects to it, so killing it breaks both
    // the connection and the stream's leadership.
    let mut urls = cluster.urls();
    urls.rotate_left(leader);
    let sink = connector(&settings(urls, Some("AUDIT"))).unwrap();
    let entries = records(30_000);
    let acked = AtomicU64::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let failures = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let wait_for = |n: u64| {
                poll(Duration::from_secs(120), "records to be acked", || {
                    Ok((acked.load(Ordering::Relaxed) >= n).then_some(()))
                })
            };
            wait_for(10_000)?;
            cluster.kill(leader);
            wait_for(20_000)?;
            cluster.restart(leader)
        });
        let failures = runtime.block_on(async {
            let mut failures = Vec::new();
            let mut connection: Option<Box<dyn Connection>> = None;
            let start = Instant::now();
            for chunk in entries.chunks(200) {
                let batch = batch(chunk);
                // What the delivery stage does: resend until acknowledged.
                loop {
                    assert!(
                        start.elapsed() < Duration::from_secs(180),
                        "stuck after {failures:?}"
                    );
                    if connection.is_none() {
                        match connect(&*sink).await {
                            Ok(conn) => connection = Some(conn),
                            Err(e) => {
                                failures.push(e.to_string());
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        }
                    }
                    let conn = connection.as_mut().expect("connected above");
                    match send(&mut **conn, &batch).await {
                        Ok(()) => break,
                        Err(e) => {
                            failures.push(e.to_string());
                            connection = None;
                        }
                    }
                }
                let done =
                    acked.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
                if done == 10_000 {
                    let size = entries[..10_000].iter().map(|e| e.line.len()).sum();
                    rate(
                        "3-node cluster, R3 file store",
                        10_000,
                        size,
                        start.elapsed(),
                    );
                }
            }
            failures
        });
        killer.join().expect("killer thread").unwrap();
        failures
    });
    eprintln!(
        "published after {:?}; failures during failover: {failures:#?}",
        began.elapsed()
    );
    assert!(
        !failures.is_empty(),
        "killing the connected leader must break the connection"
    );

    let stored = poll(Duration::from_secs(30), "the stream after failover", || {
        Ok(cluster.client().stored_messages("AUDIT").ok())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    assert_stored_exactly(&stored, &entries);

    // The restarted node caught up: the stream has all three replicas again.
    poll(
        Duration::from_secs(60),
        "the restarted node to catch up",
        || {
            let info = cluster.client().stream_info("AUDIT")?;
            let replicas = info["cluster"]["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let current = replicas.iter().filter(|r| r["current"] == true).count();
            Ok((info["cluster"]["leader"].is_string() && current == 2).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
}

#[tokio::test]
async fn no_stream_for_the_subject_is_a_clear_rejection() {
    let server = NatsServer::start().unwrap();
    let sink = connector(&settings(vec![server.url()], None)).unwrap();
    let mut connection = connect(&*sink).await.unwrap();
    let err = send(&mut *connection, &batch(&records(3)))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Rejected { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no JetStream stream listens on subject `lbwitness.audit`"),
        "{text}"
    );
    assert!(text.contains("nats stream add"), "{text}");

    // With `stream` set, connect() itself says what is wrong.
    let sink = connector(&settings(vec![server.url()], Some("MISSING"))).unwrap();
    let err = connect(&*sink).await.err().expect("no such stream");
    assert!(
        err.to_string().contains("stream `MISSING` does not exist"),
        "{err}"
    );
    let mut client = server.client();
    client
        .create_stream(&StreamSpec {
            name: "OTHER".into(),
            subjects: vec!["other.>".into()],
            replicas: 1,
            duplicate_window: Duration::from_secs(60),
        })
        .unwrap();
    let sink = connector(&settings(vec![server.url()], Some("OTHER"))).unwrap();
    let err = connect(&*sink)
        .await
        .err()
        .expect("stream on other subjects");
    assert!(
        err.to_string()
            .contains("captures [\"other.>\"], not `lbwitness.audit`"),
        "{err}"
    );
}

#[tokio::test]
async fn credentials_are_checked() {
    let server = NatsServer::start_with_auth("agent", "right").unwrap();
    let with = |user: Option<&str>, password: Option<&str>| {
        let mut s = settings(vec![server.url()], None);
        s.user = user.map(Into::into);
        s.password = password.map(Into::into);
        connector(&s).unwrap()
    };
    for sink in [with(Some("agent"), Some("wrong")), with(None, None)] {
        let err = connect(&*sink).await.err().expect("refused");
        assert!(matches!(err, SinkError::Rejected { .. }), "{err}");
        assert!(err.to_string().contains("Authorization Violation"), "{err}");
        assert!(
            err.to_string()
                .contains("check `user`/`password` or `token`"),
            "{err}"
        );
    }
    connect(&*with(Some("agent"), Some("right")))
        .await
        .expect("right credentials");
}

/// A TCP server on a free loopback port that runs `serve` on each
/// connection until dropped.
struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(serve: fn(TcpStream, &AtomicBool)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            std::thread::scope(|scope| {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            stream
                                .set_read_timeout(Some(Duration::from_millis(20)))
                                .unwrap();
                            let flag = &*flag;
                            scope.spawn(move || serve(stream, flag));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads (and discards) until the peer closes or the server stops;
/// answers every `PING` with `PONG` when `pong` is set.
fn hold(mut stream: TcpStream, stop: &AtomicBool, pong: bool) {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        while pong && let Some(at) = seen.windows(6).position(|w| w == b"PING\r\n") {
            seen.drain(..at + 6);
            let _ = stream.write_all(b"PONG\r\n");
        }
        seen.drain(..seen.len().saturating_sub(5));
    }
}

#[tokio::test]
async fn garbage_and_silent_servers() {
    let http = FakeServer::start(|mut stream, _| {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let err = connect(&*connector(&settings(vec![http.url()], None)).unwrap())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SinkError::Protocol { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("unexpected `HTTP/1.1 400 Bad Request`; is this a NATS server"),
        "{err}"
    );

    let binary = FakeServer::start(|mut stream, _| {
        let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, b' ', 0xff]);
    });
    let err = connect(&*connector(&settings(vec![binary.url()], None)).unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("is this a NATS server"), "{err}");

    // Accepts and never says anything: only the caller's timeout ends it.
    let silent = FakeServer::start(|stream, stop| hold(stream, stop, false));
    let sink = connector(&settings(vec![silent.url()], None)).unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), sink.connect()).await;
    assert!(
        waited.is_err(),
        "connect to a silent server must hang until the timeout"
    );
}

#[tokio::test]
async fn a_server_that_never_acks_times_out_and_the_next_connect_moves_on() {
    // Greets and answers PING, so the handshake completes, but never acks.
    let mute = FakeServer::start(|mut stream, stop| {
        let info = b"INFO {\"server_id\":\"FAKE\",\"version\":\"2.9.10\",\"headers\":true,\"max_payload\":1048576} \r\n";
        if stream.write_all(info).is_ok() {
            hold(stream, stop, true);
        }
    });
    let server = NatsServer::start().unwrap();
    create_stream(&mut server.client(), "AUDIT", 1);
    let sink = connector(&settings(vec![mute.url(), server.url()], None)).unwrap();
    let entries = records(10);

    let mut connection = connect(&*sink)
        .await
        .expect("the mute server completes the handshake");
    let waited = tokio::time::timeout(
        Duration::from_millis(500),
        connection.send(&batch(&entries)),
    )
    .await;
    assert!(waited.is_err(), "no acks: the caller's timeout must fire");
    drop(connection);
    let mut connection = connect(&*sink).await.unwrap();
    send(&mut *connection, &batch(&entries))
        .await
        .expect("the real server, tried next");
    assert_stored_exactly(&server.client().stored_messages("AUDIT").unwrap(), &entries);
}

/// TLS settings trusting `ca`, with the test client certificate if asked.
fn tls_settings(pki: &Pki, ca: std::path::PathBuf, client_cert: bool) -> TlsSettings {
    TlsSettings {
        ca_file: Some(ca),
        server_name: None,
        client_cert: client_cert.then(|| pki.client.cert.clone()),
        client_key: client_cert.then(|| pki.client.key.clone()),
    }
}

/// The TLS error `settings` get from `connect()`, or a panic naming what
/// happened instead.
async fn tls_refusal(settings: &NatsSettings) -> String {
    let sink = connector(settings).unwrap();
    match connect(&*sink).await {
        Err(SinkError::Tls { message, .. }) => message,
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("expected a TLS error, connected"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_url_stores_every_record_in_order() {
    let pki = Pki::new().unwrap();
    let server = NatsServer::start_tls(&pki, &pki.server, false).unwrap();
    create_stream(&mut server.client(), "AUDIT", 1);
    // tls:// with a CA: the name checked is the URL's host, 127.0.0.1.
    let mut s = settings(vec![server.tls_url()], Some("AUDIT"));
    s.tls = Some(tls_settings(&pki, pki.ca.clone(), false));
    let sink = connector(&s).unwrap();
    assert_eq!(sink.endpoint(), server.tls_url());
    let entries = records(10_000);
    let size = entries.iter().map(|e| e.line.len()).sum::<usize>();

    let mut connection = connect(&*sink).await.unwrap();
    let start = Instant::now();
    for chunk in entries.chunks(500) {
        send(&mut *connection, &batch(chunk)).await.unwrap();
    }
    rate(
        "single server over TLS, R1",
        entries.len(),
        size,
        start.elapsed(),
    );
    connection.close().await.unwrap();

    let stored = server.client().stored_messages("AUDIT").unwrap();
    assert_stored_exactly(&stored, &entries);
}

#[tokio::test]
async fn a_required_client_certificate_works_and_its_absence_is_explained() {
    let pki = Pki::new().unwrap();
    let server = NatsServer::start_tls(&pki, &pki.server, true).unwrap();
    create_stream(&mut server.client(), "AUDIT", 1);
    let mut s = settings(vec![server.url()], Some("AUDIT"));

    s.tls = Some(tls_settings(&pki, pki.ca.clone(), false));
    let message = tls_refusal(&s).await;
    assert!(
        // Go's TLS 1.3 server (nats-server 2.9) answers a missing client
        // certificate with `bad_certificate`, newer ones with
        // `certificate_required`: `explain` words both.
        (message.contains("requires a client certificate")
            || message.contains("without a client certificate"))
            && message.contains("client_cert"),
        "{message}\nserver log:\n{}",
        server.log()
    );

    s.tls = Some(tls_settings(&pki, pki.ca.clone(), true));
    let sink = connector(&s).unwrap();
    let entries = records(1000);
    let mut connection = connect(&*sink).await.unwrap();
    for chunk in entries.chunks(250) {
        send(&mut *connection, &batch(chunk)).await.unwrap();
    }
    connection.close().await.unwrap();
    let stored = server.client().stored_messages("AUDIT").unwrap();
    assert_stored_exactly(&stored, &entries);
}

#[tokio::test]
async fn bad_server_certificates_are_explained() {
    let pki = Pki::new().unwrap();
    let expired_at = format!("expired at {EXPIRED_NOT_AFTER}");
    for (cert, ca, want) in [
        (&pki.expired, pki.ca.clone(), expired_at.as_str()),
        (
            &pki.wrong_name,
            pki.ca.clone(),
            "not valid for the expected name \"127.0.0.1\" (it names wrong.example)",
        ),
        (&pki.server, pki.other_ca.clone(), "unknown issuer"),
    ] {
        let server = NatsServer::start_tls(&pki, cert, false).unwrap();
        let mut s = settings(vec![server.url()], None);
        s.tls = Some(tls_settings(&pki, ca, false));
        let message = tls_refusal(&s).await;
        assert!(message.contains(want), "want {want:?} in {message:?}");
    }
}

#[tokio::test]
async fn tls_is_never_given_up_nor_missing_silently() {
    let pki = Pki::new().unwrap();
    let plain = NatsServer::start().unwrap();
    create_stream(&mut plain.client(), "AUDIT", 1);
    let mut s = settings(vec![plain.url()], None);
    s.tls = Some(tls_settings(&pki, pki.ca.clone(), false));
    let message = tls_refusal(&s).await;
    assert!(
        message.contains("does not offer") && message.contains("not sent in plain text"),
        "{message}"
    );
    let stream = plain.client().stream_info("AUDIT").unwrap();
    assert_eq!(
        stream["state"]["messages"], 0,
        "nothing reached the plain server"
    );

    let tls_only = NatsServer::start_tls(&pki, &pki.server, false).unwrap();
    let message = tls_refusal(&settings(vec![tls_only.url()], None)).await;
    assert!(
        message.contains("requires TLS") && message.contains("add a `tls` table"),
        "{message}"
    );
}

#[tokio::test]
async fn advertised_servers_inherit_tls() {
    let pki = Pki::new().unwrap();
    let mut cluster = NatsCluster::start_tls(3, &pki).unwrap();
    create_stream(&mut cluster.client(), "AUDIT", 3);
    let port = |url: &str| url.rsplit(':').next().unwrap().to_owned();
    // Only n1 is configured; n2 and n3 are learned from its INFO as bare
    // `127.0.0.1:<port>` and must be spoken to over TLS, checked against
    // their own host, 127.0.0.1.
    let n1 = format!("tls://127.0.0.1:{}", port(&cluster.urls()[0]));
    let mut s = settings(vec![n1], Some("AUDIT"));
    s.tls = Some(tls_settings(&pki, pki.ca.clone(), false));
    let sink = connector(&s).unwrap();
    let entries = records(2000);
    let mut connection = connect(&*sink).await.unwrap();
    send(&mut *connection, &batch(&entries[..1000]))
        .await
        .unwrap();
    connection.close().await.unwrap();

    cluster.kill(0);
    let mut connection = poll_connect(&*sink).await;
    send(&mut *connection, &batch(&entries[1000..]))
        .await
        .unwrap();
    connection.close().await.unwrap();

    let stored = poll(
        Duration::from_secs(30),
        "the stream after n1's death",
        || Ok(Some(cluster.client().stored_messages("AUDIT")?)),
    )
    .unwrap();
    assert_stored_exactly(&stored, &entries);
}

/// Connects, retrying while a cluster elects new leaders (a stream check
/// may fail for a few seconds after a node dies).
async fn poll_connect(sink: &dyn Connector) -> Box<dyn Connection> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect(sink).await {
            Ok(connection) => return connection,
            Err(e @ SinkError::Tls { .. }) => panic!("a learned server over TLS: {e}"),
            Err(e) if Instant::now() > deadline => panic!("no server after 30 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
