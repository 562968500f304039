//! What the server or async-nats said, turned into a [`SinkError`] that
//! tells the operator what to fix. Pure: no I/O.
//!
//! async-nats' errors are kinds with a source chain ("IO error" over an
//! `io::Error` over a `rustls::Error`); the chain is searched for the part
//! that says what to fix.

use std::{error::Error as _, io, time::Duration};

use async_nats::{ConnectError, ConnectErrorKind, jetstream::context::PublishErrorKind};

use super::jetstream::{Refusal, StreamProblem};
use crate::sink::{
    endpoint::SinkError,
    net::TlsClient,
    tls::{HandshakeContext, explain, rustls_error},
};

/// JetStream's error code for "stream not found".
const STREAM_NOT_FOUND: u32 = 10059;

/// A `-ERR` from the server. Credentials, permissions and size limits are
/// rejections the operator can fix; anything else is a protocol error.
pub fn server_error(endpoint: &str, text: &str) -> SinkError {
    let lower = text.to_ascii_lowercase();
    let hint = if lower.contains("authorization") || lower.contains("authentication") {
        "check `user`/`password` or `token` in the NATS sink settings"
    } else if lower.contains("permissions violation") {
        "allow this user to publish to the subject and to $JS.API.>, and to subscribe to _INBOX.>"
    } else if lower.contains("maximum payload") {
        "a record is larger than the server's max_payload; raise it in the server config"
    } else {
        return protocol(endpoint, format!("the server said -ERR '{text}'"));
    };
    rejected(endpoint, format!("the server said -ERR '{text}': {hint}"))
}

/// The server refused the NKey or JWT of `setting` (`nkey_seed_file` or
/// `creds_file`).
pub fn key_refused(endpoint: &str, setting: &str) -> SinkError {
    let hint = if setting == "creds_file" {
        "check that the server trusts the operator that signed the account, knows the account (its resolver), and that the user JWT has not expired or been revoked"
    } else {
        "check that the server's authorization lists the public key (U...) of this seed"
    };
    rejected(
        endpoint,
        format!("the server said -ERR 'Authorization Violation' for `{setting}`: {hint}"),
    )
}

/// Why async-nats could not connect. `tls` is the endpoint's TLS client for
/// this server, if TLS is configured; `limit` is async-nats' own timeout.
pub fn connect_error(
    endpoint: &str,
    err: &ConnectError,
    tls: Option<&TlsClient>,
    limit: Duration,
) -> SinkError {
    if let Some(tls_err) = rustls_in(err) {
        return match tls {
            Some(client) => SinkError::Tls {
                endpoint: endpoint.into(),
                message: explain(
                    tls_err,
                    &HandshakeContext {
                        ca_file: &client.ca_file,
                        server_name: &client.server_name_text,
                        client_cert: client.client_cert,
                    },
                ),
            },
            None => SinkError::Tls {
                endpoint: endpoint.into(),
                message: format!("{tls_err}; add a `tls` table to this endpoint"),
            },
        };
    }
    let io = io_in(err);
    match err.kind() {
        ConnectErrorKind::AuthorizationViolation => {
            server_error(endpoint, "Authorization Violation")
        }
        ConnectErrorKind::Authentication => rejected(
            endpoint,
            format!(
                "{}: the NKey seed or the .creds file could not sign the server's nonce; check `nkey_seed_file` or `creds_file`",
                chain(err)
            ),
        ),
        ConnectErrorKind::TimedOut => SinkError::Timeout {
            endpoint: endpoint.into(),
            timeout: limit,
            doing: "connecting (TCP, INFO, TLS, CONNECT and PONG)",
        },
        ConnectErrorKind::Tls => SinkError::Tls {
            endpoint: endpoint.into(),
            message: format!("{}; check the `tls` table", chain(err)),
        },
        ConnectErrorKind::Dns => SinkError::Connect {
            endpoint: endpoint.into(),
            source: io::Error::new(io::ErrorKind::NotFound, chain(err)),
        },
        _ => match io {
            Some(io) if is_connect_failure(io) => SinkError::Connect {
                endpoint: endpoint.into(),
                source: io::Error::new(io.kind(), io.to_string()),
            },
            Some(io) => SinkError::Io {
                endpoint: endpoint.into(),
                source: io::Error::new(io.kind(), io.to_string()),
            },
            None => protocol(endpoint, chain(err)),
        },
    }
}

