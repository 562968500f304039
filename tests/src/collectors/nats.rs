//! Real NATS JetStream servers for sink tests, and a small blocking client
//! to ask them what they stored.
//!
//! * [`NatsServer`]: one `nats-server -js` on a free loopback port, plain
//!   or TLS-only (optionally requiring client certificates).
//! * [`NatsCluster`]: three JetStream nodes routed on loopback; kill and
//!   restart single nodes.
//! * [`JsClient`]: JetStream API requests over std TCP: create a stream,
//!   read its info and every stored message. Independent of the agent's
//!   own client, so what it reads back is the server's word.
//!
//! Every server runs from a [`Scratch`] directory (config, store, log) and
//! is killed on drop, also when a test panics.

mod client;

use std::net::TcpListener;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::ClientConfig;
use serde_json::json;

pub use self::client::{JsClient, StoredMessage, StreamSpec, read_info_line, tls_config};
use crate::{
    Scratch,
    collectors::certs::{CertKey, Pki},
    netns::ChildGuard,
};

/// Where Debian installs nats-server.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// How long a server may take to start or a cluster to elect leaders.
const STARTUP: Duration = Duration::from_secs(30);

/// Free loopback ports, distinct from each other: every listener is held
/// until all are chosen.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// One nats-server process from a config file, restartable.
struct Node {
    name: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    /// `(user, password)` the readiness check logs in with.
    auth: Option<(String, String)>,
    /// TLS-only: how the test client connects.
    tls: Option<Arc<ClientConfig>>,
    /// Whether the server runs in a process group of its own.
    own_group: bool,
    /// Ready once its `INFO` holds this (servers the test client cannot
    /// log in to: operator mode).
    ready_info: Option<&'static str>,
    child: Option<ChildGuard>,
}

impl Node {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(NATS_SERVER);
        cmd.arg("-c").arg(&self.config).arg("-l").arg(&self.log);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.own_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let child = ChildGuard::spawn(&mut cmd)?.with_grace(Duration::from_secs(10));
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if self.ready() {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(ChildGuard::try_wait);
            if exited.is_some() || Instant::now() > deadline {
                bail!(
                    "{} did not start ({exited:?}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the client port answers: a plain server completes a
    /// client's handshake; a TLS one greets with an `INFO` requiring TLS
    /// (its certificate may be one the tests expect to be refused).
    fn ready(&self) -> bool {
        let want = match (&self.tls, self.ready_info) {
            (_, Some(want)) => Some(want),
            (Some(_), None) => Some("\"tls_required\":true"),
            (None, None) => None,
        };
        if let Some(want) = want {
            let info = TcpStream::connect(("127.0.0.1", self.port))
                .map_err(anyhow::Error::from)
                .and_then(|tcp| {
                    tcp.set_read_timeout(Some(Duration::from_secs(1)))?;
                    read_info_line(&tcp)
                });
            return info.is_ok_and(|line| line.contains(want));
        }
        self.client().is_ok()
    }

    /// A test client logged in to this node, over TLS if it takes only TLS.
    fn client(&self) -> anyhow::Result<JsClient> {
        let auth = self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        match &self.tls {
            Some(tls) => JsClient::connect_tls(self.port, auth, tls),
            None => JsClient::connect(self.port, auth),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Writes a node's config: loopback only, JetStream storing under `dir`.
fn write_config(dir: &Path, name: &str, port: u16, extra: &str) -> anyhow::Result<Node> {
    let store = dir.join(format!("{name}-store"));
    let config = dir.join(format!("{name}.conf"));
    let text = format!(
        "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n{extra}",
        store.display()
    );
    std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
    Ok(Node {
        name: name.into(),
        port,
        config,
        log: dir.join(format!("{name}.log")),
        auth: None,
        tls: None,
        own_group: false,
        ready_info: None,
        child: None,
    })
}

/// The client port's `tls {}` block: `cert` is the server's certificate;
/// with `verify`, clients must present one signed by `ca`. `timeout` is the
/// handshake's limit in seconds.
fn tls_block(cert: &CertKey, ca: &Path, verify: bool) -> String {
    format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: {verify}, timeout: 2 }}\n",
        cert.cert.display(),
        cert.key.display(),
        ca.display()
    )
}

/// A single JetStream server on a free loopback port.
pub struct NatsServer {
    node: Node,
    _dir: Scratch,
}

impl NatsServer {
    /// Starts `nats-server` with JetStream and a file store.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// Like [`start`](Self::start), with the server in a process group of
    /// its own: a terminal's Ctrl-C (sent to the whole foreground group)
    /// then reaches only the caller, which can stop the agent first and
    /// read what the stream stored before it stops the server.
    pub fn start_detached() -> anyhow::Result<Self> {
        let dir = Scratch::path("nats");
        std::fs::create_dir_all(&dir.0)?;
        let mut node = write_config(&dir.0, "single", free_ports(1)[0], "")?;
        node.own_group = true;
        node.spawn()?;
        Ok(Self { node, _dir: dir })
    }

    /// Starts one that requires `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(Some((user.into(), password.into())))
    }

    /// Starts one with two users: the NKey user `nkey_public` (`U...`),
    /// and `user`/`password`, which the test [`client`](Self::client) logs
    /// in as to read back what the NKey user published.
    pub fn start_with_nkey(nkey_public: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        let dir = Scratch::path("nats-nkey");
        std::fs::create_dir_all(&dir.0)?;
        let extra = format!(
            "authorization {{ users = [ {{ nkey: \"{nkey_public}\" }}, {{ user: \"{user}\", password: \"{password}\" }} ] }}\n"
        );
        let mut node = write_config(&dir.0, "nkey", free_ports(1)[0], &extra)?;
        node.auth = Some((user.into(), password.into()));
        node.spawn()?;
        Ok(Self { node, _dir: dir })
    }

    /// Starts one in operator (JWT) mode: `operator_jwt` is trusted and
    /// the accounts' JWTs (`(public key, JWT)`) are preloaded in a memory
    /// resolver. No JetStream, and the test client cannot log in: it is
    /// for checking `.creds` authentication itself.
    pub fn start_operator(
        operator_jwt: &str,
        accounts: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let dir = Scratch::path("nats-operator");
        std::fs::create_dir_all(&dir.0)?;
        let port = free_ports(1)[0];
        let operator = dir.0.join("operator.jwt");
        std::fs::write(&operator, operator_jwt)?;
        let preload: String = accounts
            .iter()
            .map(|(key, jwt)| format!("  {key}: \"{jwt}\"\n"))
            .collect();
        let config = dir.0.join("operator.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: operator\nlisten: \"127.0.0.1:{port}\"\noperator: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
                operator.display()
            ),
        )?;
        let mut node = Node {
            name: "operator".into(),
            port,
            config,
            log: dir.0.join("operator.log"),
            auth: None,
            tls: None,
            own_group: false,
            ready_info: Some("\"auth_required\":true"),
            child: None,
        };
        node.spawn()?;
        Ok(Self { node, _dir: dir })
    }

    /// Starts one that accepts only TLS on its client port, with `cert` as
    /// its certificate and, with `verify`, requiring client certificates
    /// signed by `pki.ca`. Its [`client`](Self::client) trusts `pki.ca`
    /// and presents `pki.client`.
    pub fn start_tls(pki: &Pki, cert: &CertKey, verify: bool) -> anyhow::Result<Self> {
        let dir = Scratch::path("nats-tls");
        std::fs::create_dir_all(&dir.0)?;
        let extra = tls_block(cert, &pki.ca, verify);
        let mut node = write_config(&dir.0, "tls", free_ports(1)[0], &extra)?;
        node.tls = Some(tls_config(&pki.ca, Some(&pki.client))?);
        node.spawn()?;
        Ok(Self { node, _dir: dir })
    }

    fn start_with(auth: Option<(String, String)>) -> anyhow::Result<Self> {
        let dir = Scratch::path("nats");
        std::fs::create_dir_all(&dir.0)?;
        let extra = match &auth {
            Some((user, password)) => {
                format!("authorization {{ user: \"{user}\", password: \"{password}\" }}\n")
            }
            None => String::new(),
        };
        let mut node = write_config(&dir.0, "single", free_ports(1)[0], &extra)?;
        node.auth = auth;
        node.spawn()?;
        Ok(Self { node, _dir: dir })
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.node.port)
    }

