//! A blocking NATS client for JetStream API requests over std TCP (or TLS
//! via rustls' blocking stream), written apart from the agent's client so
//! that what it reads back is the server's word, not the sink's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};

use crate::collectors::certs::CertKey;

/// A byte stream: TCP, or TLS over TCP.
trait Conn: Read + Write + Send {}

impl<T: Read + Write + Send> Conn for T {}

/// A rustls client configuration trusting `ca` and, with `client`,
/// presenting that certificate: how the test client reaches a TLS server.
pub fn tls_config(ca: &Path, client: Option<&CertKey>) -> anyhow::Result<Arc<ClientConfig>> {
    let certs = |path: &Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .with_context(|| format!("read certificates from {}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in certs(ca)? {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let key = PrivateKeyDer::from_pem_file(&pair.key)
                .with_context(|| format!("read the key {}", pair.key.display()))?;
            builder.with_client_auth_cert(certs(&pair.cert)?, key)?
        }
    };
    Ok(Arc::new(config))
}

/// A stream to create.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Its name.
    pub name: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// Replicas: 1 or 3.
    pub replicas: u32,
    /// How long JetStream remembers `Nats-Msg-Id`s.
    pub duplicate_window: Duration,
}

/// One message as the stream stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its sequence in the stream.
    pub seq: u64,
    /// Its `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
    /// Its payload.
    pub data: Vec<u8>,
}

/// A blocking NATS client for JetStream API requests.
pub struct JsClient {
    /// Reads are buffered; writes go straight to the inner stream.
    io: BufReader<Box<dyn Conn>>,
    inbox: String,
    next: u64,
}

/// A reply: header block (empty for `MSG`) and payload.
struct Reply {
    subject: String,
    headers: Vec<u8>,
    payload: Vec<u8>,
}

