//! [`Conn`]: one connection's framer, both directions, fed syscall chunks.

use std::collections::VecDeque;

use super::chunked::Chunked;
use super::framing::{self, BodyKind, RequestKind};
use super::head::{self, Field};
use super::normalize::fingerprint;
use super::{Dir, Limits, LostReason, Message, RequestHead, ResponseHead};

/// One HTTP/1.x connection (both directions), fed syscall chunks in time
/// order. See the module documentation for what it accepts and its memory
/// bound.
#[derive(Debug, Clone)]
pub struct Conn {
    limits: Limits,
    request: Side,
    response: Side,
    /// Requests whose final response head has not been seen yet, oldest
    /// first (at most `limits.max_pipelined`).
    awaiting: VecDeque<RequestKind>,
    lost: Option<LostReason>,
    closed: bool,
}

/// One direction's parser state.
#[derive(Debug, Clone, Default)]
struct Side {
    phase: Phase,
    /// The message in progress, from its first byte to its last.
    msg: Option<InFlight>,
}

#[derive(Debug, Clone, Default)]
enum Phase {
    /// Between messages (a request may still be in leading empty lines).
    #[default]
    Idle,
    /// Gathering a head: the bytes so far (never empty).
    Head(Vec<u8>),
    /// In a body.
    Body(Body),
}

#[derive(Debug, Clone)]
enum Body {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

#[derive(Debug, Clone)]
struct InFlight {
    ts_first: u64,
    ts_last: u64,
    bytes: u64,
    pipelined: bool,
    /// A head held back while its body prefix fills.
    held: Option<Held>,
}

#[derive(Debug, Clone)]
enum Held {
    Request(RequestHead),
    Response(ResponseHead),
}

impl Held {
    fn prefix(&mut self) -> &mut Vec<u8> {
        match self {
            Held::Request(h) => &mut h.body_prefix,
            Held::Response(h) => &mut h.body_prefix,
        }
    }

    fn into_message(self) -> Message {
        match self {
            Held::Request(h) => Message::Request(h),
            Held::Response(h) => Message::Response(h),
        }
    }
}

impl Conn {
    /// A connection with nothing seen yet. Limits out of range are clamped
    /// (see [`Limits`]).
    pub fn new(limits: Limits) -> Self {
        Conn {
            limits: limits.clamped(),
            request: Side::default(),
            response: Side::default(),
            awaiting: VecDeque::new(),
            lost: None,
            closed: false,
        }
    }

    /// Feeds one syscall's chunk: `ts` kernel ns, `total` the bytes it moved,
    /// `captured` the prefix the kernel copied (bytes past `total` are
    /// ignored). Appends what completed to `out`. After framing is lost or
    /// the connection closed, it does nothing.
    pub fn feed(&mut self, dir: Dir, ts: u64, total: u64, captured: &[u8], out: &mut Vec<Message>) {
        if self.lost.is_some() || self.closed || total == 0 {
            return;
        }
        // The other direction moved: its held head's prefix is as long as it
        // will get before this chunk, and its message must come out first.
        self.side(other(dir)).flush(out);
        let known =
            &captured[..usize::try_from(total).map_or(captured.len(), |t| t.min(captured.len()))];
        let unknown = total - known.len() as u64;
        if let Err(reason) = self
            .known(dir, ts, known, out)
            .and_then(|()| self.unknown(dir, ts, unknown, out))
        {
            self.cut(reason, out);
        }
    }

    /// The connection closed (either side): a close-delimited response ends
    /// here; a message in progress is [`LostReason::ClosedMidMessage`]
    /// (after its head, marked incomplete if it was cut). Later calls do
    /// nothing. `_ts` is the close's time; ends keep the time of the last
    /// byte's syscall.
    pub fn close(&mut self, _ts: u64, out: &mut Vec<Message>) {
        if self.lost.is_some() || self.closed {
            return;
        }
        self.closed = true;
        if let Phase::Body(Body::UntilClose) = self.response.phase {
            self.end(Dir::Response, out);
        }
        let mid = |s: &Side| s.msg.is_some() && !matches!(s.phase, Phase::Idle);
        if mid(&self.request) || mid(&self.response) {
            self.cut(LostReason::ClosedMidMessage, out);
        } else {
            self.request.flush(out);
            self.response.flush(out);
        }
    }

