//! The request fingerprint: what stays the same when a load balancer
//! forwards a request.
//!
//! SHA-256 over:
//!
//! ```text
//! "lbwitness-http1-v1\n" method " " request-target "\n"
//! "body\n" if the request has a body (by its framing fields)
//! then each kept field as  lowercase-name ":" value "\n",  sorted bytewise
//! ```
//!
//! The body's presence is hashed because the body prefix can't show it: an
//! empty prefix matches any other.
//!
//! - Sorted, not in order: nginx rebuilds the header block (its own fields
//!   first), HAProxy keeps the order; sorting makes both agree. Repeated
//!   fields are all kept.
//! - The version is left out: nginx speaks HTTP/1.0 upstream unless
//!   `proxy_http_version 1.1`, HAProxy always HTTP/1.1.
//! - Values are hashed raw (without surrounding whitespace): both load
//!   balancers pass them through unchanged.
//! - Left out: the hop-by-hop fields, those a load balancer adds or rewrites
//!   ([`DEFAULT_EXCLUDED`], every `X-Forwarded-*`), every field the
//!   `Connection` field names (hop-by-hop by RFC 9110 §7.6.1), and the
//!   configured extra names, and every name with a character other than a
//!   letter, digit or `-` (nginx drops those by default:
//!   `ignore_invalid_headers`, `underscores_in_headers off`). `Content-Length` is left out too: nginx with
//!   request buffering turns a chunked request into a Content-Length one
//!   (and may go the other way with `proxy_request_buffering off`), so the
//!   framing fields say nothing about the request's identity; the body prefix
//!   does. `Expect` goes as well: nginx answers `100-continue` itself and
//!   drops it.
//! - `Authorization`, `Cookie` and the like are kept: identical on both
//!   sides, they tell apart otherwise equal requests of different users. The
//!   hash does not reveal them, but a guessable secret could be confirmed
//!   from it, so the fingerprint is a matching key only, never written to a
//!   record.

use sha2::{Digest, Sha256};

use super::head::Field;

/// Field names (lowercase) always left out of the fingerprint, besides
/// every name starting with `x-forwarded-` and those `Connection` names.
pub const DEFAULT_EXCLUDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "forwarded",
    "via",
    "x-real-ip",
    "x-lbw",
    "content-length",
    "expect",
];

/// The fingerprint of a request with this method, target, body presence
/// and fields.
pub(super) fn fingerprint(
    method: &str,
    target: &str,
    has_body: bool,
    fields: &[Field],
    extra: &[String],
) -> [u8; 32] {
    let nominated: Vec<Vec<u8>> = fields
        .iter()
        .filter(|f| f.is("connection"))
        .flat_map(|f| f.value.split(|&b| b == b','))
        .map(|n| super::head::trim_ows(n).to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let mut lines: Vec<Vec<u8>> = fields
        .iter()
        .filter_map(|f| {
            let name = f.name.to_ascii_lowercase();
            let excluded = DEFAULT_EXCLUDED.iter().any(|e| e.as_bytes() == name)
                || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
                || name.starts_with(b"x-forwarded-")
                || nominated.contains(&name)
                || extra
                    .iter()
                    .any(|e| e.as_bytes().eq_ignore_ascii_case(&name));
            (!excluded).then(|| {
                let mut line = name;
                line.push(b':');
                line.extend_from_slice(f.value);
                line.push(b'\n');
                line
            })
        })
        .collect();
    lines.sort_unstable();
    let mut h = Sha256::new();
    h.update(b"lbwitness-http1-v1\n");
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(target.as_bytes());
    h.update(b"\n");
    if has_body {
        h.update(b"body\n");
    }
    for line in &lines {
        h.update(line);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(fields: &[(&str, &str)], extra: &[String]) -> [u8; 32] {
        let fields: Vec<Field> = fields
            .iter()
            .map(|(n, v)| Field {
                name: n.as_bytes(),
                value: v.as_bytes(),
            })
            .collect();
        fingerprint("GET", "/a", false, &fields, extra)
    }

    #[test]
    fn order_case_and_excluded_fields_do_not_matter() {
        let client = fp(
            &[
                ("Host", "lb"),
                ("Accept", "*/*"),
                ("User-Agent", "c"),
                ("Connection", "keep-alive"),
            ],
            &[],
        );
        let forwarded = fp(
            &[
                ("user-agent", "c"),
                ("host", "backend"),
                ("accept", "*/*"),
                ("x-forwarded-for", "192.0.2.1"),
                ("X-Real-IP", "192.0.2.1"),
                ("Via", "1.1 lb"),
                ("Content-Length", "0"),
            ],
            &[],
        );
        assert_eq!(client, forwarded);
    }

    #[test]
    fn values_methods_targets_and_kept_fields_matter() {
        let base = fp(&[("Accept", "*/*")], &[]);
        assert_ne!(base, fp(&[("Accept", "text/html")], &[]));
        assert_ne!(base, fp(&[("Accept", "*/*"), ("Cookie", "a=1")], &[]));
        assert_ne!(base, fp(&[("Accept", "*/*"), ("Accept", "*/*")], &[]));
        assert_ne!(
            base,
            fingerprint(
                "HEAD",
                "/a",
                false,
                &[Field {
                    name: b"Accept",
                    value: b"*/*"
                }],
                &[]
            )
        );
        assert_ne!(
            base,
            fingerprint(
                "GET",
                "/b",
                false,
                &[Field {
                    name: b"Accept",
                    value: b"*/*"
                }],
                &[]
            )
        );
    }

    #[test]
    fn names_nginx_drops_are_left_out() {
        let base = fp(&[("Accept", "*/*")], &[]);
        assert_eq!(
            base,
            fp(&[("Accept", "*/*"), ("X_Under", "1"), ("X.Dot", "2")], &[])
        );
    }

    #[test]
    fn the_body_presence_matters() {
        assert_ne!(
            fingerprint("POST", "/", true, &[], &[]),
            fingerprint("POST", "/", false, &[], &[])
        );
    }

    #[test]
    fn connection_named_and_configured_fields_are_left_out() {
        let base = fp(&[("Accept", "*/*")], &[]);
        assert_eq!(
            base,
            fp(
                &[
                    ("Accept", "*/*"),
                    ("Connection", "close, X-Hop"),
                    ("x-hop", "1")
                ],
                &[]
            )
        );
        assert_eq!(
            base,
            fp(
                &[("Accept", "*/*"), ("X-Site", "1")],
                &["x-SITE".to_string()]
            )
        );
        assert_ne!(base, fp(&[("Accept", "*/*"), ("X-Site", "1")], &[]));
    }

    #[test]
    fn a_name_value_split_cannot_collide() {
        // The line `name:value` is unambiguous because a parsed name never
        // holds a colon (it is not a token character) and a value never a
        // line end.
        assert!(!super::super::head::is_tchar(b':'));
        let parsed = super::super::head::fields(&[b"a: b:c"], 1).unwrap();
        assert_eq!(parsed[0].name, b"a");
        assert_eq!(
            fingerprint("GET", "/a", false, &parsed, &[]),
            fp(&[("a", "b:c")], &[])
        );
        assert_ne!(fp(&[("a", "b:c")], &[]), fp(&[("a", "bc")], &[]));
    }
}
