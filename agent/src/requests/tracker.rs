//! The request stage's core: inputs in kernel-time order in, request and
//! connection outcomes out. Pure: no I/O, no clock but the inputs' times.
//!
//! Per connection, the HTTP framer turns syscall chunks into messages;
//! exchanges (a request and its response) are kept in order, since HTTP/1
//! answers in order. A client exchange opens a window on the thread that
//! read it and closes when its response's last byte was written; a backend
//! exchange is a candidate on the thread that wrote it. The correlator
//! decides per window which backend exchange served which client one.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::SocketAddr,
};

use super::{
    correlate::{
        BackendSide, ClientSide, Closed, Mapping, OpenHead, OpenRequest, Reason, Threads,
        WindowLimits, Windows,
    },
    http::{self, Dir, Message, RequestHead, ResponseHead},
    input::{Call, CallKind, Data, Input, Layer, Splice, TcpKind, TcpState, Thread, Way},
    pipes::{Drained, Pipes},
    relay::{Chunk, Relays},
    seed::Seed,
    sockets::{Bound, ConnId, Ends, Role, Table, Tuple, Tuples},
};

/// `-EINPROGRESS`: a non-blocking connect that goes on in the background.
const EINPROGRESS: i64 = -115;
/// `-ECONNREFUSED`.
const ECONNREFUSED: i64 = -111;
/// `-ETIMEDOUT`.
const ETIMEDOUT: i64 = -110;

/// Chunks kept for a connection whose tuple is not known yet.
const EARLY_CHUNKS: usize = 16;

/// Most tuples from `/proc` kept for fds no event has named yet (a
/// forked worker's inherited fds, never used, stay until closed).
const MAX_SEEDED: usize = 65_536;

/// Backend exchanges no client exchange claimed are forgotten after this
/// long (kernel ns): longer than any window stays open.
const BACKEND_KEEP_NS: u64 = 180_000_000_000;

/// Who closed a connection first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosedBy {
    /// The load balancer.
    Local,
    /// The peer.
    Peer,
    /// Not seen.
    Unknown,
}

impl ClosedBy {
    /// The record's `lbwitness.connection.closed_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Peer => "peer",
            Self::Unknown => "unknown",
        }
    }
}

/// Why a backend connect failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The backend answered with a reset.
    Refused,
    /// No answer.
    TimedOut,
    /// Another error, `-errno`.
    Other(i64),
}

/// A finished HTTP request, mapped to its backend or declared ambiguous.
#[derive(Clone, Debug)]
pub struct RequestOut {
    /// The thread that read it.
    pub thread: Thread,
    /// Client (`remote`) and frontend (`local`).
    pub client: Ends,
    /// The backend connection (`local`: the load balancer's source,
    /// `remote`: the server), when mapped.
    pub backend: Option<Ends>,
    /// The request as the client sent it.
    pub head: RequestHead,
    /// The final response's status, when one was written.
    pub status: Option<u16>,
    /// Request bytes, head and body.
    pub request_bytes: u64,
    /// Response bytes written to the client.
    pub response_bytes: u64,
    /// First request byte read (kernel ns).
    pub start: u64,
    /// Last response byte written, or when the exchange ended without one.
    pub end: u64,
    /// The backend's share: first byte written to it, first byte read back.
    pub backend_span: Option<(u64, u64)>,
    /// The correlator's verdict.
    pub mapping: Mapping,
    /// For an ambiguous one: the servers that could have served it.
    pub candidates: Vec<SocketAddr>,
    /// Why the exchange failed, when it did (`client-aborted`, ...).
    pub failure: Option<&'static str>,
}

/// A connection of the load balancer that ended.
#[derive(Clone, Debug)]
pub struct ConnOut {
    /// The process.
    pub tgid: u32,
    /// Accepted or opened.
    pub role: Role,
    /// Both ends.
    pub ends: Ends,
    /// ESTABLISHED, or the connect call for one that never got there.
    pub start: u64,
    /// When the load balancer closed it.
    pub end: u64,
    /// Bytes the load balancer read.
    pub bytes_in: u64,
    /// Bytes it wrote.
    pub bytes_out: u64,
    /// Who closed first.
    pub closed_by: ClosedBy,
    /// `Some(true)`: this host sent a reset; `Some(false)`: received one.
    pub reset: Option<bool>,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Requests framed on it.
    pub requests: u64,
    /// For a failed connect.
    pub connect_error: Option<ConnectError>,
    /// Client side: the backend connections its requests were mapped to,
    /// or that its bytes were spliced to and from.
    pub backends: BTreeSet<Ends>,
    /// Bytes moved by splice (no payload seen), both ways.
    pub spliced: u64,
    /// Open before the agent followed the process (found in `/proc`): its
    /// start is when it was found, and its counts start there.
    pub before_agent: bool,
}

/// What the tracker produced.
#[derive(Clone, Debug)]
pub enum Output {
    /// One HTTP request.
    Request(Box<RequestOut>),
    /// One connection.
    Connection(Box<ConnOut>),
}

/// The first byte of a TLS handshake record (RFC 8446 5.1, `handshake(22)`):
/// no HTTP/1.x request starts with it.
const TLS_HANDSHAKE: u8 = 0x16;

