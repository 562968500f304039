//! The agent's outputs under stress, with the real binary: its own log on
//! stderr, records on standard output, the output file's lifecycle, and
//! `verify` on inputs a power loss or a mistake can hand it.
//!
//! * A stderr pipe whose reader has gone: the agent keeps running, stops
//!   cleanly, and its output verifies.
//! * A stderr pipe: no ANSI escapes; `--log-format json`: one JSON object
//!   per line.
//! * `--output -` into a reader that exits: one clear message, no warning
//!   loop, the records it could not take stay in the spool and reach the
//!   next run's output; the two together verify intact.
//! * `verify /dev/zero` and a sparse multi-GiB file: bounded memory, the
//!   over-long line reported with its file and offset.
//! * The output file: rename + SIGHUP (logrotate) continues in a new file,
//!   size and age rotation keep at most `keep` rotated files, new files
//!   are 0640; every file together verifies intact.
//!
//! Needs root: `cargo test --release -p integration-tests --test outputs`.

use std::{
    io::Read,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Scratch,
    agent::binary,
    lab::Lab,
    netns::{ChildGuard, DEFAULT_B_V4, in_netns},
    wait_for,
};
use serde_json::Value;

/// The agent's shutdown promise, with room for a loaded CI machine.
const STOP_BUDGET: Duration = Duration::from_secs(8);

