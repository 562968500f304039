//! syslog-ng as a collector: a `syslog()` source (RFC 5424 with octet
//! counting) on a free loopback port, storing `$MSG` one per line.
//!
//! syslog-ng conflicts with rsyslog as a Debian package, so it is the
//! Debian .deb (syslog-ng-core 3.38) extracted under `/opt/syslog-ng`;
//! `SYSLOG_NG_ROOT` points elsewhere.

use std::{
    fs::OpenOptions,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};

use super::{Stored, free_port, read_log, wait_listening};
use crate::{Scratch, netns::ChildGuard};

/// Where the extracted package lives.
pub fn root() -> PathBuf {
    std::env::var_os("SYSLOG_NG_ROOT")
        .map_or_else(|| PathBuf::from("/opt/syslog-ng"), PathBuf::from)
}

/// A running syslog-ng; stopped and its directory removed on drop.
pub struct SyslogNg {
    _child: ChildGuard,
    port: u16,
    log: PathBuf,
    stored: Stored,
    _dir: Scratch,
}

impl SyslogNg {
    /// Starts syslog-ng and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        let root = root();
        let binary = root.join("usr/sbin/syslog-ng");
        if !binary.is_file() {
            bail!(
                "no syslog-ng at {}: extract the Debian syslog-ng-core .deb there \
                 (dpkg-deb -x) or set SYSLOG_NG_ROOT",
                binary.display()
            );
        }
        let dir = Scratch::path("syslog-ng");
        std::fs::create_dir(&dir.0).with_context(|| format!("create {}", dir.as_str()))?;
        let port = free_port()?;
        let stored = Stored {
            path: dir.0.join("stored.log"),
        };
        let conf = dir.0.join("syslog-ng.conf");
        std::fs::write(
            &conf,
            format!(
                "@version: 3.38\n\
                 options {{ log-msg-size(65536); stats-freq(0); }};\n\
                 source s_net {{ syslog(transport(\"tcp\") ip(\"127.0.0.1\") port({port}) \
                 log-msg-size(65536)); }};\n\
                 destination d_file {{ file(\"{}\" template(\"$MSG\\n\")); }};\n\
                 log {{ source(s_net); destination(d_file); flags(flow-control); }};\n",
                stored.path.display()
            ),
        )?;
        let log = dir.0.join("syslog-ng.log");
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let lib = root.join("usr/lib/syslog-ng");
        let mut cmd = Command::new(&binary);
        cmd.env("LD_LIBRARY_PATH", &lib)
            .arg("-F")
            .arg("--no-caps")
            .arg("-e")
            .arg("-f")
            .arg(&conf)
            .arg(format!("--module-path={}", lib.join("3.38").display()))
            .arg("-R")
            .arg(dir.0.join("syslog-ng.persist"))
            .arg("-p")
            .arg(dir.0.join("syslog-ng.pid"))
            .arg("-c")
            .arg(dir.0.join("syslog-ng.ctl"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut child = ChildGuard::spawn(&mut cmd)?.with_grace(Duration::from_secs(10));
        wait_listening(&mut child, port, &log)?;
        Ok(Self {
            _child: child,
            port,
            log,
            stored,
            _dir: dir,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file of stored messages.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// Polls until `n` messages are stored; the error carries syslog-ng's
    /// log.
    pub fn wait_for_lines(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        self.stored
            .wait_for_lines(n, timeout)
            .map_err(|e| anyhow::anyhow!("{e:#}; syslog-ng: {}", read_log(&self.log)))
    }
}
