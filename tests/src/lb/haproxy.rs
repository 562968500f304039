//! HAProxy as the lab's load balancer, in the LB namespace, its config
//! built from a [`HaproxyConfig`] and its log sent through UDP syslog to a
//! [`SyslogReceiver`] the test owns.
//!
//! Frontends: HTTP on [`HTTP_PORT`] (and TLS on [`TLS_PORT`], terminated
//! by HAProxy, when `tls`), or TCP on [`TCP_PORT`], all on
//! [`FRONTEND_IP`]. HTTP mode routes `/fail/<name>/` to the lab's failure
//! servers, everything else round-robin to the backends.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::daemon::{Daemon, check};
use super::lab::{LbLab, Route};
use super::log_entry::{
    HAPROXY_HTTP_LOG_FORMAT, HAPROXY_TCP_LOG_FORMAT, LbLogEntry, parse_haproxy,
};
use super::syslog::SyslogReceiver;
use super::tls::FrontendCert;
use super::topology::FRONTEND_IP;
use crate::Scratch;

/// Where Debian's package puts HAProxy.
pub const HAPROXY: &str = "/usr/sbin/haproxy";
/// The HTTP frontend's port.
pub const HTTP_PORT: u16 = 80;
/// The TLS frontend's port.
pub const TLS_PORT: u16 = 443;
/// The TCP frontend's port.
pub const TCP_PORT: u16 = 81;

/// HAProxy's proxy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `mode http`: one log line per request.
    Http,
    /// `mode tcp`: one log line per connection.
    Tcp,
}

/// How HTTP mode treats server connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// `option http-server-close`: a server connection per request.
    ServerClose,
    /// `http-reuse safe` (2.6's default): idle server connections are
    /// shared, a connection's first request goes on a connection of its
    /// own.
    Safe,
    /// `http-reuse always`: any idle server connection is shared.
    Always,
}

/// Whether TCP mode moves data with `splice(2)` through pipes instead of
/// through user buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Splice {
    /// No splicing.
    Off,
    /// `option splice-auto`: HAProxy splices when it judges it worth it;
    /// for the lab's small requests and responses it did not (2.6).
    Auto,
    /// `option splice-request` and `option splice-response`: splices both
    /// directions, whatever the size.
    Always,
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// Mode.
    pub mode: Mode,
    /// `nbthread`.
    pub nbthread: u32,
    /// Server connection policy (HTTP mode).
    pub reuse: Reuse,
    /// Splicing (TCP mode).
    pub splice: Splice,
    /// A TLS-terminating frontend on [`TLS_PORT`] too (HTTP mode).
    pub tls: bool,
    /// The exact mode's header: `http-request set-header X-LBW
    /// %ci:%cp:%rt`, which the agent reads from the backend write.
    pub exact_header: bool,
    /// `retries` for a failed server connect.
    pub retries: u32,
    /// The executable, when not [`HAPROXY`] (a renamed copy, which the
    /// agent's default process names do not select).
    pub executable: Option<PathBuf>,
}

impl HaproxyConfig {
    /// HTTP mode, 2 threads, `http-reuse safe`, no TLS.
    pub fn http() -> Self {
        Self {
            mode: Mode::Http,
            nbthread: 2,
            reuse: Reuse::Safe,
            splice: Splice::Off,
            tls: false,
            exact_header: false,
            retries: 1,
            executable: None,
        }
    }

    /// TCP mode, 2 threads, with `splice`.
    pub fn tcp(splice: Splice) -> Self {
        Self {
            mode: Mode::Tcp,
            splice,
            ..Self::http()
        }
    }

    /// The frontends this config listens on.
    pub fn frontends(&self) -> Vec<SocketAddr> {
        let at = |port| SocketAddr::from((FRONTEND_IP, port));
        match (self.mode, self.tls) {
            (Mode::Tcp, _) => vec![at(TCP_PORT)],
            (Mode::Http, false) => vec![at(HTTP_PORT)],
            (Mode::Http, true) => vec![at(HTTP_PORT), at(TLS_PORT)],
        }
    }

    /// The haproxy.cfg for `servers` (name, address) and, in HTTP mode,
    /// the failure `routes`, logging to `log` with the TLS bundle `crt`.
    pub fn render(
        &self,
        servers: &[(String, SocketAddr)],
        routes: &[Route],
        log: SocketAddr,
        crt: Option<&Path>,
    ) -> String {
        let mut c = String::new();
        let _ = writeln!(
            c,
            "global\n    nbthread {}\n    maxconn 4000",
            self.nbthread
        );
        let _ = writeln!(c, "    log {log} len 4096 format raw local0");
        c.push_str("    tune.ssl.default-dh-param 2048\n\n");
        let mode = match self.mode {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        };
        let _ = writeln!(
            c,
            "defaults\n    mode {mode}\n    log global\n    option dontlognull"
        );
        let _ = writeln!(c, "    retries {}", self.retries);
        c.push_str(
            "    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             \x20   timeout http-keep-alive 30s\n    timeout http-request 10s\n\n",
        );
        match self.mode {
            Mode::Http => self.render_http(&mut c, servers, routes, crt),
            Mode::Tcp => self.render_tcp(&mut c, servers),
        }
        c
    }

