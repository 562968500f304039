//! End-to-end delivery through a JetStream node failure: the real agent
//! under real traffic, one nats group over a 3-node R3 cluster; the
//! stream's leader is SIGKILLed under traffic and restarted. The oracle is
//! the stream read back through JetStream's own API: it holds every
//! sequence exactly once (dedup by `Nats-Msg-Id`) and `lbwitness verify`
//! says intact.
//!
//! Needs root: `cargo test --release -p integration-tests --test
//! delivery_jetstream`.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use integration_tests::{
    Scratch,
    agent::Agent,
    collectors::nats::{NatsCluster, StreamSpec, poll},
    delivery::{
        GROUP_TUNING, Relay, Traffic, assert_complete, config_preamble, ends_with_final, plain,
        records_of, verify_files,
    },
    lab::Lab,
};

const STREAM: &str = "AUDIT";
const SUBJECT: &str = "lbwitness.audit";

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