    /// Why framing is lost on this connection, if it is.
    pub fn framing_lost(&self) -> Option<LostReason> {
        self.lost
    }

    /// The first byte's time of a request being read whose head has not
    /// come out yet: still being gathered, or held while its body prefix
    /// fills. `None` between requests and once its head is out.
    pub fn request_unannounced(&self) -> Option<u64> {
        let msg = self.request.msg.as_ref()?;
        match self.request.phase {
            Phase::Head(_) => Some(msg.ts_first),
            Phase::Body(_) | Phase::Idle if msg.held.is_some() => Some(msg.ts_first),
            _ => None,
        }
    }

    /// How many requests have not had their final response head yet.
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Bytes this connection holds on the heap now (buffers, held heads,
    /// the queue), for the memory bound's tests.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        let side = |s: &Side| {
            let phase = match &s.phase {
                Phase::Head(buf) => buf.capacity(),
                Phase::Body(Body::Chunked(c)) => c.heap_bytes(),
                _ => 0,
            };
            let held = match s.msg.as_ref().and_then(|m| m.held.as_ref()) {
                Some(Held::Request(h)) => {
                    h.method.capacity()
                        + h.target.capacity()
                        + [&h.host, &h.user_agent, &h.tag]
                            .iter()
                            .map(|o| o.as_ref().map_or(0, String::capacity))
                            .sum::<usize>()
                        + h.body_prefix.capacity()
                }
                Some(Held::Response(h)) => h.body_prefix.capacity(),
                None => 0,
            };
            phase + held
        };
        side(&self.request)
            + side(&self.response)
            + self.awaiting.capacity() * std::mem::size_of::<RequestKind>()
    }

    fn side(&mut self, dir: Dir) -> &mut Side {
        match dir {
            Dir::Request => &mut self.request,
            Dir::Response => &mut self.response,
        }
    }