/// Counts of what the tracker could not use, each a reason a request or
/// connection has no record (or an ambiguous one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unused {
    /// Data on a socket whose ESTABLISHED was never seen (older than the
    /// agent, or lost): not framed.
    pub untupled_chunks: u64,
    /// Chunks that waited for their socket's tuple and were then framed.
    pub early_chunks: u64,
    /// Connections whose HTTP framing was lost.
    pub framing_lost: u64,
    /// Backend exchanges no client exchange could have used (health checks).
    pub unclaimed_backend: u64,
    /// Events the kernel declared lost.
    pub kernel_lost: u64,
    /// Chunks of TLS records on a TLS connection: counted as bytes, not
    /// framed (the plaintext is, when the libssl probes are attached).
    pub tls_records: u64,
    /// Splices on an fd that is no connection the agent knows.
    pub splice_unknown_socket: u64,
    /// Splices into a socket whose bytes' origin the pipe could not tell
    /// (made before the agent, fed by two connections, or events lost).
    pub splice_unlinked: u64,
    /// Connections found in `/proc` not kept (more than [`MAX_SEEDED`]
    /// waiting): their requests are not framed.
    pub seeds_dropped: u64,
}

#[derive(Debug)]
struct Exchange {
    id: u64,
    thread: Thread,
    head: RequestHead,
    request_bytes: u64,
    response: Option<ResponseHead>,
}

#[derive(Debug)]
struct Conn {
    tgid: u32,
    tuple: Option<Tuple>,
    framer: http::Conn,
    /// Exchanges whose response has not ended, oldest first.
    open: VecDeque<Exchange>,
    bytes_in: u64,
    bytes_out: u64,
    closed_by: ClosedBy,
    reset: Option<bool>,
    retransmits: u64,
    requests: u64,
    connect_error: Option<ConnectError>,
    connect_at: Option<u64>,
    /// Chunks that came before the tuple (the socket's ESTABLISHED is
    /// stamped in softirq and may sort after the first send), framed when
    /// it comes; at most [`EARLY_CHUNKS`].
    early: Vec<(u64, Data)>,
    lost: bool,
    backends: BTreeSet<Ends>,
    /// Client exchanges of this connection the correlator has not decided.
    undecided: u64,
    /// Bytes spliced through it.
    spliced: u64,
    /// Spliced from its first byte on: a TCP-mode relay, never framed as
    /// HTTP (no request of it was ever seen).
    relayed: bool,
    /// Its tuple came from `/proc`: open before the agent.
    before_agent: bool,
    /// Closed by the load balancer at this time; the record waits for
    /// `undecided` to reach 0.
    closed_at: Option<u64>,
    /// The connection carries TLS: only libssl's plaintext is framed.
    tls: bool,
    /// A client request being read whose head has not come out of the
    /// framer yet: its exchange id and the thread that read its first byte.
    /// The correlator knows it is in flight from that byte on.
    unannounced: Option<(u64, Thread)>,
}

impl Conn {
    fn new(tgid: u32, tuple: Option<Tuple>, limits: http::Limits) -> Self {
        Self {
            tgid,
            tuple,
            framer: http::Conn::new(limits),
            open: VecDeque::new(),
            bytes_in: 0,
            bytes_out: 0,
            closed_by: ClosedBy::Unknown,
            reset: None,
            retransmits: 0,
            requests: 0,
            connect_error: None,
            connect_at: None,
            early: Vec::new(),
            lost: false,
            backends: BTreeSet::new(),
            undecided: 0,
            spliced: 0,
            relayed: false,
            before_agent: false,
            closed_at: None,
            unannounced: None,
            tls: false,
        }
    }

    fn role(&self) -> Option<Role> {
        self.tuple.map(|t| t.role)
    }
}

/// Where an event found a socket: the process's fd and the kernel's socket.
#[derive(Clone, Copy, Debug)]
struct FdOf {
    tgid: u32,
    fd: i32,
    sk: u64,
}

/// A client exchange handed to the correlator, until it decides.
#[derive(Debug)]
struct Waiting {
    conn: ConnId,
    thread: Thread,
    client: Ends,
    head: RequestHead,
    status: Option<u16>,
    request_bytes: u64,
    response_bytes: u64,
    end: u64,
    failure: Option<&'static str>,
}

/// A backend exchange, for the request record that is mapped to it.
#[derive(Debug)]
struct BackendDone {
    conn: ConnId,
    thread: Thread,
    ends: Ends,
    span: (u64, u64),
}

/// The request stage's state. See the module doc.
#[derive(Debug)]
pub struct Tracker {
    limits: http::Limits,
    /// Exact mode: every backend request carries its client's address in
    /// the tag header the operator configured.
    exact: bool,
    tuples: Tuples,
    table: Table,
    conns: HashMap<ConnId, Conn>,
    windows: Windows,
    waiting: HashMap<u64, Waiting>,
    backends: HashMap<u64, BackendDone>,
    next_exchange: u64,
    /// Pending connects: the socket `connect` returned on, by (tgid, fd).
    unused: Unused,
    messages: Vec<Message>,
    pipes: Pipes,
    relays: Relays,
    /// Tuples of connections older than the agent, by (tgid, fd), until
    /// the fd's first event (or its close) claims them.
    seeded: HashMap<(u32, i32), Tuple>,
}

impl Tracker {
    /// An empty tracker framing HTTP within `limits`.
    pub fn new(limits: http::Limits, exact: bool) -> Self {
        Self {
            limits,
            exact,
            tuples: Tuples::default(),
            table: Table::default(),
            conns: HashMap::new(),
            windows: Windows::new(WindowLimits::default()),
            waiting: HashMap::new(),
            backends: HashMap::new(),
            next_exchange: 0,
            unused: Unused::default(),
            messages: Vec::new(),
            pipes: Pipes::default(),
            relays: Relays::default(),
            seeded: HashMap::new(),
        }
    }

    fn exact_tag(&self, client: Ends) -> Option<String> {
        self.exact.then(|| client.remote.to_string())
    }

    /// What could not be used so far.
    pub fn unused(&self) -> Unused {
        self.unused
    }

