//! Request capture end to end: the real agent traces the real HAProxy (and
//! nginx) in the lab, real clients send real requests, and the load
//! balancer's own log is the oracle for every request record: its client,
//! its backend, its method, path, Host and status.
//!
//! Asserted in every run: zero wrong mappings, and every logged request has
//! exactly one record. Where requests are distinct, all of them are mapped.
//! With byte-identical requests in flight on one thread the ambiguous
//! share is printed, not asserted (nothing the kernel sees breaks the tie).
//!
//! Needs root, haproxy and nginx (`cargo xtask setup`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::agent::Agent;
use integration_tests::lb::cgroup::TestCgroup;
use integration_tests::lb::client::{Load, LoadReport, Requests};
use integration_tests::lb::compare::{Comparison, compare};
use integration_tests::lb::haproxy::{Haproxy, HaproxyConfig, Reuse, Splice};
use integration_tests::lb::lab::LbLab;
use integration_tests::lb::log_entry::LbLogEntry;
use integration_tests::lb::nginx_lb::{NginxLb, NginxLbConfig};
use integration_tests::netns::require_root;
use rustls::ClientConfig;
use serde_json::Value;

/// Serialises the tests of this file.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long a log may take to catch up with the clients.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// The agent's request records.
fn request_records(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["event"]["dataset"] == "lbwitness.request")
        .cloned()
        .collect()
}

/// Runs `load` through HAProxy started with `config`, with the agent
/// attached, and compares the agent's records with HAProxy's log.
fn haproxy_run(
    tag: &str,
    config: HaproxyConfig,
    load: impl FnOnce(&mut Load),
) -> (Comparison, Vec<Value>) {
    let agent_config = if config.exact_header {
        "[requests]\nexact_tag = true\n"
    } else {
        ""
    };
    capture_run(
        tag,
        agent_config,
        |lab| Haproxy::start(lab, config).unwrap(),
        // The TLS frontend when there is one: its requests are read as
        // plaintext from libssl.
        |lb| match &lb.cert {
            Some(cert) => (
                lb.config.frontends()[1],
                Some(cert.client_config().unwrap()),
            ),
            None => (lb.config.frontends()[0], None),
        },
        |lb, report| lb.log_entries(report.exchanges.len(), LOG_WAIT).unwrap(),
        load,
    )
    .into()
}

/// What a capture run gives.
struct Captured {
    /// The agent's request records against the load balancer's log.
    comparison: Comparison,
    /// Every record of the agent.
    records: Vec<Value>,
    /// The load balancer's log.
    log: Vec<LbLogEntry>,
}

impl From<Captured> for (Comparison, Vec<Value>) {
    fn from(c: Captured) -> Self {
        (c.comparison, c.records)
    }
}

/// Starts the load balancer `start` makes in a fresh lab, attaches the
/// agent (with `agent_config` as its config file), runs `load` against `frontend`, and compares the agent's request
/// records with what `log` reads from the load balancer's own log.
fn capture_run<L>(
    tag: &str,
    agent_config: &str,
    start: impl FnOnce(&LbLab) -> L,
    frontend: impl Fn(&L) -> (SocketAddr, Option<Arc<ClientConfig>>),
    log: impl Fn(&L, &LoadReport) -> Vec<LbLogEntry>,
    load: impl FnOnce(&mut Load),
) -> Captured {
    require_root();
    // An agent follows every process named like a load balancer on the
    // host, so two of these tests at once would see each other's requests.
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = LbLab::new(tag).unwrap();
    let lb = start(&lab);
    let config = integration_tests::temp_path("agent.toml");
    std::fs::write(&config, agent_config).unwrap();
    let config_arg = config.to_str().unwrap();
    let mut agent = Agent::start(
        &lab.net.lb,
        lab.net.frontend_iface(),
        &["--config", config_arg],
    );
    agent.wait_following();
    let (target, tls) = frontend(&lb);
    let mut spec = Load::new(target, lab.client_ips());
    spec.tls = tls;
    load(&mut spec);
    let report = spec.run(&lab.net.client);
    assert!(report.errors().is_empty(), "{:?}", report.errors().first());
    let log = log(&lb, &report);
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "{}", agent.log_text());
    let records = agent.records();
    assert_connections_sound(&lab, &records);
    let requests = request_records(&records);
    let comparison = compare(&log, &requests);
    eprintln!("{tag}: {comparison}");
    if let Some(dir) = std::env::var_os("LBW_DUMP") {
        let dir = std::path::Path::new(&dir);
        let lines: Vec<String> = records.iter().map(Value::to_string).collect();
        std::fs::write(dir.join(format!("{tag}-records.ndjson")), lines.join("\n")).unwrap();
        std::fs::write(dir.join(format!("{tag}-agent.log")), agent.log_text()).unwrap();
        let log_lines: Vec<String> = log.iter().map(|e| format!("{e:?}")).collect();
        std::fs::write(dir.join(format!("{tag}-lb.log")), log_lines.join("\n")).unwrap();
    }
    let _ = std::fs::remove_file(&config);
    Captured {
        comparison,
        records,
        log,
    }
}

