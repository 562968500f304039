//! The whole lab: the [`Topology`], an nginx backend in each backend
//! namespace, and optionally the failure servers. A load balancer
//! ([`super::haproxy::Haproxy`] or [`super::nginx_lb::NginxLb`]) is started
//! on top of it.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::backend::{BACKEND_PROGRAM, Backend, NGINX};
use super::daemon::renamed_copy;
use super::failure::{Failure, FailureServer};
use super::topology::Topology;
use crate::Scratch;

/// The port on the first backend's address where nothing listens: the
/// "down" backend, whose connects are refused.
pub const DOWN_PORT: u16 = 8099;
/// The resetting server's port (on the second backend's address).
pub const RESET_PORT: u16 = 8081;
/// The slow server's port (on the third backend's address).
pub const SLOW_PORT: u16 = 8082;
/// How long the slow server waits before it answers.
pub const SLOW_DELAY: Duration = Duration::from_millis(300);

/// What to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabOptions {
    /// Client addresses (1 to 100).
    pub clients: u8,
    /// nginx backends (1 to 60).
    pub backends: u8,
    /// Also the failure servers (down, reset, slow) and their routes.
    pub failures: bool,
}

impl Default for LabOptions {
    /// Four client addresses, three backends, no failure servers.
    fn default() -> Self {
        Self {
            clients: 4,
            backends: 3,
            failures: false,
        }
    }
}

/// A path prefix `/fail/<name>/` the load balancers send to one failure
/// server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `down`, `reset` or `slow`.
    pub name: String,
    /// The server's address.
    pub addr: SocketAddr,
}

/// The lab; dropping it stops every server, then deletes links and
/// namespaces.
pub struct LbLab {
    // Drop order: processes, then files, then the network.
    /// The backends, `s1`, `s2`, ...
    pub backends: Vec<Backend>,
    failure_servers: Vec<FailureServer>,
    routes: Vec<Route>,
    dir: Scratch,
    /// Namespaces and links.
    pub net: Topology,
}

impl LbLab {
    /// [`LabOptions::default`], namespaces named after `tag`.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        Self::with(tag, LabOptions::default())
    }

    /// Builds the lab.
    pub fn with(tag: &str, options: LabOptions) -> anyhow::Result<Self> {
        let net = Topology::new(tag, options.clients, options.backends);
        let dir = Scratch::path("lb-lab");
        std::fs::create_dir(&dir.0).with_context(|| format!("create {}", dir.as_str()))?;
        let program = renamed_copy(Path::new(NGINX), &dir.0, BACKEND_PROGRAM)?;
        let mut lab = Self {
            backends: Vec::new(),
            failure_servers: Vec::new(),
            routes: Vec::new(),
            dir,
            net,
        };
        for (i, backend_net) in lab.net.backends.iter().enumerate() {
            let name = format!("s{}", i + 1);
            let backend = Backend::start(backend_net, &name, &program, &lab.dir.0)
                .with_context(|| format!("start backend {name}"))?;
            lab.backends.push(backend);
        }
        if options.failures {
            lab.start_failures()?;
        }
        Ok(lab)
    }

    fn start_failures(&mut self) -> anyhow::Result<()> {
        let nets = &self.net.backends;
        let pick = |i: usize| &nets[i.min(nets.len() - 1)];
        self.routes.push(Route {
            name: "down".into(),
            addr: SocketAddr::from((pick(0).addr, DOWN_PORT)),
        });
        for (i, name, port, failure) in [
            (1, "reset", RESET_PORT, Failure::ResetMidResponse),
            (2, "slow", SLOW_PORT, Failure::Slow(SLOW_DELAY)),
        ] {
            let net = pick(i);
            let addr = SocketAddr::from((net.addr, port));
            let server = FailureServer::start(&net.ns, addr, failure)
                .with_context(|| format!("start the {name} server on {addr}"))?;
            self.failure_servers.push(server);
            self.routes.push(Route {
                name: name.into(),
                addr,
            });
        }
        Ok(())
    }

    /// The backends as (name, address), for a load balancer's config.
    pub fn servers(&self) -> Vec<(String, SocketAddr)> {
        self.backends
            .iter()
            .map(|b| (b.name.clone(), b.addr))
            .collect()
    }

    /// The failure routes (empty without [`LabOptions::failures`]).
    pub fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }

    /// The backend listening on `addr`.
    pub fn backend_at(&self, addr: SocketAddr) -> Option<&Backend> {
        self.backends.iter().find(|b| b.addr == addr)
    }

    /// The client namespace's addresses.
    pub fn client_ips(&self) -> &[IpAddr] {
        &self.net.client_ips
    }

    /// The backends' pids (processes named [`BACKEND_PROGRAM`]).
    pub fn backend_pids(&self) -> Vec<u32> {
        self.backends.iter().filter_map(Backend::pid).collect()
    }
}