    /// Takes one input at kernel time `t` (inputs must come in time order:
    /// see [`super::reorder`]), appending what completed to `out`.
    pub fn push(&mut self, t: u64, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Data(d) => self.on_data(t, d, out),
            Input::State(s) => {
                let ends = Ends {
                    local: s.local,
                    remote: s.remote,
                };
                self.tuples.on_state(s.sk, s.old, s.new, ends, t);
                if s.new == TcpState::Established && s.old == TcpState::SynRecv {
                    // A passive socket reaches ESTABLISHED before any
                    // process has it: one the table knows at this address
                    // is an older socket, freed since.
                    self.table.forget_sk(s.sk);
                }
                if s.new == TcpState::Established && s.old == TcpState::SynSent {
                    // The same for an active socket whose connect went
                    // unseen: a known connection established already.
                    let reused = self.table.by_sk(s.sk).is_some_and(|id| {
                        self.conns
                            .get(&id)
                            .and_then(|c| c.tuple)
                            .is_some_and(|t| t.established > 0)
                    });
                    if reused {
                        self.table.forget_sk(s.sk);
                    }
                }
                if let Some(id) = self.table.by_sk(s.sk) {
                    self.on_conn_state(id, s.old, s.new, ends, t);
                    self.replay_early(id, out);
                }
            }
            Input::Call(c) => self.on_call(t, c, out),
            Input::Splice(sp) => self.on_splice(t, sp, out),
            Input::Seed { tgid, seed } => self.on_seed(t, tgid, seed),
            Input::Tcp { sk, kind } => self.on_tcp(sk, kind),
            Input::Lost { count } => {
                self.unused.kernel_lost += count;
                self.pipes.doubt_all();
                // Which thread lost what is unknown: every traced process
                // is in doubt.
                self.taint_all(Reason::EventsLost);
            }
            Input::OutOfOrder => {
                self.pipes.doubt_all();
                self.taint_all(Reason::OutOfOrder);
            }
        }
    }

    /// Makes every traced process's open windows ambiguous with `reason`.
    fn taint_all(&mut self, reason: Reason) {
        let mut tgids: Vec<u32> = self.conns.values().map(|c| c.tgid).collect();
        tgids.sort_unstable();
        tgids.dedup();
        for tgid in tgids {
            self.windows.taint(tgid, Threads::All, reason);
        }
    }

    /// Ends everything still open (the stop, or a long idle): exchanges in
    /// flight become ambiguous, connections are reported as they stand.
    pub fn flush(&mut self, t: u64, out: &mut Vec<Output>) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.end_conn(id, t, out);
        }
        let closed = self.windows.flush_all();
        self.decided_all(closed, out);
        self.release_closed(out);
    }

    /// Gives up on requests in flight too long, and forgets backend
    /// exchanges older than [`BACKEND_KEEP_NS`], at `now` (kernel ns).
    pub fn expire(&mut self, now: u64, out: &mut Vec<Output>) {
        let closed = self.windows.expire(now);
        self.decided_all(closed, out);
        let before = self.backends.len();
        self.backends
            .retain(|_, b| b.span.0 + BACKEND_KEEP_NS > now);
        self.unused.unclaimed_backend += (before - self.backends.len()) as u64;
    }

    /// The connection a bind found: a new one gets its state (and the
    /// tuple its socket's ESTABLISHED left), and the one its fd replaced
    /// ends.
    fn adopt(&mut self, bound: Bound, at: FdOf, t: u64, out: &mut Vec<Output>) -> ConnId {
        match bound {
            Bound::Known(id) => id,
            Bound::New { id, replaced } => {
                if let Some(old) = replaced {
                    self.end_conn(old, t, out);
                }
                let seeded = self.seeded.remove(&(at.tgid, at.fd));
                let claimed = self.tuples.claim(at.sk);
                let mut conn = Conn::new(at.tgid, claimed.or(seeded), self.limits.clone());
                conn.before_agent = claimed.is_none() && seeded.is_some();
                self.conns.insert(id, conn);
                id
            }
        }
    }

    /// A snapshot of a process's connections and pipes from `/proc`: the
    /// fds no event has named yet get their tuples (claimed by their first
    /// event), and the pipes their ends.
    fn on_seed(&mut self, t: u64, tgid: u32, seed: Seed) {
        for c in seed.conns {
            if self.table.by_fd(tgid, c.fd).is_some() {
                continue;
            }
            if self.seeded.len() >= MAX_SEEDED {
                self.unused.seeds_dropped += 1;
                continue;
            }
            self.seeded.insert(
                (tgid, c.fd),
                Tuple {
                    ends: c.ends,
                    role: c.role,
                    established: t,
                },
            );
        }
        for (read, write) in seed.pipes {
            if !self.pipes.is_pipe(tgid, read) && !self.pipes.is_pipe(tgid, write) {
                self.pipes.made(tgid, read, write);
            }
        }
    }

    /// The connection `tgid`'s `fd` on socket `sk` is, for bytes it moved.
    fn bind_data(&mut self, tgid: u32, fd: i32, sk: u64) -> Bound {
        let bound = self.table.bind(tgid, fd, sk);
        match bound {
            Bound::Known(id) if !self.conns.contains_key(&id) => {
                // Its connection was reported and let go: this is a new one.
                self.table.unbind_fd(tgid, fd);
                self.table.forget_sk(sk);
                self.table.bind(tgid, fd, sk)
            }
            _ => bound,
        }
    }

    fn on_data(&mut self, t: u64, d: Data, out: &mut Vec<Output>) {
        let bound = self.bind_data(d.thread.tgid, d.fd, d.sk);
        let at = FdOf {
            tgid: d.thread.tgid,
            fd: d.fd,
            sk: d.sk,
        };
        let id = self.adopt(bound, at, t, out);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        // Wire bytes are counted; plaintext is what the TLS layer moved.
        match (d.layer, d.way) {
            (Layer::Plaintext, _) => {}
            (_, Way::Recv) => conn.bytes_in += d.total,
            (_, Way::Send) => conn.bytes_out += d.total,
        }
        if conn.relayed {
            return;
        }
        // The first chunk each way tells a TCP relay (see `relay`): wire
        // bytes only, TLS records included (a TLS passthrough is a relay).
        if d.layer == Layer::Wire
            && !conn.lost
            && let Some(role) = conn.role()
        {
            let tgid = d.thread.tgid;
            let chunk = Chunk {
                bytes: &d.captured,
                total: d.total,
            };
            match (role, d.way) {
                (Role::Client, Way::Recv) if conn.bytes_in == d.total => {
                    self.relays.client_head(id, tgid, d.thread.tid, chunk);
                }
                (Role::Backend, Way::Send) if conn.bytes_out == d.total => {
                    self.relays.backend_head(id, tgid, d.thread.tid, chunk);
                }
                (Role::Backend, Way::Recv) if conn.bytes_in == d.total => {
                    self.relays.backend_reply(id, chunk);
                }
                (Role::Client, Way::Send) if conn.bytes_out == d.total => {
                    if let Some(backend) = self.relays.client_reply(id, chunk) {
                        return self.relay(id, backend, out);
                    }
                }
                _ => {}
            }
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        // TLS records never reach the framer: a syscall inside an SSL
        // call, or a handshake record (0x16) before anything was framed.
        // Then only the plaintext is framed.
        match d.layer {
            Layer::Ciphertext => conn.tls = true,
            Layer::Wire if conn.requests == 0 && d.captured.first() == Some(&TLS_HANDSHAKE) => {
                conn.tls = true;
            }
            Layer::Plaintext => conn.tls = true,
            Layer::Wire => {}
        }
        if conn.tls && d.layer != Layer::Plaintext {
            self.unused.tls_records += 1;
            return;
        }
        let Some(role) = conn.role() else {
            if conn.early.len() < EARLY_CHUNKS {
                conn.early.push((t, d));
            } else {
                self.unused.untupled_chunks += 1;
            }
            return;
        };
        if conn.lost || conn.relayed {
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        // Requests come in on a client connection and go out on a backend
        // one. Reads are stamped at their exit (the bytes exist from then),
        // writes at their entry (the bytes existed by then): that keeps
        // client read < backend write < backend read < client write true
        // for one request forwarded by one thread.
        let (dir, ts) = match (role, d.way) {
            (Role::Client, Way::Recv) => (Dir::Request, t),
            (Role::Client, Way::Send) => (Dir::Response, d.enter),
            (Role::Backend, Way::Send) => (Dir::Request, d.enter),
            (Role::Backend, Way::Recv) => (Dir::Response, t),
        };
        let mut messages = std::mem::take(&mut self.messages);
        conn.framer
            .feed(dir, ts, d.total, &d.captured, &mut messages);
        for m in messages.drain(..) {
            self.on_message(id, d.thread, m, out);
        }
        self.messages = messages;
        if role == Role::Client {
            self.announce_start(id, d.thread, out);
        }
    }

    /// A client request whose first bytes were read but whose head is not
    /// out yet (it spans reads, or waits for its body prefix) is in flight
    /// for the correlator from its first byte: until then no part of its
    /// thread's window that it may join can be decided early.
    fn announce_start(&mut self, id: ConnId, thread: Thread, out: &mut Vec<Output>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.unannounced.is_some() || conn.lost {
            return;
        }
        let Some(ts) = conn.framer.request_unannounced() else {
            return;
        };
        self.next_exchange += 1;
        let xid = self.next_exchange;
        conn.unannounced = Some((xid, thread));
        let r = self
            .windows
            .client_started(thread.tgid, thread.tid, xid, ts);
        self.decided(r, out);
    }

    /// A started client request that never got a head (framing lost before
    /// its request line, or the connection ended): the correlator stops
    /// waiting for it. It has no record: nothing readable was sent.
    fn drop_unannounced(&mut self, id: ConnId, out: &mut Vec<Output>) {
        let Some((xid, thread)) = self.conns.get_mut(&id).and_then(|c| c.unannounced.take()) else {
            return;
        };
        let r = self.windows.client_done(ClientSide {
            id: xid,
            tgid: thread.tgid,
            tid: thread.tid,
            fingerprint: [0; 32],
            req_body: Vec::new(),
            t_read: 0,
            t_resp_write: 0,
            status: 0,
            resp_body: Vec::new(),
            tag: None,
        });
        self.decided(r, out);
    }

    fn on_message(&mut self, id: ConnId, thread: Thread, m: Message, out: &mut Vec<Output>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(tuple) = conn.tuple else { return };
        if matches!(m, Message::Request(_))
            && tuple.role == Role::Client
            && conn.unannounced.is_some_and(|(_, t)| t != thread)
        {
            // The head was read on another thread than the first byte: the
            // thread that read the head runs the request.
            self.drop_unannounced(id, out);
            return self.on_message(id, thread, m, out);
        }
        match m {
            Message::Request(head) => {
                let (xid, thread) = match conn.unannounced.take() {
                    Some(started) if tuple.role == Role::Client => started,
                    _ => {
                        self.next_exchange += 1;
                        (self.next_exchange, thread)
                    }
                };
                conn.requests += 1;
                if tuple.role == Role::Client {
                    conn.undecided += 1;
                    let pipelined = head.pipelined || !conn.open.is_empty();
                    let open = OpenRequest {
                        id: xid,
                        tgid: thread.tgid,
                        tid: thread.tid,
                        t_read: head.ts_first,
                        head: Some(OpenHead {
                            fingerprint: head.fingerprint,
                            req_body: head.body_prefix.clone(),
                            tag: self.exact_tag(tuple.ends),
                        }),
                    };
                    let r = self.windows.client_request(open);
                    self.decided(r, out);
                    if pipelined {
                        self.windows.taint(
                            thread.tgid,
                            Threads::One(thread.tid),
                            Reason::Pipelined,
                        );
                    }
                }
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                conn.open.push_back(Exchange {
                    id: xid,
                    thread,
                    head,
                    request_bytes: 0,
                    response: None,
                });
            }
            Message::RequestEnd { bytes, .. } => {
                if let Some(x) = conn.open.iter_mut().rev().find(|x| x.request_bytes == 0) {
                    x.request_bytes = bytes;
                }
            }
            Message::Response(head) => {
                if let Some(x) = conn.open.iter_mut().find(|x| x.response.is_none()) {
                    x.response = Some(head);
                }
            }
            Message::ResponseEnd { ts_last, bytes } => {
                let Some(x) = conn.open.pop_front() else {
                    return;
                };
                match tuple.role {
                    Role::Client => {
                        let client = client_side(&x, ts_last, self.exact_tag(tuple.ends));
                        self.waiting.insert(
                            x.id,
                            Waiting {
                                conn: id,
                                thread: x.thread,
                                client: tuple.ends,
                                status: x.response.as_ref().map(|r| r.status),
                                head: x.head,
                                request_bytes: x.request_bytes,
                                response_bytes: bytes,
                                end: ts_last,
                                failure: None,
                            },
                        );
                        let r = self.windows.client_done(client);
                        self.decided(r, out);
                    }
                    Role::Backend => {
                        let t_resp = x.response.as_ref().map_or(ts_last, |r| r.ts_first);
                        self.backends.insert(
                            x.id,
                            BackendDone {
                                conn: id,
                                thread: x.thread,
                                ends: tuple.ends,
                                span: (x.head.ts_first, t_resp),
                            },
                        );
                        let r = self.windows.backend_done(backend_side(&x, t_resp));
                        self.decided(r, out);
                    }
                }
            }
            // An interim 1xx precedes the final response: nothing to keep.
            Message::Interim { .. } => {}
            Message::Lost(http::LostReason::ClosedMidMessage)
                if tuple.role == Role::Client && conn.closed_at.is_some() =>
            {
                // The load balancer or the client cut a response short: the
                // framing was whole up to the close, so the exchange ended
                // the way the close says, not with lost framing. Its
                // window is in doubt (its backend exchange may be cut too).
                conn.lost = true;
                let failure = close_failure(conn);
                self.windows
                    .taint(thread.tgid, Threads::One(thread.tid), Reason::Unfinished);
                self.abandon_open(id, failure, out);
                self.drop_unannounced(id, out);
            }
            Message::Lost(_) => {
                conn.lost = true;
                self.unused.framing_lost += 1;
                // A backend connection's lost requests may be the true
                // partners of clients on any thread that used it.
                let threads = match tuple.role {
                    Role::Client => Threads::One(thread.tid),
                    Role::Backend => Threads::All,
                };
                self.windows
                    .taint(thread.tgid, threads, Reason::FramingLost);
                self.abandon_open(id, "framing-lost", out);
                self.drop_unannounced(id, out);
            }
        }
    }

    /// Every open exchange of connection `id` ends now without a complete
    /// response; their windows can no longer be trusted.
    fn abandon_open(&mut self, id: ConnId, failure: &'static str, out: &mut Vec<Output>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(tuple) = conn.tuple else { return };
        let open: Vec<Exchange> = conn.open.drain(..).collect();
        if tuple.role != Role::Client {
            return;
        }
        // Cut short by the close: the exchange ended then.
        let closed_at = conn.closed_at;
        for x in open {
            let end = closed_at.unwrap_or(x.head.ts_first).max(x.head.ts_first);
            self.waiting.insert(
                x.id,
                Waiting {
                    conn: id,
                    thread: x.thread,
                    client: tuple.ends,
                    status: x.response.as_ref().map(|r| r.status),
                    head: x.head.clone(),
                    request_bytes: x.request_bytes,
                    response_bytes: 0,
                    end,
                    failure: Some(failure),
                },
            );
            let tag = self.exact.then(|| tuple.ends.remote.to_string());
            let r = self.windows.client_done(client_side(&x, u64::MAX, tag));
            self.decided(r, out);
        }
    }

    fn on_call(&mut self, t: u64, c: Call, out: &mut Vec<Output>) {
        match c.kind {
            CallKind::Accept => {
                // The accepted socket, when the kprobe named it, or else
                // the one unclaimed accepted socket from the peer accept
                // wrote back: bound now, so a connection whose first
                // bytes are spliced (no sock tracepoint names the socket
                // of a splice read) is known from its start.
                let Ok(fd) = i32::try_from(c.ret) else { return };
                let sk = match (c.sk, c.addr) {
                    (0, Some(peer)) => self.tuples.accepted_from(peer),
                    (0, None) => None,
                    (sk, _) => Some(sk),
                };
                if let Some(sk) = sk
                    && fd >= 0
                {
                    let bound = self.table.bind_new(c.thread.tgid, fd, sk);
                    self.seeded.remove(&(c.thread.tgid, fd));
                    let at = FdOf {
                        tgid: c.thread.tgid,
                        fd,
                        sk,
                    };
                    self.adopt(bound, at, t, out);
                }
            }
            CallKind::Connect => {
                if c.sk == 0 {
                    return;
                }
                // The socket is new from this connect's entry: a tuple
                // waiting at its address is an older socket's (another
                // process's, whose SYN_SENT -> ESTABLISHED ran in a softirq
                // on a traced thread and was sent; it died unseen, and the
                // kernel reused its address). This socket's own ESTABLISHED
                // comes after.
                self.tuples.forget(c.sk);
                let bound = self.table.bind_new(c.thread.tgid, c.fd, c.sk);
                self.seeded.remove(&(c.thread.tgid, c.fd));
                let at = FdOf {
                    tgid: c.thread.tgid,
                    fd: c.fd,
                    sk: c.sk,
                };
                let id = self.adopt(bound, at, t, out);
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.connect_at.get_or_insert(t);
                    if c.ret < 0 && c.ret != EINPROGRESS {
                        conn.connect_error = Some(connect_error(c.ret));
                    }
                    if conn.tuple.is_none()
                        && let Some(addr) = c.addr
                    {
                        // Not yet established: the local end is filled
                        // in by ESTABLISHED, or stays unspecified.
                        conn.tuple = Some(Tuple {
                            ends: Ends {
                                local: unspecified(addr),
                                remote: addr,
                            },
                            role: Role::Backend,
                            established: 0,
                        });
                    }
                }
                self.replay_early(id, out);
            }
            CallKind::Pipe => {
                // `ret` is the write end; fds fit i32.
                let write = i32::try_from(c.ret).unwrap_or(-1);
                if c.fd >= 0 && write >= 0 {
                    self.pipes.made(c.thread.tgid, c.fd, write);
                }
            }
            CallKind::Close => {
                if c.ret < 0 {
                    return;
                }
                self.seeded.remove(&(c.thread.tgid, c.fd));
                if self.pipes.closed(c.thread.tgid, c.fd) {
                    return;
                }
                if let Some(id) = self.table.close(c.thread.tgid, c.fd) {
                    self.end_conn(id, t, out);
                }
            }
        }
    }

    /// A splice between a socket and a pipe: its bytes count for the
    /// socket's connection, and the pipe links the connection they came
    /// from to the one they go to.
    fn on_splice(&mut self, t: u64, s: Splice, out: &mut Vec<Output>) {
        let tgid = s.thread.tgid;
        let id = if s.sk != 0 {
            let bound = self.bind_data(tgid, s.fd, s.sk);
            let at = FdOf {
                tgid,
                fd: s.fd,
                sk: s.sk,
            };
            Some(self.adopt(bound, at, t, out))
        } else {
            self.table.by_fd(tgid, s.fd)
        };
        let id = id.filter(|id| self.conns.contains_key(id));
        match s.way {
            Way::Recv => self.pipes.fed(tgid, s.pipe_fd, id, s.total),
            Way::Send => match (self.pipes.drained(tgid, s.pipe_fd, s.total), id) {
                (Drained::From(from), Some(to)) => self.link(from, to),
                _ => self.unused.splice_unlinked += 1,
            },
        }
        let Some(id) = id else {
            self.unused.splice_unknown_socket += 1;
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.spliced += s.total;
        match s.way {
            Way::Recv => conn.bytes_in += s.total,
            Way::Send => conn.bytes_out += s.total,
        }
        if conn.lost || conn.relayed || conn.tls {
            return;
        }
        let Some(role) = conn.role() else { return };
        if let Some(twin) = self.relays.twin(id) {
            // Its first bytes were copied to (or from) its twin, and now
            // go through a pipe: a TCP relay, whatever it carries.
            let (client, backend) = match role {
                Role::Client => (id, twin),
                Role::Backend => (twin, id),
            };
            return self.relay(client, backend, out);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.requests == 0 && conn.open.is_empty() && conn.unannounced.is_none() {
            // Spliced from the first byte: a TCP proxy relays this
            // connection and never parses it, so no request is recorded.
            conn.relayed = true;
            return;
        }
        // Spliced in the middle of HTTP (a body the proxy splices): the
        // framer counts the bytes it cannot see, or declares its framing
        // lost when they hide what it needs.
        let (dir, ts) = match (role, s.way) {
            (Role::Client, Way::Recv) => (Dir::Request, t),
            (Role::Client, Way::Send) => (Dir::Response, s.enter),
            (Role::Backend, Way::Send) => (Dir::Request, s.enter),
            (Role::Backend, Way::Recv) => (Dir::Response, t),
        };
        let mut messages = std::mem::take(&mut self.messages);
        conn.framer.feed(dir, ts, s.total, &[], &mut messages);
        for m in messages.drain(..) {
            self.on_message(id, s.thread, m, out);
        }
        self.messages = messages;
    }

    /// Client connection `client` and backend connection `backend` are a
    /// TCP relay: neither is framed from now on, the exchanges framed so
    /// far on them are taken back from the correlator (they were each
    /// other's, and the proxy never parsed them), and the client's record
    /// names the backend.
    fn relay(&mut self, client: ConnId, backend: ConnId, out: &mut Vec<Output>) {
        self.relays.forget(client);
        self.relays.forget(backend);
        let Some(b) = self.conns.get_mut(&backend) else {
            return;
        };
        if b.role() != Some(Role::Backend) {
            return;
        }
        b.relayed = true;
        b.requests = 0;
        b.open.clear();
        let b_ends = b.tuple.map(|t| t.ends);
        let done: Vec<u64> = self
            .backends
            .iter()
            .filter(|(_, d)| d.conn == backend)
            .map(|(&x, _)| x)
            .collect();
        for x in done {
            if let Some(d) = self.backends.remove(&x) {
                self.windows
                    .withdraw_backend(d.thread.tgid, d.thread.tid, x);
            }
        }
        let Some(c) = self.conns.get_mut(&client) else {
            return;
        };
        c.relayed = true;
        c.requests = 0;
        if let Some(ends) = b_ends {
            c.backends.insert(ends);
        }
        let mut taken: Vec<(u64, Thread)> = c.open.drain(..).map(|x| (x.id, x.thread)).collect();
        c.undecided = c.undecided.saturating_sub(taken.len() as u64);
        taken.extend(c.unannounced.take());
        for (x, thread) in taken {
            self.waiting.remove(&x);
            let r = self.windows.withdraw_client(thread.tgid, thread.tid, x);
            self.decided(r, out);
        }
        self.release_closed(out);
    }

    /// Bytes of connection `from` went out on connection `to` through a
    /// pipe: the client side of the two names the backend side.
    fn link(&mut self, from: ConnId, to: ConnId) {
        let tuple = |id: &ConnId| self.conns.get(id).and_then(|c| c.tuple);
        let (Some(a), Some(b)) = (tuple(&from), tuple(&to)) else {
            self.unused.splice_unlinked += 1;
            return;
        };
        let (client, backend) = match (a.role, b.role) {
            (Role::Client, Role::Backend) => (from, b.ends),
            (Role::Backend, Role::Client) => (to, a.ends),
            // Client to client, or backend to backend: not a proxy's relay.
            _ => return,
        };
        if let Some(c) = self.conns.get_mut(&client) {
            c.backends.insert(backend);
        }
    }

    /// Frames the chunks connection `id` kept while its tuple was unknown,
    /// once it is known.
    fn replay_early(&mut self, id: ConnId, out: &mut Vec<Output>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.tuple.is_none() || conn.early.is_empty() {
            return;
        }
        let early = std::mem::take(&mut conn.early);
        self.unused.early_chunks += early.len() as u64;
        for (t, d) in early {
            // Wire bytes were counted when the chunk came (plaintext is not).
            match d.way {
                _ if d.layer == Layer::Plaintext => {}
                Way::Recv => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.bytes_in -= d.total;
                    }
                }
                Way::Send => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.bytes_out -= d.total;
                    }
                }
            }
            self.on_data(t, d, out);
        }
    }

    fn on_conn_state(&mut self, id: ConnId, old: TcpState, new: TcpState, ends: Ends, t: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match (old, new) {
            (TcpState::SynSent, TcpState::Established) => {
                conn.tuple = Some(Tuple {
                    ends,
                    role: Role::Backend,
                    established: t,
                });
            }
            (TcpState::SynSent, TcpState::Close) => {
                if conn.connect_error.is_none() {
                    conn.connect_error = Some(if conn.reset == Some(false) {
                        ConnectError::Refused
                    } else {
                        ConnectError::TimedOut
                    });
                }
                // The source port was chosen by now (SYN_SENT showed 0):
                // the record names the load balancer's end.
                if let Some(tuple) = conn.tuple.as_mut()
                    && tuple.established == 0
                    && tuple.ends.local.port() == 0
                    && ends.local.port() != 0
                    && ends.remote == tuple.ends.remote
                {
                    tuple.ends.local = ends.local;
                }
            }
            (TcpState::Established, TcpState::FinWait1) if conn.closed_by == ClosedBy::Unknown => {
                conn.closed_by = ClosedBy::Local;
            }
            (TcpState::Established, TcpState::CloseWait) if conn.closed_by == ClosedBy::Unknown => {
                conn.closed_by = ClosedBy::Peer;
            }
            _ => {}
        }
    }

    fn on_tcp(&mut self, sk: u64, kind: TcpKind) {
        let Some(id) = self.table.by_sk(sk) else {
            if kind == TcpKind::Destroy {
                self.tuples.forget(sk);
            }
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match kind {
            TcpKind::SendReset => {
                conn.reset.get_or_insert(true);
            }
            TcpKind::ReceiveReset => {
                conn.reset.get_or_insert(false);
                if conn.tuple.is_some_and(|t| t.established == 0) {
                    conn.connect_error = Some(ConnectError::Refused);
                }
            }
            TcpKind::Retransmit => conn.retransmits += 1,
            TcpKind::Destroy => self.table.forget_sk(sk),
        }
    }

    /// The load balancer is done with connection `id` (closed, replaced or
    /// gone): frames what the close completes, abandons what it cuts off,
    /// and reports the connection once its requests are decided.
    fn end_conn(&mut self, id: ConnId, t: u64, out: &mut Vec<Output>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closed_at.is_some() {
            return;
        }
        conn.closed_at = Some(t);
        let thread = conn.open.front().map(|x| x.thread);
        if !conn.lost && conn.tuple.is_some() {
            let mut messages = std::mem::take(&mut self.messages);
            conn.framer.close(t, &mut messages);
            let th = thread.unwrap_or(Thread {
                tgid: conn.tgid,
                tid: conn.tgid,
            });
            for m in messages.drain(..) {
                self.on_message(id, th, m, out);
            }
            self.messages = messages;
        }
        if thread.is_some() {
            let failure = self.conns.get(&id).map_or("client-aborted", close_failure);
            self.abandon_open(id, failure, out);
        }
        self.drop_unannounced(id, out);
        self.release_closed(out);
    }

    /// Reports the connections that are closed and have nothing undecided.
    fn release_closed(&mut self, out: &mut Vec<Output>) {
        let ready: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closed_at.is_some() && c.undecided == 0)
            .map(|(&id, _)| id)
            .collect();
        for id in ready {
            let Some(conn) = self.conns.remove(&id) else {
                continue;
            };
            self.relays.forget(id);
            let Some(tuple) = conn.tuple else {
                self.unused.untupled_chunks += conn.early.len() as u64;
                continue;
            };
            let end = conn.closed_at.unwrap_or(0);
            out.push(Output::Connection(Box::new(ConnOut {
                tgid: conn.tgid,
                role: tuple.role,
                ends: tuple.ends,
                start: if tuple.established > 0 {
                    tuple.established
                } else {
                    conn.connect_at.unwrap_or(end)
                },
                end,
                bytes_in: conn.bytes_in,
                bytes_out: conn.bytes_out,
                closed_by: conn.closed_by,
                reset: conn.reset,
                retransmits: conn.retransmits,
                requests: conn.requests,
                connect_error: conn.connect_error,
                backends: conn.backends,
                spliced: conn.spliced,
                before_agent: conn.before_agent,
            })));
        }
    }

    fn decided_all(&mut self, closed: Vec<Closed>, out: &mut Vec<Output>) {
        for c in closed {
            self.decided(Some(c), out);
        }
    }

    /// Turns the correlator's verdicts into request records.
    fn decided(&mut self, closed: Option<Closed>, out: &mut Vec<Output>) {
        let Some(closed) = closed else { return };
        let mut touched = false;
        for (xid, mut mapping) in closed.results {
            let Some(w) = self.waiting.remove(&xid) else {
                continue;
            };
            // An exchange cut short has no response to match on: say so,
            // rather than that no backend could have served it.
            if w.failure.is_some()
                && let Mapping::Ambiguous { reason, .. } = &mut mapping
                && *reason == Reason::NoCandidate
            {
                *reason = Reason::Unfinished;
            }
            let backend_id = match &mapping {
                Mapping::Mapped { backend } | Mapping::Exact { backend } => Some(*backend),
                Mapping::Ambiguous { .. } => None,
            };
            let backend = backend_id.and_then(|b| self.backends.remove(&b));
            let mut candidates: Vec<SocketAddr> = match &mapping {
                Mapping::Ambiguous { candidates, .. } => candidates
                    .iter()
                    .filter_map(|b| self.backends.get(b).map(|d| d.ends.remote))
                    .collect(),
                _ => Vec::new(),
            };
            candidates.sort_unstable();
            candidates.dedup();
            if let Some(conn) = self.conns.get_mut(&w.conn) {
                conn.undecided = conn.undecided.saturating_sub(1);
                if let Some(b) = &backend {
                    conn.backends.insert(b.ends);
                }
                touched = true;
            }
            out.push(Output::Request(Box::new(RequestOut {
                thread: w.thread,
                client: w.client,
                backend: backend.as_ref().map(|b| b.ends),
                start: w.head.ts_first,
                head: w.head,
                status: w.status,
                request_bytes: w.request_bytes,
                response_bytes: w.response_bytes,
                end: w.end,
                backend_span: backend.as_ref().map(|b| b.span),
                mapping,
                candidates,
                failure: w.failure,
            })));
        }
        if touched {
            self.release_closed(out);
        }
    }
}