    /// Captured bytes, in order.
    fn known(
        &mut self,
        dir: Dir,
        ts: u64,
        mut rest: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<(), LostReason> {
        while !rest.is_empty() {
            let used = match &mut self.side(dir).phase {
                Phase::Idle => self.start(dir, ts, rest),
                Phase::Head(_) => self.gather(dir, ts, rest, out)?,
                Phase::Body(_) => self.body(dir, ts, rest, out)?,
            };
            rest = &rest[used..];
        }
        Ok(())
    }

    /// Uncaptured bytes: only a body may hold them.
    fn unknown(
        &mut self,
        dir: Dir,
        ts: u64,
        mut n: u64,
        out: &mut Vec<Message>,
    ) -> Result<(), LostReason> {
        if n == 0 {
            return Ok(());
        }
        let side = self.side(dir);
        side.flush(out);
        let Phase::Body(body) = &mut side.phase else {
            return Err(LostReason::HeadTruncated);
        };
        let msg = side
            .msg
            .as_mut()
            .ok_or(LostReason::Malformed("body without a message"))?;
        msg.ts_last = ts;
        match body {
            Body::Length(left) => {
                let used = n.min(*left);
                *left -= used;
                msg.bytes += used;
                n -= used;
                if *left == 0 {
                    self.end(dir, out);
                }
            }
            Body::Chunked(c) => {
                c.unknown(n)?;
                msg.bytes += n;
                n = 0;
            }
            Body::UntilClose => {
                msg.bytes += n;
                n = 0;
            }
        }
        // What is left starts a head in uncaptured bytes.
        if n > 0 {
            Err(LostReason::HeadTruncated)
        } else {
            Ok(())
        }
    }

    /// The first byte of a message; requests skip leading empty lines.
    /// Returns how many bytes were skipped: when fewer than `rest` holds, the
    /// head starts after them.
    fn start(&mut self, dir: Dir, ts: u64, rest: &[u8]) -> usize {
        let pipelined =
            dir == Dir::Request && (!self.awaiting.is_empty() || self.response.msg.is_some());
        let side = self.side(dir);
        let msg = side.msg.get_or_insert(InFlight {
            ts_first: ts,
            ts_last: ts,
            bytes: 0,
            pipelined,
            held: None,
        });
        msg.ts_last = ts;
        let skip = match dir {
            Dir::Request => rest
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count(),
            Dir::Response => 0,
        };
        msg.bytes += skip as u64;
        if skip < rest.len() {
            side.phase = Phase::Head(Vec::new());
        }
        skip
    }

    /// Head bytes: gathers up to the head's end, then parses it.
    fn gather(
        &mut self,
        dir: Dir,
        ts: u64,
        rest: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, LostReason> {
        let max = self.limits.max_head;
        let side = self.side(dir);
        let (Phase::Head(buf), Some(msg)) = (&mut side.phase, side.msg.as_mut()) else {
            return Err(LostReason::Malformed("head without a message"));
        };
        msg.ts_last = ts;
        // Never hold more than one byte past the limit (`buf.len() <= max`
        // on entry, or the head would have been refused).
        let rest = &rest[..rest.len().min(max + 1 - buf.len())];
        // A head usually arrives in one chunk: one allocation, not one per
        // doubling.
        buf.reserve(rest.len());
        let mut used = 0;
        let mut done = false;
        while let Some(lf) = rest[used..].iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&rest[used..used + lf + 1]);
            used += lf + 1;
            if buf.ends_with(b"\n\n") || buf.ends_with(b"\n\r\n") {
                done = true;
                break;
            }
        }
        if !done {
            buf.extend_from_slice(&rest[used..]);
            used = rest.len();
        }
        msg.bytes += used as u64;
        early_check(dir, buf, &rest[..used])?;
        if buf.len() > max {
            return Err(LostReason::TooLong);
        }
        if done {
            let buf = std::mem::take(buf);
            side.phase = Phase::Idle;
            match dir {
                Dir::Request => self.request_head(ts, &buf, out)?,
                Dir::Response => self.response_head(ts, &buf, out)?,
            }
        }
        Ok(used)
    }