/// Every connection record is one the load balancer had: a client-side
/// one from a client address to the frontend, a backend-side one to a
/// backend (a record with another socket's tuple would be a wrong record).
fn assert_connections_sound(lab: &LbLab, records: &[Value]) {
    let servers: Vec<SocketAddr> = lab.servers().into_iter().map(|(_, a)| a).collect();
    let ip = |r: &Value, end: &str| r[end]["ip"].as_str().unwrap_or_default().to_owned();
    let port = |r: &Value, end: &str| r[end]["port"].as_u64().unwrap_or_default();
    for r in records
        .iter()
        .filter(|r| r["event"]["dataset"] == "lbwitness.connection")
    {
        match r["lbwitness"]["connection"]["role"].as_str() {
            Some("client-side") => assert!(
                lab.client_ips()
                    .iter()
                    .any(|c| c.to_string() == ip(r, "source")),
                "a client-side record not from a client: {r}"
            ),
            Some("backend-side") => assert!(
                servers
                    .iter()
                    .any(|s| s.ip().to_string() == ip(r, "destination")
                        && u64::from(s.port()) == port(r, "destination")),
                "a backend-side record not to a backend: {r}"
            ),
            _ => panic!("a connection record without its role: {r}"),
        }
    }
}

/// Every request has one record and none is mapped wrongly.
fn assert_sound(c: &Comparison) {
    assert!(c.wrong.is_empty(), "wrong mappings:\n{c}");
    assert!(c.missing.is_empty(), "requests without a record:\n{c}");
    assert!(c.extra.is_empty(), "records without a request:\n{c}");
    assert!(
        c.mismatches.is_empty(),
        "fields that differ from the log:\n{c}"
    );
}

#[test]
fn haproxy_keep_alive_distinct_requests_all_map() {
    let (c, records) = haproxy_run("rqka", HaproxyConfig::http(), |load| {
        load.requests = 300;
        load.connections = 20;
    });
    assert_sound(&c);
    assert_eq!(c.mapped, c.total, "distinct requests must all map:\n{c}");
    // Every request record links to its client connection's record.
    let conns: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["dataset"] == "lbwitness.connection")
        .collect();
    assert!(
        conns
            .iter()
            .any(|r| r["lbwitness"]["connection"]["role"] == "client-side"),
        "no client connection records"
    );
    assert!(
        conns
            .iter()
            .any(|r| r["lbwitness"]["connection"]["role"] == "backend-side"),
        "no backend connection records"
    );
}

#[test]
fn haproxy_server_close_distinct_requests_all_map() {
    let mut config = HaproxyConfig::http();
    config.reuse = Reuse::ServerClose;
    let (c, _) = haproxy_run("rqsc", config, |load| {
        load.requests = 200;
        load.connections = 20;
        load.keep_alive = false;
    });
    assert_sound(&c);
    assert_eq!(c.mapped, c.total, "{c}");
}

#[test]
fn haproxy_reuse_always_four_threads_identical_requests_never_map_wrongly() {
    let mut config = HaproxyConfig::http();
    config.nbthread = 4;
    config.reuse = Reuse::Always;
    let (c, _) = haproxy_run("rqid", config, |load| {
        load.requests = 400;
        load.connections = 100;
        load.kind = Requests::Cycle(vec!["/same".into()]);
    });
    assert!(c.wrong.is_empty(), "wrong mappings:\n{c}");
    assert!(c.missing.is_empty() && c.extra.is_empty(), "{c}");
    eprintln!(
        "identical requests, 4 threads, http-reuse always: {:.1}% mapped, {} ambiguous of {}",
        100.0 * c.mapped_share(),
        c.ambiguous,
        c.total
    );
}

