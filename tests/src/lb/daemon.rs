//! A server process of the lab (HAProxy, nginx) started in a namespace, in
//! a process group of its own, waited for until it listens, and stopped on
//! drop together with anything left of its group (nginx workers whose
//! master was killed), also while a failing test unwinds.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netns::{ChildGuard, NetNs};

/// How long a server may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server; see the module doc.
#[derive(Debug)]
pub struct Daemon {
    child: Option<ChildGuard>,
    /// The executable's name as `/proc/PID/comm` shows it (15 bytes at
    /// most), to recognise members of the group.
    comm: String,
    log: PathBuf,
}

impl Daemon {
    /// Runs `program args` in `ns` with stdout and stderr appended to
    /// `log`, and waits until it listens on every address of `listen`.
    /// The error carries the log.
    pub fn start(
        ns: &NetNs,
        program: &Path,
        args: &[&str],
        log: &Path,
        listen: &[SocketAddr],
    ) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut cmd = ns.command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let comm: String = program
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(15).collect())
            .unwrap_or_default();
        let child = ChildGuard::spawn(&mut cmd)?.with_grace(Duration::from_secs(5));
        let mut daemon = Self {
            child: Some(child),
            comm,
            log: log.to_owned(),
        };
        daemon.wait_listening(listen)?;
        Ok(daemon)
    }

    /// The main process's pid (nginx's master, HAProxy's only process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::id)
    }

    /// The server's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pids of the live processes of its group (main process and workers).
    pub fn group_pids(&self) -> Vec<u32> {
        self.pid()
            .map_or_else(Vec::new, |pgid| group_members(pgid, &self.comm))
    }

    fn wait_listening(&mut self, listen: &[SocketAddr]) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let log = self.log.clone();
        let child = self.child.as_mut().context("no child")?;
        let pid = child.id();
        loop {
            if let Some(status) = child.try_wait() {
                bail!(
                    "`{}` exited with {status}: {}",
                    child.what(),
                    log_text(&log)
                );
            }
            // The table of the child's namespace, not ours.
            let tables = [
                std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default(),
                std::fs::read_to_string(format!("/proc/{pid}/net/tcp6")).unwrap_or_default(),
            ];
            if listen.iter().all(|a| tables.iter().any(|t| listens(t, *a))) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "`{}` does not listen on all of {listen:?} after {START_TIMEOUT:?}: {}",
                    child.what(),
                    log_text(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A server's log, for error messages.
fn log_text(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    format!("its log ({}):\n{}", log.display(), text.trim())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id();
        child.stop_with(libc::SIGTERM);
        // Members left behind keep the group's id allocated, so it cannot
        // name anyone else's group; check the name all the same.
        for pid in group_members(pgid, &self.comm) {
            // SAFETY: kill(2) on a process of the group we created.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Live processes in process group `pgid` named `comm`.
fn group_members(pgid: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces.
            let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
            else {
                return false;
            };
            let fields: Vec<&str> = rest.split(' ').collect();
            name == comm && fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z"
        })
        .collect()
}

/// Whether a `/proc/net/tcp{,6}` table has a listener on `addr` (or on the
/// wildcard address with its port).
fn listens(table: &str, addr: SocketAddr) -> bool {
    let wanted = [
        hex_addr(addr),
        hex_addr(SocketAddr::new(unspecified(addr.ip()), addr.port())),
    ];
    table.lines().skip(1).any(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        // local_address is column 1, st column 3; 0A is LISTEN.
        cols.len() > 3 && cols[3] == "0A" && wanted.iter().any(|w| cols[1] == w)
    })
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// An address as `/proc/net/tcp` prints it: each 32-bit word of the
/// address in host byte order, in hex, then the port.
fn hex_addr(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", addr.port())
}

/// Copies `source` (an executable) to `dir/name`, so it runs under another
/// name: the agent picks the processes it traces by executable name.
pub fn renamed_copy(source: &Path, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let target = dir.join(name);
    std::fs::copy(source, &target)
        .with_context(|| format!("copy {} to {}", source.display(), target.display()))?;
    Ok(target)
}

/// Runs `cmd` and fails with its output unless it succeeds (config checks).
pub fn check(cmd: &mut Command) -> anyhow::Result<()> {
    let out = crate::run_output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}{}",
            crate::describe(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses() {
        // 192.0.2.1:80 as the kernel prints it on a little-endian host.
        let addr: SocketAddr = "192.0.2.1:80".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(hex_addr(addr), "010200C0:0050");
        }
        let table = format!(
            "  sl  local_address rem_address   st\n   0: {} 00000000:0000 0A\n   1: 00000000:1F90 00000000:0000 0A\n   2: {} 0B0200C0:1234 01\n",
            hex_addr(addr),
            hex_addr("192.0.2.1:443".parse().unwrap())
        );
        assert!(listens(&table, addr));
        assert!(listens(&table, "198.51.100.2:8080".parse().unwrap()));
        // Established, not listening.
        assert!(!listens(&table, "192.0.2.1:443".parse().unwrap()));
    }
}
