//! Failure cases of request capture, against the real HAProxy: a backend
//! that is down, one that resets in the middle of a response, a client
//! that aborts, and a slow backend. The real agent traces HAProxy in the
//! lab with its failure servers (`LabOptions::failures`), and HAProxy's own
//! log is the oracle for every request: its client, server, status,
//! termination state and timers (`%Tr`, `%Ta`).
//!
//! Asserted in every case: one record per logged request, never a wrong
//! mapping, and the failure said in the records (the connection's error or
//! reset, the request's outcome) where the kernel saw it.
//!
//! Needs root and haproxy (`cargo xtask setup`). The tests of this binary
//! run one at a time (an agent follows every haproxy on the host); cargo
//! runs test binaries one after another, so they never meet those of
//! `requests_lb`.

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::agent::Agent;
use integration_tests::lb::client::{Load, LoadReport, Requests, abort_request};
use integration_tests::lb::compare::{Comparison, compare};
use integration_tests::lb::haproxy::{Haproxy, HaproxyConfig};
use integration_tests::lb::lab::{LabOptions, LbLab, SLOW_DELAY};
use integration_tests::lb::log_entry::LbLogEntry;
use integration_tests::netns::require_root;
use serde_json::Value;

/// Serialises the tests of this file.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long HAProxy's log may take to catch up with the clients.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// How far the agent's durations may be from HAProxy's timers, which are
/// whole milliseconds measured at other points of the same calls.
const TIMER_SLACK_MS: f64 = 5.0;

/// What one run saw: HAProxy's log, the agent's records, and the failure
/// routes' addresses.
struct Run {
    log: Vec<LbLogEntry>,
    records: Vec<Value>,
    lab_routes: Vec<(String, SocketAddr)>,
}

impl Run {
    fn route(&self, name: &str) -> SocketAddr {
        self.lab_routes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no failure route {name}"))
    }

    fn of(&self, dataset: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["event"]["dataset"] == dataset)
            .collect()
    }

    fn requests(&self) -> Vec<Value> {
        self.of("lbwitness.request").into_iter().cloned().collect()
    }

    /// The request records of client `addr`.
    fn requests_of(&self, addr: SocketAddr) -> Vec<&Value> {
        self.of("lbwitness.request")
            .into_iter()
            .filter(|r| endpoint(&r["source"]) == Some(addr))
            .collect()
    }

    /// The backend-side connection records to `server`.
    fn backend_conns_to(&self, server: SocketAddr) -> Vec<&Value> {
        self.of("lbwitness.connection")
            .into_iter()
            .filter(|r| r["lbwitness"]["connection"]["role"] == "backend-side")
            .filter(|r| endpoint(&r["destination"]) == Some(server))
            .collect()
    }

    /// The client-side connection record of `client`.
    fn client_conn(&self, client: SocketAddr) -> Option<&Value> {
        self.of("lbwitness.connection")
            .into_iter()
            .filter(|r| r["lbwitness"]["connection"]["role"] == "client-side")
            .find(|r| endpoint(&r["source"]) == Some(client))
    }

    /// The log line of `path`.
    fn line(&self, path: &str) -> &LbLogEntry {
        self.log
            .iter()
            .find(|e| e.uri.as_deref() == Some(path))
            .unwrap_or_else(|| panic!("no log line for {path}: {:?}", self.log))
    }

    fn compare(&self) -> Comparison {
        compare(&self.log, &self.requests())
    }

    /// Everything, for a failed assertion.
    fn dump(&self) -> String {
        let lines: Vec<String> = self.log.iter().map(|e| format!("log: {e:?}")).collect();
        let records: Vec<String> = self.records.iter().map(Value::to_string).collect();
        format!("{}\n{}", lines.join("\n"), records.join("\n"))
    }
}

/// `{"ip": .., "port": ..}` as an address.
fn endpoint(v: &Value) -> Option<SocketAddr> {
    let ip = v["ip"].as_str()?.parse().ok()?;
    let port = u16::try_from(v["port"].as_u64()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Starts HAProxy (HTTP mode, 2 threads) in a lab with the failure
/// servers, attaches the agent, lets `drive` send traffic to the frontend,
/// waits for `lines` log lines, and stops the agent.
fn failure_run(tag: &str, lines: usize, drive: impl FnOnce(&LbLab, SocketAddr)) -> Run {
    require_root();
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let options = LabOptions {
        failures: true,
        ..LabOptions::default()
    };
    let lab = LbLab::with(tag, options).unwrap();
    let lb = Haproxy::start(&lab, HaproxyConfig::http()).unwrap();
    let mut agent = Agent::start(&lab.net.lb, lab.net.frontend_iface(), &[]);
    agent.wait_following();
    drive(&lab, lb.config.frontends()[0]);
    let log = lb.log_entries(lines, LOG_WAIT).unwrap();
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "{}", agent.log_text());
    let run = Run {
        log,
        records: agent.records(),
        lab_routes: lab.routes().into_iter().map(|r| (r.name, r.addr)).collect(),
    };
    if let Some(dir) = std::env::var_os("LBW_DUMP") {
        let path = std::path::Path::new(&dir).join(format!("{tag}.txt"));
        std::fs::write(path, run.dump()).unwrap();
    }
    run
}

/// `paths` in turn, one keep-alive connection from the lab's first client
/// address.
fn load(lab: &LbLab, frontend: SocketAddr, paths: &[String]) -> LoadReport {
    let mut load = Load::new(frontend, &lab.client_ips()[..1]);
    load.requests = paths.len();
    load.connections = 1;
    load.kind = Requests::Cycle(paths.to_vec());
    load.run(&lab.net.client)
}

/// A path unique to this process and test.
fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{:x}-{n}", std::process::id())
}

