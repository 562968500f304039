//! Server addresses and the order `connect()` tries them in. Pure: no I/O.

use std::fmt;

/// The NATS client port when a URL names none.
pub const DEFAULT_PORT: u16 = 4222;

/// At most this many addresses are kept: the configured ones plus what the
/// cluster advertises (`connect_urls`). A cluster advertising more is
/// misconfigured or hostile; the extra ones are ignored.
const MAX_SERVERS: usize = 64;

/// One server's client address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses `nats://host:port`, `tls://host:port`, `host:port`,
/// `nats://host` or `[::1]:4222`. Whether the scheme asks for TLS is
/// [`is_tls_url`]'s business.
///
/// Credentials in the URL are refused with the reason, so secrets stay out
/// of endpoint names and logs.
pub fn parse_url(url: &str) -> Result<ServerAddr, String> {
    let rest = match url.split_once("://") {
        None => url,
        Some(("nats" | "tls", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "unknown scheme `{scheme}`; use nats://host:port (or tls://host:port for TLS)"
            ));
        }
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err("credentials in the URL are not accepted; use the `user`/`password` or `token` settings".into());
    }
    if rest.contains('/') || rest.contains('?') {
        return Err("a NATS URL has no path or query; use nats://host:port".into());
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address needs a closing `]`")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("expected `:port` after `]`")?,
                ),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("write an IPv6 address in brackets, e.g. nats://[::1]:4222".into());
            }
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err("the host is empty or contains spaces".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("`{p}` is not a port number (1-65535)")),
        },
    };
    Ok(ServerAddr {
        host: host.to_owned(),
        port,
    })
}

/// Whether `url`'s scheme is `tls://`, which asks for TLS even without a
/// `tls` table.
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("tls://")
}

/// The servers of one endpoint and where the next `connect()` starts.
///
/// `connect()` tries every server once: the configured ones first, then
/// the ones the cluster advertised, each part starting after the last one
/// that failed. Advertised addresses are the servers' own view and are
/// often unreachable from here (NAT, relays, another network namespace),
/// so they never go ahead of the addresses the user gave. A server is
/// counted as failed *before* it is tried and forgiven when its handshake
/// completes, so a connect that the caller's timeout cancels while one
/// server hangs starts at the next server next time.
#[derive(Debug)]
pub struct Servers {
    /// The configured servers, then the learned ones.
    list: Vec<ServerAddr>,
    /// How many of `list` were configured.
    configured: usize,
    next: usize,
}

impl Servers {
    /// The configured servers (at least one), in order.
    pub fn new(configured: Vec<ServerAddr>) -> Self {
        debug_assert!(!configured.is_empty(), "settings validation ensures one");
        let mut list = configured;
        list.truncate(MAX_SERVERS);
        Self {
            configured: list.len(),
            list,
            next: 0,
        }
    }

    /// Every server once, as (index, address): the configured ones, then
    /// the learned ones, each part starting at the next one when it is in
    /// that part.
    pub fn order(&self) -> Vec<(usize, ServerAddr)> {
        let (c, n) = (self.configured, self.list.len());
        let rotated = |from: usize, to: usize| {
            let start = if (from..to).contains(&self.next) {
                self.next
            } else {
                from
            };
            (0..to - from).map(move |k| from + (start - from + k) % (to - from))
        };
        rotated(0, c)
            .chain(rotated(c, n))
            .map(|i| (i, self.list[i].clone()))
            .collect()
    }

    /// Whether server `i` was learned from the cluster, not configured.
    pub fn is_learned(&self, i: usize) -> bool {
        i >= self.configured
    }

    /// About to try server `i`: until it succeeds, the next attempt starts
    /// after it.
    pub fn attempting(&mut self, i: usize) {
        self.failed(i);
    }

    /// Server `i` completed the handshake: keep using it.
    pub fn succeeded(&mut self, i: usize) {
        self.next = i % self.list.len();
    }

    /// A connection to server `i` broke: start after it next time.
    pub fn failed(&mut self, i: usize) {
        self.next = (i + 1) % self.list.len();
    }

    /// Adds the addresses a server advertised (`connect_urls`, `host:port`)
    /// that are not known yet. Unparseable ones are skipped.
    pub fn learn(&mut self, advertised: &[String]) {
        for url in advertised {
            if self.list.len() >= MAX_SERVERS {
                return;
            }
            if let Ok(addr) = parse_url(url)
                && !self.list.contains(&addr)
            {
                self.list.push(addr);
            }
        }
    }

