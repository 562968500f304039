//! What the NATS sink tests share (`nats_sink.rs`, `nats_tls.rs`): agent-
//! shaped records, the sink's settings, connecting and sending with
//! timeouts, and the oracle over what a stream stored.

#![allow(dead_code, reason = "each test file uses its own part")]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use integration_tests::collectors::{
    certs::Pki,
    nats::{JsClient, StoredMessage, StreamSpec, poll},
};
use lbwitness_delivery::sink::{
    endpoint::{Batch, Connection, Connector, Entry, SinkError},
    nats::{NatsSettings, connector},
    tls::TlsSettings,
};
use serde_json::json;
use sha2::{Digest, Sha256};

pub const AGENT: &str = "0b6e6f3c-6d2f-4a39-9c1e-2a4e1d6f0a11";
pub const SUBJECT: &str = "lbwitness.audit";
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// `count` chained flow records shaped like the agent's (~900 bytes of
/// canonical JSON each), numbered from 1.
pub fn records(count: u64) -> Vec<Entry> {
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

pub fn batch(entries: &[Entry]) -> Batch {
    Batch {
        agent_id: Arc::from(AGENT),
        entries: entries.to_vec(),
    }
}

pub fn settings(urls: Vec<String>, stream: Option<&str>) -> NatsSettings {
    let mut settings = NatsSettings::new(urls);
    settings.stream = stream.map(Into::into);
    settings
}

pub fn create_stream(client: &mut JsClient, name: &str, replicas: u32) {
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

pub async fn connect(connector: &dyn Connector) -> Result<Box<dyn Connection>, SinkError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect()).await {
        Ok(result) => result,
        Err(_) => Err(SinkError::Timeout {
            endpoint: connector.endpoint().into(),
            timeout: CONNECT_TIMEOUT,
            doing: "connecting",
        }),
    }
}

pub async fn send(connection: &mut dyn Connection, batch: &Batch) -> Result<(), SinkError> {
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
pub fn assert_stored_exactly(stored: &[StoredMessage], entries: &[Entry]) {
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

pub fn rate(what: &str, records: usize, bytes: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "{what}: {records} records, {:.1} MiB in {:.2} s: {:.0} records/s, {:.1} MiB/s",
        bytes as f64 / 1048576.0,
        secs,
        records as f64 / secs,
        bytes as f64 / 1048576.0 / secs
    );
}

/// Sends `entries` in batches of 500 over one connection, prints the rate
/// as `what`, and closes the connection.
pub async fn send_all(sink: &dyn Connector, entries: &[Entry], what: &str) {
    let size = entries.iter().map(|e| e.line.len()).sum::<usize>();
    let mut connection = connect(sink).await.unwrap();
    let start = Instant::now();
    for chunk in entries.chunks(500) {
        send(&mut *connection, &batch(chunk)).await.unwrap();
    }
    rate(what, entries.len(), size, start.elapsed());
    connection.close().await.unwrap();
}

/// TLS settings trusting `ca`, with the test client certificate if asked.
pub fn tls_settings(pki: &Pki, ca: std::path::PathBuf, client_cert: bool) -> TlsSettings {
    TlsSettings {
        ca_file: Some(ca),
        server_name: None,
        client_cert: client_cert.then(|| pki.client.cert.clone()),
        client_key: client_cert.then(|| pki.client.key.clone()),
    }
}

/// The TLS error `settings` get from `connect()`, or a panic naming what
/// happened instead.
pub async fn tls_refusal(settings: &NatsSettings) -> String {
    let sink = connector(settings).unwrap();
    match connect(&*sink).await {
        Err(SinkError::Tls { message, .. }) => message,
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("expected a TLS error, connected"),
    }
}

/// Connects, retrying while a cluster elects new leaders (a stream check
/// may fail for a few seconds after a node dies).
pub async fn poll_connect(sink: &dyn Connector) -> Box<dyn Connection> {
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
