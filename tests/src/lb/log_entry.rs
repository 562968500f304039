//! One line of a load balancer's own log, the lab's oracle: HAProxy's
//! (through UDP syslog, with the log-format [`HAPROXY_HTTP_LOG_FORMAT`] or
//! [`HAPROXY_TCP_LOG_FORMAT`]) and nginx's access log
//! ([`NGINX_LOG_FORMAT`]), parsed into the same [`LbLogEntry`].
//!
//! The parsers are pure: a line in, an entry or a [`LogParseError`] out.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// HAProxy's log-format for HTTP mode, one line per request.
///
/// Fields, space-separated: client, frontend, the LB's address toward the
/// server (`%bi:%bp`), the server, termination state with cookies (`%tsc`,
/// four characters), status, method, URI, version, the captured `Host`
/// (`%hr` prints `{host}`; needs `capture request header Host len 64`),
/// backend and server names, then the timers `%Tr` (ms from the request
/// sent to the server to its response head; -1 when none came) and `%Ta`
/// (ms from the request's first byte to the end of the response).
pub const HAPROXY_HTTP_LOG_FORMAT: &str =
    "%ci:%cp %fi:%fp %bi:%bp %si:%sp %tsc %ST %HM %HU %HV %hr %b %s %Tr %Ta";

/// HAProxy's log-format for TCP mode, one line per connection: the same
/// shape as [`HAPROXY_HTTP_LOG_FORMAT`] with `-` where TCP mode has no
/// request (status, method, URI, version, host) and `%ts` (two
/// characters), and no timers (HAProxy 2.6 refuses `%Ta` in TCP mode).
pub const HAPROXY_TCP_LOG_FORMAT: &str = "%ci:%cp %fi:%fp %bi:%bp %si:%sp %ts - - - - - %b %s";

/// nginx's `log_format` body for the nginx load balancer, tab-separated
/// because `$request` holds spaces and `$upstream_addr` lists retried
/// servers as `a, b`. `$upstream_http_x_peer` is the backend's view of its
/// peer (the backends add `X-Peer: $remote_addr:$remote_port`), which is
/// the LB's address toward the backend.
pub const NGINX_LOG_FORMAT: &str = "$remote_addr:$remote_port\\t$server_addr:$server_port\\t\
     $upstream_addr\\t$upstream_http_x_peer\\t$status\\t$request\\t$host";

/// What one log line says about one request (HTTP mode, nginx) or one
/// connection (HAProxy TCP mode). `None` where the log prints `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbLogEntry {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The frontend address the client connected to.
    pub frontend: SocketAddr,
    /// The LB's own address toward the backend (HAProxy `%bi:%bp`; nginx:
    /// the backend's `X-Peer`).
    pub backend_src: Option<SocketAddr>,
    /// The backend server (the last one tried, for nginx).
    pub server: Option<SocketAddr>,
    /// HAProxy's termination state (`%tsc` or `%ts`); `None` for nginx.
    pub termination: Option<String>,
    /// The HTTP status sent to the client.
    pub status: Option<u16>,
    /// Request method.
    pub method: Option<String>,
    /// Request URI as received (path and query).
    pub uri: Option<String>,
    /// HTTP version, e.g. `HTTP/1.1`.
    pub version: Option<String>,
    /// The `Host` header (nginx: `$host`, lowercased, without port).
    pub host: Option<String>,
    /// HAProxy backend name; `None` for nginx.
    pub backend_name: Option<String>,
    /// HAProxy server name (`<NOSRV>` when none was chosen); `None` for
    /// nginx.
    pub server_name: Option<String>,
    /// HAProxy's `%Tr`, in ms: the server's response time, from the
    /// request sent to the response head received. `None` for nginx, for
    /// a line without timers, or when no response came (`-1`).
    pub server_ms: Option<u64>,
    /// HAProxy's `%Ta`, in ms: the request's active time, from its first
    /// byte to the end of the response. `None` for nginx or a line without
    /// timers.
    pub active_ms: Option<u64>,
}

impl LbLogEntry {
    /// The URI's path, without the query string.
    pub fn path(&self) -> Option<&str> {
        self.uri
            .as_deref()
            .map(|uri| uri.split_once('?').map_or(uri, |(path, _)| path))
    }
}