/// How long one request may wait for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl JsClient {
    /// Connects to `127.0.0.1:port`, optionally as `(user, password)`, and
    /// completes the handshake.
    pub fn connect(port: u16, auth: Option<(&str, &str)>) -> anyhow::Result<Self> {
        Self::connect_with(port, auth, None)
    }

    /// Connects to a TLS-only server at `127.0.0.1:port`: reads `INFO` in
    /// plain text, then completes the TLS handshake (expecting a certificate
    /// for `127.0.0.1`) and the NATS one over it.
    pub fn connect_tls(
        port: u16,
        auth: Option<(&str, &str)>,
        tls: &Arc<ClientConfig>,
    ) -> anyhow::Result<Self> {
        Self::connect_with(port, auth, Some(tls))
    }

    fn connect_with(
        port: u16,
        auth: Option<(&str, &str)>,
        tls: Option<&Arc<ClientConfig>>,
    ) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        let line = read_info_line(&tcp)?;
        if !line.starts_with("INFO ") {
            bail!("expected INFO, got {line:?}");
        }
        let stream: Box<dyn Conn> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = ServerName::try_from("127.0.0.1")?;
                let mut tls = StreamOwned::new(ClientConnection::new(config.clone(), name)?, tcp);
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .context("TLS handshake with the test server")?;
                }
                Box::new(tls)
            }
        };
        let mut client = Self {
            io: BufReader::new(stream),
            inbox: format!("_INBOX.test{}x{}", std::process::id(), crate::next_id()),
            next: 0,
        };
        let mut connect = json!({"verbose": false, "headers": true, "no_responders": true});
        if let Some((user, pass)) = auth {
            connect["user"] = json!(user);
            connect["pass"] = json!(pass);
        }
        let hello = format!("CONNECT {connect}\r\nSUB {}.* 1\r\nPING\r\n", client.inbox);
        client.write(hello.as_bytes())?;
        while client.read_reply()?.is_some() {}
        Ok(client)
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stream = self.io.get_mut();
        stream.write_all(bytes)?;
        // rustls holds what did not fit the socket until flushed.
        stream.flush()?;
        Ok(())
    }

    /// Reads one op: `Some(reply)` for a message, `None` for `PONG`.
    fn read_reply(&mut self) -> anyhow::Result<Option<Reply>> {
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line)? == 0 {
                bail!("the server closed the connection");
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.first().copied() {
                Some("PONG") => return Ok(None),
                Some("PING") => self.write(b"PONG\r\n")?,
                Some("INFO" | "+OK") => {}
                Some("MSG" | "HMSG") => {
                    let sizes: Vec<usize> = fields
                        [fields.len() - if fields[0] == "HMSG" { 2 } else { 1 }..]
                        .iter()
                        .map(|s| s.parse())
                        .collect::<Result<_, _>>()?;
                    let (hdr, total) = match sizes[..] {
                        [total] => (0, total),
                        [hdr, total] => (hdr, total),
                        _ => unreachable!("one or two sizes"),
                    };
                    let mut body = vec![0; total + 2];
                    self.io.read_exact(&mut body)?;
                    body.truncate(total);
                    let payload = body.split_off(hdr);
                    return Ok(Some(Reply {
                        subject: fields[1].to_owned(),
                        headers: body,
                        payload,
                    }));
                }
                _ => bail!("server said {line:?}"),
            }
        }
    }

    /// Sends `payload` to `subject` and returns the reply's JSON. A 503
    /// (nobody listens) is an error.
    pub fn request_json(&mut self, subject: &str, payload: &Value) -> anyhow::Result<Value> {
        let mut replies = self.pipeline(&[(subject.to_owned(), payload.to_string())])?;
        Ok(replies.remove(0))
    }

    /// Sends every request at once, then returns the replies in order.
    fn pipeline(&mut self, requests: &[(String, String)]) -> anyhow::Result<Vec<Value>> {
        let base = self.next;
        self.next += requests.len() as u64;
        let mut out = Vec::new();
        for (i, (subject, body)) in requests.iter().enumerate() {
            let reply = format!("{}.{}", self.inbox, base + i as u64);
            out.extend(format!("PUB {subject} {reply} {}\r\n{body}\r\n", body.len()).as_bytes());
        }
        self.write(&out)?;
        let mut replies = vec![Value::Null; requests.len()];
        let mut missing = requests.len();
        while missing > 0 {
            let Some(reply) = self.read_reply()? else {
                continue;
            };
            let token = reply
                .subject
                .rsplit('.')
                .next()
                .and_then(|t| t.parse::<u64>().ok());
            let Some(i) = token.and_then(|t| t.checked_sub(base)).map(|t| t as usize) else {
                continue;
            };
            if i >= requests.len() || !replies[i].is_null() {
                continue;
            }
            if reply.headers.starts_with(b"NATS/1.0 503") {
                bail!("no responders for {}: is JetStream up?", requests[i].0);
            }
            replies[i] = serde_json::from_slice(&reply.payload)
                .with_context(|| format!("reply to {}", requests[i].0))?;
            missing -= 1;
        }
        Ok(replies)
    }

    /// Creates a file-backed stream.
    pub fn create_stream(&mut self, spec: &StreamSpec) -> anyhow::Result<()> {
        let config = json!({
            "name": spec.name,
            "subjects": spec.subjects,
            "storage": "file",
            "retention": "limits",
            "discard": "old",
            "num_replicas": spec.replicas,
            "duplicate_window": spec.duplicate_window.as_nanos() as u64,
        });
        let reply = self.request_json(&format!("$JS.API.STREAM.CREATE.{}", spec.name), &config)?;
        if let Some(error) = reply.get("error") {
            bail!("creating stream {}: {error}", spec.name);
        }
        Ok(())
    }

    /// The stream's info (config, state, cluster); an error if JetStream
    /// says so (e.g. no leader yet).
    pub fn stream_info(&mut self, stream: &str) -> anyhow::Result<Value> {
        let info = self.request_json(&format!("$JS.API.STREAM.INFO.{stream}"), &json!({}))?;
        if let Some(error) = info.get("error") {
            bail!("stream {stream}: {error}");
        }
        Ok(info)
    }

    /// Every message the stream holds, in stream order.
    pub fn stored_messages(&mut self, stream: &str) -> anyhow::Result<Vec<StoredMessage>> {
        self.stored_messages_from(stream, 0)
    }

    /// The messages the stream holds from stream sequence `from` on, in
    /// stream order: to follow a stream, pass one past the last seen.
    pub fn stored_messages_from(
        &mut self,
        stream: &str,
        from: u64,
    ) -> anyhow::Result<Vec<StoredMessage>> {
        let info = self.stream_info(stream)?;
        let state = &info["state"];
        let (first, last) = (state["first_seq"].as_u64(), state["last_seq"].as_u64());
        let (Some(first), Some(last)) = (first, last) else {
            bail!("no state in {info}")
        };
        let mut messages = Vec::new();
        let api = format!("$JS.API.STREAM.MSG.GET.{stream}");
        let seqs: Vec<u64> = if state["messages"].as_u64() == Some(0) {
            Vec::new()
        } else {
            (first.max(from)..=last).collect()
        };
        for window in seqs.chunks(256) {
            let requests: Vec<(String, String)> = window
                .iter()
                .map(|s| (api.clone(), json!({"seq": s}).to_string()))
                .collect();
            for (seq, reply) in window.iter().zip(self.pipeline(&requests)?) {
                if reply["error"]["err_code"] == 10037 {
                    continue; // deleted: no message at this sequence
                }
                let message = &reply["message"];
                let data = base64(message["data"].as_str().unwrap_or(""))?;
                let headers = base64(message["hdrs"].as_str().unwrap_or(""))?;
                let msg_id = String::from_utf8_lossy(&headers)
                    .lines()
                    .find_map(|l| l.strip_prefix("Nats-Msg-Id:").map(|v| v.trim().to_owned()));
                if message["seq"].as_u64() != Some(*seq) {
                    bail!("asked for message {seq}, got {reply}");
                }
                messages.push(StoredMessage {
                    seq: *seq,
                    msg_id,
                    data,
                });
            }
        }
        Ok(messages)
    }
}

/// The `INFO` line, read a byte at a time: nothing after it may be taken
/// from the socket, since with TLS the server's next bytes are the
/// handshake's.
pub fn read_info_line(mut tcp: &TcpStream) -> anyhow::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        if tcp.read(&mut byte)? == 0 {
            bail!("the server closed the connection before INFO");
        }
        line.push(byte[0]);
        if line.len() > 64 * 1024 {
            bail!("no INFO line in 64 KiB");
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Decodes standard base64 (with padding), as JetStream's API writes it.
fn base64(text: &str) -> anyhow::Result<Vec<u8>> {
    let value = |c: u8| -> anyhow::Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {c:?}"),
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut bits = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            bits |= value(*c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64("eyJ4IjoxfQ==").unwrap(), b"{\"x\":1}");
        assert_eq!(super::base64("TkFUUy8xLjA=").unwrap(), b"NATS/1.0");
        assert_eq!(super::base64("YWJj").unwrap(), b"abc");
        assert_eq!(super::base64("").unwrap(), b"");
        assert!(super::base64("a*").is_err());
    }
}
