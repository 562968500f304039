//! What this client sends (`CONNECT`, `SUB`, `PUB`, `HPUB`, `PONG`) and the
//! server's `INFO`. Pure: values in, bytes out.

use bytes::{BufMut as _, BytesMut};
use serde::{Deserialize, Serialize};

/// The fields of the server's `INFO` this client uses; the rest are ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server's name in a cluster (its id when unnamed).
    #[serde(default)]
    pub server_name: String,
    /// nats-server version.
    #[serde(default)]
    pub version: String,
    /// Whether the server takes `HPUB` (nats-server ≥ 2.2).
    #[serde(default)]
    pub headers: bool,
    /// Largest message the server accepts, headers included, in bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// The server only accepts TLS connections.
    #[serde(default)]
    pub tls_required: bool,
    /// The server takes TLS and plain connections (`allow_non_tls`,
    /// nats-server 2.10 and later).
    #[serde(default)]
    pub tls_available: bool,
    /// JetStream is enabled on this server.
    #[serde(default)]
    pub jetstream: bool,
    /// Other servers of the cluster clients may use, `host:port`.
    #[serde(default)]
    pub connect_urls: Vec<String>,
}

/// nats-server's default `max_payload`: 1 MiB.
fn default_max_payload() -> usize {
    1024 * 1024
}

impl ServerInfo {
    /// Parses the JSON of an `INFO`.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(json).map_err(|e| format!("unreadable INFO: {e}"))
    }
}

/// Credentials for `CONNECT`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Auth<'a> {
    /// User name (with `pass`).
    pub user: Option<&'a str>,
    /// Password.
    pub pass: Option<&'a str>,
    /// Token.
    pub auth_token: Option<&'a str>,
}

/// The JSON of `CONNECT`. `verbose: false` so the server does not `+OK`
/// every operation; `no_responders` so a publish nobody listens to gets a
/// 503 status at once instead of a silent timeout.
#[derive(Serialize)]
struct Connect<'a> {
    verbose: bool,
    pedantic: bool,
    tls_required: bool,
    headers: bool,
    no_responders: bool,
    echo: bool,
    lang: &'static str,
    version: &'static str,
    protocol: u8,
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_token: Option<&'a str>,
}

/// Appends `CONNECT {...}\r\n`; `tls` says the connection is encrypted.
pub fn connect(out: &mut BytesMut, auth: Auth<'_>, tls: bool) {
    let connect = Connect {
        verbose: false,
        pedantic: false,
        tls_required: tls,
        headers: true,
        no_responders: true,
        echo: false,
        lang: "rust",
        version: env!("CARGO_PKG_VERSION"),
        // 1: the server may send INFO updates (connect_urls) at any time.
        protocol: 1,
        name: "lbwitness",
        user: auth.user,
        pass: auth.pass,
        auth_token: auth.auth_token,
    };
    out.put_slice(b"CONNECT ");
    let json = serde_json::to_vec(&connect).expect("plain strings and bools serialise");
    out.put_slice(&json);
    out.put_slice(b"\r\n");
}

