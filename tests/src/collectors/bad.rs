//! Collectors that misbehave, for the failure paths of sinks:
//! [`Listener::silent`] accepts and never reads, [`Listener::garbage`]
//! answers bytes no protocol expects, [`TlsServer`] presents whatever
//! certificate it is given (an expired one, one for another name).

use std::{
    io::Write as _,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context;

use super::{free_port, wait_listening};
use crate::{Scratch, netns::ChildGuard};

/// A loopback listener served by a thread until dropped. Accepted
/// connections stay open (unread) until then.
pub struct Listener {
    address: String,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Accepts connections and never reads from them: a collector that
    /// hangs.
    pub fn silent() -> anyhow::Result<Self> {
        Self::serve(None)
    }

    /// Writes `reply` on every connection as soon as it is accepted, then
    /// leaves it open without reading.
    pub fn garbage(reply: &[u8]) -> anyhow::Result<Self> {
        Self::serve(Some(reply.to_vec()))
    }

    fn serve(reply: Option<Vec<u8>>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop_flag, count) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop_flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        if let Some(reply) = &reply {
                            let _ = stream.write_all(reply);
                        }
                        held.push(stream);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept on the bad collector: {e}"),
                }
            }
        });
        Ok(Self {
            address,
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `openssl s_server` presenting `cert` on a free loopback port, and
/// optionally requiring a client certificate signed by a CA.
pub struct TlsServer {
    _child: ChildGuard,
    port: u16,
    _log: Scratch,
}

impl TlsServer {
    /// Starts it and waits until it listens.
    pub fn start(
        cert: &Path,
        key: &Path,
        require_client_ca: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = Scratch::path("s_server.log");
        let out = std::fs::File::create(&log.0)?;
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key);
        if let Some(ca) = require_client_ca {
            cmd.arg("-Verify").arg("1").arg("-CAfile").arg(ca);
        }
        cmd.stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut child = ChildGuard::spawn(&mut cmd)?;
        wait_listening(&mut child, port, &log.0)?;
        Ok(Self {
            _child: child,
            port,
            _log: log,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
