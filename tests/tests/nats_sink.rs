//! The NATS JetStream sink against real nats-server processes: what the
//! stream stored (read back through JetStream's own API) is the oracle.
//! TLS is in `nats_tls.rs`.
//!
//! Figures (records/s, MiB/s) are printed with `--nocapture`.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use integration_tests::collectors::nats::{NatsCluster, NatsServer, StreamSpec, poll};
use lbwitness_delivery::sink::{
    endpoint::{Connection, Guarantee, SinkError},
    nats::connector,
};

mod nats_common;

use nats_common::*;

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

    send_all(&*sink, &entries, "single server, R1 file store").await;

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