/// Why a log line could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogParseError {
    /// The line has `found` fields, the format has `expected`.
    FieldCount {
        /// Fields in the format.
        expected: usize,
        /// Fields in the line.
        found: usize,
    },
    /// A field that must be `ip:port` is not.
    Address {
        /// Which field.
        field: &'static str,
        /// Its text.
        text: String,
    },
    /// The status is neither `-` nor a number from 100 to 999.
    Status(String),
    /// A timer is neither `-`, `-1` nor a number of ms.
    Timer(String),
}

impl fmt::Display for LogParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FieldCount { expected, found } => write!(
                f,
                "{found} fields where the log format has {expected}: \
                 does the LB's log format match this parser's?"
            ),
            Self::Address { field, text } => write!(f, "{field} is not ip:port: {text:?}"),
            Self::Status(text) => write!(f, "status is not an HTTP status: {text:?}"),
            Self::Timer(text) => write!(f, "a timer is not a number of ms: {text:?}"),
        }
    }
}

impl std::error::Error for LogParseError {}

/// Parses a line logged with [`HAPROXY_HTTP_LOG_FORMAT`] or
/// [`HAPROXY_TCP_LOG_FORMAT`], or with their first 12 fields only (no
/// timers). A syslog header before the message (`<134>` and a timestamp,
/// `haproxy[12]: `) is skipped.
pub fn parse_haproxy(line: &str) -> Result<LbLogEntry, LogParseError> {
    let message = strip_syslog_header(line.trim_end_matches(['\n', '\r', '\0']));
    let fields: Vec<&str> = message.split(' ').collect();
    if fields.len() != 12 && fields.len() != 14 {
        return Err(LogParseError::FieldCount {
            expected: 14,
            found: fields.len(),
        });
    }
    let timer = |i: usize| -> Result<Option<u64>, LogParseError> {
        match fields.get(i) {
            None | Some(&"-" | &"-1") => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| LogParseError::Timer((*text).to_owned())),
        }
    };
    let host = fields[9].trim_start_matches('{').trim_end_matches('}');
    Ok(LbLogEntry {
        client: required_addr("client", fields[0])?,
        frontend: required_addr("frontend", fields[1])?,
        backend_src: optional_addr("backend source", fields[2])?,
        server: optional_addr("server", fields[3])?,
        termination: dash_none(fields[4]),
        status: status(fields[5])?,
        method: dash_none(fields[6]),
        uri: dash_none(fields[7]),
        version: dash_none(fields[8]),
        host: dash_none(host).filter(|h| !h.is_empty()),
        backend_name: dash_none(fields[10]),
        server_name: dash_none(fields[11]),
        server_ms: timer(12)?,
        active_ms: timer(13)?,
    })
}

/// Parses a line of nginx's access log in [`NGINX_LOG_FORMAT`].
pub fn parse_nginx(line: &str) -> Result<LbLogEntry, LogParseError> {
    let fields: Vec<&str> = line.trim_end_matches(['\n', '\r']).split('\t').collect();
    if fields.len() != 7 {
        return Err(LogParseError::FieldCount {
            expected: 7,
            found: fields.len(),
        });
    }
    // `a:1, b:2` after a retry: the last server answered.
    let server = fields[2].rsplit(", ").next().unwrap_or(fields[2]);
    let mut request = fields[5].split(' ');
    let (method, uri, version) = (request.next(), request.next(), request.next());
    Ok(LbLogEntry {
        client: required_addr("client", fields[0])?,
        frontend: required_addr("frontend", fields[1])?,
        backend_src: optional_addr("X-Peer", fields[3])?,
        server: optional_addr("upstream", server)?,
        termination: None,
        status: status(fields[4])?,
        method: method.and_then(dash_none),
        uri: uri.and_then(dash_none),
        version: version.and_then(dash_none),
        host: dash_none(fields[6]).filter(|h| !h.is_empty()),
        backend_name: None,
        server_name: None,
        server_ms: None,
        active_ms: None,
    })
}

/// The message of a syslog line: what follows `]: ` or `: ` after a
/// `<PRI>` header, or the whole line when it starts with no `<` (HAProxy's
/// `format raw`).
fn strip_syslog_header(line: &str) -> &str {
    if !line.starts_with('<') {
        return line;
    }
    line.split_once("]: ")
        .or_else(|| line.split_once(": "))
        .map_or(line, |(_, message)| message)
}

fn dash_none(text: &str) -> Option<String> {
    (text != "-").then(|| text.to_owned())
}

