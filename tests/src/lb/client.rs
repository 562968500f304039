//! The load generator: `requests` HTTP/1.1 requests over `connections`
//! concurrent connections from the client namespace, each connection from
//! one of the client's addresses in turn, keep-alive or
//! `Connection: close`, plain or TLS. Threads and std sockets; every
//! request's outcome and the client address it left from are returned,
//! to check against the LB's log.

use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::{Value, json};

use super::backend::{expected_status, served_by};
pub use super::connect::connect_from;
use super::http1::{Request, Response, read_response};
use crate::netns::{NetNs, in_netns};

/// Which requests a load sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requests {
    /// A unique path per request (`/r/<run>-<i>`, some under `/missing/`
    /// or `/status/NNN/` for a mix of 200, 201, 204, 404, 500 and 503),
    /// every seventh a `POST` with a small body.
    Distinct,
    /// `GET`s of these paths in turn, with identical headers: with one
    /// path, every request is byte for byte the same.
    Cycle(Vec<String>),
}

/// A load to run; [`Load::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct Load {
    /// The frontend.
    pub target: SocketAddr,
    /// Requests in all.
    pub requests: usize,
    /// Concurrent connections (threads), 100 and more are fine.
    pub connections: usize,
    /// Reuse each connection (else one connection per request, sent with
    /// `Connection: close`).
    pub keep_alive: bool,
    /// The addresses to connect from, in turn per connection.
    pub sources: Vec<IpAddr>,
    /// What to send.
    pub kind: Requests,
    /// `Host`.
    pub host: String,
    /// `User-Agent`.
    pub user_agent: String,
    /// TLS to the frontend, with this client configuration.
    pub tls: Option<Arc<ClientConfig>>,
    /// Read and write timeout per request.
    pub timeout: Duration,
}

