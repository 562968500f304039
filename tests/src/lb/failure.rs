//! Backends that fail on purpose, for the failure cases: one whose port
//! refuses connections, one that resets the connection in the middle of a
//! response, and one that answers late. The last two are small std TCP
//! servers on threads of the test, listening in a backend's namespace.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::{NetNs, in_netns};

/// How a [`FailureServer`] misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Sends the status line, headers announcing [`RESET_BODY_LEN`] bytes
    /// and [`RESET_SENT_LEN`] of them, then resets the connection.
    ResetMidResponse,
    /// Waits this long after reading the request, then answers 200 and
    /// closes.
    Slow(Duration),
}

/// The body length a resetting server announces.
pub const RESET_BODY_LEN: usize = 4096;
/// The body bytes it sends before the reset.
pub const RESET_SENT_LEN: usize = 100;

/// A misbehaving server; stopped on drop.
#[derive(Debug)]
pub struct FailureServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it does.
    pub failure: Failure,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FailureServer {
    /// Listens on `addr` in `ns`.
    pub fn start(ns: &NetNs, addr: SocketAddr, failure: Failure) -> std::io::Result<Self> {
        let listener = in_netns(ns, || TcpListener::bind(addr))?;
        // Non-blocking accepts, so the loop sees the stop flag.
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || accept_loop(&listener, failure, &flag));
        Ok(Self {
            addr,
            failure,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FailureServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, failure: Failure, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // Detached: a connection lives at most a read timeout plus
                // the delay.
                std::thread::spawn(move || serve(stream, failure));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Answers every request on `stream` the way `failure` says.
fn serve(stream: TcpStream, failure: Failure) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    let Some(request_line) = read_head(&mut reader) else {
        return;
    };
    let uri = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
    match failure {
        Failure::ResetMidResponse => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {RESET_BODY_LEN}\r\n\
                 X-Backend: reset\r\n\r\n"
            );
            let _ = writer.write_all(head.as_bytes());
            let _ = writer.write_all(&[b'r'; RESET_SENT_LEN]);
            let _ = writer.flush();
            // Let the bytes leave before the RST overtakes them.
            std::thread::sleep(Duration::from_millis(20));
            reset_on_close(&writer);
        }
        Failure::Slow(delay) => {
            std::thread::sleep(delay);
            let body = format!("slow {uri}\n");
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 X-Backend: slow\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = writer.write_all(response.as_bytes());
        }
    }
}

/// Reads a request head; returns its request line. The lab's requests to
/// failure servers have no body.
fn read_head(reader: &mut impl BufRead) -> Option<String> {
    let mut first = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return first;
        }
        first.get_or_insert(line);
    }
}

/// Makes the close of `stream` (of its last descriptor) a RST: SO_LINGER
/// on with a zero timeout.
pub(crate) fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
