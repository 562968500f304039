//! End-to-end delivery faults: the real agent under real traffic, with a
//! JetStream node crashing under it and with collectors that misbehave.
//! The oracles are what the real servers stored (the stream read back
//! through JetStream's own API, rsyslogd's files), checked with
//! `lbwitness verify` and by counting sequences here.
//!
//! * JetStream node failure: one nats group over a 3-node R3 cluster; the
//!   stream's leader is SIGKILLed under traffic and restarted. The stream
//!   holds every sequence exactly once (dedup by `Nats-Msg-Id`) and
//!   verifies intact.
//! * Bad collectors: every record goes to a good RELP group and to a bad
//!   group whose endpoint never reads, answers garbage, or presents an
//!   expired certificate. The good group's trail is complete and intact,
//!   the log names the bad endpoint and why, SIGTERM exits 0 within the
//!   drain bound, and the bad group's records wait in the spool until a
//!   good collector takes its place.
//!
//! Needs root: `cargo test --release -p integration-tests --test
//! delivery_faults -- --test-threads=1`.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use integration_tests::{
    Scratch,
    agent::Agent,
    collectors::{
        bad::{Listener, TlsServer},
        certs::Pki,
        nats::{NatsCluster, StreamSpec, poll},
    },
    delivery::{
        Collector, Records, Relay, Traffic, assert_complete, by_sequence, config_preamble,
        ends_with_final, plain, records_of, verify_files, verify_stored, wait_final, wait_log_line,
    },
    lab::Lab,
};

const STREAM: &str = "AUDIT";
const SUBJECT: &str = "lbwitness.audit";

/// Group settings shared by every group here: small batches so many are in
/// flight, short timeouts and backoff so faults show within seconds.
const GROUP_TUNING: &str = "batch_records = 16\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
                            connect_timeout_ms = 1000\nsend_timeout_ms = 3000\n";

/// A clean stop waits for the spool, gives the groups 2.5 s to drain
/// (agent/src/run/delivery.rs) and then exits; the rest is margin for a
/// loaded 2-core machine.
const STOP_BOUND: Duration = Duration::from_secs(6);

/// Polls the stream until it holds at least `n` messages; returns the count.
fn wait_stream(cluster: &NatsCluster, n: u64, what: &str) -> u64 {
    poll(Duration::from_secs(30), what, || {
        let info = cluster.client().stream_info(STREAM)?;
        let have = info["state"]["messages"].as_u64().unwrap_or(0);
        Ok((have >= n).then_some(have))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()))
}