impl Load {
    /// 100 distinct keep-alive requests over 10 connections to `target`
    /// from `sources`, `Host: shop.example`, `User-Agent: lbw-lab/1.0`.
    pub fn new(target: SocketAddr, sources: &[IpAddr]) -> Self {
        Self {
            target,
            requests: 100,
            connections: 10,
            keep_alive: true,
            sources: sources.to_vec(),
            kind: Requests::Distinct,
            host: "shop.example".to_owned(),
            user_agent: "lbw-lab/1.0".to_owned(),
            tls: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Request `i` of this load; `run` makes the distinct paths unique
    /// across loads.
    pub fn request(&self, run: &str, i: usize) -> Request {
        let (method, path, body) = match &self.kind {
            Requests::Distinct => {
                let id = format!("{run}-{i}");
                let path = match i % 10 {
                    6 => format!("/missing/{id}"),
                    7 => format!("/status/503/{id}"),
                    8 => format!("/status/500/{id}"),
                    9 if i % 20 == 9 => format!("/status/204/{id}"),
                    9 => format!("/status/201/{id}"),
                    _ => format!("/r/{id}"),
                };
                if i % 7 == 3 {
                    ("POST", path, format!("n={i}").into_bytes())
                } else {
                    ("GET", path, Vec::new())
                }
            }
            Requests::Cycle(paths) => {
                let path = paths
                    .get(i % paths.len().max(1))
                    .cloned()
                    .unwrap_or_default();
                ("GET", path, Vec::new())
            }
        };
        Request {
            method: method.to_owned(),
            path,
            host: self.host.clone(),
            user_agent: self.user_agent.clone(),
            keep_alive: self.keep_alive,
            body,
        }
    }

    /// Runs the load from `client` and returns every request's outcome,
    /// in request order.
    ///
    /// # Panics
    /// If there are no sources or no connections.
    pub fn run(&self, client: &NetNs) -> LoadReport {
        assert!(!self.sources.is_empty(), "a load needs source addresses");
        assert!(self.connections > 0, "a load needs connections");
        let run = format!("{:x}{:x}", std::process::id(), crate::next_id());
        let started = Instant::now();
        let mut exchanges: Vec<Exchange> = in_netns(client, || {
            // Threads spawned here inherit this thread's namespace.
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..self.connections.min(self.requests))
                    .map(|c| {
                        let run = run.as_str();
                        scope.spawn(move || self.worker(run, c))
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        });
        exchanges.sort_by_key(|e| e.index);
        LoadReport {
            exchanges,
            elapsed: started.elapsed(),
        }
    }

    /// Connection `c`'s share of the requests: `c`, `c + C`, ...
    fn worker(&self, run: &str, c: usize) -> Vec<Exchange> {
        let mut out = Vec::new();
        let mut conn: Option<(Box<dyn Stream>, SocketAddr)> = None;
        let mut opened = 0;
        for i in (c..self.requests).step_by(self.connections) {
            let request = self.request(run, i);
            let mut exchange = Exchange {
                index: i,
                connection: c,
                local: None,
                method: request.method.clone(),
                path: request.path.clone(),
                expected_status: expected_status(&request.path),
                status: None,
                served_by: None,
                x_peer: None,
                seen_lbw: None,
                error: None,
                started: SystemTime::now(),
                elapsed: Duration::ZERO,
            };
            let t0 = Instant::now();
            if conn.is_none() {
                let source = self.sources[(c + opened * self.connections) % self.sources.len()];
                opened += 1;
                match self.open(source) {
                    Ok(pair) => conn = Some(pair),
                    Err(e) => {
                        exchange.error = Some(format!("connect from {source}: {e}"));
                        out.push(exchange);
                        continue;
                    }
                }
            }
            let Some((stream, local)) = conn.as_mut() else {
                continue;
            };
            exchange.local = Some(*local);
            match exchange_once(stream, &request) {
                Ok(response) => {
                    exchange.took(&response);
                    if response.closes || !self.keep_alive {
                        conn = None;
                    }
                }
                Err(e) => {
                    exchange.error = Some(e);
                    conn = None;
                }
            }
            exchange.elapsed = t0.elapsed();
            out.push(exchange);
        }
        out
    }

    fn open(&self, source: IpAddr) -> io::Result<(Box<dyn Stream>, SocketAddr)> {
        let tcp = connect_from(source, self.target)?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(BufReader::new(tcp)),
            Some(config) => {
                let name = ServerName::IpAddress(self.target.ip().into());
                let tls = ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                Box::new(BufReader::new(StreamOwned::new(tls, tcp)))
            }
        };
        Ok((stream, local))
    }
}

/// A buffered byte stream to the frontend: reads go through the buffer,
/// writes straight to the socket (requests are never pipelined, so the
/// buffer never holds the next response while a request is written).
trait Stream: io::BufRead + Send {
    fn write_all_inner(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl<S: Read + Write + Send> Stream for BufReader<S> {
    fn write_all_inner(&mut self, bytes: &[u8]) -> io::Result<()> {
        let inner = self.get_mut();
        inner.write_all(bytes)?;
        inner.flush()
    }
}

fn exchange_once(stream: &mut Box<dyn Stream>, request: &Request) -> Result<Response, String> {
    stream
        .write_all_inner(&request.to_bytes())
        .map_err(|e| format!("send: {e}"))?;
    read_response(stream, &request.method).map_err(|e| e.to_string())
}

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Its index in the load.
    pub index: usize,
    /// The worker (connection slot) that sent it.
    pub connection: usize,
    /// The client address it left from (`None` if no connection).
    pub local: Option<SocketAddr>,
    /// Method sent.
    pub method: String,
    /// Path sent.
    pub path: String,
    /// What the backends answer this path with ([`expected_status`]).
    pub expected_status: Option<u16>,
    /// The status received.
    pub status: Option<u16>,
    /// The backend that answered (`X-Backend`, or the body's first word).
    pub served_by: Option<String>,
    /// The backend's view of its peer (`X-Peer`).
    pub x_peer: Option<SocketAddr>,
    /// The exact mode's `X-LBW` header as the backend received it (the
    /// backends echo it as `X-Seen-LBW`), if the LB added one.
    pub seen_lbw: Option<String>,
    /// What went wrong, if anything did.
    pub error: Option<String>,
    /// When it was sent.
    pub started: SystemTime,
    /// Until its response was read.
    pub elapsed: Duration,
}

impl Exchange {
    /// Notes what `response` says: status, and who served it.
    fn took(&mut self, response: &Response) {
        self.status = Some(response.status);
        self.served_by = response
            .header("x-backend")
            .map(str::to_owned)
            .or_else(|| served_by(&response.body));
        self.x_peer = response.header("x-peer").and_then(|p| p.parse().ok());
        self.seen_lbw = response
            .header("x-seen-lbw")
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
    }
}

/// What a load sent and got.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Every request, in index order.
    pub exchanges: Vec<Exchange>,
    /// How long the load took.
    pub elapsed: Duration,
}

impl LoadReport {
    /// The requests that failed (no response), with why.
    pub fn errors(&self) -> Vec<&Exchange> {
        self.exchanges
            .iter()
            .filter(|e| e.error.is_some())
            .collect()
    }

    /// Requests answered with another status than their path asks for.
    pub fn unexpected_statuses(&self) -> Vec<&Exchange> {
        self.exchanges
            .iter()
            .filter(|e| e.expected_status.is_some() && e.status != e.expected_status)
            .collect()
    }

    /// What the client and the backends saw, shaped like the agent's
    /// `lbwitness.request` records (see [`super::compare`]): the client
    /// address, the frontend, the backend's view of its peer (`X-Peer`,
    /// as `source.nat`), the backend that answered (by name in
    /// `servers`, as `destination.nat`), method, path, `Host`, status and
    /// `mapping: "mapped"`. Comparing these with the LB's log checks the
    /// lab and the oracle against each other. Failed requests are left
    /// out.
    pub fn as_records(
        &self,
        frontend: SocketAddr,
        servers: &[(String, SocketAddr)],
        host: &str,
    ) -> Vec<Value> {
        self.exchanges
            .iter()
            .filter(|e| e.error.is_none())
            .map(|e| {
                let server = e
                    .served_by
                    .as_ref()
                    .and_then(|name| servers.iter().find(|(n, _)| n == name))
                    .map(|(_, addr)| *addr);
                let ip_port = |a: Option<SocketAddr>| {
                    a.map_or_else(|| json!({}), |a| json!({"ip": a.ip().to_string(), "port": a.port()}))
                };
                let mut source = ip_port(e.local);
                source["nat"] = ip_port(e.x_peer);
                let mut destination = ip_port(Some(frontend));
                destination["nat"] = ip_port(server);
                let start = e
                    .started
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                json!({
                    "source": source,
                    "destination": destination,
                    "http": {"request": {"method": e.method}, "response": {"status_code": e.status}},
                    "url": {"path": e.path.split('?').next(), "domain": host},
                    // Zero-padded nanoseconds sort like the times they are.
                    "event": {"start": format!("{start:020}")},
                    "lbwitness": {"backend": {"mapping": "mapped"}},
                })
            })
            .collect()
    }

    /// The distinct client addresses used (one per TCP connection that
    /// carried a request, unless the kernel reused a port).
    pub fn client_addrs(&self) -> std::collections::BTreeSet<SocketAddr> {
        self.exchanges.iter().filter_map(|e| e.local).collect()
    }
}

/// A client that aborts: sends `GET path` from `source`, waits `after`,
/// and resets the connection before the answer is read. Returns the
/// client address used.
pub fn abort_request(
    client: &NetNs,
    source: IpAddr,
    target: SocketAddr,
    path: &str,
    after: Duration,
) -> io::Result<SocketAddr> {
    in_netns(client, || {
        let mut stream = connect_from(source, target)?;
        let local = stream.local_addr()?;
        let request = Request {
            method: "GET".into(),
            path: path.into(),
            host: "shop.example".into(),
            user_agent: "lbw-lab/1.0 (aborts)".into(),
            keep_alive: true,
            body: Vec::new(),
        };
        stream.write_all(&request.to_bytes())?;
        std::thread::sleep(after);
        super::failure::reset_on_close(&stream);
        Ok(local)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_requests_are_distinct_and_mixed() {
        let load = Load::new(
            "192.0.2.1:80".parse().unwrap(),
            &["192.0.2.10".parse().unwrap()],
        );
        let requests: Vec<Request> = (0..200).map(|i| load.request("ab", i)).collect();
        let paths: std::collections::BTreeSet<&str> =
            requests.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths.len(), 200);
        let statuses: std::collections::BTreeSet<u16> = requests
            .iter()
            .filter_map(|r| expected_status(&r.path))
            .collect();
        assert_eq!(
            statuses.into_iter().collect::<Vec<_>>(),
            vec![200, 201, 204, 404, 500, 503]
        );
        assert!(
            requests
                .iter()
                .any(|r| r.method == "POST" && r.body == b"n=3")
        );
    }

    #[test]
    fn cycled_requests_are_byte_identical() {
        let mut load = Load::new(
            "192.0.2.1:80".parse().unwrap(),
            &["192.0.2.10".parse().unwrap()],
        );
        load.kind = Requests::Cycle(vec!["/same".into()]);
        assert_eq!(
            load.request("a", 0).to_bytes(),
            load.request("b", 7).to_bytes()
        );
        load.kind = Requests::Cycle(vec!["/a".into(), "/b".into()]);
        assert_eq!(load.request("a", 3).path, "/b");
    }
}
