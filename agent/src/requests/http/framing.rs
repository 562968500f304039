//! How long a message's body is (RFC 9112 §6.3), strictly: every shape on
//! which two parsers could disagree is a [`LostReason::Smuggling`].

use super::head::{Field, trim_ows};
use super::{LostReason, Version};

/// How a body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    /// No body.
    None,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// What a response's body depends on in its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RequestKind {
    /// The request was `HEAD`: the response has no body.
    pub head: bool,
    /// The request was `CONNECT`: a 2xx response starts a tunnel.
    pub connect: bool,
}

/// The body of a request with these fields.
pub(super) fn request_body(fields: &[Field], version: Version) -> Result<BodyKind, LostReason> {
    match lengths(fields, version)? {
        (Some(_), Some(_)) => Err(both()),
        (None, Some(Coding::Chunked)) => Ok(BodyKind::Chunked),
        (None, Some(Coding::Other)) => Err(LostReason::Smuggling(
            "request Transfer-Encoding whose last coding is not chunked",
        )),
        (Some(0), None) | (None, None) => Ok(BodyKind::None),
        (Some(n), None) => Ok(BodyKind::Length(n)),
    }
}

/// The body of a final response with this status and these fields, to a
/// request of `req`'s kind. `Err(Upgraded)` when the connection leaves HTTP.
pub(super) fn response_body(
    status: u16,
    fields: &[Field],
    version: Version,
    req: RequestKind,
) -> Result<BodyKind, LostReason> {
    if status == 101 || (req.connect && (200..300).contains(&status)) {
        return Err(LostReason::Upgraded);
    }
    let lengths = lengths(fields, version)?;
    if req.head || status < 200 || status == 204 || status == 304 {
        return Ok(BodyKind::None);
    }
    match lengths {
        (Some(_), Some(_)) => Err(both()),
        (None, Some(Coding::Chunked)) => Ok(BodyKind::Chunked),
        (None, Some(Coding::Other)) | (None, None) => Ok(BodyKind::UntilClose),
        (Some(0), None) => Ok(BodyKind::None),
        (Some(n), None) => Ok(BodyKind::Length(n)),
    }
}

fn both() -> LostReason {
    LostReason::Smuggling("Content-Length with Transfer-Encoding")
}

/// The last transfer coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Chunked,
    Other,
}

/// The Content-Length (all values equal) and the last transfer coding.
fn lengths(
    fields: &[Field],
    version: Version,
) -> Result<(Option<u64>, Option<Coding>), LostReason> {
    let mut length = None;
    let mut codings = Vec::new();
    for f in fields {
        if f.is("content-length") {
            for v in f.value.split(|&b| b == b',') {
                let n = content_length(trim_ows(v))?;
                if length.is_some_and(|l| l != n) {
                    return Err(LostReason::Smuggling("differing Content-Length values"));
                }
                length = Some(n);
            }
        } else if f.is("transfer-encoding") {
            if version == Version::Http10 {
                return Err(LostReason::Smuggling("Transfer-Encoding in HTTP/1.0"));
            }
            for v in f.value.split(|&b| b == b',') {
                let name = v.split(|&b| b == b';').next().unwrap_or_default();
                let name = trim_ows(name);
                if !name.is_empty() {
                    codings.push(name);
                }
            }
        }
    }
    let coding = if fields.iter().any(|f| f.is("transfer-encoding")) {
        let chunked: Vec<bool> = codings
            .iter()
            .map(|c| c.eq_ignore_ascii_case(b"chunked"))
            .collect();
        match chunked.iter().filter(|&&c| c).count() {
            _ if chunked.is_empty() => {
                return Err(LostReason::Smuggling("empty Transfer-Encoding"));
            }
            0 => Some(Coding::Other),
            1 if chunked.last() == Some(&true) => Some(Coding::Chunked),
            1 => {
                return Err(LostReason::Smuggling(
                    "chunked is not the last transfer coding",
                ));
            }
            _ => return Err(LostReason::Smuggling("chunked applied more than once")),
        }
    } else {
        None
    };
    Ok((length, coding))
}