#[test]
fn jetstream_leader_killed_under_traffic_loses_nothing() {
    let started = Instant::now();
    let lab = Lab::new("dlfn");
    let mut cluster = NatsCluster::start(3).expect("start the NATS cluster");
    let spec = StreamSpec {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        replicas: 3,
        duplicate_window: Duration::from_secs(120),
    };
    poll(Duration::from_secs(30), "the stream to be created", || {
        Ok(cluster.client().create_stream(&spec).ok())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    let leader = poll(Duration::from_secs(30), "a stream leader", || {
        let info = cluster.client().stream_info(STREAM)?;
        Ok(info["cluster"]["leader"]
            .as_str()
            .and_then(|n| cluster.index_of(n)))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));

    // One relay per node into lb, the leader's first: the agent connects to
    // the first URL that answers, so the kill breaks its connection as well
    // as the stream's leadership. The cluster's INFO also advertises its
    // nodes' own addresses (`connect_urls`, 127.0.0.1:<node port>), which
    // the agent adds to its list; in lb nothing listens there, so trying
    // one is refused at once and the agent moves on to the next address
    // (and, were a relay to hold that port number there by chance, it
    // would lead to a node of the same cluster): harmless either way.
    let mut ports: Vec<u16> = cluster
        .urls()
        .iter()
        .map(|u| u.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    ports.rotate_left(leader);
    let relays: Vec<Relay> = ports
        .iter()
        .map(|p| Relay::start(&lab.lb, SocketAddr::from(([127, 0, 0, 1], *p))))
        .collect();
    let urls: Vec<String> = relays
        .iter()
        .map(|r| format!("\"nats://{}\"", r.addr))
        .collect();
    let text = format!(
        "{}[[groups]]\nname = \"js\"\nkind = \"nats\"\nstrategy = \"failover\"\n{GROUP_TUNING}\
         [[groups.endpoints]]\nurls = [{}]\nsubject = \"{SUBJECT}\"\nstream = \"{STREAM}\"\n",
        config_preamble(),
        urls.join(", ")
    );
    let conf = Scratch::file("delivery.toml", &text);
    let state = Scratch::path("state");
    let mut agent = Agent::start_delivering(&lab.lb, lab.iface(), &conf.0, &state.0);
    let traffic = Traffic::start(&lab);

    let before = wait_stream(&cluster, 100, "records before the kill");
    cluster.kill(leader);
    let killed_at = Instant::now();
    // Delivery resumes through the survivors once they elect a new leader.
    let resumed = wait_stream(&cluster, before + 100, "records after the kill");
    let resumed_after = killed_at.elapsed();
    cluster.restart(leader).expect("restart the old leader");
    let after_restart = wait_stream(&cluster, resumed + 100, "records after the restart");
    let sent = traffic.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "clean stop: {}", agent.log_text());
    // The kill was felt: the agent's connection broke (else this test
    // would prove nothing about failover).
    let log = plain(&agent.log_text());
    assert!(
        log.lines()
            .any(|l| l.contains("collector endpoint down") && l.contains("group=js")),
        "the agent saw its NATS connection break: {log}"
    );
    // What the agent saw of the failover, for the figures.
    for line in log.lines().filter(|l| {
        ["WARN", "ERROR", "healthy again", "delivered"]
            .iter()
            .any(|w| l.contains(w))
    }) {
        eprintln!("agent: {line}");
    }

    let stored = poll(
        Duration::from_secs(30),
        "the final checkpoint stored",
        || {
            let messages = cluster.client().stored_messages(STREAM)?;
            let lines = messages
                .iter()
                .map(|m| String::from_utf8_lossy(&m.data).into_owned());
            let records = records_of(lines);
            Ok(ends_with_final(&records).then_some((messages, records)))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", agent.log_text(), cluster.logs()));
    let (messages, records) = stored;
    let last = assert_complete(&records);
    let dups: Vec<u64> = records
        .iter()
        .filter(|(_, (_, n))| *n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(dups.is_empty(), "JetStream stored duplicates: {dups:?}");
    assert_eq!(messages.len() as u64, last, "one message per sequence");
    for m in &messages {
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        let want = format!(
            "{}:{}",
            v["agent"]["id"].as_str().unwrap(),
            v["event"]["sequence"]
        );
        assert_eq!(
            m.msg_id.as_deref(),
            Some(want.as_str()),
            "message {}",
            m.seq
        );
    }

    let file = Scratch::path("stream.ndjson");
    let body: Vec<u8> = messages
        .iter()
        .flat_map(|m| m.data.iter().copied().chain([b'\n']))
        .collect();
    std::fs::write(&file.0, body).unwrap();
    let (code, report, out) = verify_files(&state.0, &[&file.0]);
    assert_eq!(code, 0, "verify over the stream: {out}");
    assert_eq!(report["verdict"], "intact", "{out}");
    eprintln!(
        "jetstream node failure: {sent} datagrams, {last} records stored once each \
         ({before} before the kill, {resumed} when delivery resumed {resumed_after:?} after it, \
         {after_restart} after the restart), stop took {:?}, {:?}",
        exit.took,
        started.elapsed()
    );
}

/// A misbehaving collector for the `bad` group, with the endpoint TOML that
/// points the agent at it and the words its error must carry in the log.
struct Bad {
    /// What is kept alive for the test's duration (listener, server, PKI).
    _guards: Vec<Box<dyn std::any::Any>>,
    relay: Relay,
    /// Everything but `address` of the endpoint table.
    endpoint_extra: String,
    /// What the agent's warning must say about it.
    words: &'static [&'static str],
}

impl Bad {
    fn silent(lab: &Lab) -> Self {
        let l = Listener::silent().expect("a silent listener");
        let relay = Relay::start(&lab.lb, l.address().parse().unwrap());
        Self {
            _guards: vec![Box::new(l)],
            relay,
            endpoint_extra: "transport = \"relp\"\n".into(),
            // The RELP `open` is never answered: the connect times out.
            words: &["no answer within", "connecting"],
        }
    }

    fn garbage(lab: &Lab) -> Self {
        let l = Listener::garbage(b"HTTP/1.1 400 Bad Request\r\n\r\n").expect("a listener");
        let relay = Relay::start(&lab.lb, l.address().parse().unwrap());
        Self {
            _guards: vec![Box::new(l)],
            relay,
            endpoint_extra: "transport = \"relp\"\n".into(),
            words: &["protocol error"],
        }
    }

    fn expired(lab: &Lab) -> Self {
        let pki = Pki::new().expect("make the test PKI");
        let server = TlsServer::start(&pki.expired.cert, &pki.expired.key, None)
            .expect("start openssl s_server");
        let relay = Relay::start(&lab.lb, server.address().parse().unwrap());
        let endpoint_extra = format!(
            "transport = \"tls\"\n[groups.endpoints.tls]\nca_file = \"{}\"\n\
             server_name = \"localhost\"\n",
            pki.ca.display()
        );
        Self {
            _guards: vec![Box::new(server), Box::new(pki)],
            relay,
            endpoint_extra,
            words: &["TLS", "expired"],
        }
    }
}

/// Two syslog groups, every record to both (no `[routing]`: unmatched
/// records go to every group): `good` at `good`, `bad` at `bad` with
/// `bad_extra` endpoint settings.
fn two_groups(good: &Collector, bad: SocketAddr, bad_extra: &str) -> Scratch {
    let mut text = config_preamble();
    for (name, address, extra) in [
        ("good", good.relay.addr, "transport = \"relp\"\n"),
        ("bad", bad, bad_extra),
    ] {
        text += &format!(
            "[[groups]]\nname = \"{name}\"\nkind = \"syslog\"\nstrategy = \"failover\"\n\
             {GROUP_TUNING}[[groups.endpoints]]\naddress = \"{address}\"\n{extra}"
        );
    }
    Scratch::file("delivery.toml", &text)
}

/// Runs the agent with a good group and the `bad` one under traffic, checks
/// the good trail, the log and the stop, then restarts it with a good
/// collector in the bad one's place and checks that it gets everything.
fn bad_collector_keeps_the_agent_working(tag: &str, make_bad: fn(&Lab) -> Bad) {
    let started = Instant::now();
    let lab = Lab::new(tag);
    let good = Collector::start(&lab);
    let bad = make_bad(&lab);
    let conf = two_groups(&good, bad.relay.addr, &bad.endpoint_extra);
    let state = Scratch::path("state");
    let mut agent = Agent::start_delivering(&lab.lb, lab.iface(), &conf.0, &state.0);
    let traffic = Traffic::start(&lab);

    let endpoint = bad.relay.addr.to_string();
    let mut words = vec!["collector endpoint down", "group=bad", endpoint.as_str()];
    words.extend(bad.words);
    let line = wait_log_line(|| agent.log_text(), &words, Duration::from_secs(20));
    // The good group keeps delivering after the bad one failed.
    let now = good.lines().len();
    good.rsyslog
        .wait_for_lines(now + 100, Duration::from_secs(20))
        .expect("the good group keeps delivering while the bad one is down");
    let sent = traffic.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let exit = agent.stop_with(libc::SIGTERM);
    let log = plain(&agent.log_text());
    assert!(exit.status.success(), "clean stop: {log}");
    assert!(exit.took < STOP_BOUND, "stop took {:?}: {log}", exit.took);
    assert!(
        log.lines().any(|l| l.contains("group=bad")
            && l.contains("not everything was delivered before the stop")),
        "the stop says the bad group's records stay spooled: {log}"
    );
    let records = wait_final(std::slice::from_ref(&good), Duration::from_secs(20));
    let last = assert_complete(&records);
    let (code, report, text) = verify_stored(&state.0, std::slice::from_ref(&good));
    assert_eq!(code, 0, "verify the good group's store: {text}");
    assert_eq!(report["verdict"], "intact", "{text}");
    drop(agent);

    // Same group name, same state directory, a good collector in its place.
    let replacement = Collector::start(&lab);
    let conf = two_groups(&good, replacement.relay.addr, "transport = \"relp\"\n");
    let mut agent = Agent::start_delivering(&lab.lb, lab.iface(), &conf.0, &state.0);
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(20);
    let backlog_after = loop {
        let got = by_sequence(std::slice::from_ref(&replacement));
        if (1..=last).all(|s| got.contains_key(&s)) {
            break restarted.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the replacement holds {} of 1..={last}: {}",
            (1..=last).filter(|s| got.contains_key(s)).count(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let exit2 = agent.stop_with(libc::SIGTERM);
    assert!(exit2.status.success(), "clean stop: {}", agent.log_text());
    let caught_up: Records =
        wait_final(std::slice::from_ref(&replacement), Duration::from_secs(20));
    let last2 = assert_complete(&caught_up);
    let (code, report, text) = verify_stored(&state.0, std::slice::from_ref(&replacement));
    assert_eq!(code, 0, "verify the replacement's store: {text}");
    assert_eq!(report["verdict"], "intact", "{text}");
    let dups: usize = caught_up.values().map(|(_, n)| n - 1).sum();
    eprintln!(
        "{tag}: {sent} datagrams, {last} records intact at the good group, stop took {:?}; agent said: {line}; \
         replacement got 1..={last} {backlog_after:?} after the restart and 1..={last2} in all with {dups} \
         duplicates, {:?}",
        exit.took,
        started.elapsed()
    );
}

#[test]
fn a_collector_that_never_reads_does_not_stop_the_agent() {
    bad_collector_keeps_the_agent_working("dlfs", Bad::silent);
}

#[test]
fn a_collector_that_answers_garbage_does_not_stop_the_agent() {
    bad_collector_keeps_the_agent_working("dlfg", Bad::garbage);
}

#[test]
fn a_collector_with_an_expired_certificate_does_not_stop_the_agent() {
    bad_collector_keeps_the_agent_working("dlfx", Bad::expired);
}
