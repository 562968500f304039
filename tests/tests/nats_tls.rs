//! The NATS JetStream sink over TLS against real nats-server processes
//! (nats-server's `tls {}` block, certificates from `Pki`): 10 000
//! records stored over a `tls://` URL; a required client certificate works
//! when given and its absence is explained; expired, wrong-name and
//! unknown-CA certificates, TLS configured against a plain server and a
//! TLS-only server without TLS configured each fail with their own
//! `SinkError::Tls` message; servers a TLS cluster advertises are
//! reached over TLS once the configured one is dead. What the stream
//! stored, read back through JetStream's API over TLS, is the oracle.

use std::time::Duration;

use integration_tests::collectors::{
    certs::{EXPIRED_NOT_AFTER, Pki},
    nats::{NatsCluster, NatsServer, poll},
};
use lbwitness_delivery::sink::nats::connector;

mod nats_common;

use nats_common::*;

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

    send_all(&*sink, &entries, "single server over TLS, R1").await;

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
