//! rsyslogd as a collector: one input (imtcp with octet counting, imrelp,
//! either over TLS) on a free loopback port, storing each message's MSG
//! verbatim, one per line, in `<dir>/stored.log`.
//!
//! Needs the Debian packages rsyslog, rsyslog-relp (imrelp), rsyslog-gnutls
//! (gtls) and rsyslog-openssl (ossl).

use std::{
    fmt::Write as _,
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};

use super::{Stored, certs::Pki, free_port, read_log, wait_listening};
use crate::{Scratch, netns::ChildGuard, run_output};

/// The rsyslogd binary.
pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// The input rsyslogd listens with.
#[derive(Clone, Debug)]
pub enum Input {
    /// imtcp: plain TCP, octet-counted or LF-terminated frames.
    Tcp,
    /// imtcp over TLS (RFC 5425).
    Tls(TlsInput),
    /// imrelp.
    Relp,
    /// imrelp over TLS.
    RelpTls(TlsInput),
}

/// The TLS side of an input.
#[derive(Clone, Debug)]
pub struct TlsInput {
    /// The TLS library rsyslog uses.
    pub driver: Driver,
    /// CA certificate (PEM) that client certificates must chain to.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// Refuse clients without a certificate signed by `ca`.
    pub require_client_cert: bool,
}

impl TlsInput {
    /// An input with `pki`'s CA and server certificate.
    pub fn with_pki(pki: &Pki, driver: Driver, require_client_cert: bool) -> Self {
        Self {
            driver,
            ca: pki.ca.clone(),
            cert: pki.server.cert.clone(),
            key: pki.server.key.clone(),
            require_client_cert,
        }
    }
}

/// rsyslog's network stream drivers.
#[derive(Clone, Copy, Debug)]
pub enum Driver {
    /// GnuTLS (`lmnsd_gtls`, package rsyslog-gnutls).
    Gtls,
    /// OpenSSL (`lmnsd_ossl`, package rsyslog-openssl).
    Ossl,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Self::Gtls => "gtls",
            Self::Ossl => "ossl",
        }
    }
}

/// A running rsyslogd; stopped (SIGTERM) and its directory removed on drop.
pub struct Rsyslog {
    child: Option<ChildGuard>,
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    stored: Stored,
    dir: Scratch,
    /// Whether rsyslogd runs in a process group of its own.
    own_group: bool,
}

impl Rsyslog {
    /// Starts rsyslogd with `input` and waits until it listens.
    pub fn start(input: &Input) -> anyhow::Result<Self> {
        Self::start_with(input, false)
    }

    /// Like [`start`](Self::start), with rsyslogd in a process group of its
    /// own: a terminal's Ctrl-C (sent to the whole foreground group) then
    /// reaches only the caller, which can stop the agent first and read
    /// what the collector stored before it stops the collector.
    pub fn start_detached(input: &Input) -> anyhow::Result<Self> {
        Self::start_with(input, true)
    }

    fn start_with(input: &Input, own_group: bool) -> anyhow::Result<Self> {
        let dir = Scratch::path("rsyslog");
        std::fs::create_dir(&dir.0).with_context(|| format!("create {}", dir.as_str()))?;
        let port = free_port()?;
        let stored = Stored {
            path: dir.0.join("stored.log"),
        };
        let log = dir.0.join("rsyslogd.log");
        let conf = dir.0.join("rsyslog.conf");
        std::fs::write(&conf, config(&dir.0, port, input, &stored.path, &log))?;
        check_config(&conf)?;
        let mut rsyslog = Self {
            child: None,
            port,
            conf,
            log,
            stored,
            dir,
            own_group,
        };
        rsyslog.spawn()?;
        Ok(rsyslog)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let pid_file = self.dir.0.join("rsyslogd.pid");
        let _ = std::fs::remove_file(&pid_file);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(RSYSLOGD);
        cmd.arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if self.own_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let mut child = ChildGuard::spawn(&mut cmd)?.with_grace(Duration::from_secs(10));
        wait_listening(&mut child, self.port, &self.log)?;
        self.child = Some(child);
        Ok(())
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file of stored messages.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// Polls until `n` messages are stored; see [`Stored::wait_for_lines`].
    /// The error carries rsyslogd's log.
    pub fn wait_for_lines(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        self.stored
            .wait_for_lines(n, timeout)
            .map_err(|e| anyhow::anyhow!("{e:#}; rsyslogd: {}", read_log(&self.log)))
    }

    /// SIGKILLs rsyslogd now (a crash: nothing is flushed or closed
    /// politely).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop_with(libc::SIGKILL);
        }
    }

    /// Starts rsyslogd again on the same port, config and stored file.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// rsyslogd's own messages and stderr.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

