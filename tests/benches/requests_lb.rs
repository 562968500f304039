//! HAProxy's request throughput with the agent attached and detached, in
//! the same run, and what the attached agent costs per request.
//!
//! The lab is the request tests' (tests/src/lb): HAProxy in HTTP mode
//! (2 threads, `http-reuse safe`) in front of three nginx backends. `wrk`
//! runs in the client namespace for [`PHASE`] with [`CONNECTIONS`]
//! keep-alive connections on [`WRK_THREADS`] threads, on paths every
//! backend answers 200, in two workloads: `identical` (one path, the
//! correlator's worst case: every request in flight on a thread is a
//! candidate for every other) and `distinct` (a path per request, through
//! a wrk Lua script: what a load balancer mostly sees). Phases alternate detached / attached [`ROUNDS`]
//! times (ABAB...), after one unmeasured warm-up, so drift in the shared
//! machine's load falls on both sides alike. Attached means the real agent
//! binary runs in the LB's namespace (XDP on the frontend interface and the
//! request programs following HAProxy), started before the phase and
//! stopped after it.
//!
//! During each attached phase the agent's CPU time is read from
//! `/proc/PID/stat` (utime + stime, every thread) at the start and end of
//! the load; its ring-buffer bytes are the `ring_bytes` the request stage
//! logs when it stops (item lengths; the kernel adds an 8-byte header per
//! event and rounds to 8). HAProxy's own CPU time per request is read the
//! same way in every phase: the request programs run inside its system
//! calls, so attached minus detached estimates their cost (only roughly:
//! at a lower rate HAProxy also batches less per system call).
//!
//! Prints one line per phase, then a summary table: requests/s and p99 for
//! each side, the ratio attached/detached (target >= 0.97), the p99
//! difference (target < 1 ms), HAProxy's CPU per request both ways, the
//! agent's CPU in % of one core per 1 000 requests/s and per request, and
//! its ring bytes per request. The targets are not
//! asserted (timed results on a shared machine are not tests); the run's
//! validity is: wrk saw no socket error and no non-2xx answer, and the
//! agent exited cleanly.

use std::time::{Duration, Instant};

use integration_tests::agent::Agent;
use integration_tests::lb::haproxy::{Haproxy, HaproxyConfig};
use integration_tests::lb::lab::LbLab;
use integration_tests::netns::{NetNs, require_root};

/// Length of one measured phase.
const PHASE: Duration = Duration::from_secs(5);
/// wrk's keep-alive connections.
const CONNECTIONS: u32 = 32;
/// wrk's threads.
const WRK_THREADS: u32 = 2;
/// Detached/attached pairs.
const ROUNDS: usize = 3;
/// A path every backend answers 200 (tests/src/lb/backend.rs).
const PATH: &str = "/r/bench";

/// What wrk measured in one phase.
#[derive(Debug, Clone, Copy)]
struct Wrk {
    requests: u64,
    rps: f64,
    p99_ms: f64,
    socket_errors: u64,
    non_2xx: u64,
    /// HAProxy's CPU time over the phase (user + kernel, every thread):
    /// the request programs run inside its system calls.
    lb_cpu_secs: f64,
}

/// What the agent cost during one attached phase.
#[derive(Debug, Clone, Copy)]
struct Cost {
    cpu_secs: f64,
    /// Of which in the kernel (stime).
    sys_secs: f64,
    wall_secs: f64,
    ring_bytes: u64,
    request_records: usize,
    /// Of `request_records`, those mapped to their backend.
    mapped: usize,
    /// Events the agent declared lost (its gap records' counts): a request
    /// whose events were lost has no record, and the gap says so.
    lost: u64,
}

/// What wrk asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Every request is `GET` [`PATH`].
    Identical,
    /// Every request has a path of its own: `PATH-<thread>-<n>`.
    Distinct,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Identical => "identical",
            Self::Distinct => "distinct",
        }
    }
}

/// wrk's Lua script for [`Workload::Distinct`]: each thread numbers its
/// requests, and the thread's own id keeps the paths of two threads apart.
const DISTINCT_LUA: &str = r#"
local counter = 1
local threads = 0
function setup(thread)
    thread:set("id", threads)
    threads = threads + 1
end
function request()
    counter = counter + 1
    return wrk.format("GET", "PATH-" .. id .. "-" .. counter)
end
"#;

/// The gap records' `reason=count`, for the phase line.
fn gap_reasons(records: &[serde_json::Value]) -> String {
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    for gap in records.iter().map(|r| &r["lbwitness"]["gap"]) {
        if let (Some(reason), Some(count)) = (gap["reason"].as_str(), gap["count"].as_u64()) {
            *by_reason.entry(reason.to_owned()).or_default() += count;
        }
    }
    let parts: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r}={n}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

