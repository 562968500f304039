//! `cargo xtask demo`: a self-contained lab. Two network namespaces joined
//! by a veth pair: a client generating TCP, UDP, ICMP, IPv6 and VLAN-tagged
//! traffic, and a "load balancer" running servers and the agent on its end
//! of the veth. Beside it, a real HAProxy in front of three nginx backends
//! takes rounds of HTTP requests; the agent follows it from the kernel and
//! records every request with the backend that served it. The agent delivers to real collectors (two rsyslogd over
//! RELP, balanced; a NATS JetStream stream for the security-relevant
//! records); the demo shows what the collectors store as it arrives, their
//! counts, and at the end verifies what they hold.

mod collectors;
mod requests;
mod show;
mod traffic;
mod view;

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{
    Scratch,
    agent::wait_running,
    netns::{ChildGuard, NetNs, VethPair},
};

use self::{collectors::Collectors, view::View};
use crate::{setup, util};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Short flow timeouts so flows show up while the demo runs; frequent
/// checkpoints so the trail is covered as it goes.
const DEMO_CONFIG: &str = "\
[flows]
active_timeout_secs = 10
idle_timeout_secs = 5
closed_timeout_secs = 1

[audit]
checkpoint_interval_secs = 5
";

/// Time between rounds of HTTP requests through HAProxy.
const HTTP_ROUND: Duration = Duration::from_millis(500);
/// How often the count table is printed.
const COUNTS_EVERY: Duration = Duration::from_secs(2);
/// How long the collectors may take to receive the final checkpoint after
/// the stop (the agent drains its spool before it exits).
const FINAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the lab until Ctrl-C or `seconds`.
pub fn run(seconds: Option<u64>) -> Result<()> {
    setup::build_tools()?;
    util::require_root("the lab creates network namespaces and attaches XDP")?;
    util::build_release()?;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let client = NetNs::new("demo-cl");
    let lb = NetNs::new("demo-lb");
    let veth = VethPair::with_default_addrs(&client, &lb);
    let collectors = Collectors::start(&lb)?;
    let lb_demo = requests::LbDemo::start()?;
    let dir = Scratch::path("demo");
    std::fs::create_dir(&dir.0).with_context(|| format!("creating {}", dir.as_str()))?;
    // A stand-in for HAProxy's config: the demo edits it half-way through,
    // and the agent records the change (a `file-change` record).
    let watched = dir.0.join("haproxy.cfg");
    std::fs::write(&watched, "global\n    maxconn 1000\n")?;
    let config = dir.0.join("lbwitness.toml");
    std::fs::write(
        &config,
        format!(
            "{DEMO_CONFIG}watch_files = [\"{}\"]\n\n{}",
            watched.display(),
            collectors.config()
        ),
    )?;
    header(&client, &lb, &veth, &collectors);
    println!("{}", lb_demo.describe());

    // A fresh state directory: a new agent id, key and chain each run.
    let state = dir.0.join("state");
    let log = dir.0.join("agent.log");
    let agent_bin = util::agent_binary();
    let mut cmd = lb.command(&agent_bin);
    cmd.args(["run", "--iface", &veth.b.name, "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    // Its own process group: Ctrl-C reaches the demo only, which stops the
    // traffic first and then the agent, in order.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut agent = ChildGuard::spawn(&mut cmd)
        .context("starting the agent")?
        .with_grace(Duration::from_secs(20));
    wait_running(&mut agent, &log)?;
    traffic::start_servers(&lb);

    let mut view = View::new(&collectors, &log)?;
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let edit_at = Instant::now() + Duration::from_secs(seconds.unwrap_or(20) / 2);
    let mut edited = false;
    let traffic_stop = AtomicBool::new(false);
    thread::scope(|scope| -> Result<()> {
        let traffic = scope.spawn(|| traffic::run(&client, &veth, &traffic_stop));
        let http = scope.spawn(|| {
            while !traffic_stop.load(Ordering::SeqCst) {
                lb_demo.round();
                thread::sleep(HTTP_ROUND);
            }
        });
        let mut next_counts = Instant::now() + COUNTS_EVERY;
        while !STOP.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
            view.tick();
            if Instant::now() >= next_counts {
                println!("{}", view.counts());
                if let Some(line) = view.request_counts() {
                    println!("{line}");
                }
                next_counts += COUNTS_EVERY;
            }
            if !edited && Instant::now() >= edit_at {
                println!("demo: editing {} (maxconn 1000 -> 2000)", watched.display());
                std::fs::write(&watched, "global\n    maxconn 2000\n")?;
                edited = true;
            }
            if let Some(status) = agent.try_wait() {
                bail!("the agent exited early ({status}): {}", tail(&log));
            }
            thread::sleep(Duration::from_millis(250));
        }
        traffic_stop.store(true, Ordering::SeqCst);
        if http.join().is_err() {
            bail!("the HTTP client thread panicked");
        }
        match traffic.join() {
            Ok(result) => result,
            Err(_) => bail!("the traffic thread panicked"),
        }
    })?;

    println!("demo: stopping the agent (it reports every open flow, then a final checkpoint)");
    let status = agent.stop_with(libc::SIGTERM);
    println!(
        "demo: agent exited: {status}; waiting for the collectors to hold the final checkpoint"
    );
    let waited = Instant::now();
    while !view.has_final() {
        view.tick();
        if waited.elapsed() > FINAL_TIMEOUT {
            bail!(
                "the collectors hold no final checkpoint {FINAL_TIMEOUT:?} after the stop: {}",
                tail(&log)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    view.tick();
    println!("{}  (final)", view.counts());
    if let Some(line) = view.request_counts() {
        println!("{line}  (final)");
    }
    let verified = verify(
        &collectors,
        &state.join("signing.key.pub"),
        &dir.0,
        &agent_bin,
    )?;
    println!("demo: tearing the lab down");
    if !verified {
        bail!("the collectors' copies of the trail do not verify as they should (see above)");
    }
    Ok(())
}

/// What the lab is and where records go.
fn header(client: &NetNs, lb: &NetNs, veth: &VethPair, c: &Collectors) {
    println!(
        "lab: client {} ({}) <-> load balancer {} ({}), agent on {}",
        client.name(),
        veth.a.name,
        lb.name(),
        veth.b.name,
        veth.b.name
    );
    let [a, b] = c.archive_files();
    println!(
        "collectors (the agent reaches them through relays on lb's loopback):\n\
         \x20 archive  = rsyslog-a {} + rsyslog-b {}: RELP, round_robin; gets EVERY record\n\
         \x20 security = nats {} stream {}: JetStream; ALSO gets the trail's own\n\
         \x20            records (start/stop, checkpoints, gaps, file changes), TCP resets\n\
         \x20            and SYNs to ports the lb does not serve (routes `trail`, `resets`, `probes`)\n\
         records below are printed as the collectors store them: [a]/[b] = which rsyslogd,\n\
         [nats] = the stream (a second copy of the same record, same sequence);\n\
         every {}s a count table, read from the collectors themselves.",
        a.display(),
        b.display(),
        c.nats.url(),
        collectors::STREAM,
        COUNTS_EVERY.as_secs()
    );
}

/// Runs `lbwitness verify` over (a) the archive (both rsyslogd's files
/// together) and (b) the archive plus the security stream's messages,
/// written to a file, and (c) the stream alone, which must be incomplete
/// but untampered. Returns whether all three say what they should.
fn verify(c: &Collectors, key: &Path, dir: &Path, agent_bin: &Path) -> Result<bool> {
    let nats_file = dir.join("security-stream.ndjson");
    let messages = c.nats_client()?.stored_messages(collectors::STREAM)?;
    let mut text = Vec::new();
    for m in &messages {
        text.extend_from_slice(&m.data);
        text.push(b'\n');
    }
    std::fs::write(&nats_file, text)?;
    let [a, b] = c.archive_files();
    let run = |what: &str, files: &[&Path]| -> Result<bool> {
        println!("demo: lbwitness verify {what}:");
        let status = Command::new(agent_bin)
            .arg("verify")
            .arg("--key")
            .arg(key)
            .args(files)
            .status()
            .context("running lbwitness verify")?;
        Ok(status.success())
    };
    let archive = run("the archive (rsyslog-a + rsyslog-b)", &[&a, &b])?;
    // The stream alone, quietly: a routed subset must come out incomplete
    // (exit 4), never tampered (exit 3).
    let alone = Command::new(agent_bin)
        .arg("verify")
        .arg("--key")
        .arg(key)
        .arg(&nats_file)
        .output()
        .context("running lbwitness verify")?
        .status
        .code();
    println!(
        "demo: the security stream holds {} records, a routed subset: verified alone it exits \
         {} (4 = incomplete, as expected: the flows between its checkpoints went to the \
         archive only).\n\
         demo: verified together with the archive, any copy that differs from the archive's \
         would be reported as tampering:",
        messages.len(),
        alone.map_or_else(|| "by a signal".to_owned(), |c| c.to_string())
    );
    let both = run(
        "the archive + the security stream",
        &[&a, &b, nats_file.as_path()],
    )?;
    Ok(archive && both && alone == Some(4))
}

/// The last lines of the agent's log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "agent log ({}):\n{}",
        log.display(),
        lines[lines.len().saturating_sub(20)..].join("\n")
    )
}
