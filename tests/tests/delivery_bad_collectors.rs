//! End-to-end delivery beside collectors that misbehave: every record goes
//! to a good rsyslogd RELP group and to a bad group whose endpoint never
//! reads, answers garbage, or presents an expired certificate. The good
//! group's trail (rsyslogd's files) is complete and verifies intact, the
//! log names the bad endpoint and why, SIGTERM exits 0 within the drain
//! bound, and the bad group's records wait in the spool until a good
//! collector takes its place.
//!
//! Needs root: `cargo test --release -p integration-tests --test
//! delivery_bad_collectors -- --test-threads=1`.

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
    },
    delivery::{
        Collector, GROUP_TUNING, Records, Relay, STOP_BOUND, Traffic, assert_complete, by_sequence,
        config_preamble, plain, verify_stored, wait_final, wait_log_line,
    },
    lab::Lab,
};
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