fn main() {
    require_root();
    let lab = LbLab::new("bnrq").expect("build the lb lab");
    let haproxy = Haproxy::start(&lab, HaproxyConfig::http()).expect("start haproxy");
    let frontend = haproxy.config.frontends()[0];
    let lb = haproxy.pid().expect("haproxy's pid");
    let script =
        integration_tests::Scratch::file("distinct.lua", &DISTINCT_LUA.replace("PATH", PATH));
    let target = Target {
        url: format!("http://{frontend}{PATH}"),
        script: script.0.display().to_string(),
    };
    // Warm-up: HAProxy's and the backends' connections and caches.
    let warm = wrk(
        &lab.net.client,
        lb,
        &target,
        Workload::Identical,
        Duration::from_secs(2),
    );
    assert_valid(&warm, "warm-up");
    for workload in [Workload::Identical, Workload::Distinct] {
        let mut detached = Vec::new();
        let mut attached = Vec::new();
        let name = workload.name();
        for round in 1..=ROUNDS {
            let d = wrk(&lab.net.client, lb, &target, workload, PHASE);
            assert_valid(&d, "detached");
            println!(
                "requests_lb workload={name} round={round} agent=detached rps={:.0} p99_ms={:.3} \
                 requests={} haproxy_cpu_us_per_request={:.1}",
                d.rps,
                d.p99_ms,
                d.requests,
                lb_us(&d)
            );
            detached.push(d);

            let (a, cost) = attached_phase(&lab, lb, &target, workload);
            assert_valid(&a, "attached");
            println!(
                "requests_lb workload={name} round={round} agent=attached rps={:.0} p99_ms={:.3} \
                 requests={} haproxy_cpu_us_per_request={:.1} agent_cpu_s={:.3} agent_sys_s={:.3} \
                 ring_bytes={} request_records={} mapped={} lost_events={}",
                a.rps,
                a.p99_ms,
                a.requests,
                lb_us(&a),
                cost.cpu_secs,
                cost.sys_secs,
                cost.ring_bytes,
                cost.request_records,
                cost.mapped,
                cost.lost
            );
            attached.push((a, cost));
        }
        summary(workload, &detached, &attached);
    }
    drop(haproxy);
}

/// Where wrk sends its requests.
struct Target {
    /// The identical workload's URL (the distinct one's base).
    url: String,
    /// The distinct workload's Lua script.
    script: String,
}

/// One phase with the agent attached: start it, wait until it follows
/// HAProxy, run wrk while sampling its CPU time, stop it and read its
/// ring-byte count.
fn attached_phase(lab: &LbLab, lb: u32, target: &Target, workload: Workload) -> (Wrk, Cost) {
    let mut agent = Agent::start(&lab.net.lb, lab.net.frontend_iface(), &[]);
    wait_following(&agent);
    let pid = agent.pid();
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let w = wrk(&lab.net.client, lb, target, workload, PHASE);
    let cpu1 = cpu_secs(pid);
    let wall_secs = t0.elapsed().as_secs_f64();
    let exit = agent.stop_within(libc::SIGTERM, Duration::from_secs(30));
    let log = agent.log_text();
    assert!(exit.status.success(), "the agent failed:\n{log}");
    let ring_bytes = field(&log, "ring_bytes=")
        .unwrap_or_else(|| panic!("the agent logged no ring_bytes at its stop:\n{log}"));
    let records = agent.records();
    let requests: Vec<_> = records
        .iter()
        .filter(|r| r["event"]["dataset"] == "lbwitness.request")
        .collect();
    let request_records = requests.len();
    let mapped = requests
        .iter()
        .filter(|r| r["lbwitness"]["backend"]["mapping"] == "mapped")
        .count();
    let lost = records
        .iter()
        .filter_map(|r| r["lbwitness"]["gap"]["count"].as_u64())
        .sum();
    if lost > 0 {
        println!("requests_lb gaps {}", gap_reasons(&records));
    }
    let cost = Cost {
        cpu_secs: (cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1),
        sys_secs: cpu1.1 - cpu0.1,
        wall_secs,
        ring_bytes,
        request_records,
        mapped,
        lost,
    };
    (w, cost)
}