fn status(text: &str) -> Result<Option<u16>, LogParseError> {
    // HAProxy logs -1 when no response came (an aborted request).
    if text == "-" || text == "-1" {
        return Ok(None);
    }
    match text.parse::<u16>() {
        Ok(code) if (100..=999).contains(&code) => Ok(Some(code)),
        _ => Err(LogParseError::Status(text.to_owned())),
    }
}

/// `ip:port`, IPv6 without brackets as HAProxy prints it (or with them).
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some(SocketAddr::new(
        ip.parse::<IpAddr>().ok()?,
        port.parse().ok()?,
    ))
}

fn required_addr(field: &'static str, text: &str) -> Result<SocketAddr, LogParseError> {
    parse_addr(text).ok_or_else(|| LogParseError::Address {
        field,
        text: text.to_owned(),
    })
}

/// `-`, `-:-` (HAProxy with no connection) or an empty `:`-less value are
/// none; anything else must be an address.
fn optional_addr(field: &'static str, text: &str) -> Result<Option<SocketAddr>, LogParseError> {
    if matches!(text, "-" | "-:-" | "" | "-:0") {
        return Ok(None);
    }
    required_addr(field, text).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_http_line() {
        let line = "192.0.2.10:40522 192.0.2.1:80 198.51.100.1:51544 198.51.100.2:8080 ---- 404 \
                    GET /missing/a?b=1 HTTP/1.1 {shop.example} be_app s1";
        let entry = parse_haproxy(line).unwrap();
        assert_eq!(entry.client, "192.0.2.10:40522".parse().unwrap());
        assert_eq!(entry.frontend, "192.0.2.1:80".parse().unwrap());
        assert_eq!(
            entry.backend_src,
            Some("198.51.100.1:51544".parse().unwrap())
        );
        assert_eq!(entry.server, Some("198.51.100.2:8080".parse().unwrap()));
        assert_eq!(entry.termination.as_deref(), Some("----"));
        assert_eq!(entry.status, Some(404));
        assert_eq!(entry.method.as_deref(), Some("GET"));
        assert_eq!(entry.uri.as_deref(), Some("/missing/a?b=1"));
        assert_eq!(entry.path(), Some("/missing/a"));
        assert_eq!(entry.version.as_deref(), Some("HTTP/1.1"));
        assert_eq!(entry.host.as_deref(), Some("shop.example"));
        assert_eq!(entry.backend_name.as_deref(), Some("be_app"));
        assert_eq!(entry.server_name.as_deref(), Some("s1"));
        assert_eq!((entry.server_ms, entry.active_ms), (None, None));
        let timed = format!("{line} 12 305");
        let entry = parse_haproxy(&timed).unwrap();
        assert_eq!((entry.server_ms, entry.active_ms), (Some(12), Some(305)));
        let no_response = format!("{line} -1 2001");
        let entry = parse_haproxy(&no_response).unwrap();
        assert_eq!((entry.server_ms, entry.active_ms), (None, Some(2001)));
        assert_eq!(
            parse_haproxy(&format!("{line} 1 x")),
            Err(LogParseError::Timer("x".into()))
        );
        assert!(parse_haproxy(&format!("{line} 1")).is_err());
    }

    #[test]
    fn haproxy_with_syslog_header_no_server_and_ipv6() {
        let line = "<134>Dec  2 07:30:00 haproxy[77]: 2001:db8::10:40522 2001:db8::1:80 -:- -:- \
                    SC-- 503 GET / HTTP/1.1 {} be_down <NOSRV>\n";
        let entry = parse_haproxy(line).unwrap();
        assert_eq!(entry.client, "[2001:db8::10]:40522".parse().unwrap());
        assert_eq!(entry.backend_src, None);
        assert_eq!(entry.server, None);
        assert_eq!(entry.host, None);
        assert_eq!(entry.status, Some(503));
        assert_eq!(entry.server_name.as_deref(), Some("<NOSRV>"));
    }

    #[test]
    fn haproxy_tcp_line() {
        let line = "192.0.2.11:4000 192.0.2.1:81 198.51.100.5:3333 198.51.100.6:8080 -- - - - - - \
                    be_tcp s2";
        let entry = parse_haproxy(line).unwrap();
        assert_eq!(entry.status, None);
        assert_eq!(entry.method, None);
        assert_eq!(entry.uri, None);
        assert_eq!(entry.termination.as_deref(), Some("--"));
        assert_eq!(entry.server_name.as_deref(), Some("s2"));
    }

    #[test]
    fn haproxy_rejects_what_it_cannot_read() {
        assert_eq!(
            parse_haproxy("a b c"),
            Err(LogParseError::FieldCount {
                expected: 14,
                found: 3
            })
        );
        let bad_client = "192.0.2.10 192.0.2.1:80 - - ---- 200 GET / HTTP/1.1 {} b s";
        assert!(matches!(
            parse_haproxy(bad_client),
            Err(LogParseError::Address {
                field: "client",
                ..
            })
        ));
        let aborted = "192.0.2.10:1 192.0.2.1:80 - - CD-- -1 GET / HTTP/1.1 {} b s";
        assert_eq!(parse_haproxy(aborted).unwrap().status, None);
        let bad_status = "192.0.2.10:1 192.0.2.1:80 - - CD-- 42 GET / HTTP/1.1 {} b s";
        assert_eq!(
            parse_haproxy(bad_status),
            Err(LogParseError::Status("42".into()))
        );
        let bad_port = "192.0.2.10:99999 192.0.2.1:80 - - ---- 200 GET / HTTP/1.1 {} b s";
        assert!(parse_haproxy(bad_port).is_err());
    }

    #[test]
    fn nginx_line_with_retry() {
        let line = "192.0.2.12:5000\t192.0.2.1:80\t198.51.100.2:8080, 198.51.100.6:8080\t\
                    198.51.100.5:41000\t200\tPOST /r/x?q=1 HTTP/1.1\tshop.example\n";
        let entry = parse_nginx(line).unwrap();
        assert_eq!(entry.client, "192.0.2.12:5000".parse().unwrap());
        assert_eq!(entry.server, Some("198.51.100.6:8080".parse().unwrap()));
        assert_eq!(
            entry.backend_src,
            Some("198.51.100.5:41000".parse().unwrap())
        );
        assert_eq!(entry.method.as_deref(), Some("POST"));
        assert_eq!(entry.path(), Some("/r/x"));
        assert_eq!(entry.version.as_deref(), Some("HTTP/1.1"));
        assert_eq!(entry.host.as_deref(), Some("shop.example"));
        assert_eq!(entry.termination, None);
    }

    #[test]
    fn nginx_line_without_upstream() {
        let line = "192.0.2.12:5000\t192.0.2.1:80\t-\t-\t400\t-\t-";
        let entry = parse_nginx(line).unwrap();
        assert_eq!(entry.server, None);
        assert_eq!(entry.backend_src, None);
        assert_eq!(entry.method, None);
        assert_eq!(entry.status, Some(400));
        assert!(parse_nginx("a\tb").is_err());
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn addr() -> impl Strategy<Value = SocketAddr> {
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)))
        }

        fn token() -> impl Strategy<Value = String> {
            "[A-Za-z0-9/._?=&%-]{1,40}".prop_filter("not a dash", |t| t != "-")
        }

        proptest! {
            #[test]
            fn haproxy_lines_round_trip(
                client in addr(), frontend in addr(), src in proptest::option::of(addr()),
                server in proptest::option::of(addr()), status in proptest::option::of(100u16..1000),
                uri in token(), host in proptest::option::of("[a-z0-9.:-]{1,30}"),
            ) {
                let show = |a: Option<SocketAddr>| a.map_or_else(|| "-:-".to_owned(), |a| a.to_string());
                let line = format!(
                    "{client} {frontend} {} {} ---- {} GET {uri} HTTP/1.1 {{{}}} be_app s1",
                    show(src), show(server),
                    status.map_or_else(|| "-1".to_owned(), |s| s.to_string()),
                    host.clone().unwrap_or_default(),
                );
                let entry = parse_haproxy(&line).unwrap();
                prop_assert_eq!(entry.client, client);
                prop_assert_eq!(entry.frontend, frontend);
                prop_assert_eq!(entry.backend_src, src);
                prop_assert_eq!(entry.server, server);
                prop_assert_eq!(entry.status, status);
                prop_assert_eq!(entry.uri, Some(uri));
                prop_assert_eq!(entry.host, host.filter(|h| h != "-"));
            }

            #[test]
            fn parsers_never_panic(line in "\\PC{0,200}") {
                let _ = parse_haproxy(&line);
                let _ = parse_nginx(&line);
            }
        }
    }
}
