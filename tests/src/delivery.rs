//! Helpers for the end-to-end delivery tests (tests/tests/delivery.rs): UDP
//! traffic through the lab, rsyslogd RELP collectors reachable from the lab's
//! lb namespace through a relay, the agent's delivery config, and oracles
//! over what the collectors stored (`lbwitness verify` and sequence counts).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Scratch,
    agent::{Agent, binary},
    collectors::rsyslog::{Input, Rsyslog},
    lab::Lab,
    netns::{DEFAULT_B_V4, NetNs, in_netns},
    run_output,
};

/// Stored records by sequence, each with how many times it was stored.
pub type Records = BTreeMap<u64, (Value, usize)>;

/// Sends UDP datagrams from the client to the lb namespace, a new source
/// port (a new flow) every 20 datagrams, until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Traffic {
    /// Starts sending to port 9.
    pub fn start(lab: &Lab) -> Self {
        Self::to_ports(lab, &[9])
    }

    /// Like [`start`](Self::start), the flows spread over destination `ports`.
    pub fn to_ports(lab: &Lab, ports: &[u16]) -> Self {
        let ports = ports.to_vec();
        // Sockets keep the namespace they were made in.
        let socks: Vec<UdpSocket> = (0..400)
            .map(|_| {
                in_netns(&lab.client, || UdpSocket::bind("0.0.0.0:0")).expect("bind a client port")
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sent = 0u64;
            for (i, sock) in socks.iter().enumerate().cycle() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let to = SocketAddr::from((DEFAULT_B_V4, ports[i % ports.len()]));
                for _ in 0..20 {
                    let _ = sock.send_to(b"lbwitness delivery test", to);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sending and returns how many datagrams were sent.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A TCP relay from the lb namespace's loopback to a collector on the test's
/// own loopback.
///
/// Why: the agent must run in the lab's lb namespace (it attaches to the
/// veth there), so it cannot reach 127.0.0.1 of the test's namespace; and
/// `Rsyslog::start` cannot be called from an `in_netns` thread, because its
/// readiness check reads `/proc/net/tcp`, which shows the namespace of the
/// process's main thread, not the calling thread's. Sockets keep their
/// namespace, so a listener made inside lb and a stream made outside bridge
/// the two. The relay holds no data of its own beyond kernel buffers: RELP
/// acknowledgements still come end-to-end from rsyslogd, and when rsyslogd
/// dies the relay drops the agent's connection (and refuses new ones by
/// closing them at once), as a dead collector would.
pub struct Relay {
    /// Where the agent connects, in `ns`.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on 127.0.0.1 of `ns` and relays to `upstream`.
    pub fn start(ns: &NetNs, upstream: SocketAddr) -> Self {
        let listener = in_netns(ns, || TcpListener::bind("127.0.0.1:0")).expect("bind in lb");
        let addr = listener.local_addr().expect("relay address");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let _ = down.set_nonblocking(false);
                        match TcpStream::connect(upstream) {
                            Ok(up) => pipe(down, up),
                            Err(_) => drop(down),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies both ways until either side closes, then closes both.
fn pipe(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

/// A RELP rsyslogd in the test's namespace with its relay in lb.
pub struct Collector {
    /// The collector.
    pub rsyslog: Rsyslog,
    /// Its door in the lb namespace.
    pub relay: Relay,
}

impl Collector {
    /// Starts rsyslogd (RELP) and its relay into `lab.lb`.
    pub fn start(lab: &Lab) -> Self {
        let rsyslog = Rsyslog::start(&Input::Relp).expect("start rsyslogd");
        let upstream: SocketAddr = rsyslog.address().parse().unwrap();
        let relay = Relay::start(&lab.lb, upstream);
        Self { rsyslog, relay }
    }

    /// The records stored so far, one JSON line each.
    pub fn lines(&self) -> Vec<String> {
        self.rsyslog.stored().lines()
    }
}

/// The agent config: short flow timeouts so records flow, frequent
/// checkpoints, one RELP group over `collectors`.
pub fn config(collectors: &[Collector], strategy: &str) -> Scratch {
    config_with(collectors, strategy, "")
}

/// [`config`] with `extra` lines in the group (e.g. `hash_field`).
pub fn config_with(collectors: &[Collector], strategy: &str, extra: &str) -> Scratch {
    let mut text = String::from(
        "[flows]\nidle_timeout_secs = 1\nclosed_timeout_secs = 1\nsweep_interval_ms = 100\n\
         [audit]\ncheckpoint_interval_secs = 1\ncheckpoint_records = 40\nwatch_files = []\n\
         [[groups]]\nname = \"relp\"\nkind = \"syslog\"\n",
    );
    text += &format!(
        "strategy = \"{strategy}\"\nbatch_records = 16\nbackoff_base_ms = 100\n\
         backoff_max_ms = 1000\nconnect_timeout_ms = 1000\nsend_timeout_ms = 3000\n{extra}"
    );
    for c in collectors {
        text += &format!(
            "[[groups.endpoints]]\naddress = \"{}\"\ntransport = \"relp\"\n",
            c.relay.addr
        );
    }
    Scratch::file("delivery.toml", &text)
}

/// Runs `lbwitness verify ARGS`: exit code, stdout, stderr.
///
/// It runs the auditor's `lbwitness-verify ARGS` too (built beside the
/// agent, from the trail crate alone) and asserts that both give the same
/// exit code and byte-identical reports, so every trail a test verifies
/// proves the two verifiers agree.
///
/// # Panics
/// When they differ.
pub fn verify(args: &[&str]) -> (i32, String, String) {
    let out = run_output(Command::new(binary()).arg("verify").args(args)).expect("run verify");
    let auditor = binary().with_file_name("lbwitness-verify");
    let theirs = run_output(Command::new(&auditor).args(args))
        .unwrap_or_else(|e| panic!("run {}: {e}", auditor.display()));
    assert_eq!(
        (out.status.code(), &out.stdout),
        (theirs.status.code(), &theirs.stdout),
        "`lbwitness verify` and `lbwitness-verify` disagree on {args:?}"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `lbwitness verify --json` over the collectors' stored files:
/// exit code, report, and the raw output for messages.
pub fn verify_stored(state: &Path, collectors: &[Collector]) -> (i32, Value, String) {
    let key = state.join("signing.key.pub");
    // A collector that never got a record (a failover standby) has no file.
    let files: Vec<String> = collectors
        .iter()
        .map(|c| &c.rsyslog.stored().path)
        .filter(|p| p.exists())
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["--json", "--key", key.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let (code, stdout, stderr) = verify(&args);
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (code, report, format!("{stdout}\n{stderr}"))
}

/// Every stored record by sequence, with how many times it was stored;
/// copies of one sequence must be byte-identical.
pub fn by_sequence(collectors: &[Collector]) -> Records {
    records_of(collectors.iter().flat_map(Collector::lines))
}

/// [`by_sequence`] over stored `lines` from anywhere (a NATS stream, a
/// file): copies of one sequence must be byte-identical.
pub fn records_of(lines: impl IntoIterator<Item = String>) -> Records {
    let mut out: BTreeMap<u64, (String, Value, usize)> = BTreeMap::new();
    for line in lines {
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stored line is not JSON ({e}): {line}"));
        let seq = v["event"]["sequence"].as_u64().expect("a sequence");
        let entry = out.entry(seq).or_insert_with(|| (line.clone(), v, 0));
        assert_eq!(entry.0, line, "two different records with sequence {seq}");
        entry.2 += 1;
    }
    out.into_iter().map(|(s, (_, v, n))| (s, (v, n))).collect()
}

/// Whether the highest stored record is the agent's final checkpoint (what
/// a clean stop writes last).
pub fn ends_with_final(records: &Records) -> bool {
    records
        .values()
        .last()
        .is_some_and(|(v, _)| v["lbwitness"]["checkpoint"]["final"] == true)
}

/// The `[flows]` and `[audit]` tables every delivery test uses: short flow
/// timeouts so records flow, frequent checkpoints. Append `[[groups]]`.
pub fn config_preamble() -> String {
    String::from(
        "[flows]\nidle_timeout_secs = 1\nclosed_timeout_secs = 1\nsweep_interval_ms = 100\n\
         [audit]\ncheckpoint_interval_secs = 1\ncheckpoint_records = 40\nwatch_files = []\n",
    )
}

/// Runs `lbwitness verify --json` over `files` with the agent's public key
/// in `state`: exit code, report, and the raw output for messages.
pub fn verify_files(state: &Path, files: &[&Path]) -> (i32, Value, String) {
    let key = state.join("signing.key.pub");
    let mut args = vec!["--json", "--key", key.to_str().unwrap()];
    args.extend(files.iter().map(|p| p.to_str().expect("a UTF-8 path")));
    let (code, stdout, stderr) = verify(&args);
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (code, report, format!("{stdout}\n{stderr}"))
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), which the agent's
/// log carries around field names even when written to a file.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the sequence's final byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls the agent's log (read by `log`, colours removed) until it contains every one of
/// `words`; returns the first line holding them all.
///
/// # Panics
/// After `timeout`, with the log.
pub fn wait_log_line(log: impl Fn() -> String, words: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = plain(&log());
        if let Some(line) = text.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {words:?} after {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until the collectors together hold a final checkpoint.
pub fn wait_final(collectors: &[Collector], timeout: Duration) -> Records {
    let deadline = Instant::now() + timeout;
    loop {
        let records = by_sequence(collectors);
        let last = records.values().last().map(|(v, _)| v.clone());
        if last
            .as_ref()
            .is_some_and(|v| v["lbwitness"]["checkpoint"]["final"] == true)
        {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "no final checkpoint stored after {timeout:?}; last: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts every sequence 1..=last is stored; returns the last.
pub fn assert_complete(records: &Records) -> u64 {
    let last = *records.keys().last().expect("records stored");
    let missing: Vec<u64> = (1..=last).filter(|s| !records.contains_key(s)).collect();
    assert!(missing.is_empty(), "missing sequences: {missing:?}");
    last
}

/// A small xorshift generator: the seed is printed so a failing run can be
/// repeated with `LBW_SEED`.
pub fn rng() -> impl FnMut() -> u64 {
    let mut x = std::env::var("LBW_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("LBW_SEED={x}");
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// The spool's segment files, largest first.
pub fn segments(spool: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(spool)
        .unwrap_or_else(|e| panic!("read {}: {e}", spool.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| (std::fs::metadata(&p).map_or(0, |m| m.len()), p))
        .collect();
    segs.sort_by_key(|s| std::cmp::Reverse(s.0));
    segs.into_iter().map(|(_, p)| p).collect()
}

/// Group settings shared by every group here: small batches so many are in
/// flight, short timeouts and backoff so faults show within seconds.
pub const GROUP_TUNING: &str = "batch_records = 16\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
                            connect_timeout_ms = 1000\nsend_timeout_ms = 3000\n";

/// A clean stop waits for the spool, gives the groups 2.5 s to drain
/// (agent/src/run/delivery.rs) and then exits; the rest is margin for a
/// loaded 2-core machine.
pub const STOP_BOUND: Duration = Duration::from_secs(6);

/// One RELP collector with failover, the agent under traffic, and the
/// collector killed once it has stored a few records.
pub struct Outage {
    /// The namespaces.
    pub lab: Lab,
    /// The one collector (dead).
    pub cs: Vec<Collector>,
    /// The agent's config file.
    pub conf: Scratch,
    /// The agent's state directory.
    pub state: Scratch,
    /// The agent.
    pub agent: Agent,
    /// The traffic, still running.
    pub traffic: Traffic,
}

impl Outage {
    /// `spool`: a `[spool]` table for the config, or "".
    pub fn begin(tag: &str, spool: &str) -> Self {
        let lab = Lab::new(tag);
        let mut cs = vec![Collector::start(&lab)];
        let conf = config(&cs, "failover");
        let text = std::fs::read_to_string(&conf.0).unwrap() + spool;
        std::fs::write(&conf.0, text).unwrap();
        let state = Scratch::path("state");
        let agent = Agent::start_delivering(&lab.lb, lab.iface(), &conf.0, &state.0);
        let traffic = Traffic::start(&lab);
        cs[0]
            .rsyslog
            .wait_for_lines(20, Duration::from_secs(20))
            .expect("records delivered before the outage");
        cs[0].rsyslog.kill();
        Self {
            lab,
            cs,
            conf,
            state,
            agent,
            traffic,
        }
    }
}

/// The count the verify report declares for `reason`.
pub fn declared(report: &Value, reason: &str) -> u64 {
    report["agents"][0]["declared_losses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["reason"] == reason)
        .map(|l| l["count"].as_u64().unwrap_or(0))
        .sum()
}

/// Every gap record of `reason` carries the chain hashes on both sides of
/// its hole.
pub fn assert_gaps_tied(records: &Records, reason: &str) {
    let gaps: Vec<&Value> = records
        .values()
        .map(|(v, _)| v)
        .filter(|r| r["lbwitness"]["gap"]["reason"] == reason)
        .collect();
    assert!(!gaps.is_empty(), "a {reason} gap record");
    for g in gaps {
        let gap = &g["lbwitness"]["gap"];
        assert!(
            gap["before_hash"].is_string() && gap["last_hash"].is_string(),
            "the gap carries both hashes: {g}"
        );
    }
}

/// A small tmpfs mounted on a fresh directory, unmounted and removed on
/// drop: a disk that fills.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes`.
    pub fn mount(bytes: u64) -> Self {
        let dir = crate::temp_path("tmpfs");
        std::fs::create_dir(&dir).expect("create the mount point");
        let guard = Self(dir);
        crate::run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={bytes},mode=0700"))
                .arg("tmpfs")
                .arg(&guard.0),
        );
        guard
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
