//! JetStream's answers in our terms: why a publish or an API request was
//! refused, and whether the configured stream captures our subject. Pure:
//! a reply's status and payload in, a verdict out. async-nats itself parses
//! publish acks; this is what it leaves to the caller.

use serde::Deserialize;

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

/// Status first (a 503 has no body), then JetStream's JSON `error`.
fn refusal(status: Option<&str>, error: Option<ApiError>) -> Option<Refusal> {
    if let Some(status) = status {
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

/// Checks the reply to `$JS.API.STREAM.INFO.<stream>` (its status line,
/// e.g. `408 Request Timeout`, if it has one, and its payload): the stream
/// exists and one of its subjects matches `subject`.
pub fn check_stream_info(
    status: Option<&str>,
    payload: &[u8],
    subject: &str,
) -> Result<(), StreamProblem> {
    if let Some(r) = refusal(status, None) {
        return Err(StreamProblem::Refused(r));
    }
    let json: StreamInfoJson = serde_json::from_slice(payload).map_err(|e| {
        StreamProblem::Refused(Refusal::Malformed(format!(
            "not a JetStream stream info ({e})"
        )))
    })?;
    if let Some(r) = refusal(None, json.error) {
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
    use super::*;

    #[test]
    fn stream_info() {
        let info = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{"name":"S","subjects":["lbw.\u003e","x.*"]},"state":{}}"#;
        assert_eq!(check_stream_info(None, info, "lbw.audit"), Ok(()));
        assert_eq!(check_stream_info(None, info, "x.y"), Ok(()));
        assert_eq!(
            check_stream_info(None, info, "lbwitness.audit"),
            Err(StreamProblem::DoesNotCapture {
                subjects: vec!["lbw.>".into(), "x.*".into()]
            })
        );
        let unnamed = br#"{"config":{"name":"S"}}"#;
        assert_eq!(check_stream_info(None, unnamed, "S"), Ok(()));
        let missing = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0}"#;
        assert!(matches!(
            check_stream_info(None, missing, "S"),
            Err(StreamProblem::Refused(Refusal::JetStream {
                err_code: 10059,
                ..
            }))
        ));
        assert_eq!(
            check_stream_info(Some("503"), b"", "S"),
            Err(StreamProblem::Refused(Refusal::NoResponders))
        );
        assert_eq!(
            check_stream_info(Some("408 Request Timeout"), b"", "S"),
            Err(StreamProblem::Refused(Refusal::Status(
                "408 Request Timeout".into()
            )))
        );
        assert!(matches!(
            check_stream_info(None, b"nope", "S"),
            Err(StreamProblem::Refused(Refusal::Malformed(_)))
        ));
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