/// The client side of exchange `x`; `tag`: the exact-mode tag its backend
/// request must carry (exact mode on), else `None`.
fn client_side(x: &Exchange, t_end: u64, tag: Option<String>) -> ClientSide {
    ClientSide {
        id: x.id,
        tgid: x.thread.tgid,
        tid: x.thread.tid,
        fingerprint: x.head.fingerprint,
        req_body: x.head.body_prefix.clone(),
        t_read: x.head.ts_first,
        t_resp_write: x.response.as_ref().map_or(t_end, |r| r.ts_first),
        status: x.response.as_ref().map_or(0, |r| r.status),
        resp_body: x
            .response
            .as_ref()
            .map(|r| r.body_prefix.clone())
            .unwrap_or_default(),
        tag,
    }
}

fn backend_side(x: &Exchange, t_resp: u64) -> BackendSide {
    BackendSide {
        id: x.id,
        tgid: x.thread.tgid,
        tid: x.thread.tid,
        fingerprint: x.head.fingerprint,
        req_body: x.head.body_prefix.clone(),
        t_write: x.head.ts_first,
        t_resp_read: t_resp,
        status: x.response.as_ref().map_or(0, |r| r.status),
        resp_body: x
            .response
            .as_ref()
            .map(|r| r.body_prefix.clone())
            .unwrap_or_default(),
        tag: x
            .head
            .tag
            .as_deref()
            .and_then(tag_client)
            .map(|a| a.to_string()),
    }
}