/// Starts `lbwitness run --iface <lab> --state-dir STATE ARGS` in the lab's
/// load-balancer namespace with the given stdout and stderr.
fn spawn_agent(lab: &Lab, state: &Path, args: &[&str], stdout: Stdio, stderr: Stdio) -> ChildGuard {
    let mut cmd = lab.lb.command(binary());
    cmd.args(["run", "--iface", lab.iface(), "--state-dir"])
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    ChildGuard::spawn(&mut cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Lines in `path` (0 when it does not exist).
fn line_count(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
}

/// Waits until `path` holds at least `n` lines, failing if `agent` exits.
#[track_caller]
fn wait_lines(agent: &mut ChildGuard, path: &Path, n: usize) {
    let ok = wait_for(Duration::from_secs(20), || {
        if let Some(status) = agent.try_wait() {
            panic!(
                "the agent exited ({status}) while {} had {} line(s)",
                path.display(),
                line_count(path)
            );
        }
        (line_count(path) >= n).then_some(())
    });
    assert!(ok.is_some(), "{} never reached {n} lines", path.display());
}

/// `count` UDP datagrams from the client to distinct lb ports: each is a
/// new flow, so each makes a record at once.
fn udp_flows(lab: &Lab, first_port: u16, count: u16) {
    let tx = in_netns(&lab.client, || UdpSocket::bind("0.0.0.0:0")).expect("bind a UDP client");
    for port in first_port..first_port + count {
        tx.send_to(b"lbwitness", SocketAddr::from((DEFAULT_B_V4, port)))
            .expect("send a datagram");
    }
}

/// SIGTERM, and the exit within the budget; returns whether it succeeded.
fn stop(agent: &mut ChildGuard) -> std::process::ExitStatus {
    let start = Instant::now();
    let status = agent.stop_with(libc::SIGTERM);
    assert!(
        start.elapsed() < STOP_BUDGET,
        "the stop took {:?}",
        start.elapsed()
    );
    status
}

/// Runs `lbwitness verify --json --key STATE/signing.key.pub FILES`:
/// exit code and report.
fn verify(state: &Path, files: &[PathBuf]) -> (i32, Value) {
    let out = Command::new(binary())
        .arg("verify")
        .arg("--json")
        .arg("--key")
        .arg(state.join("signing.key.pub"))
        .args(files)
        .output()
        .expect("run verify");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON report ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[track_caller]
fn assert_intact(state: &Path, files: &[PathBuf]) -> Value {
    let (code, report) = verify(state, files);
    assert_eq!(code, 0, "the trail does not verify intact: {report:#}");
    report
}

/// A pipe: (read end, write end).
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: two fds are written into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are fresh fds we own.
    unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

// ---------------------------------------------------------------------------
// 6. The agent's own log

#[test]
fn a_closed_stderr_does_not_stop_the_agent() {
    let lab = Lab::new("errpipe");
    let state = Scratch::path("state");
    let output = Scratch::path("records.ndjson");
    let (reader, writer) = pipe();
    // The reader is gone before the agent writes its first log line.
    drop(reader);
    let mut agent = spawn_agent(
        &lab,
        &state.0,
        &["--output", output.as_str()],
        Stdio::null(),
        Stdio::from(writer),
    );
    // agent-start, hook-attach: it is running.
    wait_lines(&mut agent, &output.0, 2);
    udp_flows(&lab, 7000, 5);
    // A reload logs too.
    agent.signal(libc::SIGHUP).unwrap();
    wait_lines(&mut agent, &output.0, 8);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.try_wait().is_none(),
        "the agent died of a closed stderr"
    );
    let status = stop(&mut agent);
    assert!(status.success(), "the agent exited with {status}");
    let report = assert_intact(&state.0, std::slice::from_ref(&output.0));
    assert!(
        report["agents"][0]["records"].as_u64() >= Some(8),
        "{report:#}"
    );
}

/// Runs an agent with stderr a pipe, sends a reload, stops it, and returns
/// everything it logged.
fn log_through_a_pipe(tag: &str, args: &[&str]) -> Vec<u8> {
    let lab = Lab::new(tag);
    let state = Scratch::path("state");
    let output = Scratch::path("records.ndjson");
    let (mut reader, writer) = pipe();
    let mut all = vec!["--output", output.as_str()];
    all.extend_from_slice(args);
    let mut agent = spawn_agent(&lab, &state.0, &all, Stdio::null(), Stdio::from(writer));
    let collected = std::thread::spawn(move || {
        let mut log = Vec::new();
        reader
            .read_to_end(&mut log)
            .expect("read the agent's stderr");
        log
    });
    wait_lines(&mut agent, &output.0, 2);
    agent.signal(libc::SIGHUP).unwrap();
    wait_lines(&mut agent, &output.0, 3);
    assert!(stop(&mut agent).success());
    drop(agent);
    collected.join().expect("the stderr reader")
}

#[test]
fn logs_into_a_pipe_have_no_colour_codes() {
    let log = log_through_a_pipe("errtext", &[]);
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("lbwitness running"), "{text}");
    assert!(
        !log.contains(&0x1b),
        "ANSI escapes in a log written into a pipe:\n{text:?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let log = log_through_a_pipe("errjson", &["--log-format", "json"]);
    let text = String::from_utf8(log).expect("UTF-8 log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 4, "{text}");
    for l in &lines {
        assert!(
            l.is_object() && l["level"].is_string() && l["timestamp"].is_string(),
            "{l}"
        );
    }
    let running = lines
        .iter()
        .find(|l| l["message"] == "lbwitness running")
        .unwrap_or_else(|| panic!("no `lbwitness running` line:\n{text}"));
    assert_eq!(running["level"], "INFO", "{running}");
    assert!(
        lines.iter().any(|l| l["message"] == "config reloaded"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

// ---------------------------------------------------------------------------
// 7. Standard output into a pipe whose reader exits

/// Reads from `pipe` until it has had nothing for `idle` (and at least
/// `min` lines), then returns what it read with the pipe empty: the caller
/// closes it at once, so no record waits unread in the pipe.
fn read_until_idle(pipe: &mut impl Read, fd: i32, min: usize, idle: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Instant::now();
    let mut buf = [0u8; 65536];
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 50) };
        if ready > 0 {
            let n = pipe.read(&mut buf).expect("read the agent's stdout");
            assert!(n > 0, "the agent closed its stdout");
            got.extend_from_slice(&buf[..n]);
            last = Instant::now();
        }
        let lines = got.iter().filter(|b| **b == b'\n').count();
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
        if lines >= min && last.elapsed() >= idle && rc == 0 && queued == 0 {
            return got;
        }
        assert!(Instant::now() < deadline, "stdout never went idle");
    }
}

#[test]
fn stdout_into_an_exited_reader_ends_that_output_and_keeps_the_records() {
    let lab = Lab::new("stdout");
    let state = Scratch::path("state");
    let log = Scratch::path("agent.log");
    // No timed checkpoint while the reader closes: only traffic writes.
    let config = Scratch::file("outputs.toml", "[audit]\ncheckpoint_interval_secs = 3600\n");
    let mut agent = spawn_agent(
        &lab,
        &state.0,
        &["--config", config.as_str(), "--output", "-"],
        Stdio::piped(),
        Stdio::from(std::fs::File::create(&log.0).unwrap()),
    );
    let mut stdout = agent.child_mut().stdout.take().expect("piped stdout");
    let fd = stdout.as_raw_fd();
    let read = read_until_idle(&mut stdout, fd, 2, Duration::from_millis(700));
    // The reader exits.
    drop(stdout);
    let before = Scratch::path("read-by-the-reader.ndjson");
    std::fs::write(&before.0, &read).unwrap();
    let read_lines = line_count(&before.0);

    udp_flows(&lab, 7100, 5);
    // Long enough for the old behaviour's warning loop (every 0.5 s).
    std::thread::sleep(Duration::from_secs(3));
    udp_flows(&lab, 7200, 5);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.try_wait().is_none(),
        "the agent stopped when stdout closed"
    );
    let status = stop(&mut agent);
    let text = std::fs::read_to_string(&log.0).unwrap();
    assert!(status.success(), "exit {status}:\n{text}");
    assert!(text.contains("stopped cleanly"), "{text}");
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("collector endpoint"))
        .collect();
    assert_eq!(said.len(), 1, "not said exactly once:\n{text}");
    assert!(
        said[0].contains("ERROR") && said[0].contains("standard output was closed"),
        "{}",
        said[0]
    );
    assert!(
        text.contains("stays in the spool"),
        "the stop does not say where the records are:\n{text}"
    );

    // The next run, with a reader (a file), gets what stdout could not take.
    let output = Scratch::path("records.ndjson");
    let mut agent = spawn_agent(
        &lab,
        &state.0,
        &["--config", config.as_str(), "--output", output.as_str()],
        Stdio::null(),
        Stdio::null(),
    );
    wait_lines(&mut agent, &output.0, 10);
    assert!(stop(&mut agent).success());
    let report = assert_intact(&state.0, &[before.0.clone(), output.0.clone()]);
    let agent_report = &report["agents"][0];
    assert_eq!(agent_report["first_sequence"], 1, "{report:#}");
    assert!(
        agent_report["records"].as_u64().unwrap() > read_lines as u64 + 10,
        "{report:#}"
    );
    // The file starts right after the last record the reader took.
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&output.0)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["event"]["sequence"], read_lines as u64 + 1, "{first}");
}

