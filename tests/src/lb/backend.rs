//! The lab's backends: nginx, run from a copy of its binary named
//! [`BACKEND_PROGRAM`] so that an agent tracing processes named `nginx`
//! (the load balancer) leaves the backends alone.
//!
//! Every backend answers so that the status is known from the path alone
//! ([`expected_status`]): `/status/NNN/...` answers NNN (for the codes in
//! [`STATUS_CODES`]), `/missing/...` answers 404, anything else 200. The
//! body names the backend and the request URI (`s2 /r/7\n`), and two
//! headers tell the client who served it: `X-Backend: s2` and `X-Peer`,
//! the backend's view of its peer (`$remote_addr:$remote_port`, the LB's
//! address toward it), which is the nginx load balancer's oracle for that
//! address. `X-Seen-LBW` echoes the exact mode's `X-LBW` request header.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::daemon::{Daemon, check};
use super::topology::BackendNet;

/// The name of the backends' executable.
pub const BACKEND_PROGRAM: &str = "lbw-backend";

/// Where Debian's nginx package puts the binary.
pub const NGINX: &str = "/usr/sbin/nginx";

/// The port every backend listens on.
pub const BACKEND_PORT: u16 = 8080;

/// The codes `/status/NNN/...` answers with.
pub const STATUS_CODES: &[u16] = &[200, 201, 204, 400, 403, 404, 429, 500, 502, 503, 504];

/// The status a backend answers `path` with; `None` for paths under
/// `/fail/`, which the load balancers route to the failure servers.
pub fn expected_status(path: &str) -> Option<u16> {
    if path.starts_with("/fail/") {
        return None;
    }
    if path.starts_with("/missing/") {
        return Some(404);
    }
    if let Some(rest) = path.strip_prefix("/status/")
        && let Some((code, _)) = rest.split_once('/')
        && let Ok(code) = code.parse::<u16>()
        && STATUS_CODES.contains(&code)
    {
        return Some(code);
    }
    Some(200)
}

/// The backend that served a response, from the first word of its body.
pub fn served_by(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split(' ')
        .next()
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
}

/// A running backend.
#[derive(Debug)]
pub struct Backend {
    /// Its name (`s1`, `s2`, ...), as HAProxy's server and in bodies.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The LB's address on the backend's link.
    pub lb_side: Ipv4Addr,
    daemon: Daemon,
}

impl Backend {
    /// Starts backend `name` in `net` from `program` (a renamed nginx, see
    /// [`super::daemon::renamed_copy`]), its files in `dir`.
    pub fn start(net: &BackendNet, name: &str, program: &Path, dir: &Path) -> anyhow::Result<Self> {
        let addr = SocketAddr::from((net.addr, BACKEND_PORT));
        let dir = dir.join(name);
        std::fs::create_dir_all(dir.join("tmp"))
            .with_context(|| format!("create {}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(name, addr, &dir))?;
        let conf_arg = conf.display().to_string();
        let prefix = format!("{}/", dir.display());
        let error_log = dir.join("error.log").display().to_string();
        let args = ["-p", &prefix, "-e", &error_log, "-c", &conf_arg];
        // In the namespace: the listen address exists only there.
        check(net.ns.command(program).args(args).arg("-t"))?;
        let daemon = Daemon::start(&net.ns, program, &args, &dir.join("stderr.log"), &[addr])?;
        Ok(Self {
            name: name.to_owned(),
            addr,
            lb_side: net.lb_side,
            daemon,
        })
    }

    /// The server process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }
}

/// nginx's own file paths inside `dir`, so nothing is written under
/// `/var/lib/nginx` or `/var/log/nginx`.
pub(crate) fn temp_paths(dir: &Path) -> String {
    let mut c = String::new();
    for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let path: PathBuf = dir.join("tmp").join(kind);
        let _ = writeln!(c, "    {kind}_temp_path {};", path.display());
    }
    c
}

/// The backend's nginx.conf: one process (no master, so the pid is the
/// server), no access log, keep-alive without a request limit.
fn config(name: &str, addr: SocketAddr, dir: &Path) -> String {
    let mut c = format!(
        "daemon off;\nmaster_process off;\nworker_rlimit_nofile 16384;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\nhttp {{\n    access_log off;\n\
         default_type text/plain;\n    keepalive_requests 1000000;\n    keepalive_timeout 60s;\n",
        dir = dir.display()
    );
    c.push_str(&temp_paths(dir));
    let _ = writeln!(c, "    server {{\n        listen {addr} backlog=4096;");
    c.push_str("        add_header X-Peer $remote_addr:$remote_port always;\n");
    let _ = writeln!(c, "        add_header X-Backend {name} always;");
    // The exact mode's header as it arrived (empty, so not sent, without).
    c.push_str("        add_header X-Seen-LBW $http_x_lbw always;\n");
    let answer = |code: u16| format!("return {code} \"{name} $request_uri\\n\";");
    let _ = writeln!(c, "        location ^~ /missing/ {{ {} }}", answer(404));
    for code in STATUS_CODES {
        let _ = writeln!(
            c,
            "        location ^~ /status/{code}/ {{ {} }}",
            answer(*code)
        );
    }
    let _ = writeln!(c, "        location / {{ {} }}\n    }}\n}}", answer(200));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_paths() {
        assert_eq!(expected_status("/r/abc"), Some(200));
        assert_eq!(expected_status("/"), Some(200));
        assert_eq!(expected_status("/missing/x"), Some(404));
        assert_eq!(expected_status("/status/503/x"), Some(503));
        assert_eq!(expected_status("/status/204/"), Some(204));
        // Not a code the backends know, or no slash after it: 200.
        assert_eq!(expected_status("/status/299/x"), Some(200));
        assert_eq!(expected_status("/status/503"), Some(200));
        assert_eq!(expected_status("/fail/down/1"), None);
        assert_eq!(served_by(b"s2 /r/1\n").as_deref(), Some("s2"));
        assert_eq!(served_by(b""), None);
    }

    #[test]
    fn config_has_every_status_and_the_peer_header() {
        let text = config(
            "s1",
            "198.51.100.2:8080".parse().unwrap(),
            Path::new("/tmp/x"),
        );
        for code in STATUS_CODES {
            assert!(text.contains(&format!("location ^~ /status/{code}/ {{ return {code} ")));
        }
        assert!(text.contains("listen 198.51.100.2:8080"));
        assert!(text.contains("add_header X-Peer $remote_addr:$remote_port always;"));
        assert!(text.contains("proxy_temp_path /tmp/x/tmp/proxy;"));
        assert!(text.contains("return 200 \"s1 $request_uri\\n\";"));
    }
}