/// Waits until the agent follows the load balancer.
fn wait_following(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent
        .log_text()
        .contains("following a load-balancer process")
    {
        assert!(
            Instant::now() < deadline,
            "the agent never followed HAProxy:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs wrk in `ns` against `target` for `duration` and parses its
/// report, with the CPU time process `lb` spent meanwhile.
fn wrk(ns: &NetNs, lb: u32, target: &Target, workload: Workload, duration: Duration) -> Wrk {
    let cpu0 = cpu_secs(lb);
    let mut cmd = ns.command("wrk");
    cmd.args([
        &format!("-t{WRK_THREADS}"),
        &format!("-c{CONNECTIONS}"),
        &format!("-d{}s", duration.as_secs()),
        "--latency",
    ]);
    if workload == Workload::Distinct {
        cmd.args(["-s", &target.script]);
    }
    let out = cmd
        .arg(&target.url)
        .output()
        .expect("run wrk (installed by `cargo xtask setup`)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cpu1 = cpu_secs(lb);
    let mut w = parse_wrk(&text).unwrap_or_else(|| panic!("could not read wrk's report:\n{text}"));
    w.lb_cpu_secs = (cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1);
    w
}

/// The figures of a `wrk --latency` report.
fn parse_wrk(text: &str) -> Option<Wrk> {
    let mut requests = None;
    let mut rps = None;
    let mut p99_ms = None;
    let mut socket_errors = 0;
    let mut non_2xx = 0;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["99%", latency] => p99_ms = latency_ms(latency),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Requests/sec:", n] => rps = n.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    Some(Wrk {
        requests: requests?,
        rps: rps?,
        p99_ms: p99_ms?,
        socket_errors,
        non_2xx,
        lb_cpu_secs: 0.0,
    })
}

/// wrk's latency (`812.00us`, `1.23ms`, `1.01s`) in ms.
fn latency_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// A valid phase: requests were served, none failed.
fn assert_valid(w: &Wrk, phase: &str) {
    assert!(w.requests > 0, "{phase}: wrk served no request");
    assert_eq!(w.socket_errors, 0, "{phase}: wrk had socket errors: {w:?}");
    assert_eq!(w.non_2xx, 0, "{phase}: non-2xx answers on {PATH}: {w:?}");
}

/// CPU time of process `pid`, every thread, in seconds: (utime, stime),
/// fields 14 and 15 of `/proc/PID/stat` (after the parenthesised name).
fn cpu_secs(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read the agent's stat");
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    // after_name starts at field 3 (state): utime is field 14, stime 15.
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("a stat field") as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) / hz, ticks(12) / hz)
}

/// The number after `key` in `text` (a tracing field such as `ring_bytes=123`).
fn field(text: &str, key: &str) -> Option<u64> {
    let at = text.rfind(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// HAProxy's CPU per request served in a phase, in µs.
fn lb_us(w: &Wrk) -> f64 {
    1e6 * w.lb_cpu_secs / w.requests as f64
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

fn summary(workload: Workload, detached: &[Wrk], attached: &[(Wrk, Cost)]) {
    let d_rps = mean(detached.iter().map(|w| w.rps));
    let a_rps = mean(attached.iter().map(|(w, _)| w.rps));
    let d_p99 = mean(detached.iter().map(|w| w.p99_ms));
    let a_p99 = mean(attached.iter().map(|(w, _)| w.p99_ms));
    let cpu: f64 = attached.iter().map(|(_, c)| c.cpu_secs).sum();
    let wall: f64 = attached.iter().map(|(_, c)| c.wall_secs).sum();
    let ring: u64 = attached.iter().map(|(_, c)| c.ring_bytes).sum();
    let served: u64 = attached.iter().map(|(w, _)| w.requests).sum();
    let records: usize = attached.iter().map(|(_, c)| c.request_records).sum();
    let mapped: usize = attached.iter().map(|(_, c)| c.mapped).sum();
    let lost: u64 = attached.iter().map(|(_, c)| c.lost).sum();
    // CPU in % of one core, per 1 000 requests/s of the attached phases.
    let cpu_pct = 100.0 * cpu / wall;
    let per_krps = cpu_pct / (served as f64 / wall / 1000.0);
    let sys: f64 = attached.iter().map(|(_, c)| c.sys_secs).sum();
    println!(
        "\nHAProxy HTTP (2 threads, http-reuse safe), {} requests, wrk -t{WRK_THREADS} \
         -c{CONNECTIONS} -d{}s, {ROUNDS} rounds, means:",
        workload.name(),
        PHASE.as_secs()
    );
    let d_lb = mean(detached.iter().map(lb_us));
    let a_lb = mean(attached.iter().map(|(w, _)| lb_us(w)));
    println!("| agent    | requests/s | p99 ms | HAProxy CPU µs/request |");
    println!("|----------|-----------:|-------:|-----------------------:|");
    println!("| detached | {d_rps:>10.0} | {d_p99:>6.3} | {d_lb:>22.1} |");
    println!("| attached | {a_rps:>10.0} | {a_p99:>6.3} | {a_lb:>22.1} |");
    println!(
        "requests_lb workload={} ratio={:.3} (target >= 0.97) p99_added_ms={:.3} (target < 1) \
         agent_cpu_pct={cpu_pct:.1} (of which kernel {:.1}) cpu_pct_per_1k_rps={per_krps:.2} \
         agent_cpu_us_per_request={:.1} \
         ring_bytes_per_request={:.0} request_records={records} of {served} served \
         mapped={:.3} lost_events={lost}",
        workload.name(),
        a_rps / d_rps,
        a_p99 - d_p99,
        100.0 * sys / wall,
        1e6 * cpu / served as f64,
        ring as f64 / served as f64,
        mapped as f64 / records.max(1) as f64,
    );
}