/// One record per logged request, none mapped wrongly, none extra.
fn assert_no_wrong_mapping(c: &Comparison, run: &Run) {
    assert!(c.wrong.is_empty(), "wrong mappings:\n{c}\n{}", run.dump());
    assert!(
        c.missing.is_empty(),
        "requests without a record:\n{c}\n{}",
        run.dump()
    );
    assert!(
        c.extra.is_empty(),
        "records without a request:\n{c}\n{}",
        run.dump()
    );
}

/// The record's `event.duration` agrees with HAProxy's `%Ta`.
fn assert_close_to_ta(r: &Value, line: &LbLogEntry) {
    let total = ms(&r["event"]["duration"]);
    let ta = line.active_ms.unwrap() as f64;
    assert!(
        (total - ta).abs() <= TIMER_SLACK_MS,
        "duration {total:.2} ms, %Ta {ta} ms: {r}\n{line:?}"
    );
}

fn ms(ns: &Value) -> f64 {
    ns.as_u64().expect("a duration in ns") as f64 / 1e6
}

#[test]
fn backend_down_refused_connect_and_503_are_recorded() {
    let path = unique("/fail/down/");
    let mut client = None;
    let run = failure_run("rfdown", 1, |lab, frontend| {
        let report = load(lab, frontend, std::slice::from_ref(&path));
        let x = &report.exchanges[0];
        assert_eq!(x.status, Some(503), "{x:?}");
        client = x.local;
    });
    let client = client.unwrap();
    let down = run.route("down");
    // The oracle: HAProxy generated the 503 after failing to connect (S:
    // the server side failed; C: while connecting) to the down server.
    let line = run.line(&path);
    assert_eq!(line.client, client);
    assert_eq!(line.status, Some(503), "{line:?}");
    assert_eq!(line.server, Some(down), "{line:?}");
    assert!(
        line.termination.as_deref().unwrap().starts_with("SC"),
        "{line:?}"
    );

    // Every connect to the down server (one per try) is a refused one.
    let conns = run.backend_conns_to(down);
    assert!(
        !conns.is_empty(),
        "no connection record to {down}:\n{}",
        run.dump()
    );
    for c in &conns {
        assert_eq!(c["event"]["outcome"], "failure", "{c}");
        assert_eq!(c["error"]["code"], "connection-refused", "{c}");
        assert!(
            c["error"]["message"].as_str().unwrap().contains("refused"),
            "{c}"
        );
    }

    let c = run.compare();
    assert_no_wrong_mapping(&c, &run);
    assert!(c.mismatches.is_empty(), "{c}\n{}", run.dump());
    let requests = run.requests_of(client);
    assert_eq!(requests.len(), 1, "{}", run.dump());
    let r = requests[0];
    assert_eq!(r["http"]["response"]["status_code"], 503, "{r}");
    assert_eq!(r["event"]["outcome"], "failure", "{r}");
    // No backend answered: HAProxy generated the 503, so nothing may be
    // mapped, and no backend named.
    let backend = &r["lbwitness"]["backend"];
    assert_eq!(backend["mapping"], "ambiguous", "{r}");
    assert_eq!(backend["reason"], "no-candidate", "{r}");
    assert!(r["destination"].get("nat").is_none(), "{r}");
}

