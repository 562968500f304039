//! JetStream's answers: publish acks and stream info. Pure: a reply message
//! in, a verdict out.

use serde::Deserialize;

use super::parse::Message;

/// A record JetStream stored (or had already stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubAck {
    /// The stream that holds it.
    pub stream: String,
    /// Its sequence in the stream.
    pub seq: u64,
    /// JetStream had it already (same `Nats-Msg-Id` within the stream's
    /// duplicate window) and dropped this copy: still success.
    pub duplicate: bool,
}

/// Why a reply is not a success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Status 503: nothing subscribes to the subject, so no stream captures
    /// it (or JetStream is not enabled).
    NoResponders,
    /// Another status, e.g. `408 Request Timeout`.
    Status(String),
    /// JetStream's own error.
    JetStream {
        /// HTTP-like code, e.g. 503 or 404.
        code: u16,
        /// JetStream's error code, e.g. 10059 for "stream not found".
        err_code: u32,
        /// Its text.
        description: String,
    },
    /// Not a JetStream reply at all.
    Malformed(String),
}

/// `{"error": {...}}` in any JetStream API reply.
#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct AckJson {
    error: Option<ApiError>,
    stream: Option<String>,
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
}

/// The status of a reply's header block (`NATS/1.0 503`), if it has one.
fn status(msg: &Message) -> Option<&str> {
    let headers = std::str::from_utf8(msg.headers.as_deref()?).ok()?;
    let first = headers.lines().next()?;
    let status = first.strip_prefix("NATS/1.0")?.trim();
    (!status.is_empty()).then_some(status)
}

/// Status first (a 503 has no body), then JetStream's JSON `error`.
fn refusal(msg: &Message, error: Option<ApiError>) -> Option<Refusal> {
    if let Some(status) = status(msg) {
        return Some(if status.starts_with("503") {
            Refusal::NoResponders
        } else {
            Refusal::Status(status.to_owned())
        });
    }
    error.map(|e| Refusal::JetStream {
        code: e.code,
        err_code: e.err_code,
        description: e.description,
    })
}

/// Classifies the reply to one published record.
pub fn pub_ack(msg: &Message) -> Result<PubAck, Refusal> {
    if let Some(r) = refusal(msg, None) {
        return Err(r);
    }
    let json: AckJson = serde_json::from_slice(&msg.payload)
        .map_err(|e| Refusal::Malformed(format!("not a JetStream publish ack ({e})")))?;
    if let Some(r) = refusal(msg, json.error) {
        return Err(r);
    }
    match (json.stream, json.seq) {
        (Some(stream), Some(seq)) => Ok(PubAck {
            stream,
            seq,
            duplicate: json.duplicate,
        }),
        _ => Err(Refusal::Malformed(
            "a publish ack without stream or seq".into(),
        )),
    }
}

#[derive(Deserialize)]
struct StreamInfoJson {
    error: Option<ApiError>,
    config: Option<StreamConfigJson>,
}

#[derive(Deserialize)]
struct StreamConfigJson {
    name: String,
    #[serde(default)]
    subjects: Vec<String>,
}

/// Why a configured stream cannot take the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamProblem {
    /// JetStream did not answer or refused the request.
    Refused(Refusal),
    /// The stream exists but its subjects do not cover ours.
    DoesNotCapture {
        /// The stream's subjects.
        subjects: Vec<String>,
    },
}

/// Checks the reply to `$JS.API.STREAM.INFO.<stream>`: the stream exists
/// and one of its subjects matches `subject`.
pub fn check_stream_info(msg: &Message, subject: &str) -> Result<(), StreamProblem> {
    if let Some(r) = refusal(msg, None) {
        return Err(StreamProblem::Refused(r));
    }
    let json: StreamInfoJson = serde_json::from_slice(&msg.payload).map_err(|e| {
        StreamProblem::Refused(Refusal::Malformed(format!(
            "not a JetStream stream info ({e})"
        )))
    })?;
    if let Some(r) = refusal(msg, json.error) {
        return Err(StreamProblem::Refused(r));
    }
    let config = json.config.ok_or_else(|| {
        StreamProblem::Refused(Refusal::Malformed("a stream info without config".into()))
    })?;
    // A stream created without subjects captures its own name.
    let subjects = if config.subjects.is_empty() {
        vec![config.name]
    } else {
        config.subjects
    };
    if subjects
        .iter()
        .any(|filter| subject_matches(filter, subject))
    {
        Ok(())
    } else {
        Err(StreamProblem::DoesNotCapture { subjects })
    }
}

