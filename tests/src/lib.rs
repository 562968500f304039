//! Test support for lbwitness integration tests and benchmarks.
//!
//! * [`frames`]: a pure builder of raw Ethernet frames (VLANs, IPv4 with
//!   options and fragments, IPv6 extension headers, TCP/UDP/ICMP/ICMPv6)
//!   with correct checksums and knobs to craft malformed headers.
//! * [`netns`]: RAII guards for network namespaces, veth pairs and child
//!   processes, and [`netns::in_netns`] to run code (sockets) inside a
//!   namespace. These need root; call [`netns::require_root`] first.
//! * [`inject`]: send raw frames out of an interface with an `AF_PACKET`
//!   socket, so crafted frames reach the peer's XDP program.
//! * [`tshark`]: an oracle from outside the project: capture with dumpcap and
//!   dissect with tshark into per-flow packet and byte counts.
//! * [`pcap`]: read and write classic pcap files.
//! * [`collectors`]: real syslog collectors (rsyslogd, syslog-ng), a test
//!   PKI and misbehaving collectors, for the sink tests.
//! * [`flow`]: the flow key and counters shared by [`frames`] and [`tshark`].
//! * [`lb`]: the load-balancer lab (HAProxy, nginx, backends, a load
//!   generator) and its oracle, the load balancer's own log.
//!
//! Every external command goes through [`run`] (or [`run_ok`]), so a failure
//! always names the command line, its exit status and its stderr.

#![warn(missing_docs)]

pub mod agent;
pub mod collectors;
pub mod delivery;
pub mod flow;
pub mod frames;
pub mod inject;
pub mod lab;
pub mod lb;
pub mod netns;
pub mod pcap;
pub mod tshark;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, bail};

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Renders a command line for error messages, e.g. `ip netns add lbw-1-0`.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion and returns its stdout.
///
/// Fails, naming the command line, if it cannot be started or exits with a
/// non-zero status; the error then carries the command's stderr, which is
/// usually the only useful diagnostic (e.g. `RTNETLINK answers: File exists`).
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let output = run_output(cmd)?;
    if !output.status.success() {
        bail!(
            "`{}` failed with {}: {}",
            describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run`] but panics with the same message: for test code where a
/// failing setup command must fail the test.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    match run(cmd) {
        Ok(out) => out,
        Err(e) => panic!("{e:#}"),
    }
}

/// Runs `cmd` to completion and returns its [`Output`] whatever the exit
/// status; fails only if it cannot be started (the error names it).
pub fn run_output(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// Finds `program` on `PATH` (like `which`), for optional tools.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    // Root's PATH in some CI shells lacks the sbin directories where `ip` and
    // `ethtool` live, so look there as well.
    let extra = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A process-wide counter for unique names (namespaces, interfaces, files).
pub(crate) fn next_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A unique path in the temporary directory: `lbw-<pid>-<n>-<name>`.
///
/// The pid keeps parallel test binaries apart and the counter keeps the tests
/// of one binary apart. Nothing is created; the caller removes the file.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lbw-{}-{}-{name}", std::process::id(), next_id()))
}

/// A temporary path (from [`temp_path`]) removed on drop, file or
/// directory, whether or not anything created it. `LBW_KEEP_OUTPUT` keeps it.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh path; nothing is created.
    pub fn path(name: &str) -> Self {
        Self(temp_path(name))
    }

    /// A fresh file holding `contents`.
    pub fn file(name: &str, contents: &str) -> Self {
        let scratch = Self::path(name);
        std::fs::write(&scratch.0, contents).expect("write a scratch file");
        scratch
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("LBW_KEEP_OUTPUT").is_none() {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
