//! The RELP session against scripted servers on an in-memory pipe: the
//! answers rsyslog does not give on demand (errors, disorder, a full
//! window).

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;
use crate::sink::{endpoint::Entry, syslog::rfc5424::Facility};

const OPEN_OK: &[u8] = b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0\ncommands=syslog\n";

/// One frame the client sent.
#[derive(Debug)]
struct Got {
    txnr: u32,
    command: String,
    data: Vec<u8>,
}

/// Reads the client's frames one by one.
struct Server {
    io: DuplexStream,
    buf: Vec<u8>,
}

impl Server {
    async fn next(&mut self) -> Option<Got> {
        loop {
            if let Some((f, used)) = frame::parse(&self.buf, 1 << 20).expect("the client's framing")
            {
                let got = Got {
                    txnr: f.txnr,
                    command: String::from_utf8(f.command.to_vec()).unwrap(),
                    data: f.data.to_vec(),
                };
                self.buf.drain(..used);
                return Some(got);
            }
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk).await.unwrap() {
                0 => return None,
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether another frame has already arrived, without waiting for one.
    async fn frame_waiting(&mut self) -> bool {
        if matches!(frame::parse(&self.buf, 1 << 20), Ok(Some(_))) {
            return true;
        }
        let mut chunk = [0u8; 4096];
        // A zero timeout polls the read once: only bytes already in the pipe.
        match tokio::time::timeout(std::time::Duration::ZERO, self.io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    async fn answer(&mut self, txnr: u32, data: &[u8]) {
        let mut out = Vec::new();
        encode(txnr, "rsp", &[data], &mut out);
        self.io.write_all(&out).await.unwrap();
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }
}

fn pipe() -> (Box<dyn Stream>, Server) {
    let (client, server) = duplex(1 << 20);
    (
        Box::new(client),
        Server {
            io: server,
            buf: Vec::new(),
        },
    )
}

fn header() -> Arc<Header> {
    Arc::new(Header::new(Facility::Local0, "lbwitness", Some(7)).unwrap())
}

async fn open(stream: Box<dyn Stream>) -> Result<RelpConnection, SinkError> {
    RelpConnection::open(stream, "syslog+relp://test:1".into(), header(), None).await
}

/// Opens a session, answering `open` with `answer`.
async fn opened(answer: &'static [u8]) -> (Result<RelpConnection, SinkError>, Server) {
    let (stream, mut server) = pipe();
    let serve = async {
        let got = server.next().await.unwrap();
        assert_eq!((got.txnr, got.command.as_str()), (1, "open"));
        server.answer(1, answer).await;
        got
    };
    let (conn, got) = tokio::join!(open(stream), serve);
    let offers = String::from_utf8(got.data).unwrap();
    assert!(
        offers.starts_with("relp_version=0\nrelp_software=lbwitness,"),
        "{offers}"
    );
    assert!(offers.ends_with("\ncommands=syslog"), "{offers}");
    (conn, server)
}

fn batch(first: u64, n: u64) -> Batch {
    Batch {
        agent_id: "a".into(),
        entries: (first..first + n)
            .map(|sequence| Entry {
                sequence,
                line: Bytes::from(format!(
                    "{{\"event\":{{\"action\":\"flow\",\"sequence\":{sequence}}}}}"
                )),
            })
            .collect(),
    }
}

#[tokio::test]
async fn a_session_from_open_to_close() {
    let (conn, mut server) = opened(OPEN_OK).await;
    let mut conn = conn.unwrap();
    let b = batch(10, 3);
    let serve = async {
        let mut frames = Vec::new();
        for _ in 0..3 {
            let got = server.next().await.unwrap();
            server.answer(got.txnr, b"200 OK").await;
            frames.push(got);
        }
        frames
    };
    let (sent, frames) = tokio::join!(conn.send(&b), serve);
    sent.unwrap();
    for (i, got) in frames.iter().enumerate() {
        assert_eq!((got.txnr, got.command.as_str()), (2 + i as u32, "syslog"));
        let mut expected = Vec::new();
        header().write(&b.entries[i].line, &mut expected);
        expected.extend_from_slice(&b.entries[i].line);
        assert_eq!(
            got.data, expected,
            "the RFC 5424 message is the frame's data"
        );
    }
    let serve = async {
        let got = server.next().await.unwrap();
        assert_eq!(
            (got.txnr, got.command.as_str(), got.data.len()),
            (5, "close", 0)
        );
        // librelp: an empty rsp, then the serverclose hint.
        server.raw(b"5 rsp 0\n0 serverclose 0\n").await;
    };
    let (closed, ()) = tokio::join!(Box::new(conn).close(), serve);
    closed.unwrap();
}

#[tokio::test]
async fn an_error_status_rejects_the_batch_and_retires_the_connection() {
    let (conn, mut server) = opened(OPEN_OK).await;
    let mut conn = conn.unwrap();
    let b = batch(100, 3);
    let serve = async {
        for status in [&b"200 OK"[..], b"500 out of disk space", b"200 OK"] {
            let got = server.next().await.unwrap();
            server.answer(got.txnr, status).await;
        }
    };
    let (sent, ()) = tokio::join!(conn.send(&b), serve);
    let err = sent.unwrap_err();
    assert!(
        matches!(&err, SinkError::Rejected { detail, .. }
            if detail.contains("500 out of disk space") && detail.contains("event.sequence 101")),
        "{err}"
    );
    let again = conn.send(&b).await.unwrap_err();
    assert!(again.to_string().contains("reconnect"), "{again}");
}

async fn answered_with(raw: &'static [u8]) -> SinkError {
    let (conn, mut server) = opened(OPEN_OK).await;
    let mut conn = conn.unwrap();
    let b = batch(1, 2);
    let serve = async {
        let _ = server.next().await.unwrap();
        server.raw(raw).await;
        // Keep the pipe open until the client has judged the answer.
        let _ = server.next().await;
    };
    let (sent, ()) = tokio::join!(conn.send(&b), serve);
    sent.unwrap_err()
}

#[tokio::test]
async fn disorder_garbage_and_serverclose_fail_the_send() {
    let err = answered_with(b"3 rsp 6 200 OK\n").await;
    assert!(
        matches!(&err, SinkError::Protocol { detail, .. } if detail.contains("transaction 2")),
        "{err}"
    );
    let err = answered_with(b"2 syslog 2 hi\n").await;
    assert!(matches!(err, SinkError::Protocol { .. }), "{err}");
    let err = answered_with(b"2 rsp 6 200 OK\r\n").await;
    assert!(
        matches!(&err, SinkError::Protocol { detail, .. } if detail.contains("\\r")),
        "{err}"
    );
    let err = answered_with(b"0 serverclose 0\n").await;
    assert!(
        matches!(&err, SinkError::Io { source, .. }
            if source.to_string().contains("serverclose") && source.to_string().contains("answering 2 command(s)")),
        "{err}"
    );
}

#[tokio::test]
async fn open_answers_that_do_not_make_a_session() {
    let (conn, _server) = opened(b"500 busy").await;
    assert!(matches!(conn.err().unwrap(), SinkError::Rejected { .. }));
    let (conn, _server) = opened(b"200 OK\nrelp_version=0\ncommands=eventlog\n").await;
    let err = conn.err().unwrap();
    assert!(
        matches!(&err, SinkError::Rejected { detail, .. } if detail.contains("syslog command")),
        "{err}"
    );
    let (conn, _server) = opened(b"200 OK\ncommands=syslog\n").await;
    assert!(matches!(conn.err().unwrap(), SinkError::Protocol { .. }));
    let (conn, _server) = opened(b"OK").await;
    assert!(matches!(conn.err().unwrap(), SinkError::Protocol { .. }));
}

/// A server that answers the oldest command only when [`WINDOW`] are
/// unanswered and nothing more has arrived: the client must send exactly
/// that many before it waits (more is caught here; fewer would stall, and
/// the test time out). The test runtime is one thread, so by the time the
/// server runs, the client has written all it would before waiting.
#[tokio::test]
async fn at_most_a_window_of_commands_is_unanswered() {
    let (conn, mut server) = opened(OPEN_OK).await;
    let mut conn = conn.unwrap();
    let total = 3 * WINDOW as u32 + 17;
    let b = batch(1, u64::from(total));
    let serve = async {
        let mut pending = std::collections::VecDeque::new();
        let mut received = 0;
        while received < total {
            let got = server.next().await.unwrap();
            received += 1;
            pending.push_back(got.txnr);
            if pending.len() == WINDOW {
                assert!(
                    !server.frame_waiting().await,
                    "more than a window unanswered"
                );
                let oldest = pending.pop_front().unwrap();
                server.answer(oldest, b"200 OK").await;
            }
        }
        for txnr in pending {
            server.answer(txnr, b"200 OK").await;
        }
    };
    let sending = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        tokio::join!(conn.send(&b), serve).0
    });
    sending.await.expect("the window stalled").unwrap();
}
