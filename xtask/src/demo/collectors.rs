//! The lab's collectors: two rsyslogd (RELP) that the `archive` group
//! balances over, and a NATS JetStream server whose stream the `security`
//! group publishes to. They run in the root namespace; the agent reaches
//! them through relays on the lb namespace's loopback (see
//! [`Relay`](integration_tests::delivery::Relay) for why).

use std::{
    io::{Read as _, Seek as _, SeekFrom},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use integration_tests::{
    collectors::{
        nats::{JsClient, NatsServer, StreamSpec},
        rsyslog::{Input, Rsyslog},
    },
    delivery::Relay,
    netns::NetNs,
};

/// The JetStream stream the `security` group publishes to.
pub const STREAM: &str = "LBW_SECURITY";
/// Its subject.
pub const SUBJECT: &str = "lbwitness.security";

/// The running collectors and their doors into the lb namespace.
pub struct Collectors {
    /// The two archive rsyslogd, `a` and `b`.
    pub archive: [Rsyslog; 2],
    /// The security stream's server.
    pub nats: NatsServer,
    relays: [Relay; 3],
}

impl Collectors {
    /// Starts every collector (each in a process group of its own, so
    /// Ctrl-C leaves them running until the agent's last records are in),
    /// creates the stream, and opens relays into `lb`.
    pub fn start(lb: &NetNs) -> Result<Self> {
        let archive = [
            Rsyslog::start_detached(&Input::Relp).context("starting rsyslogd a")?,
            Rsyslog::start_detached(&Input::Relp).context("starting rsyslogd b")?,
        ];
        let nats = NatsServer::start_detached().context("starting nats-server")?;
        nats.client()
            .create_stream(&StreamSpec {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                replicas: 1,
                duplicate_window: Duration::from_secs(120),
            })
            .context("creating the security stream")?;
        let relay = |addr: String| -> Result<Relay> {
            let upstream: SocketAddr = addr.parse().context("a collector address")?;
            Ok(Relay::start(lb, upstream))
        };
        let relays = [
            relay(archive[0].address())?,
            relay(archive[1].address())?,
            relay(format!("127.0.0.1:{}", nats.port()))?,
        ];
        Ok(Self {
            archive,
            nats,
            relays,
        })
    }

    /// The agent's `[[groups]]` and `[[routes]]`.
    pub fn config(&self) -> String {
        let [a, b, nats] = &self.relays;
        groups(a.addr, b.addr, nats.addr)
    }

    /// A client asking the NATS server what the stream stored.
    pub fn nats_client(&self) -> Result<JsClient> {
        JsClient::connect(self.nats.port(), None).context("connecting to nats-server")
    }

    /// The archive's stored files.
    pub fn archive_files(&self) -> [PathBuf; 2] {
        self.archive
            .each_ref()
            .map(|r| r.stored().path.to_path_buf())
    }
}

/// The delivery config: everything to `archive` (round-robin over the two
/// rsyslogd, RELP: acknowledged per message), and the trail's own records
/// (start, stop, checkpoints, gaps, watched-file changes), TCP resets and
/// SYNs to ports the load balancer does not serve (it serves TCP 8080)
/// also to `security` (JetStream, deduplicated by `Nats-Msg-Id`).
pub fn groups(a: SocketAddr, b: SocketAddr, nats: SocketAddr) -> String {
    format!(
        "[[groups]]
name = \"archive\"
kind = \"syslog\"
strategy = \"round_robin\"
batch_records = 16
[[groups.endpoints]]
address = \"{a}\"
transport = \"relp\"
[[groups.endpoints]]
address = \"{b}\"
transport = \"relp\"

[[groups]]
name = \"security\"
kind = \"nats\"
[[groups.endpoints]]
urls = [\"nats://{nats}\"]
subject = \"{SUBJECT}\"
stream = \"{STREAM}\"

[[routes]]
name = \"trail\"
groups = [\"archive\", \"security\"]
[routes.match]
\"event.dataset\" = \"lbwitness.audit\"

[[routes]]
name = \"resets\"
groups = [\"archive\", \"security\"]
[routes.match]
\"event.action\" = \"tcp-rst\"

[[routes]]
name = \"probes\"
groups = [\"archive\", \"security\"]
[routes.match]
\"event.action\" = \"tcp-syn\"
\"destination.port\" = [\"1-8079\", \"8081-65535\"]

[routing]
default = [\"archive\"]
"
    )
}

/// Follows a collector's stored file: the complete lines added since the
/// last call.
pub struct Tail {
    path: PathBuf,
    offset: u64,
    /// Complete lines seen so far.
    pub lines: u64,
}

impl Tail {
    /// Follows `path` from its start (it may not exist yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            offset: 0,
            lines: 0,
        }
    }

    /// The complete lines written since the last call; a line still being
    /// written (no newline yet) waits for the next call.
    pub fn poll(&mut self) -> Vec<String> {
        let mut bytes = Vec::new();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        let new = complete_lines(&bytes);
        self.offset += new.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        self.lines += new.len() as u64;
        new.into_iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }
}

/// The newline-terminated lines of `bytes`, without their newlines.
fn complete_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    bytes[..end].split(|&b| b == b'\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_terminated_lines_count() {
        assert!(complete_lines(b"").is_empty());
        assert!(complete_lines(b"partial").is_empty());
        assert_eq!(complete_lines(b"a\n"), [b"a"]);
        assert_eq!(complete_lines(b"a\n\nb\nc"), [&b"a"[..], b"", b"b"]);
    }

    #[test]
    fn tail_returns_each_line_once_and_waits_for_the_newline() {
        let dir = integration_tests::Scratch::path("tail");
        let mut tail = Tail::new(&dir.0);
        assert!(tail.poll().is_empty(), "no file yet");
        std::fs::write(&dir.0, "one\ntw").unwrap();
        assert_eq!(tail.poll(), ["one"]);
        std::fs::write(&dir.0, "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail.poll(), ["two", "three"]);
        assert!(tail.poll().is_empty());
        assert_eq!(tail.lines, 3);
    }

    #[test]
    fn the_config_names_every_relay_once() {
        let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let text = groups(addr(1001), addr(1002), addr(1003));
        for needle in [
            "\"127.0.0.1:1001\"",
            "\"127.0.0.1:1002\"",
            "nats://127.0.0.1:1003",
        ] {
            assert_eq!(text.matches(needle).count(), 1, "{needle} in {text}");
        }
    }
}
