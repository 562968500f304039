//! Running the real `lbwitness` binary in a test namespace and reading its
//! NDJSON output.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    netns::{ChildGuard, NetNs},
    temp_path,
};

/// The agent binary: `$LBWITNESS_BIN`, else the release build in
/// `$CARGO_TARGET_DIR` (relative to the workspace, as cargo takes it) or the
/// workspace's `target` (`cargo xtask test` builds it first).
pub fn binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("LBWITNESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
            target.join("release/lbwitness")
        })
}

/// A running agent.
pub struct Agent {
    child: ChildGuard,
    /// Its NDJSON output file.
    pub output: PathBuf,
    /// Its stderr (logs), captured to a file.
    pub log: PathBuf,
    /// Its state directory (agent id, signing key, chain head).
    pub state_dir: PathBuf,
    /// Whether dropping it removes output and state (not for restarts).
    owns_files: bool,
}

/// How the agent exited.
pub struct Exit {
    /// Exit status.
    pub status: ExitStatus,
    /// Time from the stop signal to exit.
    pub took: Duration,
}

impl Agent {
    /// Starts `lbwitness run --iface IFACE --output FILE [extra...]` in `ns`
    /// and waits until it reports it is running (attached).
    ///
    /// # Panics
    /// If it exits or is not running within 20 s; the message carries its log.
    /// Its state directory is a fresh temporary one, unless `extra` names
    /// one.
    pub fn start(ns: &NetNs, iface: &str, extra: &[&str]) -> Self {
        let mut agent = Self::start_with(
            ns,
            iface,
            &temp_path("records.ndjson"),
            &temp_path("state"),
            extra,
        );
        agent.owns_files = true;
        agent
    }

    /// Like [`start`](Self::start) with a given output and state directory,
    /// which outlive the agent (to restart on them).
    pub fn start_with(
        ns: &NetNs,
        iface: &str,
        output: &Path,
        state_dir: &Path,
        extra: &[&str],
    ) -> Self {
        Self::launch(ns, iface, Some(output), state_dir, extra)
    }

    /// Starts the agent with a config whose `[[groups]]` say where records
    /// go (no `--output`), on a state directory that outlives it.
    pub fn start_delivering(ns: &NetNs, iface: &str, config: &Path, state_dir: &Path) -> Self {
        let config = config.to_str().expect("a UTF-8 config path");
        Self::launch(ns, iface, None, state_dir, &["--config", config])
    }

    fn launch(
        ns: &NetNs,
        iface: &str,
        output: Option<&Path>,
        state_dir: &Path,
        extra: &[&str],
    ) -> Self {
        let log = temp_path("agent.log");
        let mut cmd = ns.command(binary());
        cmd.args(["run", "--iface", iface]);
        if let Some(output) = output {
            cmd.arg("--output").arg(output);
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create agent log"));
        if !extra.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(state_dir);
        }
        let child = ChildGuard::spawn(&mut cmd).unwrap_or_else(|e| panic!("{e:#}"));
        let mut agent = Self {
            child,
            output: output.map(Path::to_owned).unwrap_or_default(),
            log,
            state_dir: state_dir.to_owned(),
            owns_files: false,
        };
        wait_running(&mut agent.child, &agent.log).unwrap_or_else(|e| panic!("{e:#}"));
        agent
    }

    /// The agent's process id.
    pub fn pid(&mut self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has already exited (reaping it), else `None`:
    /// `None` means it is still running.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Sends `signal` without waiting (e.g. SIGHUP).
    pub fn signal(&mut self, signal: libc::c_int) {
        self.child.signal(signal).expect("signal the agent");
    }

    /// Sends `signal` and waits (up to 10 s) for the exit.
    pub fn stop_with(&mut self, signal: libc::c_int) -> Exit {
        let start = Instant::now();
        let status = self.child.stop_with(signal);
        Exit {
            status,
            took: start.elapsed(),
        }
    }

    /// Sends `signal` and waits up to `grace` for the exit, then SIGKILLs
    /// (for stops that may take longer than the default 5 s grace).
    pub fn stop_within(&mut self, signal: libc::c_int, grace: Duration) -> Exit {
        let start = Instant::now();
        if self.child.try_wait().is_none() {
            self.signal(signal);
        }
        while start.elapsed() < grace {
            if let Some(status) = self.child.try_wait() {
                return Exit {
                    status,
                    took: start.elapsed(),
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.child.stop_with(libc::SIGKILL);
        Exit {
            status,
            took: start.elapsed(),
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent follows a load-balancer process (request
    /// capture found one); panics with the log after 10 s.
    pub fn wait_following(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self
            .log_text()
            .contains("following a load-balancer process")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent never followed the load balancer:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every record written so far.
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.output)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::env::var_os("LBW_KEEP_OUTPUT").is_none() {
            let _ = std::fs::remove_file(&self.log);
            if self.owns_files {
                let _ = std::fs::remove_file(&self.output);
                let _ = std::fs::remove_dir_all(&self.state_dir);
            }
        }
    }
}

/// Parses an NDJSON file; every line must be a JSON object.
///
/// # Panics
/// On a line that is not JSON: the agent must never write one.
pub fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {line}", path.display(), i + 1))
        })
        .collect()
}

/// Runs the agent to completion with `args` in `ns` (for start-up errors)
/// and returns its exit status and stderr.
///
/// A `run` without `--state-dir` gets a temporary one, removed afterwards, so
/// tests never touch the host's /var/lib/lbwitness.
pub fn run_to_exit(ns: &NetNs, args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = ns.command(binary());
    cmd.args(args).stdin(Stdio::null());
    let state = (args.first() == Some(&"run") && !args.contains(&"--state-dir"))
        .then(|| temp_path("state"));
    if let Some(state) = &state {
        cmd.arg("--state-dir").arg(state);
    }
    let out = cmd.output().expect("run the agent");
    if let Some(state) = state {
        let _ = std::fs::remove_dir_all(state);
    }
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the agent with `args` in `ns`, expecting it to refuse to start:
/// returns its exit status and stderr once it exits by itself.
///
/// # Panics
/// If it is still running after `timeout` (then it is stopped first): the
/// start was not refused.
pub fn run_refused(ns: &NetNs, args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let log = temp_path("refused.log");
    let mut cmd = ns.command(binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the agent's log"));
    let mut child = ChildGuard::spawn(&mut cmd).unwrap_or_else(|e| panic!("{e:#}"));
    let status = child.wait_timeout(timeout);
    if status.is_none() {
        child.stop_with(libc::SIGTERM);
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let status = status.unwrap_or_else(|| {
        panic!(
            "`lbwitness {}` was not refused: still running after {timeout:?}:\n{text}",
            args.join(" ")
        )
    });
    (status, text)
}

/// Whether `iface` in `ns` has an XDP program attached (any mode).
pub fn has_xdp(ns: &NetNs, iface: &str) -> bool {
    let text = ns.ip(&["-d", "link", "show", "dev", iface]);
    text.contains("prog/xdp") || text.contains(" xdp")
}

/// Waits until the agent writing `log` says it is attached and running;
/// fails, with the log, if it exits first or takes over 20 s.
pub fn wait_running(agent: &mut ChildGuard, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("lbwitness running") {
            return Ok(());
        }
        if let Some(status) = agent.try_wait() {
            anyhow::bail!("the agent exited ({status}) before running:\n{text}");
        }
        if Instant::now() > deadline {
            anyhow::bail!("the agent did not start in 20 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