    fn render_http(
        &self,
        c: &mut String,
        servers: &[(String, SocketAddr)],
        routes: &[Route],
        crt: Option<&Path>,
    ) {
        c.push_str("frontend fe_http\n");
        let _ = writeln!(c, "    bind {FRONTEND_IP}:{HTTP_PORT}");
        if let (true, Some(crt)) = (self.tls, crt) {
            let _ = writeln!(
                c,
                "    bind {FRONTEND_IP}:{TLS_PORT} ssl crt {}",
                crt.display()
            );
        }
        c.push_str("    capture request header Host len 64\n");
        let _ = writeln!(c, "    log-format \"{HAPROXY_HTTP_LOG_FORMAT}\"");
        if self.exact_header {
            c.push_str("    http-request set-header X-LBW %ci:%cp:%rt\n");
        }
        for route in routes {
            let _ = writeln!(
                c,
                "    use_backend be_{0} if {{ path_beg /fail/{0}/ }}",
                route.name
            );
        }
        c.push_str("    default_backend be_app\n\nbackend be_app\n    balance roundrobin\n");
        match self.reuse {
            Reuse::ServerClose => c.push_str("    option http-server-close\n"),
            Reuse::Safe => c.push_str("    http-reuse safe\n"),
            Reuse::Always => c.push_str("    http-reuse always\n"),
        }
        for (name, addr) in servers {
            let _ = writeln!(c, "    server {name} {addr}");
        }
        for route in routes {
            let _ = writeln!(
                c,
                "\nbackend be_{0}\n    http-reuse never\n    server {0} {1}",
                route.name, route.addr
            );
        }
    }

    fn render_tcp(&self, c: &mut String, servers: &[(String, SocketAddr)]) {
        c.push_str("frontend fe_tcp\n");
        let _ = writeln!(c, "    bind {FRONTEND_IP}:{TCP_PORT}");
        let _ = writeln!(c, "    log-format \"{HAPROXY_TCP_LOG_FORMAT}\"");
        let splice = match self.splice {
            Splice::Off => "",
            Splice::Auto => "    option splice-auto\n",
            Splice::Always => "    option splice-request\n    option splice-response\n",
        };
        c.push_str(splice);
        c.push_str("    default_backend be_tcp\n\nbackend be_tcp\n    balance roundrobin\n");
        c.push_str(splice);
        for (name, addr) in servers {
            let _ = writeln!(c, "    server {name} {addr}");
        }
    }
}

/// A running HAProxy with its log receiver; stopped on drop.
pub struct Haproxy {
    // The process first, so it stops before its log and files go.
    daemon: Daemon,
    syslog: SyslogReceiver,
    /// The config it runs.
    pub config: HaproxyConfig,
    /// The TLS frontend's certificate, when `tls`.
    pub cert: Option<FrontendCert>,
    conf: PathBuf,
    _dir: Scratch,
}

impl Haproxy {
    /// Starts HAProxy in `lab`'s LB namespace with `config` and waits
    /// until every frontend listens.
    pub fn start(lab: &LbLab, config: HaproxyConfig) -> anyhow::Result<Self> {
        let dir = Scratch::path("haproxy");
        std::fs::create_dir(&dir.0).with_context(|| format!("create {}", dir.as_str()))?;
        let syslog = SyslogReceiver::start(&lab.net.lb).context("start the syslog receiver")?;
        let cert = if config.tls && config.mode == Mode::Http {
            Some(FrontendCert::new(FRONTEND_IP.into())?)
        } else {
            None
        };
        let routes = if config.mode == Mode::Http {
            lab.routes()
        } else {
            Vec::new()
        };
        let text = config.render(
            &lab.servers(),
            &routes,
            syslog.addr(),
            cert.as_ref().map(|c| c.bundle.as_path()),
        );
        let conf = dir.0.join("haproxy.cfg");
        std::fs::write(&conf, &text)?;
        let conf_arg = conf.display().to_string();
        let program = config
            .executable
            .clone()
            .unwrap_or_else(|| PathBuf::from(HAPROXY));
        check(
            lab.net
                .lb
                .command(&program)
                .args(["-c", "-q", "-f", &conf_arg]),
        )?;
        let daemon = Daemon::start(
            &lab.net.lb,
            &program,
            &["-db", "-f", &conf_arg],
            &dir.0.join("haproxy.log"),
            &config.frontends(),
        )?;
        Ok(Self {
            daemon,
            syslog,
            config,
            cert,
            conf,
            _dir: dir,
        })
    }

