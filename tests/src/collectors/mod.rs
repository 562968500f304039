//! Real collectors for sink and delivery tests, each an RAII guard that starts
//! the server on a free loopback port in a temporary directory, reads back
//! what it stored, and stops and cleans up on drop (also on panic).
//!
//! * [`rsyslog`]: rsyslogd with imtcp (octet counting), imrelp, and TLS
//!   (gtls or ossl), storing each message's MSG verbatim, one per line.
//! * [`syslog_ng`]: syslog-ng from `/opt/syslog-ng` with a `syslog()` TCP
//!   source, storing `$MSG` one per line.
//! * [`nats`]: nats-server with JetStream, alone or as a 3-node cluster.
//! * [`certs`]: a test PKI made with the `openssl` command.
//! * [`bad`]: collectors that misbehave: never read, answer garbage, or
//!   present a bad certificate.

pub mod bad;
pub mod certs;
pub mod nats;
pub mod rsyslog;
pub mod syslog_ng;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::netns::ChildGuard;

/// How long a collector may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A free loopback TCP port: the kernel picks one for a listener bound to
/// port 0, which is closed again. (A tiny race with other binders remains;
/// the kernel cycles through the ephemeral range before reusing a port.)
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether a socket listens on TCP `port` of any local address, from
/// `/proc/net/tcp{,6}` (so no probe connection disturbs the server).
pub fn is_listening(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|row| {
                let cols: Vec<&str> = row.split_whitespace().collect();
                // local_address is column 1, st column 3; 0A is LISTEN.
                cols.len() > 3 && cols[1].ends_with(&wanted) && cols[3] == "0A"
            })
        })
    })
}

/// Waits until `port` is listening; fails early, with the server's log,
/// if `child` exits.
pub(crate) fn wait_listening(child: &mut ChildGuard, port: u16, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !is_listening(port) {
        if let Some(status) = child.try_wait() {
            bail!("`{}` exited with {status}: {}", child.what(), read_log(log));
        }
        if Instant::now() >= deadline {
            bail!(
                "`{}` is not listening on port {port} after {START_TIMEOUT:?}: {}",
                child.what(),
                read_log(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A server's log file, for error messages.
pub(crate) fn read_log(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) if text.trim().is_empty() => "(its log is empty)".to_owned(),
        Ok(text) => format!("its log ({}):\n{}", log.display(), text.trim()),
        Err(e) => format!("(no log at {}: {e})", log.display()),
    }
}

/// The file a collector stores one message per line in.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its path.
    pub path: PathBuf,
}

impl Stored {
    /// The complete lines stored so far (a line still being written, with no
    /// newline yet, is left out), without their newlines.
    pub fn lines(&self) -> Vec<String> {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        bytes[..end]
            .split(|&b| b == b'\n')
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect()
    }

    /// Polls until at least `n` complete lines are stored, and returns them.
    pub fn wait_for_lines(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return Ok(lines);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} holds {} lines after {timeout:?}, expected {n}",
                    self.path.display(),
                    lines.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