#[test]
fn nginx_upstream_keepalive_distinct_requests_all_map() {
    let Captured { comparison: c, .. } = capture_run(
        "rqnx",
        "",
        |lab| NginxLb::start(lab, NginxLbConfig::default()).unwrap(),
        |lb| (lb.config.frontend(), None),
        |lb, report| lb.log_entries(report.exchanges.len(), LOG_WAIT).unwrap(),
        |load| {
            load.requests = 200;
            load.connections = 20;
        },
    );
    assert_sound(&c);
    assert_eq!(c.mapped, c.total, "nginx requests must all map:\n{c}");
}

#[test]
fn nginx_identical_requests_all_map() {
    let Captured { comparison: c, .. } = capture_run(
        "rqnxid",
        "",
        |lab| NginxLb::start(lab, NginxLbConfig::default()).unwrap(),
        |lb| (lb.config.frontend(), None),
        |lb, report| lb.log_entries(report.exchanges.len(), LOG_WAIT).unwrap(),
        |load| {
            load.requests = 200;
            load.connections = 50;
            load.kind = Requests::Cycle(vec!["/same".into()]);
        },
    );
    assert_sound(&c);
    // nginx serves one request per worker thread at a time, so even
    // byte-identical requests are told apart by thread and order.
    assert_eq!(c.mapped, c.total, "nginx requests must all map:\n{c}");
}

#[test]
fn haproxy_exact_mode_maps_identical_requests_all() {
    let mut config = HaproxyConfig::http();
    config.nbthread = 4;
    config.reuse = Reuse::Always;
    config.exact_header = true;
    let (c, _) = haproxy_run("rqex", config, |load| {
        load.requests = 400;
        load.connections = 100;
        load.kind = Requests::Cycle(vec!["/same".into()]);
    });
    assert_sound(&c);
    assert_eq!(c.exact, c.total, "exact mode must map every request:\n{c}");
}

/// A TLS-terminating frontend: the client connections carry only TLS
/// records, and the libssl uprobes give HAProxy's plaintext. Every request
/// still maps, with the log's fields.
#[test]
fn haproxy_tls_terminated_distinct_requests_all_map() {
    let mut config = HaproxyConfig::http();
    config.tls = true;
    let (c, records) = haproxy_run("rqtls", config, |load| {
        load.requests = 200;
        load.connections = 20;
    });
    assert_sound(&c);
    assert_eq!(c.mapped, c.total, "{c}");
    assert!(c.total >= 200, "{c}");
    // The client connections count the TLS bytes on the wire: more than
    // the plaintext the requests and responses carried.
    let plaintext: u64 = request_records(&records)
        .iter()
        .map(|r| {
            r["http"]["request"]["bytes"].as_u64().unwrap_or(0)
                + r["http"]["response"]["bytes"].as_u64().unwrap_or(0)
        })
        .sum();
    let wire: u64 = records
        .iter()
        .filter(|r| r["lbwitness"]["connection"]["role"] == "client-side")
        .map(|r| {
            r["source"]["bytes"].as_u64().unwrap_or(0)
                + r["destination"]["bytes"].as_u64().unwrap_or(0)
        })
        .sum();
    assert!(wire > plaintext, "wire {wire} B, plaintext {plaintext} B");
}

