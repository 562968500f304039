//! NKey and `.creds` (JWT) authentication of the NATS sink against real
//! nats-server processes.
//!
//! * NKey: a server whose `authorization` lists the agent's public NKey
//!   (and a password user the test client reads back with); records sent
//!   with `nkey_seed_file` are stored exactly; another user's seed is
//!   refused as an authorization violation.
//! * `.creds`: a server in operator mode (`operator` + `resolver: MEMORY`)
//!   with JWTs the test signs itself (operator → account → user, ed25519
//!   NKeys, as `nsc` would). The right creds connect and publish (no
//!   JetStream in operator mode here, so the publish is refused for want of
//!   a stream, after authentication); creds of an account the server does
//!   not know are refused.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use integration_tests::{Scratch, collectors::nats::NatsServer};
use lbwitness_delivery::sink::{
    endpoint::SinkError,
    nats::{NatsSettings, connector},
};
use nkeys::KeyPair;
use serde_json::{Value, json};

mod nats_common;

use nats_common::*;

#[tokio::test]
async fn nkey_authentication_stores_every_record() {
    let agent = KeyPair::new_user();
    let server = NatsServer::start_with_nkey(&agent.public_key(), "oracle", "pw").unwrap();
    create_stream(&mut server.client(), "AUDIT", 1);
    let seed = Scratch::file("agent.nk", &agent.seed().unwrap());
    let mut s = settings(vec![server.url()], Some("AUDIT"));
    s.nkey_seed_file = Some(seed.0.clone());
    let entries = records(500);
    send_all(&*connector(&s).unwrap(), &entries, "NKey user").await;
    assert_stored_exactly(&server.client().stored_messages("AUDIT").unwrap(), &entries);

    let stranger = Scratch::file("stranger.nk", &KeyPair::new_user().seed().unwrap());
    s.nkey_seed_file = Some(stranger.0.clone());
    assert_refused(&s).await;
}

/// The server refuses `s`'s credentials, and the error says so.
async fn assert_refused(s: &NatsSettings) {
    let err = connect(&*connector(s).unwrap())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, SinkError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("Authorization Violation"), "{err}");
}

/// A JWT with `claims`, issued by `issuer`, as nats-server checks them.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = json!({
        "jti": format!("{name}{iat}").to_uppercase(),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn account_jwt(operator: &KeyPair, account: &KeyPair) -> String {
    let limits = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
                        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
    jwt(
        operator,
        &account.public_key(),
        "lbw",
        json!({"limits": limits, "default_permissions": {"pub": {}, "sub": {}},
               "type": "account", "version": 2}),
    )
}

/// A `.creds` file for `user` of `account`, as `nsc generate creds` writes.
fn creds(account: &KeyPair, user: &KeyPair) -> Scratch {
    let token = jwt(
        account,
        &user.public_key(),
        "agent",
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
               "type": "user", "version": 2}),
    );
    let seed = user.seed().unwrap();
    Scratch::file(
        "agent.creds",
        &format!(
            "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
}

#[tokio::test]
async fn creds_authentication_against_an_operator_mode_server() {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test",
        json!({"type": "operator", "version": 2}),
    );
    let server = NatsServer::start_operator(
        &operator_jwt,
        &[(account.public_key(), account_jwt(&operator, &account))],
    )
    .unwrap();

    let file = creds(&account, &KeyPair::new_user());
    let mut s = settings(vec![server.url()], None);
    s.creds_file = Some(file.0.clone());
    let sink = connector(&s).unwrap();
    let mut connection = connect(&*sink)
        .await
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    // Authenticated: the publish reaches the server, which has no stream.
    let err = send(&mut *connection, &batch(&records(3)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no JetStream stream listens"),
        "{err}"
    );

    // An account the server does not know.
    let unknown = creds(&KeyPair::new_account(), &KeyPair::new_user());
    s.creds_file = Some(unknown.0.clone());
    assert_refused(&s).await;
}