    /// HAProxy's pid.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Its threads, from `/proc/PID/task`.
    pub fn threads(&self) -> usize {
        self.pid()
            .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
            .map_or(0, Iterator::count)
    }

    /// How many pipes HAProxy holds open: splicing moves data through
    /// pipes it takes from a pool and keeps, so after traffic a non-zero
    /// count shows that it spliced.
    pub fn pipes(&self) -> usize {
        let Some(dir) = self
            .pid()
            .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        else {
            return 0;
        };
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("pipe:"))
            .count()
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.conf
    }

    /// HAProxy's own stdout and stderr (warnings, alerts).
    pub fn output(&self) -> String {
        self.daemon.log()
    }

    /// The raw log lines received so far.
    pub fn raw_log(&self) -> Vec<String> {
        self.syslog.lines()
    }

    /// Waits for `n` log lines and parses every line received; fails on
    /// any line the parser rejects, naming it.
    pub fn log_entries(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<LbLogEntry>> {
        let lines = self
            .syslog
            .wait_for(n, timeout)
            .with_context(|| self.output())?;
        parse_all(&lines, parse_haproxy)
    }
}

/// Parses every line with `parse`; the error names the first bad line.
pub(crate) fn parse_all(
    lines: &[String],
    parse: fn(&str) -> Result<LbLogEntry, super::log_entry::LogParseError>,
) -> anyhow::Result<Vec<LbLogEntry>> {
    lines
        .iter()
        .map(|line| parse(line).with_context(|| format!("log line {line:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Vec<(String, SocketAddr)> {
        vec![
            ("s1".into(), "198.51.100.2:8080".parse().unwrap()),
            ("s2".into(), "198.51.100.6:8080".parse().unwrap()),
        ]
    }

    #[test]
    fn http_config() {
        let mut config = HaproxyConfig::http();
        config.tls = true;
        config.exact_header = true;
        config.nbthread = 4;
        config.reuse = Reuse::ServerClose;
        let routes = [Route {
            name: "down".into(),
            addr: "198.51.100.2:8099".parse().unwrap(),
        }];
        let text = config.render(
            &servers(),
            &routes,
            "127.0.0.1:5140".parse().unwrap(),
            Some(Path::new("/x/b.pem")),
        );
        for needle in [
            "nbthread 4",
            "log 127.0.0.1:5140 len 4096 format raw local0",
            "mode http",
            "bind 192.0.2.1:80\n",
            "bind 192.0.2.1:443 ssl crt /x/b.pem",
            "capture request header Host len 64",
            "log-format \"%ci:%cp %fi:%fp %bi:%bp %si:%sp %tsc %ST %HM %HU %HV %hr %b %s %Tr %Ta\"",
            "http-request set-header X-LBW %ci:%cp:%rt",
            "use_backend be_down if { path_beg /fail/down/ }",
            "option http-server-close",
            "server s2 198.51.100.6:8080",
            "backend be_down\n    http-reuse never\n    server down 198.51.100.2:8099",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        assert_eq!(config.frontends().len(), 2);
        config.reuse = Reuse::Always;
        let text = config.render(&servers(), &[], "127.0.0.1:1".parse().unwrap(), None);
        assert!(text.contains("http-reuse always") && !text.contains("ssl crt"));
    }

    #[test]
    fn tcp_config() {
        let config = HaproxyConfig::tcp(Splice::Always);
        let text = config.render(&servers(), &[], "127.0.0.1:1".parse().unwrap(), None);
        assert!(text.contains("mode tcp"));
        assert!(text.contains("bind 192.0.2.1:81"));
        assert_eq!(
            text.matches("option splice-request\n    option splice-response")
                .count(),
            2
        );
        let auto = HaproxyConfig::tcp(Splice::Auto).render(
            &servers(),
            &[],
            "127.0.0.1:1".parse().unwrap(),
            None,
        );
        assert_eq!(auto.matches("option splice-auto").count(), 2);
        assert!(text.contains("%ts - - - - - %b %s\""));
        assert!(!text.contains("capture request header"));
        assert_eq!(config.frontends(), vec!["192.0.2.1:81".parse().unwrap()]);
        let plain = HaproxyConfig::tcp(Splice::Off).render(
            &servers(),
            &[],
            "127.0.0.1:1".parse().unwrap(),
            None,
        );
        assert!(!plain.contains("splice"));
    }
}