/// Whether the NATS subject filter `filter` (`*` matches one token, a final
/// `>` one or more) matches the literal `subject`.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut want = filter.split('.');
    let mut got = subject.split('.');
    loop {
        match (want.next(), got.next()) {
            (Some(">"), Some(_)) => return want.next().is_none(),
            (Some("*"), Some(_)) => {}
            (Some(w), Some(g)) if w == g => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn reply(headers: Option<&'static [u8]>, payload: &'static [u8]) -> Message {
        Message {
            subject: "_INBOX.x.1".into(),
            sid: "1".into(),
            reply: None,
            headers: headers.map(Bytes::from_static),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn acks_as_nats_server_2_9_writes_them() {
        let ack = pub_ack(&reply(None, br#"{"stream":"S", "seq":1}"#)).unwrap();
        assert_eq!(
            (ack.stream.as_str(), ack.seq, ack.duplicate),
            ("S", 1, false)
        );
        let dup = pub_ack(&reply(
            None,
            br#"{"stream":"S", "seq":1,"duplicate": true}"#,
        ));
        assert!(dup.unwrap().duplicate);
    }

    #[test]
    fn refusals() {
        let no_responders = reply(Some(b"NATS/1.0 503\r\n\r\n"), b"");
        assert_eq!(pub_ack(&no_responders), Err(Refusal::NoResponders));
        let timeout = reply(Some(b"NATS/1.0 408 Request Timeout\r\n\r\n"), b"");
        assert_eq!(
            pub_ack(&timeout),
            Err(Refusal::Status("408 Request Timeout".into()))
        );
        let full =
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#;
        assert_eq!(
            pub_ack(&reply(None, full)),
            Err(Refusal::JetStream {
                code: 503,
                err_code: 10077,
                description: "maximum messages exceeded".into()
            })
        );
        for bad in [&b""[..], b"nope", b"{}", br#"{"stream":"S"}"#, b"[1]"] {
            let got = pub_ack(&Message {
                payload: Bytes::copy_from_slice(bad),
                ..reply(None, b"")
            });
            assert!(
                matches!(got, Err(Refusal::Malformed(_))),
                "{bad:?}: {got:?}"
            );
        }
        // Headers without a status (plain headers on a reply) are not a refusal.
        let plain = reply(
            Some(b"NATS/1.0\r\nX: y\r\n\r\n"),
            br#"{"stream":"S","seq":2}"#,
        );
        assert_eq!(pub_ack(&plain).unwrap().seq, 2);
    }

    #[test]
    fn stream_info() {
        let info = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{"name":"S","subjects":["lbw.\u003e","x.*"]},"state":{}}"#;
        assert_eq!(check_stream_info(&reply(None, info), "lbw.audit"), Ok(()));
        assert_eq!(check_stream_info(&reply(None, info), "x.y"), Ok(()));
        assert_eq!(
            check_stream_info(&reply(None, info), "lbwitness.audit"),
            Err(StreamProblem::DoesNotCapture {
                subjects: vec!["lbw.>".into(), "x.*".into()]
            })
        );
        let unnamed = br#"{"config":{"name":"S"}}"#;
        assert_eq!(check_stream_info(&reply(None, unnamed), "S"), Ok(()));
        let missing = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0}"#;
        assert!(matches!(
            check_stream_info(&reply(None, missing), "S"),
            Err(StreamProblem::Refused(Refusal::JetStream {
                err_code: 10059,
                ..
            }))
        ));
        assert_eq!(
            check_stream_info(&reply(Some(b"NATS/1.0 503\r\n\r\n"), b""), "S"),
            Err(StreamProblem::Refused(Refusal::NoResponders))
        );
    }

    #[test]
    fn subject_filters() {
        for (filter, subject, want) in [
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            (">", "a", true),
            ("*.b.*", "a.b.c", true),
            ("a.b", "a.b.c", false),
            ("a.b.c", "a.b", false),
            ("a.>.c", "a.b.c", false),
        ] {
            assert_eq!(
                subject_matches(filter, subject),
                want,
                "{filter} ~ {subject}"
            );
        }
    }
}
