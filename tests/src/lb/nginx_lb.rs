//! nginx as the lab's other load balancer, from the real `nginx` binary
//! (the one an agent traces), in the LB namespace: a master and
//! `workers` worker processes, `proxy_pass` to an upstream of the backends
//! with `keepalive 16`, HTTP/1.1 and `Connection: ""` toward them, and an
//! access log in [`NGINX_LOG_FORMAT`].
//!
//! nginx rewrites `Host` toward the backends (to the upstream's name, its
//! default), as deployments often do.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::backend::{NGINX, temp_paths};
use super::daemon::{Daemon, check};
use super::haproxy::{HTTP_PORT, parse_all};
use super::lab::{LbLab, Route};
use super::log_entry::{LbLogEntry, NGINX_LOG_FORMAT, parse_nginx};
use super::topology::FRONTEND_IP;
use crate::Scratch;

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NginxLbConfig {
    /// `worker_processes`.
    pub workers: u32,
    /// `keepalive` idle connections per worker toward the backends.
    pub keepalive: u32,
}

impl Default for NginxLbConfig {
    /// Two workers, `keepalive 16`.
    fn default() -> Self {
        Self {
            workers: 2,
            keepalive: 16,
        }
    }
}

impl NginxLbConfig {
    /// The frontend.
    pub fn frontend(&self) -> SocketAddr {
        SocketAddr::from((FRONTEND_IP, HTTP_PORT))
    }

    /// The nginx.conf, files in `dir`.
    pub fn render(&self, servers: &[(String, SocketAddr)], routes: &[Route], dir: &Path) -> String {
        let mut c = format!(
            "daemon off;\nworker_processes {};\nworker_rlimit_nofile 16384;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\nhttp {{\n    log_format lab \"{NGINX_LOG_FORMAT}\";\n\
             \x20   access_log {d}/access.log lab;\n    keepalive_requests 1000000;\n",
            self.workers,
            d = dir.display()
        );
        c.push_str(&temp_paths(dir));
        c.push_str("    upstream app {\n");
        for (_, addr) in servers {
            let _ = writeln!(c, "        server {addr};");
        }
        let _ = writeln!(c, "        keepalive {};\n    }}", self.keepalive);
        for route in routes {
            let _ = writeln!(
                c,
                "    upstream fail_{} {{ server {}; }}",
                route.name, route.addr
            );
        }
        let _ = writeln!(c, "    server {{\n        listen {};", self.frontend());
        c.push_str(
            "        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n\
             \x20       proxy_next_upstream off;\n        location / { proxy_pass http://app; }\n",
        );
        for route in routes {
            let _ = writeln!(
                c,
                "        location /fail/{0}/ {{ proxy_pass http://fail_{0}; }}",
                route.name
            );
        }
        c.push_str("    }\n}\n");
        c
    }
}

/// A running nginx load balancer; stopped on drop.
pub struct NginxLb {
    daemon: Daemon,
    /// The config it runs.
    pub config: NginxLbConfig,
    access_log: PathBuf,
    _dir: Scratch,
}

impl NginxLb {
    /// Starts nginx in `lab`'s LB namespace and waits until it listens.
    pub fn start(lab: &LbLab, config: NginxLbConfig) -> anyhow::Result<Self> {
        let dir = Scratch::path("nginx-lb");
        std::fs::create_dir_all(dir.0.join("tmp"))
            .with_context(|| format!("create {}", dir.as_str()))?;
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, config.render(&lab.servers(), &lab.routes(), &dir.0))?;
        let conf_arg = conf.display().to_string();
        let prefix = format!("{}/", dir.as_str());
        let error_log = dir.0.join("error.log").display().to_string();
        let args = ["-p", &prefix, "-e", &error_log, "-c", &conf_arg];
        check(lab.net.lb.command(NGINX).args(args).arg("-t"))?;
        let daemon = Daemon::start(
            &lab.net.lb,
            Path::new(NGINX),
            &args,
            &dir.0.join("stderr.log"),
            &[config.frontend()],
        )?;
        Ok(Self {
            daemon,
            config,
            access_log: dir.0.join("access.log"),
            _dir: dir,
        })
    }

    /// The master's pid.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Master and workers.
    pub fn pids(&self) -> Vec<u32> {
        self.daemon.group_pids()
    }

    /// The access log's complete lines so far.
    pub fn raw_log(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().map(str::to_owned).collect()
    }

    /// Waits for `n` access log lines and parses every line.
    pub fn log_entries(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<LbLogEntry>> {
        let deadline = Instant::now() + timeout;
        while self.raw_log().len() < n {
            if Instant::now() >= deadline {
                bail!(
                    "{} access log lines after {timeout:?}, expected {n}; error log: {}",
                    self.raw_log().len(),
                    self.daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        parse_all(&self.raw_log(), parse_nginx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config() {
        let servers = vec![("s1".to_owned(), "198.51.100.2:8080".parse().unwrap())];
        let routes = [Route {
            name: "slow".into(),
            addr: "198.51.100.10:8082".parse().unwrap(),
        }];
        let text = NginxLbConfig::default().render(&servers, &routes, Path::new("/d"));
        for needle in [
            "worker_processes 2;",
            "log_format lab \"$remote_addr:$remote_port\\t$server_addr:$server_port\\t$upstream_addr\\t\
             $upstream_http_x_peer\\t$status\\t$request\\t$host\";",
            "access_log /d/access.log lab;",
            "upstream app {\n        server 198.51.100.2:8080;\n        keepalive 16;\n    }",
            "upstream fail_slow { server 198.51.100.10:8082; }",
            "listen 192.0.2.1:80;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "location / { proxy_pass http://app; }",
            "location /fail/slow/ { proxy_pass http://fail_slow; }",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }
}