/// Runs rsyslogd's own config check (`-N1`): rsyslogd starts despite most
/// config errors, silently without the broken part.
fn check_config(conf: &Path) -> anyhow::Result<()> {
    let out = run_output(Command::new(RSYSLOGD).arg("-N1").arg("-f").arg(conf))?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("error") {
        bail!("rsyslogd rejects {}: {}", conf.display(), text.trim());
    }
    Ok(())
}

/// The rsyslog.conf: the input's messages go through the `store` ruleset to
/// `stored`; rsyslogd's own messages stay in the default ruleset and go to
/// `log`.
fn config(dir: &Path, port: u16, input: &Input, stored: &Path, log: &Path) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "global(workDirectory=\"{}\" maxMessageSize=\"64k\"",
        dir.display()
    );
    if let Input::Tls(t) = input {
        let _ = write!(
            c,
            " defaultNetstreamDriver=\"{}\" defaultNetstreamDriverCAFile=\"{}\" \
             defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
            t.driver.name(),
            t.ca.display(),
            t.cert.display(),
            t.key.display()
        );
    }
    c.push_str(")\n");
    // One thread, messages handled in the input's thread: the stored order
    // is the received order, and a message is written before it is acked.
    c.push_str("main_queue(queue.type=\"Direct\")\n");
    c.push_str("template(name=\"msg\" type=\"string\" string=\"%msg%\\n\")\n");
    match input {
        Input::Tcp => {
            c.push_str("module(load=\"imtcp\")\n");
            let _ = writeln!(
                c,
                "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"store\")"
            );
        }
        Input::Tls(t) => {
            let auth = if t.require_client_cert {
                "x509/certvalid"
            } else {
                "anon"
            };
            let _ = writeln!(
                c,
                "module(load=\"imtcp\" streamDriver.name=\"{}\" streamDriver.mode=\"1\" \
                 streamDriver.authMode=\"{auth}\")",
                t.driver.name()
            );
            let _ = writeln!(
                c,
                "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"store\")"
            );
        }
        Input::Relp => {
            c.push_str("module(load=\"imrelp\")\n");
            let _ = writeln!(
                c,
                "input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{port}\" maxDataSize=\"64k\" ruleset=\"store\")"
            );
        }
        Input::RelpTls(t) => {
            let lib = match t.driver {
                Driver::Gtls => "gnutls",
                Driver::Ossl => "openssl",
            };
            let _ = writeln!(c, "module(load=\"imrelp\" tls.tlsLib=\"{lib}\")");
            let auth = if t.require_client_cert {
                " tls.authMode=\"certvalid\""
            } else {
                ""
            };
            let _ = writeln!(
                c,
                "input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{port}\" maxDataSize=\"64k\" \
                 ruleset=\"store\" tls=\"on\" tls.caCert=\"{}\" tls.myCert=\"{}\" \
                 tls.myPrivKey=\"{}\"{auth})",
                t.ca.display(),
                t.cert.display(),
                t.key.display()
            );
        }
    }
    let _ = writeln!(
        c,
        "ruleset(name=\"store\") {{ action(type=\"omfile\" file=\"{}\" template=\"msg\") }}",
        stored.display()
    );
    let _ = writeln!(c, "*.* action(type=\"omfile\" file=\"{}\")", log.display());
    c
}