// ---------------------------------------------------------------------------
// 8. verify on inputs without line ends

/// Runs `lbwitness verify --json ARGS` with at most 1 GiB of address
/// space (an unbounded line buffer then fails fast instead of swapping the
/// machine) and returns the exit code, the report, the peak RSS in KiB
/// (`wait4`'s `ru_maxrss` of that one process) and the time it took.
fn verify_measured(args: &[&str]) -> (i32, Value, i64, Duration) {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(binary());
    cmd.arg("verify")
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped below with wait4, which also gives its rusage"
    )]
    let mut child = cmd.spawn().expect("spawn verify");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut t = String::new();
        let _ = stderr.read_to_string(&mut t);
        t
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: reaps our own child; `child` is not waited on afterwards.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    let took = started.elapsed();
    let err = err.join().unwrap();
    let report = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "verify {args:?} printed no report ({e}; wait status {status:#x}):\n{}{err}",
            String::from_utf8_lossy(&out)
        )
    });
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, report, usage.ru_maxrss, took)
}

/// Peak RSS a bounded verify may reach on a tiny trail: the binary, the
/// read buffer and one line of the limit, with room to spare.
const BOUNDED_RSS_KIB: i64 = 64 * 1024;

#[test]
fn verify_dev_zero_ends_with_the_overlong_line_reported() {
    let (code, report, rss, took) = verify_measured(&["/dev/zero"]);
    assert_eq!(code, 3, "{report:#}");
    let issue = &report["unparsable"]["items"][0];
    assert_eq!(report["unparsable"]["count"], 1, "{report:#}");
    assert_eq!(
        (&issue["file"], &issue["line"], &issue["offset"]),
        (&Value::from("/dev/zero"), &Value::from(1), &Value::from(0)),
        "{issue}"
    );
    let error = issue["error"].as_str().unwrap();
    assert!(
        error.contains("1048576-byte limit") && error.contains("not a regular file"),
        "{error}"
    );
    assert!(
        rss < BOUNDED_RSS_KIB,
        "verify /dev/zero peaked at {rss} KiB"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn verify_a_sparse_multi_gib_file_in_bounded_memory() {
    // A real trail, as a collector stored it.
    let lab = Lab::new("sparse");
    let state = Scratch::path("state");
    let output = Scratch::path("records.ndjson");
    let mut agent = spawn_agent(
        &lab,
        &state.0,
        &["--output", output.as_str()],
        Stdio::null(),
        Stdio::null(),
    );
    wait_lines(&mut agent, &output.0, 2);
    udp_flows(&lab, 7300, 3);
    wait_lines(&mut agent, &output.0, 5);
    assert!(stop(&mut agent).success());
    let trail = std::fs::read(&output.0).unwrap();
    let lines = trail.iter().filter(|b| **b == b'\n').count() as u64;
    // The power loss: 6 GiB the file system counted but never wrote, then
    // the collector's next run appending (here: the same records again).
    let damaged = Scratch::path("after-power-loss.ndjson");
    let hole = 6u64 << 30;
    {
        let mut f = std::fs::File::create(&damaged.0).unwrap();
        std::io::Write::write_all(&mut f, &trail).unwrap();
        f.set_len(trail.len() as u64 + hole).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).unwrap();
        std::io::Write::write_all(&mut f, &trail).unwrap();
    }
    let key = state.0.join("signing.key.pub");
    let (code, report, rss, took) =
        verify_measured(&["--key", key.to_str().unwrap(), damaged.as_str()]);
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(report["unparsable"]["count"], 1, "{report:#}");
    let issue = &report["unparsable"]["items"][0];
    assert_eq!(issue["file"], damaged.as_str(), "{issue}");
    assert_eq!(issue["line"], lines + 1, "{issue}");
    assert_eq!(issue["offset"], trail.len() as u64, "{issue}");
    let error = issue["error"].as_str().unwrap();
    // The hole and the first record after it, which it swallowed.
    let first_after = trail.iter().position(|b| *b == b'\n').unwrap() as u64;
    assert!(
        error.contains("NUL") && error.contains(&format!("{} bytes", hole + first_after)),
        "{error}"
    );
    // Every record before and after the damage is still read: the first
    // copy is whole, so the agent's trail is complete.
    assert_eq!(report["agents"][0]["records"], lines, "{report:#}");
    assert!(
        rss < BOUNDED_RSS_KIB,
        "verify of a {} GiB file peaked at {rss} KiB",
        hole >> 30
    );
    eprintln!("verify of a sparse 6 GiB file: {took:?}, peak RSS {rss} KiB");
}

// ---------------------------------------------------------------------------
// 9. The output file: reopen on SIGHUP, rotation, retention, mode

/// Files in `dir` whose names start with `prefix`, sorted (rotated names
/// sort by time).
fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    files.sort();
    files
}