/// Whether `err` means the TCP connection could not be made, as opposed to
/// one that broke after it was made.
pub fn is_tcp_failure(err: &ConnectError) -> bool {
    err.kind() == ConnectErrorKind::Dns || io_in(err).is_some_and(is_connect_failure)
}

fn is_connect_failure(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
    )
}

/// The first `io::Error` in `err`'s chain.
fn io_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        next = e.source();
    }
    None
}

/// The rustls error in `err`'s chain: a refused certificate, an alert.
fn rustls_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e.downcast_ref::<io::Error>().and_then(rustls_error) {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// `err` and its sources, `: `-separated.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// Why JetStream did not take record `sequence`: the publish or its ack
/// failed. `jetstream_enabled` is from the server's `INFO`.
pub fn publish_error(
    endpoint: &str,
    err: &async_nats::jetstream::context::PublishError,
    sequence: u64,
    subject: &str,
    jetstream_enabled: bool,
) -> SinkError {
    let refusal = match err.kind() {
        PublishErrorKind::StreamNotFound => Refusal::NoResponders,
        PublishErrorKind::TimedOut => {
            return protocol(
                endpoint,
                format!("no publish ack for record {sequence} in time"),
            );
        }
        PublishErrorKind::BrokenPipe => {
            return SinkError::Io {
                endpoint: endpoint.into(),
                source: io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!(
                        "the connection closed before JetStream acknowledged record {sequence}"
                    ),
                ),
            };
        }
        PublishErrorKind::MaxPayloadExceeded => {
            return rejected(
                endpoint,
                format!(
                    "record {sequence}: {}; raise max_payload in the server config",
                    chain(err)
                ),
            );
        }
        _ => match err.source() {
            Some(source) => match source.downcast_ref::<async_nats::jetstream::Error>() {
                Some(js) => {
                    let text = js.to_string();
                    // Its Display appends " (code …, error code …)".
                    let description = text
                        .rfind(" (code ")
                        .map_or(text.as_str(), |at| &text[..at]);
                    Refusal::JetStream {
                        code: u16::try_from(js.code()).unwrap_or(u16::MAX),
                        err_code: u32::try_from(js.error_code().0).unwrap_or(u32::MAX),
                        description: description.to_owned(),
                    }
                }
                None if source.is::<serde_json::Error>() => {
                    Refusal::Malformed(format!("not a JetStream publish ack ({source})"))
                }
                None => return protocol(endpoint, format!("record {sequence}: {}", chain(err))),
            },
            None => return protocol(endpoint, format!("record {sequence}: {err}")),
        },
    };
    refused(endpoint, &refusal, sequence, subject, jetstream_enabled)
}

/// JetStream did not store record `sequence` published to `subject`.
pub fn refused(
    endpoint: &str,
    refusal: &Refusal,
    sequence: u64,
    subject: &str,
    jetstream_enabled: bool,
) -> SinkError {
    match refusal {
        Refusal::NoResponders => rejected(
            endpoint,
            format!(
                "no JetStream stream listens on subject `{subject}`{}; create one, e.g. `nats stream add LBWITNESS --subjects '{subject}' --storage file --replicas 3 --dupe-window 2m`",
                if jetstream_enabled {
                    ""
                } else {
                    " (and JetStream is not enabled on this server)"
                }
            ),
        ),
        Refusal::Malformed(detail) => {
            protocol(endpoint, format!("reply to record {sequence}: {detail}"))
        }
        other => rejected(endpoint, format!("record {sequence}: {}", describe(other))),
    }
}

/// The configured `stream` cannot take records published to `subject`.
pub fn stream_problem(
    endpoint: &str,
    problem: &StreamProblem,
    stream: &str,
    subject: &str,
) -> SinkError {
    let detail = match problem {
        StreamProblem::DoesNotCapture { subjects } => format!(
            "stream `{stream}` captures {subjects:?}, not `{subject}`; add `{subject}` to the stream's subjects or set `subject` to one they match"
        ),
        StreamProblem::Refused(Refusal::NoResponders) => format!(
            "nobody answered $JS.API.STREAM.INFO.{stream}: is JetStream enabled on the server (nats-server -js, or a jetstream {{}} block), and may this user publish to $JS.API.>?"
        ),
        StreamProblem::Refused(Refusal::JetStream {
            err_code: STREAM_NOT_FOUND,
            ..
        }) => format!(
            "stream `{stream}` does not exist; create it, e.g. `nats stream add {stream} --subjects '{subject}' --storage file --replicas 3 --dupe-window 2m`"
        ),
        StreamProblem::Refused(r) => format!("stream `{stream}`: {}", describe(r)),
    };
    rejected(endpoint, detail)
}