/// HAProxy in TCP mode, splicing or not: every client connection gets one
/// record naming the backend connection the log names (`%bi:%bp` to
/// `%si:%sp`). A splicing one has no request records (the agent sees it
/// relay); a copying one carrying HTTP is told from an HTTP proxy by
/// nothing the kernel sees, so its requests are recorded, each with its
/// connection's backend.
/// Returns the run and how many connections named their backend.
fn haproxy_tcp_run(tag: &str, splice: Splice) -> (Captured, usize) {
    let run = capture_run(
        tag,
        "",
        |lab| Haproxy::start(lab, HaproxyConfig::tcp(splice)).unwrap(),
        |lb| (lb.config.frontends()[0], None),
        // One line per connection, written when it closes.
        |lb, report| {
            lb.log_entries(report.client_addrs().len(), LOG_WAIT)
                .unwrap()
        },
        |load| {
            load.requests = 200;
            load.connections = 40;
        },
    );
    let requests = request_records(&run.records);
    if splice != Splice::Always {
        // A copying proxy forwards HTTP byte for byte both ways, as an HTTP
        // proxy that rewrites nothing would: its requests are recorded,
        // each with the backend the log names for its connection.
        for r in &requests {
            let entry = run
                .log
                .iter()
                .find(|e| {
                    r["source"]["ip"] == e.client.ip().to_string()
                        && r["source"]["port"] == e.client.port()
                })
                .unwrap_or_else(|| panic!("no logged connection for {r}"));
            let server = entry.server.unwrap();
            assert_eq!(
                r["destination"]["nat"]["ip"],
                server.ip().to_string(),
                "{r}"
            );
            assert_eq!(r["destination"]["nat"]["port"], server.port(), "{r}");
        }
        eprintln!(
            "{tag}: {} request records, each to its connection's backend",
            requests.len()
        );
    } else {
        assert!(
            requests.is_empty(),
            "a splicing proxy's connections have no request records"
        );
    }
    let clients: Vec<&Value> = run
        .records
        .iter()
        .filter(|r| r["lbwitness"]["connection"]["role"] == "client-side")
        .collect();
    assert_eq!(
        clients.len(),
        run.log.len(),
        "one record per logged connection"
    );
    let mut named = 0;
    for entry in &run.log {
        let record = clients
            .iter()
            .find(|r| {
                r["source"]["ip"] == entry.client.ip().to_string()
                    && r["source"]["port"] == entry.client.port()
            })
            .unwrap_or_else(|| panic!("no record for {entry:?}"));
        let expect = format!("{}->{}", entry.backend_src.unwrap(), entry.server.unwrap());
        let backends = &record["lbwitness"]["connection"]["backends"];
        match backends.as_array() {
            // Never a wrong backend, and never more than one.
            Some(b) => {
                assert_eq!(b.len(), 1, "{record}");
                assert_eq!(b[0], expect, "{record}");
                named += 1;
            }
            None => eprintln!("{tag}: no backend for {}", entry.client),
        }
    }
    eprintln!(
        "{tag}: {named} of {} connections name their backend",
        run.log.len()
    );
    (run, named)
}

#[test]
fn haproxy_tcp_splice_connections_name_their_backends() {
    let (run, named) = haproxy_tcp_run("rqsp", Splice::Always);
    assert_eq!(named, run.log.len(), "every spliced connection maps");
    // The start record names the request hooks that serve this run.
    let start = run
        .records
        .iter()
        .find(|r| r["event"]["action"] == "agent-start")
        .expect("an agent-start record");
    let hooks = start["lbwitness"]["start"]["hooks"].to_string();
    for h in ["requests/syscalls/tracepoint", "requests/splice/tracepoint"] {
        assert!(hooks.contains(h), "{h} not in {hooks}");
    }
    assert!(
        run.records
            .iter()
            .any(|r| r["lbwitness"]["connection"]["spliced_bytes"].as_u64() > Some(0)),
        "HAProxy spliced nothing"
    );
}

#[test]
fn haproxy_tcp_copy_connections_name_their_backends() {
    let (run, named) = haproxy_tcp_run("rqtcp", Splice::Off);
    assert_eq!(named, run.log.len(), "every relayed connection maps");
}

#[test]
fn haproxy_tcp_splice_auto_connections_name_their_backends() {
    let (run, named) = haproxy_tcp_run("rqspa", Splice::Auto);
    assert_eq!(named, run.log.len(), "every relayed connection maps");
}

/// Keep-alive connections opened before the agent started: the agent
/// finds them in `/proc` when it follows HAProxy, so the requests sent on
/// them afterwards are recorded and mapped like any other, and their
/// connection records say they are older than the agent.
#[test]
fn connections_older_than_the_agent_are_captured() {
    use integration_tests::lb::http1::{Request, read_response};
    use integration_tests::netns::in_netns;
    use std::io::{BufReader, Write as _};
    use std::net::TcpStream;

    require_root();
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = LbLab::new("rqold").unwrap();
    let lb = Haproxy::start(&lab, HaproxyConfig::http()).unwrap();
    let frontend = lb.config.frontends()[0];
    let request = |path: String| Request {
        method: "GET".into(),
        path,
        host: "shop.example".into(),
        user_agent: "lbw-old/1".into(),
        keep_alive: true,
        body: Vec::new(),
    };
    let exchange = |conn: &mut BufReader<TcpStream>, path: String| {
        conn.get_mut().write_all(&request(path).to_bytes()).unwrap();
        read_response(conn, "GET").unwrap();
    };
    // Ten connections, each with one request before the agent.
    let mut conns: Vec<BufReader<TcpStream>> = in_netns(&lab.net.client, || {
        (0..10)
            .map(|_| BufReader::new(TcpStream::connect(frontend).unwrap()))
            .collect()
    });
    for (i, c) in conns.iter_mut().enumerate() {
        exchange(c, format!("/r/before-{i}"));
    }
    let mut agent = Agent::start(&lab.net.lb, lab.net.frontend_iface(), &[]);
    agent.wait_following();
    for round in 0..3 {
        for (i, c) in conns.iter_mut().enumerate() {
            exchange(c, format!("/r/after-{round}-{i}"));
        }
    }
    drop(conns);
    let log = lb.log_entries(40, LOG_WAIT).unwrap();
    let exit = agent.stop_with(libc::SIGTERM);
    assert!(exit.status.success(), "{}", agent.log_text());
    let records = agent.records();
    let after: Vec<LbLogEntry> = log
        .into_iter()
        .filter(|e| e.path().is_some_and(|p| p.starts_with("/r/after-")))
        .collect();
    assert_eq!(after.len(), 30);
    let c = compare(&after, &request_records(&records));
    eprintln!("rqold: {c}");
    assert_sound(&c);
    assert_eq!(c.mapped, c.total, "{c}");
    let older = records
        .iter()
        .filter(|r| r["lbwitness"]["connection"]["role"] == "client-side")
        .filter(|r| r["lbwitness"]["connection"]["before_agent"] == true)
        .count();
    assert_eq!(older, 10, "every client connection is older than the agent");
}

