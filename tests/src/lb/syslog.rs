//! A UDP syslog receiver the test owns, for HAProxy's log: HAProxy's
//! `log stdout` lost lines under threads (10 of 2,000 with two), UDP to a
//! socket on the LB namespace's loopback did not. One datagram is one line.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::netns::{NetNs, in_netns};

/// Largest datagram kept whole, in bytes (HAProxy's `len` is set to 4096).
const MAX_DATAGRAM: usize = 65_535;

/// The receiver; stops on drop.
#[derive(Debug)]
pub struct SyslogReceiver {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SyslogReceiver {
    /// Listens on 127.0.0.1, on a port the kernel picks, in `ns`.
    pub fn start(ns: &NetNs) -> std::io::Result<Self> {
        let socket = in_netns(ns, || UdpSocket::bind("127.0.0.1:0"))?;
        let addr = socket.local_addr()?;
        grow_receive_buffer(&socket);
        // A short timeout so the thread sees the stop flag.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, flag) = (Arc::clone(&lines), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0; MAX_DATAGRAM];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..n]);
                    let line = line.trim_end_matches(['\n', '\r', '\0']).to_owned();
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                }
            }
        });
        Ok(Self {
            addr,
            lines,
            stop,
            thread: Some(thread),
        })
    }

    /// Where to send: `127.0.0.1:PORT` in the namespace.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The lines received so far, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `n` lines arrived, then a quiet `settle` more to catch
    /// any surplus, and returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        while self.lines().len() < n {
            if Instant::now() >= deadline {
                bail!(
                    "{} syslog lines after {timeout:?}, expected {n}",
                    self.lines().len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(self.lines())
    }
}

/// Asks for an 8 MiB receive buffer (past `rmem_max`, as root), so a burst
/// of log lines (a wrk run) waits in the kernel instead of being dropped
/// there; a loss still shows as a short count in [`SyslogReceiver::wait_for`].
fn grow_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let size: libc::c_int = 8 << 20;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on an open socket with a c_int value.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

impl Drop for SyslogReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