/// A refusal in words.
fn describe(refusal: &Refusal) -> String {
    match refusal {
        Refusal::NoResponders => "nobody answered (status 503)".into(),
        Refusal::Status(status) => format!("JetStream answered status {status}"),
        Refusal::JetStream {
            code,
            err_code,
            description,
        } => format!("JetStream refused it: {description} (code {code}, err_code {err_code})"),
        Refusal::Malformed(detail) => detail.clone(),
    }
}

/// [`SinkError::Protocol`].
pub fn protocol(endpoint: &str, detail: String) -> SinkError {
    SinkError::Protocol {
        endpoint: endpoint.into(),
        detail,
    }
}

/// [`SinkError::Rejected`].
pub fn rejected(endpoint: &str, detail: String) -> SinkError {
    SinkError::Rejected {
        endpoint: endpoint.into(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "nats://127.0.0.1:4222";

    #[test]
    fn server_errors() {
        let auth = server_error(E, "Authorization Violation");
        assert!(matches!(auth, SinkError::Rejected { .. }));
        assert_eq!(
            auth.to_string(),
            "nats://127.0.0.1:4222: rejected: the server said -ERR 'Authorization Violation': check `user`/`password` or `token` in the NATS sink settings"
        );
        let perm = server_error(E, "Permissions Violation for Publish to \"x\"");
        assert!(perm.to_string().contains("allow this user to publish"));
        assert!(
            server_error(E, "Maximum Payload Violation")
                .to_string()
                .contains("raise it")
        );
        let other = server_error(E, "Stale Connection");
        assert!(matches!(other, SinkError::Protocol { .. }), "{other}");
    }

    #[test]
    fn refused_keys_name_their_setting() {
        let nkey = key_refused(E, "nkey_seed_file").to_string();
        assert!(
            nkey.contains("Authorization Violation' for `nkey_seed_file`")
                && nkey.contains("public key"),
            "{nkey}"
        );
        let creds = key_refused(E, "creds_file");
        assert!(matches!(creds, SinkError::Rejected { .. }));
        assert!(creds.to_string().contains("operator"), "{creds}");
    }

    #[test]
    fn refusals_name_the_record_and_the_fix() {
        let none = refused(E, &Refusal::NoResponders, 7, "lbwitness.audit", true).to_string();
        assert!(
            none.contains("no JetStream stream listens on subject `lbwitness.audit`; create one"),
            "{none}"
        );
        let off = refused(E, &Refusal::NoResponders, 7, "s", false).to_string();
        assert!(off.contains("JetStream is not enabled"), "{off}");
        let full = Refusal::JetStream {
            code: 503,
            err_code: 10077,
            description: "maximum messages exceeded".into(),
        };
        let full = refused(E, &full, 9, "s", true);
        assert_eq!(
            full.to_string(),
            "nats://127.0.0.1:4222: rejected: record 9: JetStream refused it: maximum messages exceeded (code 503, err_code 10077)"
        );
        let odd = refused(E, &Refusal::Malformed("not JSON".into()), 3, "s", true);
        assert!(matches!(odd, SinkError::Protocol { .. }));
        let status = refused(
            E,
            &Refusal::Status("408 Request Timeout".into()),
            3,
            "s",
            true,
        );
        assert!(status.to_string().contains("status 408 Request Timeout"));
    }

    #[test]
    fn stream_problems() {
        let missing = StreamProblem::Refused(Refusal::JetStream {
            code: 404,
            err_code: STREAM_NOT_FOUND,
            description: "stream not found".into(),
        });
        let text = stream_problem(E, &missing, "AUDIT", "lbwitness.audit").to_string();
        assert!(
            text.contains("stream `AUDIT` does not exist; create it"),
            "{text}"
        );
        let other = StreamProblem::DoesNotCapture {
            subjects: vec!["other.>".into()],
        };
        let text = stream_problem(E, &other, "AUDIT", "lbwitness.audit").to_string();
        assert!(
            text.contains("captures [\"other.>\"], not `lbwitness.audit`"),
            "{text}"
        );
        let off = StreamProblem::Refused(Refusal::NoResponders);
        let text = stream_problem(E, &off, "AUDIT", "s").to_string();
        assert!(text.contains("is JetStream enabled"), "{text}");
    }
}