/// 150 concurrent keep-alive connections, 4 threads, `http-reuse always`:
/// backend connections shared across threads and clients. Distinct
/// requests all map.
#[test]
fn haproxy_four_threads_reuse_always_150_connections_distinct_all_map() {
    let mut config = HaproxyConfig::http();
    config.nbthread = 4;
    config.reuse = Reuse::Always;
    let (c, _) = haproxy_run("rq150", config, |load| {
        load.requests = 600;
        load.connections = 150;
    });
    assert_sound(&c);
    assert_eq!(c.mapped, c.total, "{c}");
}

/// Clients that send `Connection: close`: one request per client
/// connection, backend connections kept (`http-reuse safe`).
#[test]
fn haproxy_connection_close_clients_distinct_all_map() {
    let (c, _) = haproxy_run("rqcc", HaproxyConfig::http(), |load| {
        load.requests = 200;
        load.connections = 40;
        load.keep_alive = false;
    });
    assert_sound(&c);
    assert_eq!(c.mapped, c.total, "{c}");
}

/// `[requests] cgroups`: HAProxy runs from a copy no default process name
/// selects, in a cgroup below the configured one, and only the cgroup
/// makes the agent follow it. Every request maps, and every record names
/// that process and no other.
#[test]
fn haproxy_in_a_configured_cgroup_is_followed_under_any_name() {
    require_root();
    let cgroup = TestCgroup::new(&format!("lbw-test-{}", std::process::id()), "edge").unwrap();
    let bin = integration_tests::Scratch::path("edge-bin");
    std::fs::create_dir(&bin.0).unwrap();
    let mut config = HaproxyConfig::http();
    config.executable = Some(
        integration_tests::lb::daemon::renamed_copy(
            std::path::Path::new(integration_tests::lb::haproxy::HAPROXY),
            &bin.0,
            "lbw-edge",
        )
        .unwrap(),
    );
    let agent_config = format!("[requests]\ncgroups = [\"{}\"]\n", cgroup.path());
    let pid = std::cell::Cell::new(0);
    let captured = capture_run(
        "rqcg",
        &agent_config,
        |lab| {
            let lb = Haproxy::start(lab, config).unwrap();
            // HAProxy runs as one process (`-db`): moving it moves all
            // its threads, before the agent starts.
            pid.set(lb.pid().unwrap());
            cgroup.add(pid.get()).unwrap();
            lb
        },
        |lb| (lb.config.frontends()[0], None),
        |lb, report| lb.log_entries(report.exchanges.len(), LOG_WAIT).unwrap(),
        |load| {
            load.requests = 120;
            load.connections = 12;
        },
    );
    let c = &captured.comparison;
    assert_sound(c);
    assert_eq!(c.total, 120, "{c}");
    assert_eq!(c.mapped, c.total, "{c}");
    let cgroup_line =
        std::fs::read_to_string(format!("/proc/{}/cgroup", std::process::id())).unwrap_or_default();
    assert!(
        !cgroup_line.contains(&cgroup.child_path()),
        "the test itself must stay outside"
    );
    for r in captured.records.iter().filter(|r| {
        r["event"]["dataset"]
            .as_str()
            .is_some_and(|d| d.starts_with("lbwitness.request") || d == "lbwitness.connection")
    }) {
        assert_eq!(r["process"]["pid"], pid.get(), "{r}");
        assert_eq!(r["process"]["name"], "lbw-edge", "{r}");
    }
}
