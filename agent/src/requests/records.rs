//! Request and connection outcomes as ECS records.

use std::net::SocketAddr;

use lbwitness_trail::record::{
    Endpoint, Event, Network, Observer, Record,
    audit::Process,
    http::{
        Backend, Connection, Error, Http, HttpRequest, HttpResponse, Nat, Thread, Url, UserAgent,
    },
};

use super::{
    correlate::Mapping,
    http::{QueryMode, Version, url_path},
    procs::ProcInfo,
    sockets::{Ends, Role},
    tracker::{ConnOut, ConnectError, RequestOut},
};
use crate::{
    clock::{Clock, rfc3339},
    enrich::community_id::community_id_v1,
};

/// IANA protocol number of TCP.
const TCP: u8 = 6;

/// What a request record may show: the privacy settings (`[requests]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privacy {
    /// What of the query string is kept.
    pub query: QueryMode,
    /// `url.path` is cut to this many bytes.
    pub max_path_bytes: usize,
    /// `user_agent.original` is cut to this many bytes.
    pub max_user_agent_bytes: usize,
}

/// Builds request and connection records for one host.
#[derive(Clone, Debug)]
pub struct RequestRecords {
    hostname: String,
    privacy: Privacy,
}

impl RequestRecords {
    /// Records for `hostname`, showing what `privacy` allows.
    pub fn new(hostname: String, privacy: Privacy) -> Self {
        Self { hostname, privacy }
    }

    fn base(&self, event: Event, timestamp: String) -> Record {
        Record::new(
            event,
            timestamp,
            Observer {
                hostname: self.hostname.clone(),
                ingress: None,
                product: "lbwitness",
                kind: "sensor",
            },
        )
    }

    /// The `lbwitness.request` record of one HTTP request.
    pub fn request(&self, clock: &Clock, r: &RequestOut, process: &ProcInfo) -> Record {
        let mut event = Event::new(
            "lbwitness.request",
            "http-request",
            "event",
            &["network", "web"],
            &["access", "connection"],
        );
        let start = clock.wall(r.start);
        let end = clock.wall(r.end.max(r.start));
        event.start = Some(rfc3339(start));
        event.end = Some(rfc3339(end));
        event.duration = Some(r.end.saturating_sub(r.start));
        event.outcome = Some(match (r.failure, r.status) {
            (None, Some(s)) if s < 400 => "success",
            (None, Some(_)) | (Some(_), _) => "failure",
            (None, None) => "unknown",
        });
        let mut rec = self.base(event, rfc3339(end));
        let (nat_src, nat_dst) = match r.backend {
            Some(b) => (Some(nat(b.local)), Some(nat(b.remote))),
            None => (None, None),
        };
        rec.source = Some(Endpoint {
            bytes: None,
            ip: r.client.remote.ip(),
            nat: nat_src,
            packets: None,
            port: Some(r.client.remote.port()),
        });
        rec.destination = Some(Endpoint {
            bytes: None,
            ip: r.client.local.ip(),
            nat: nat_dst,
            packets: None,
            port: Some(r.client.local.port()),
        });
        rec.network = Some(network(r.client.remote, r.client.local));
        let (path, query) = url_path(
            &r.head.target,
            self.privacy.max_path_bytes,
            self.privacy.query,
        );
        rec.url = Some(Url {
            domain: r.head.host.as_deref().map(domain),
            path,
            query,
        });
        rec.user_agent = r.head.user_agent.as_deref().map(|ua| UserAgent {
            original: cut(ua, self.privacy.max_user_agent_bytes),
        });
        rec.http = Some(Http {
            request: HttpRequest {
                bytes: r.request_bytes,
                method: r.head.method.clone(),
            },
            response: r.status.map(|status_code| HttpResponse {
                bytes: r.response_bytes,
                status_code,
            }),
            version: version(r.head.version),
        });
        rec.error = r.failure.map(|code| Error {
            code,
            message: failure_message(code).to_owned(),
        });
        rec.process = Some(process_of(process, Some(r.thread.tid)));
        rec.lbwitness.backend = Some(match &r.mapping {
            Mapping::Mapped { .. } => backend("mapped", None, None, r.backend_span),
            Mapping::Exact { .. } => backend("exact", None, None, r.backend_span),
            Mapping::Ambiguous { reason, .. } => backend(
                "ambiguous",
                Some(r.candidates.iter().map(ToString::to_string).collect()),
                Some(reason.as_str()),
                None,
            ),
        });
        rec
    }