#[track_caller]
fn assert_mode_0640(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{} is {mode:o}", path.display());
}

#[test]
fn logrotate_rename_and_sighup_continue_in_a_new_file() {
    let lab = Lab::new("reopen");
    let state = Scratch::path("state");
    let dir = Scratch::path("out");
    std::fs::create_dir_all(&dir.0).unwrap();
    let output = dir.0.join("records.ndjson");
    let mut agent = spawn_agent(
        &lab,
        &state.0,
        &["--output", output.to_str().unwrap()],
        Stdio::null(),
        Stdio::null(),
    );
    wait_lines(&mut agent, &output, 2);
    assert_mode_0640(&output);
    udp_flows(&lab, 7400, 3);
    wait_lines(&mut agent, &output, 5);
    // What logrotate does without copytruncate: rename, then SIGHUP.
    let renamed = dir.0.join("records.ndjson.1");
    std::fs::rename(&output, &renamed).unwrap();
    let before = line_count(&renamed);
    agent.signal(libc::SIGHUP).unwrap();
    // The config-reload record and new flows land in a new file.
    wait_lines(&mut agent, &output, 1);
    udp_flows(&lab, 7500, 3);
    wait_lines(&mut agent, &output, 4);
    assert!(stop(&mut agent).success());
    assert_eq!(
        line_count(&renamed),
        before,
        "records went on into the renamed file"
    );
    assert_mode_0640(&output);
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["event"]["sequence"], before as u64 + 1, "{first}");
    assert_intact(&state.0, &[renamed, output]);
}