    /// `tls://127.0.0.1:<port>`.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.node.port)
    }

    /// A client connected to it (with its credentials; over TLS for a
    /// server started with [`start_tls`](Self::start_tls)).
    pub fn client(&self) -> JsClient {
        self.node.client().expect("connect to the test server")
    }

    /// The last lines of its log, for a failing test's message.
    pub fn log(&self) -> String {
        self.node.log_tail()
    }
}

/// A JetStream cluster of nodes `n1`, `n2`, ... routed over loopback.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: Scratch,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream's meta leader is
    /// elected (the JetStream API answers).
    pub fn start(size: usize) -> anyhow::Result<Self> {
        Self::start_with(size, None)
    }

    /// Like [`start`](Self::start), with TLS-only client ports presenting
    /// `pki.server` (routes stay plain); the test client trusts `pki.ca`.
    pub fn start_tls(size: usize, pki: &Pki) -> anyhow::Result<Self> {
        Self::start_with(size, Some(pki))
    }

    fn start_with(size: usize, pki: Option<&Pki>) -> anyhow::Result<Self> {
        let dir = Scratch::path("nats-cluster");
        std::fs::create_dir_all(&dir.0)?;
        let ports = free_ports(2 * size);
        let (clients, routes) = ports.split_at(size);
        let route_list: Vec<String> = routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let mut nodes = Vec::new();
        let tls = match pki {
            Some(pki) => Some(tls_config(&pki.ca, Some(&pki.client))?),
            None => None,
        };
        for i in 0..size {
            let mut extra = format!(
                "cluster {{ name: lbw, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                routes[i],
                route_list.join(", ")
            );
            if let Some(pki) = pki {
                extra.push_str(&tls_block(&pki.server, &pki.ca, false));
            }
            let mut node = write_config(&dir.0, &format!("n{}", i + 1), clients[i], &extra)?;
            node.tls = tls.clone();
            nodes.push(node);
        }
        let mut cluster = Self { nodes, _dir: dir };
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        poll(STARTUP, "the JetStream meta leader", || {
            let info = cluster.client().request_json("$JS.API.INFO", &json!({}))?;
            Ok(info.get("error").is_none().then_some(()))
        })?;
        Ok(cluster)
    }

    /// Every node's `nats://127.0.0.1:<port>`, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The index of the node called `name` (`n1` is 0).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Kills node `i` with SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.stop_with(libc::SIGKILL);
        }
    }

    /// Starts node `i` again with its store.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.nodes[i].spawn()
    }

    /// A client connected to the first running node.
    pub fn client(&self) -> JsClient {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .find_map(|n| n.client().ok())
            .expect("a running node accepts clients")
    }

    /// The logs of every node, for a failing test's message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}:\n{}", n.name, n.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Calls `f` until it returns `Some`, up to `limit`; errors count as "not
/// yet". Fails naming `what` and the last error.
pub fn poll<T>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match f() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => String::from("not yet"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("waited {limit:?} for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