    fn request_head(
        &mut self,
        ts: u64,
        buf: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<(), LostReason> {
        let lines = head::lines(buf)?;
        let line = head::request_line(lines.first().copied().unwrap_or_default())?;
        let fields = head::fields(&lines[1..], self.limits.max_fields)?;
        let body = framing::request_body(&fields, line.version)?;
        if fields.iter().filter(|f| f.is("host")).count() > 1 {
            return Err(LostReason::Malformed("more than one Host field"));
        }
        if self.awaiting.len() >= self.limits.max_pipelined {
            return Err(LostReason::TooManyPipelined);
        }
        self.awaiting.push_back(RequestKind {
            head: line.method == "HEAD",
            connect: line.method == "CONNECT",
        });
        let msg = self
            .request
            .msg
            .as_mut()
            .ok_or(LostReason::Malformed("head without a message"))?;
        let head = RequestHead {
            ts_first: msg.ts_first,
            method: line.method.to_string(),
            target: line.target.to_string(),
            version: line.version,
            host: lossy(&fields, "host"),
            user_agent: lossy(&fields, "user-agent"),
            tag: lossy(&fields, "x-lbw"),
            fingerprint: fingerprint(
                line.method,
                line.target,
                body != BodyKind::None,
                &fields,
                &self.limits.exclude_fields,
            ),
            body_prefix: Vec::new(),
            complete: true,
            pipelined: msg.pipelined,
        };
        msg.held = Some(Held::Request(head));
        self.begin_body(Dir::Request, ts, body, out);
        Ok(())
    }

    fn response_head(
        &mut self,
        ts: u64,
        buf: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<(), LostReason> {
        let lines = head::lines(buf)?;
        let status = head::status_line(lines.first().copied().unwrap_or_default())?;
        let fields = head::fields(&lines[1..], self.limits.max_fields)?;
        let req = *self
            .awaiting
            .front()
            .ok_or(LostReason::UnsolicitedResponse)?;
        let body = framing::response_body(status.status, &fields, status.version, req)?;
        let msg = self
            .response
            .msg
            .take()
            .ok_or(LostReason::Malformed("head without a message"))?;
        if status.status < 200 {
            out.push(Message::Interim {
                ts_first: msg.ts_first,
                ts_last: ts,
                status: status.status,
                bytes: msg.bytes,
            });
            return Ok(());
        }
        self.awaiting.pop_front();
        let head = ResponseHead {
            ts_first: msg.ts_first,
            status: status.status,
            version: status.version,
            body_prefix: Vec::new(),
            complete: true,
        };
        self.response.msg = Some(InFlight {
            held: Some(Held::Response(head)),
            ..msg
        });
        self.begin_body(Dir::Response, ts, body, out);
        Ok(())
    }

    fn begin_body(&mut self, dir: Dir, ts: u64, body: BodyKind, out: &mut Vec<Message>) {
        let side = self.side(dir);
        side.phase = match body {
            BodyKind::None => Phase::Idle,
            BodyKind::Length(n) => Phase::Body(Body::Length(n)),
            BodyKind::Chunked => Phase::Body(Body::Chunked(Chunked::new())),
            BodyKind::UntilClose => Phase::Body(Body::UntilClose),
        };
        if let Some(msg) = side.msg.as_mut() {
            msg.ts_last = ts;
        }
        if body == BodyKind::None {
            self.end(dir, out);
        } else if self.limits.body_prefix == 0 {
            self.side(dir).flush(out);
        }
    }

    /// Body bytes: returns how many belonged to the body.
    fn body(
        &mut self,
        dir: Dir,
        ts: u64,
        rest: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, LostReason> {
        let (cap, max_line) = (self.limits.body_prefix, self.limits.max_head);
        let side = self.side(dir);
        let (Phase::Body(body), Some(msg)) = (&mut side.phase, side.msg.as_mut()) else {
            return Err(LostReason::Malformed("body without a message"));
        };
        msg.ts_last = ts;
        let mut keep = |data: &[u8]| {
            if let Some(held) = msg.held.as_mut() {
                let prefix = held.prefix();
                let n = cap.saturating_sub(prefix.len()).min(data.len());
                prefix.extend_from_slice(&data[..n]);
            }
        };
        let (used, ended) = match body {
            Body::Length(left) => {
                let n = usize::try_from(*left).map_or(rest.len(), |l| l.min(rest.len()));
                keep(&rest[..n]);
                *left -= n as u64;
                (n, *left == 0)
            }
            Body::Chunked(c) => match c.known(rest, max_line, &mut keep)? {
                Some(n) => (n, true),
                None => (rest.len(), false),
            },
            Body::UntilClose => {
                keep(rest);
                (rest.len(), false)
            }
        };
        msg.bytes += used as u64;
        if ended {
            self.end(dir, out);
        } else if msg.held.as_mut().is_some_and(|h| h.prefix().len() >= cap) {
            side.flush(out);
        }
        Ok(used)
    }

    /// The message in progress on `dir` ended with its last byte.
    fn end(&mut self, dir: Dir, out: &mut Vec<Message>) {
        let side = self.side(dir);
        side.phase = Phase::Idle;
        if let Some(mut msg) = side.msg.take() {
            if let Some(held) = msg.held.take() {
                out.push(held.into_message());
            }
            out.push(match dir {
                Dir::Request => Message::RequestEnd {
                    ts_last: msg.ts_last,
                    bytes: msg.bytes,
                },
                Dir::Response => Message::ResponseEnd {
                    ts_last: msg.ts_last,
                    bytes: msg.bytes,
                },
            });
        }
    }

    /// Framing is lost: held heads come out first, and a head being gathered
    /// (cut by uncaptured bytes, a close or the length limit) comes out as
    /// incomplete if its start line is readable.
    fn cut(&mut self, reason: LostReason, out: &mut Vec<Message>) {
        let reason = match (&self.request.phase, reason) {
            (Phase::Head(buf), LostReason::HeadTruncated) if buf.starts_with(b"PRI * HTTP/2") => {
                LostReason::Http2Preface
            }
            _ => reason,
        };
        let partial = |c: &Self, dir: Dir| {
            let side = match dir {
                Dir::Request => &c.request,
                Dir::Response => &c.response,
            };
            match (&side.phase, side.msg.as_ref()) {
                (Phase::Head(buf), Some(msg)) => c.partial(dir, buf, msg),
                _ => None,
            }
        };
        let (request, response) = (partial(self, Dir::Request), partial(self, Dir::Response));
        self.request.flush(out);
        self.response.flush(out);
        // A response being gathered answers a request whose head is already
        // out; a request being gathered is a later, pipelined one. So the
        // response comes first, and an incomplete request is the last
        // message before `Lost`.
        out.extend(response);
        out.extend(request);
        self.lost = Some(reason);
        out.push(Message::Lost(reason));
    }

    /// The incomplete head of a cut message, from its complete lines.
    fn partial(&self, dir: Dir, buf: &[u8], msg: &InFlight) -> Option<Message> {
        let lines = head::lines(buf).ok()?;
        let first = *lines.first()?;
        // Fields before the cut, up to the first bad one.
        let fields: Vec<Field> = lines[1..]
            .iter()
            .map_while(|l| head::fields(std::slice::from_ref(l), 1).ok()?.pop())
            .take(self.limits.max_fields)
            .collect();
        match dir {
            Dir::Request => {
                let line = head::request_line(first).ok()?;
                Some(Message::Request(RequestHead {
                    ts_first: msg.ts_first,
                    method: line.method.to_string(),
                    target: line.target.to_string(),
                    version: line.version,
                    host: lossy(&fields, "host"),
                    user_agent: lossy(&fields, "user-agent"),
                    tag: lossy(&fields, "x-lbw"),
                    fingerprint: [0; 32],
                    body_prefix: Vec::new(),
                    complete: false,
                    pipelined: msg.pipelined,
                }))
            }
            Dir::Response => {
                let status = head::status_line(first).ok()?;
                (status.status >= 200 && !self.awaiting.is_empty()).then(|| {
                    Message::Response(ResponseHead {
                        ts_first: msg.ts_first,
                        status: status.status,
                        version: status.version,
                        body_prefix: Vec::new(),
                        complete: false,
                    })
                })
            }
        }
    }
}

impl Side {
    /// Emits a held head: its body prefix is as long as it gets.
    fn flush(&mut self, out: &mut Vec<Message>) {
        if let Some(held) = self.msg.as_mut().and_then(|m| m.held.take()) {
            out.push(held.into_message());
        }
    }
}

/// Rejects, as soon as they arrive, bytes that can never become a head:
/// a NUL, a request not starting with a method character (e.g. a TLS
/// ClientHello), a response not starting with `HTTP/1.`. Without it such a
/// connection would wait for a line end that never comes.
fn early_check(dir: Dir, buf: &[u8], new: &[u8]) -> Result<(), LostReason> {
    match dir {
        Dir::Request if !buf.first().copied().is_some_and(head::is_tchar) => {
            Err(LostReason::Malformed("not an HTTP/1.x request"))
        }
        Dir::Response if !b"HTTP/1.".starts_with(&buf[..buf.len().min(7)]) => {
            Err(LostReason::Malformed("not an HTTP/1.x response"))
        }
        _ if new.contains(&0) => Err(LostReason::Malformed("NUL byte in a head")),
        _ => Ok(()),
    }
}

fn other(dir: Dir) -> Dir {
    match dir {
        Dir::Request => Dir::Response,
        Dir::Response => Dir::Request,
    }
}

/// The first field named `name`, as lossy UTF-8.
fn lossy(fields: &[Field], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|f| f.is(name))
        .map(|f| String::from_utf8_lossy(f.value).into_owned())
}