/// Starts an agent whose output rotates as `rotation` says (TOML lines of
/// `[output_rotation]`), sends `flows` new flows `gap` apart (a batch
/// each), stops it, and returns the output's directory listing and the
/// state directory.
fn rotating_agent(
    tag: &str,
    rotation: &str,
    flows: u16,
    gap: Duration,
) -> (Scratch, Scratch, Vec<PathBuf>) {
    let lab = Lab::new(tag);
    let state = Scratch::path("state");
    let dir = Scratch::path("out");
    let output = dir.0.join("records.ndjson");
    let config = Scratch::file(
        "rotation.toml",
        &format!(
            // Request capture is off: its load (seconds of tracepoint
            // attaches) would hold the flow task back, and the first
            // flows' records would come in one batch and rotate less.
            "output = \"{}\"\n[output_rotation]\n{rotation}\n[requests]\nenabled = false\n",
            output.display()
        ),
    );
    let mut agent = spawn_agent(
        &lab,
        &state.0,
        &["--config", config.as_str()],
        Stdio::null(),
        Stdio::null(),
    );
    wait_lines(&mut agent, &output, 2);
    for i in 0..flows {
        udp_flows(&lab, 8000 + i, 1);
        std::thread::sleep(gap);
    }
    assert!(stop(&mut agent).success());
    let files = files_named(&dir.0, "records.ndjson");
    (state, dir, files)
}

#[test]
fn size_rotation_keeps_at_most_keep_rotated_files() {
    let (state, dir, files) = rotating_agent(
        "rotsize",
        "max_bytes = 4096\nkeep = 2",
        40,
        Duration::from_millis(25),
    );
    let output = dir.0.join("records.ndjson");
    // The current file and at most two rotated ones.
    assert!(files.contains(&output), "{files:?}");
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        assert_mode_0640(f);
    }
    // The rotated files hold at least max_bytes each; the oldest records
    // are gone by retention, the rest verify as a contiguous tail.
    let rotated: Vec<&PathBuf> = files.iter().filter(|f| **f != output).collect();
    for f in &rotated {
        assert!(
            std::fs::metadata(f).unwrap().len() >= 4096,
            "{}",
            f.display()
        );
    }
    let (code, report) = verify(&state.0, &files);
    assert_eq!(code, 4, "{report:#}");
    let agent = &report["agents"][0];
    let missing = &agent["missing_undeclared"]["ranges"];
    assert_eq!(agent["missing_undeclared"]["range_count"], 1, "{report:#}");
    assert_eq!(
        missing[0][0], 1,
        "only the oldest records are missing: {report:#}"
    );
    assert_eq!(agent["not_linked"]["count"], 0, "{report:#}");
    assert_eq!(agent["differing_duplicates"]["count"], 0, "{report:#}");
}

#[test]
fn age_rotation_splits_the_trail_into_files_that_verify_together() {
    let (state, dir, files) =
        rotating_agent("rotage", "max_age_secs = 1", 8, Duration::from_millis(400));
    let output = dir.0.join("records.ndjson");
    assert!(files.contains(&output), "{files:?}");
    // 3.2 s of batches: at least two rotations; nothing is deleted
    // without `keep`.
    assert!(files.len() >= 3, "{files:?}");
    assert_intact(&state.0, &files);
}