/// `1*DIGIT`, no sign, no space, no overflow.
fn content_length(v: &[u8]) -> Result<u64, LostReason> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(LostReason::Smuggling("invalid Content-Length"));
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(LostReason::Smuggling("Content-Length overflows"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f<'a>(name: &'a str, value: &'a str) -> Field<'a> {
        Field {
            name: name.as_bytes(),
            value: value.as_bytes(),
        }
    }

    const GET: RequestKind = RequestKind {
        head: false,
        connect: false,
    };

    #[test]
    fn request_lengths() {
        let v = Version::Http11;
        assert_eq!(request_body(&[], v), Ok(BodyKind::None));
        assert_eq!(
            request_body(&[f("Content-Length", "0")], v),
            Ok(BodyKind::None)
        );
        assert_eq!(
            request_body(&[f("content-length", "12")], v),
            Ok(BodyKind::Length(12))
        );
        assert_eq!(
            request_body(&[f("Content-Length", "5, 5")], v),
            Ok(BodyKind::Length(5))
        );
        assert_eq!(
            request_body(&[f("Content-Length", "5"), f("Content-Length", "5")], v),
            Ok(BodyKind::Length(5))
        );
        assert_eq!(
            request_body(&[f("Transfer-Encoding", "gzip, Chunked")], v),
            Ok(BodyKind::Chunked)
        );
        assert_eq!(
            request_body(
                &[
                    f("Transfer-Encoding", "gzip"),
                    f("Transfer-Encoding", "chunked")
                ],
                v
            ),
            Ok(BodyKind::Chunked)
        );
    }

    #[test]
    fn request_smuggling_shapes() {
        let v = Version::Http11;
        let cases: &[&[Field]] = &[
            &[f("Content-Length", "5"), f("Transfer-Encoding", "chunked")],
            &[f("Content-Length", "5"), f("Content-Length", "6")],
            &[f("Content-Length", "5, 6")],
            &[f("Content-Length", "-1")],
            &[f("Content-Length", "+5")],
            &[f("Content-Length", "5 5")],
            &[f("Content-Length", "0x10")],
            &[f("Content-Length", "")],
            &[f("Content-Length", "99999999999999999999")],
            &[f("Transfer-Encoding", "chunked, gzip")],
            &[f("Transfer-Encoding", "gzip")],
            &[f("Transfer-Encoding", "xchunked")],
            &[f("Transfer-Encoding", "chunked, chunked")],
            &[f("Transfer-Encoding", "")],
        ];
        for fields in cases {
            assert!(
                matches!(request_body(fields, v), Err(LostReason::Smuggling(_))),
                "{fields:?}"
            );
        }
        assert_eq!(
            request_body(&[f("Transfer-Encoding", "chunked")], Version::Http10),
            Err(LostReason::Smuggling("Transfer-Encoding in HTTP/1.0"))
        );
    }

    #[test]
    fn response_lengths() {
        let v = Version::Http11;
        let cl = [f("Content-Length", "7")];
        assert_eq!(response_body(200, &cl, v, GET), Ok(BodyKind::Length(7)));
        assert_eq!(response_body(200, &[], v, GET), Ok(BodyKind::UntilClose));
        assert_eq!(
            response_body(200, &[f("Transfer-Encoding", "gzip")], v, GET),
            Ok(BodyKind::UntilClose)
        );
        assert_eq!(
            response_body(200, &[f("Transfer-Encoding", "chunked")], v, GET),
            Ok(BodyKind::Chunked)
        );
        for status in [204, 304, 100, 103] {
            assert_eq!(
                response_body(status, &cl, v, GET),
                Ok(BodyKind::None),
                "{status}"
            );
        }
        let head = RequestKind {
            head: true,
            connect: false,
        };
        assert_eq!(response_body(200, &cl, v, head), Ok(BodyKind::None));
        let connect = RequestKind {
            head: false,
            connect: true,
        };
        assert_eq!(
            response_body(200, &[], v, connect),
            Err(LostReason::Upgraded)
        );
        assert_eq!(response_body(407, &cl, v, connect), Ok(BodyKind::Length(7)));
        assert_eq!(response_body(101, &[], v, GET), Err(LostReason::Upgraded));
        assert!(matches!(
            response_body(
                200,
                &[f("Content-Length", "1"), f("Transfer-Encoding", "chunked")],
                v,
                GET
            ),
            Err(LostReason::Smuggling(_))
        ));
    }
}