    /// The `lbwitness.connection` record of one TCP connection.
    pub fn connection(&self, clock: &Clock, c: &ConnOut, process: &ProcInfo) -> Record {
        let failed = c.connect_error.is_some();
        let types: &'static [&'static str] = if failed {
            &["connection", "end", "error"]
        } else {
            &["connection", "end"]
        };
        let mut event = Event::new(
            "lbwitness.connection",
            "connection",
            "event",
            &["network"],
            types,
        );
        let start = clock.wall(c.start);
        let end = clock.wall(c.end.max(c.start));
        event.start = Some(rfc3339(start));
        event.end = Some(rfc3339(end));
        event.duration = Some(c.end.saturating_sub(c.start));
        event.outcome = Some(if failed || c.reset.is_some() {
            "failure"
        } else {
            "success"
        });
        let mut rec = self.base(event, rfc3339(end));
        // ECS: the source opened the connection.
        let (src, dst, src_bytes, dst_bytes) = match c.role {
            Role::Client => (c.ends.remote, c.ends.local, c.bytes_in, c.bytes_out),
            Role::Backend => (c.ends.local, c.ends.remote, c.bytes_out, c.bytes_in),
        };
        rec.source = Some(Endpoint {
            bytes: Some(src_bytes),
            ip: src.ip(),
            nat: None,
            packets: None,
            port: Some(src.port()),
        });
        rec.destination = Some(Endpoint {
            bytes: Some(dst_bytes),
            ip: dst.ip(),
            nat: None,
            packets: None,
            port: Some(dst.port()),
        });
        if src.port() != 0 {
            rec.network = Some(network(src, dst));
        }
        rec.error = c.connect_error.map(|e| match e {
            ConnectError::Refused => Error {
                code: "connection-refused",
                message: "the backend refused the connection (reset)".to_owned(),
            },
            ConnectError::TimedOut => Error {
                code: "connection-timed-out",
                message: "the backend never answered the connection".to_owned(),
            },
            ConnectError::Other(errno) => Error {
                code: "connection-failed",
                message: format!("connect failed with errno {}", -errno),
            },
        });
        rec.process = Some(process_of(process, None));
        rec.lbwitness.connection = Some(Connection {
            before_agent: c.before_agent.then_some(true),
            backends: (c.role == Role::Client && !c.backends.is_empty())
                .then(|| c.backends.iter().map(backend_conn).collect()),
            closed_by: c.closed_by.as_str(),
            requests: c.requests,
            reset: c.reset.map(|sent| if sent { "sent" } else { "received" }),
            retransmits: c.retransmits,
            role: c.role.as_str(),
            spliced_bytes: (c.spliced > 0).then_some(c.spliced),
        });
        rec
    }
}

fn nat(a: SocketAddr) -> Nat {
    Nat {
        ip: a.ip(),
        port: a.port(),
    }
}

fn network(src: SocketAddr, dst: SocketAddr) -> Network {
    Network {
        bytes: None,
        community_id: community_id_v1(0, src.ip(), dst.ip(), TCP, src.port(), dst.port()),
        iana_number: TCP.to_string(),
        inner: None,
        packets: None,
        transport: Some("tcp"),
        ip_type: if src.is_ipv4() { "ipv4" } else { "ipv6" },
        vlan: None,
    }
}

fn backend(
    mapping: &'static str,
    candidates: Option<Vec<String>>,
    reason: Option<&'static str>,
    span: Option<(u64, u64)>,
) -> Backend {
    Backend {
        candidates,
        duration: span.map(|(a, b)| b.saturating_sub(a)),
        mapping,
        reason,
    }
}

fn backend_conn(e: &Ends) -> String {
    format!("{}->{}", e.local, e.remote)
}

fn process_of(p: &ProcInfo, tid: Option<u32>) -> Process {
    Process {
        executable: p.executable.clone(),
        name: p.name.clone(),
        pid: p.pid,
        thread: tid.map(|id| Thread { id }),
    }
}