/// Appends `SUB <subject> <sid>\r\n`.
pub fn sub(out: &mut BytesMut, subject: &str, sid: u32) {
    out.put_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// Appends `PUB <subject> <reply> <#bytes>\r\n<payload>\r\n`.
pub fn publish(out: &mut BytesMut, subject: &str, reply: &str, payload: &[u8]) {
    out.put_slice(format!("PUB {subject} {reply} {}\r\n", payload.len()).as_bytes());
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// Appends `PING\r\n`.
pub fn ping(out: &mut BytesMut) {
    out.put_slice(b"PING\r\n");
}

/// Appends `PONG\r\n`.
pub fn pong(out: &mut BytesMut) {
    out.put_slice(b"PONG\r\n");
}

/// The header block carrying JetStream's dedup id, `<agent.id>:<sequence>`.
pub fn msg_id_headers(agent_id: &str, sequence: u64) -> String {
    format!("NATS/1.0\r\nNats-Msg-Id: {agent_id}:{sequence}\r\n\r\n")
}

/// Bytes of one record's message as the server counts it against
/// `max_payload`: headers plus payload.
pub fn message_size(agent_id: &str, sequence: u64, payload: usize) -> usize {
    msg_id_headers(agent_id, sequence).len() + payload
}

/// Appends one record as
/// `HPUB <subject> <reply> <#header bytes> <#total bytes>\r\n<headers><payload>\r\n`.
pub fn hpub_record(
    out: &mut BytesMut,
    subject: &str,
    reply: &str,
    agent_id: &str,
    sequence: u64,
    payload: &[u8],
) {
    let headers = msg_id_headers(agent_id, sequence);
    let total = headers.len() + payload.len();
    out.reserve(subject.len() + reply.len() + 32 + total);
    out.put_slice(format!("HPUB {subject} {reply} {} {total}\r\n", headers.len()).as_bytes());
    out.put_slice(headers.as_bytes());
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// Whether `text` can go into a header value: no CR or LF, which would end
/// the header early.
pub fn header_safe(text: &str) -> bool {
    !text.contains(['\r', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpub_frames_as_the_protocol_says() {
        let mut out = BytesMut::new();
        hpub_record(
            &mut out,
            "lbwitness.audit",
            "_INBOX.ab.7",
            "A",
            42,
            b"{\"x\":1}",
        );
        let headers = "NATS/1.0\r\nNats-Msg-Id: A:42\r\n\r\n";
        let want = format!(
            "HPUB lbwitness.audit _INBOX.ab.7 {} {}\r\n{headers}{{\"x\":1}}\r\n",
            headers.len(),
            headers.len() + 7
        );
        assert_eq!(&out[..], want.as_bytes());
        assert_eq!(message_size("A", 42, 7), headers.len() + 7);
    }

    #[test]
    fn connect_carries_only_configured_credentials() {
        let mut out = BytesMut::new();
        connect(&mut out, Auth::default(), false);
        let text = std::str::from_utf8(&out).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(text.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap();
        assert_eq!(json["verbose"], false);
        assert_eq!(json["headers"], true);
        assert_eq!(json["no_responders"], true);
        assert_eq!(json["name"], "lbwitness");
        assert_eq!(json["tls_required"], false);
        assert!(json.get("user").is_none() && json.get("auth_token").is_none());
        assert!(text.ends_with("}\r\n"));

        let mut out = BytesMut::new();
        let auth = Auth {
            user: Some("u\"1"),
            pass: Some("p"),
            auth_token: None,
        };
        connect(&mut out, auth, true);
        let json: serde_json::Value = serde_json::from_slice(&out[8..]).unwrap();
        assert_eq!(
            (json["user"].as_str(), json["pass"].as_str()),
            (Some("u\"1"), Some("p"))
        );
        assert_eq!(json["tls_required"], true);
    }

    #[test]
    fn other_ops() {
        let mut out = BytesMut::new();
        sub(&mut out, "_INBOX.ab.*", 1);
        publish(&mut out, "$JS.API.STREAM.INFO.S", "_INBOX.ab.info", b"");
        ping(&mut out);
        pong(&mut out);
        assert_eq!(
            &out[..],
            b"SUB _INBOX.ab.* 1\r\nPUB $JS.API.STREAM.INFO.S _INBOX.ab.info 0\r\n\r\nPING\r\nPONG\r\n"
        );
        assert!(header_safe("0b6e6f3c-6d2f-4a39-9c1e-2a4e1d6f0a11"));
        assert!(!header_safe("a\r\nX-Evil: 1"));
    }

    #[test]
    fn info_from_nats_server_2_9() {
        let info = br#"{"server_id":"NAU4","server_name":"n1","version":"2.9.10","proto":1,"headers":true,"max_payload":1048576,"jetstream":true,"client_id":4,"connect_urls":["127.0.0.1:4223"]}"#;
        let info = ServerInfo::parse(info).unwrap();
        assert_eq!(info.server_name, "n1");
        assert!(info.headers && info.jetstream && !info.tls_required && !info.tls_available);
        assert_eq!(info.connect_urls, ["127.0.0.1:4223"]);
        assert_eq!(ServerInfo::parse(b"{}").unwrap().max_payload, 1 << 20);
        let tls = br#"{"server_id":"NAU4","version":"2.9.10","headers":true,"tls_required":true,"tls_verify":true,"max_payload":1048576}"#;
        assert!(ServerInfo::parse(tls).unwrap().tls_required);
        let optional = br#"{"version":"2.10.22","tls_available":true}"#;
        let optional = ServerInfo::parse(optional).unwrap();
        assert!(optional.tls_available && !optional.tls_required);
        assert!(
            ServerInfo::parse(b"{nope")
                .unwrap_err()
                .contains("unreadable INFO")
        );
    }
}