/// The client address an exact-mode tag starts with: the load balancer
/// writes `client-ip:client-port`, then whatever else its config adds
/// (HAProxy `%ci:%cp:%rt`). An IPv6 address has colons of its own, so the
/// first split where an address and a port parse is taken.
pub(super) fn tag_client(tag: &str) -> Option<SocketAddr> {
    tag.match_indices(':').find_map(|(i, _)| {
        let ip: std::net::IpAddr = tag[..i].parse().ok()?;
        let rest = &tag[i + 1..];
        let port = rest.split(':').next()?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    })
}

/// Why a client connection's open exchanges ended at its close: the
/// client's doing when it closed first or reset, else the load balancer's.
/// (The load balancer's own FIN is stamped inside its close(), after the
/// close's entry, so "not the client" is what the close knows.)
fn close_failure(conn: &Conn) -> &'static str {
    match (conn.closed_by, conn.reset) {
        (ClosedBy::Peer, _) | (_, Some(false)) => "client-aborted",
        _ => "lb-closed",
    }
}

fn connect_error(ret: i64) -> ConnectError {
    match ret {
        ECONNREFUSED => ConnectError::Refused,
        ETIMEDOUT => ConnectError::TimedOut,
        other => ConnectError::Other(other),
    }
}

fn unspecified(like: SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}