fn version(v: Version) -> &'static str {
    match v {
        Version::Http10 => "1.0",
        Version::Http11 => "1.1",
    }
}

/// The Host header without its port (`[v6]:port` keeps the brackets off).
fn domain(host: &str) -> String {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_ascii_lowercase();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_ascii_lowercase(),
        _ => host.to_ascii_lowercase(),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn failure_message(code: &str) -> &'static str {
    match code {
        "client-aborted" => "the client closed the connection before the response was written",
        "lb-closed" => "the load balancer closed the connection before the response was written",
        "framing-lost" => "the connection's HTTP framing was lost; the response is unknown",
        _ => "the exchange did not complete",
    }
}

/// One record of every request and connection shape, with every optional
/// field set somewhere (for the agent's record-kind checks).
#[cfg(test)]
pub(crate) fn samples() -> Vec<Record> {
    use std::collections::BTreeSet;

    use super::{
        correlate::Reason,
        http::{RequestHead, Version},
        input::Thread,
        tracker::ClosedBy,
    };

    let client = Ends {
        local: "192.0.2.1:80".parse().unwrap(),
        remote: "192.0.2.10:40000".parse().unwrap(),
    };
    let backend_ends = Ends {
        local: "198.51.100.1:30000".parse().unwrap(),
        remote: "198.51.100.2:8080".parse().unwrap(),
    };
    let head = RequestHead {
        ts_first: 1_000,
        method: "GET".into(),
        target: "/cart?item=1".into(),
        version: Version::Http11,
        host: Some("Shop.Example:80".into()),
        user_agent: Some("curl/8".into()),
        tag: None,
        fingerprint: [0; 32],
        body_prefix: Vec::new(),
        complete: true,
        pipelined: false,
    };
    let mapped = RequestOut {
        thread: Thread { tgid: 10, tid: 11 },
        client,
        backend: Some(backend_ends),
        head: head.clone(),
        status: Some(200),
        request_bytes: 80,
        response_bytes: 200,
        start: 1_000,
        end: 9_000,
        backend_span: Some((2_000, 5_000)),
        mapping: Mapping::Mapped { backend: 2 },
        candidates: Vec::new(),
        failure: None,
    };
    let ambiguous = RequestOut {
        backend: None,
        status: None,
        backend_span: None,
        mapping: Mapping::Ambiguous {
            candidates: vec![2, 3],
            reason: Reason::Unfinished,
        },
        candidates: vec![backend_ends.remote],
        failure: Some("client-aborted"),
        ..mapped.clone()
    };
    let conn = ConnOut {
        tgid: 10,
        role: Role::Client,
        ends: client,
        start: 500,
        end: 10_000,
        bytes_in: 80,
        bytes_out: 200,
        closed_by: ClosedBy::Peer,
        reset: Some(true),
        retransmits: 1,
        requests: 1,
        connect_error: None,
        backends: BTreeSet::from([backend_ends]),
        spliced: 0,
        before_agent: false,
    };
    let failed = ConnOut {
        role: Role::Backend,
        ends: backend_ends,
        connect_error: Some(ConnectError::Refused),
        backends: BTreeSet::new(),
        ..conn.clone()
    };
    let all = RequestRecords::new(
        "lb1".into(),
        Privacy {
            query: QueryMode::All,
            max_path_bytes: 512,
            max_user_agent_bytes: 256,
        },
    );
    let clock = Clock::from_offset(1_700_000_000_000_000_000);
    let p = ProcInfo {
        pid: 10,
        name: Some("haproxy".into()),
        executable: Some("/usr/sbin/haproxy".into()),
        start_ticks: 1,
    };
    vec![
        all.request(&clock, &mapped, &p),
        all.request(&clock, &ambiguous, &p),
        all.connection(&clock, &conn, &p),
        all.connection(&clock, &failed, &p),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_loses_its_port_and_case() {
        assert_eq!(domain("Shop.Example:8080"), "shop.example");
        assert_eq!(domain("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(domain("example"), "example");
    }

    #[test]
    fn cutting_keeps_characters_whole() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("abc", 10), "abc");
    }
}