    /// How many servers are known.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never true: there is always a configured server.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, port: u16) -> ServerAddr {
        ServerAddr {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn urls_parse() {
        assert_eq!(
            parse_url("nats://127.0.0.1:4223"),
            Ok(addr("127.0.0.1", 4223))
        );
        assert_eq!(parse_url("127.0.0.1:4223"), Ok(addr("127.0.0.1", 4223)));
        assert_eq!(
            parse_url("nats://nats.example"),
            Ok(addr("nats.example", 4222))
        );
        assert_eq!(
            parse_url("nats://nats.example:4222/"),
            Ok(addr("nats.example", 4222))
        );
        assert_eq!(parse_url("nats://[::1]:5222"), Ok(addr("::1", 5222)));
        assert_eq!(
            parse_url("tls://nats.example"),
            Ok(addr("nats.example", 4222))
        );
        assert_eq!(parse_url("tls://[::1]:5222"), Ok(addr("::1", 5222)));
        assert!(is_tls_url("tls://h:4222"));
        assert!(!is_tls_url("nats://h:4222") && !is_tls_url("h:4222"));
        assert_eq!(parse_url("[fe80::1]"), Ok(addr("fe80::1", 4222)));
        assert_eq!(addr("::1", 5222).to_string(), "[::1]:5222");
        assert_eq!(addr("h", 1).to_string(), "h:1");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("tls://u:p@h:4222", "credentials"),
            ("http://h", "scheme"),
            ("nats://u:p@h:4222", "credentials"),
            ("nats://h:4222/x", "path"),
            ("nats://h:0", "port"),
            ("nats://h:99999", "port"),
            ("nats://h:x", "port"),
            ("nats://:4222", "host"),
            ("nats://", "host"),
            ("::1:4222", "brackets"),
            ("[::1", "`]`"),
            ("[::1]x", "`:port`"),
        ] {
            let err = parse_url(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn rotation_starts_after_the_last_failure() {
        let mut s = Servers::new(vec![addr("a", 1), addr("b", 1), addr("c", 1)]);
        let hosts = |s: &Servers| {
            s.order()
                .into_iter()
                .map(|(_, a)| a.host)
                .collect::<String>()
        };
        assert_eq!(hosts(&s), "abc");
        s.attempting(0);
        assert_eq!(hosts(&s), "bca", "a cancelled attempt moves on");
        s.attempting(1);
        s.succeeded(1);
        assert_eq!(hosts(&s), "bca", "a working server is kept");
        s.failed(1);
        assert_eq!(hosts(&s), "cab");
        s.failed(2);
        assert_eq!(hosts(&s), "abc", "wraps around");
    }

    #[test]
    fn advertised_servers_are_added_once_and_bounded() {
        let mut s = Servers::new(vec![addr("127.0.0.1", 4222)]);
        s.learn(&[
            "127.0.0.1:4222".into(),
            "127.0.0.1:4223".into(),
            "bad:url:x".into(),
        ]);
        s.learn(&["127.0.0.1:4223".into()]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.order()[1].1, addr("127.0.0.1", 4223));
        let many: Vec<String> = (1..=200).map(|p| format!("10.0.0.1:{p}")).collect();
        s.learn(&many);
        assert_eq!(s.len(), MAX_SERVERS);
    }

    #[test]
    fn configured_servers_go_before_learned_ones() {
        let mut s = Servers::new(vec![addr("a", 1), addr("b", 1)]);
        s.learn(&["x:1".into(), "y:1".into()]);
        let hosts = |s: &Servers| {
            s.order()
                .into_iter()
                .map(|(_, a)| a.host)
                .collect::<String>()
        };
        assert_eq!(hosts(&s), "abxy");
        s.failed(0);
        assert_eq!(hosts(&s), "baxy");
        s.failed(1);
        assert_eq!(
            hosts(&s),
            "abxy",
            "past the configured ones: learned from the start"
        );
        s.succeeded(2);
        s.failed(2);
        assert_eq!(hosts(&s), "abyx", "the learned part rotates on its own");
        assert!(!s.is_learned(1) && s.is_learned(2));
    }
}