#[test]
fn backend_reset_mid_response_is_recorded_and_never_mapped_wrongly() {
    let path = unique("/fail/reset/");
    let mut client = None;
    let run = failure_run("rfreset", 1, |lab, frontend| {
        let report = load(lab, frontend, std::slice::from_ref(&path));
        let x = &report.exchanges[0];
        // The client got the head and part of the body, then the close.
        assert!(
            x.error
                .as_deref()
                .is_some_and(|e| e.contains("inside the response's body")),
            "{x:?}"
        );
        client = x.local;
    });
    let client = client.unwrap();
    let reset = run.route("reset");
    let line = run.line(&path);
    assert_eq!(line.client, client);
    assert_eq!(line.server, Some(reset), "{line:?}");
    // The head (200) had been forwarded when the reset came; HAProxy 2.6
    // logs the status it forwarded.
    assert_eq!(line.status, Some(200), "{line:?}");

    let conns = run.backend_conns_to(reset);
    assert_eq!(conns.len(), 1, "{}", run.dump());
    let b = conns[0];
    assert_eq!(b["lbwitness"]["connection"]["reset"], "received", "{b}");
    assert_eq!(b["event"]["outcome"], "failure", "{b}");
    assert!(b.get("error").is_none(), "the connect itself worked: {b}");

    let c = run.compare();
    assert_no_wrong_mapping(&c, &run);
    assert!(c.mismatches.is_empty(), "{c}\n{}", run.dump());
    let requests = run.requests_of(client);
    assert_eq!(requests.len(), 1, "{}", run.dump());
    let r = requests[0];
    assert_eq!(r["http"]["response"]["status_code"], 200, "{r}");
    // The response was cut short by HAProxy's close: not a success,
    // whatever its status, and over when HAProxy closed.
    assert_eq!(r["event"]["outcome"], "failure", "{r}");
    assert_eq!(r["error"]["code"], "lb-closed", "{r}");
    assert_close_to_ta(r, line);
    if r["lbwitness"]["backend"]["mapping"] == "mapped" {
        assert_eq!(endpoint(&r["destination"]["nat"]), Some(reset), "{r}");
    }
}

#[test]
fn client_abort_is_recorded() {
    let path = unique("/fail/slow/");
    let mut client = None;
    let run = failure_run("rfabort", 1, |lab, frontend| {
        let source = lab.client_ips()[1];
        let after = Duration::from_millis(50);
        client = Some(abort_request(&lab.net.client, source, frontend, &path, after).unwrap());
    });
    let client = client.unwrap();
    let line = run.line(&path);
    assert_eq!(line.client, client);
    assert_eq!(line.server, Some(run.route("slow")), "{line:?}");

    let c = run.compare();
    assert_no_wrong_mapping(&c, &run);
    let requests = run.requests_of(client);
    assert_eq!(requests.len(), 1, "{}", run.dump());
    let r = requests[0];
    assert_eq!(r["event"]["outcome"], "failure", "{r}");
    assert_eq!(r["error"]["code"], "client-aborted", "{r}\n{line:?}");
    // HAProxy noticed when it wrote the slow server's answer (`CD`:
    // client side, data phase), and so did the record.
    assert!(
        line.termination.as_deref().unwrap().starts_with("CD"),
        "{line:?}"
    );
    assert_close_to_ta(r, line);
    // The client's reset reached the load balancer.
    let conn = run
        .client_conn(client)
        .unwrap_or_else(|| panic!("{}", run.dump()));
    assert_eq!(
        conn["lbwitness"]["connection"]["reset"], "received",
        "{conn}"
    );
    eprintln!("abort: log {line:?}\nrecord {r}");
}

#[test]
fn slow_backend_maps_with_its_delay_in_both_durations() {
    let paths: Vec<String> = (0..3).map(|_| unique("/fail/slow/")).collect();
    let mut client = None;
    let run = failure_run("rfslow", paths.len(), |lab, frontend| {
        let report = load(lab, frontend, &paths);
        assert!(report.errors().is_empty(), "{:?}", report.errors());
        client = report.exchanges[0].local;
    });
    let client = client.unwrap();
    let slow = run.route("slow");
    let c = run.compare();
    assert_no_wrong_mapping(&c, &run);
    assert!(c.mismatches.is_empty(), "{c}\n{}", run.dump());
    assert_eq!(c.mapped, paths.len(), "{c}\n{}", run.dump());
    let delay_ms = SLOW_DELAY.as_secs_f64() * 1e3;
    for path in &paths {
        let line = run.line(path);
        let r = run
            .requests_of(client)
            .into_iter()
            .find(|r| r["url"]["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no record for {path}:\n{}", run.dump()));
        assert_eq!(endpoint(&r["destination"]["nat"]), Some(slow), "{r}");
        let total = ms(&r["event"]["duration"]);
        let backend = ms(&r["lbwitness"]["backend"]["duration"]);
        let (tr, ta) = (line.server_ms.unwrap(), line.active_ms.unwrap());
        eprintln!("{path}: duration {total:.2} ms (%Ta {ta}), backend {backend:.2} ms (%Tr {tr})");
        assert!(total >= delay_ms && backend >= delay_ms, "{r}");
        assert!(backend <= total, "{r}");
        assert!((total - ta as f64).abs() <= TIMER_SLACK_MS, "{r}\n{line:?}");
        assert!(
            (backend - tr as f64).abs() <= TIMER_SLACK_MS,
            "{r}\n{line:?}"
        );
    }
}
