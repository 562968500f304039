//! What of a request a record may show: the path (truncated), the query only
//! as configured, and never the value of a secret field.

/// How much of a query string a record keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryMode {
    /// Drop the query (the default: queries carry tokens and personal data).
    #[default]
    None,
    /// Keep only the parameter names: `a=1&b=2` becomes `a=&b=`.
    Keys,
    /// Keep the whole query.
    All,
}

/// Fields whose values no record ever shows, whatever the configuration.
const SECRET: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Whether a field's value is a secret that must never reach a record
/// (`Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`).
pub fn is_secret_header(name: &[u8]) -> bool {
    SECRET
        .iter()
        .any(|s| s.as_bytes().eq_ignore_ascii_case(name))
}

/// The path of a raw request-target, at most `max_len` bytes (cut on a
/// character boundary), and its query as `query` says (also at most
/// `max_len` bytes; `None` when empty or dropped).
///
/// - origin-form `/p?q` gives `/p`;
/// - absolute-form `http://host:80/p?q` gives `/p` (`/` when it has no path);
/// - asterisk-form `*` gives `*`;
/// - authority-form `host:443` (CONNECT) is returned as it is, with no query.
///
/// A fragment (`#...`), which clients must not send, is dropped.
pub fn url_path(target: &str, max_len: usize, query: QueryMode) -> (String, Option<String>) {
    let target = target.split('#').next().unwrap_or_default();
    let rest = match target.find("://") {
        Some(i) if !target.starts_with('/') && is_scheme(&target[..i]) => {
            let after = &target[i + 3..];
            match after.find(['/', '?']) {
                Some(j) => &after[j..],
                None => "",
            }
        }
        _ if target.starts_with('/') || target == "*" => target,
        _ => return (truncate(target, max_len), None),
    };
    let (path, q) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    let q = q.filter(|q| !q.is_empty()).and_then(|q| match query {
        QueryMode::None => None,
        QueryMode::Keys => Some(truncate(&keys(q), max_len)),
        QueryMode::All => Some(truncate(q, max_len)),
    });
    (truncate(path, max_len), q)
}

fn is_scheme(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// `a=1&b&c=2` gives `a=&b&c=`.
fn keys(q: &str) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) => format!("{k}="),
            None => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn truncate(s: &str, max_len: usize) -> String {
    let mut end = max_len.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_modes() {
        let t = "/cart?id=7&token=s3cr3t&flag";
        assert_eq!(url_path(t, 100, QueryMode::None), ("/cart".into(), None));
        assert_eq!(
            url_path(t, 100, QueryMode::Keys),
            ("/cart".into(), Some("id=&token=&flag".into()))
        );
        assert_eq!(
            url_path(t, 100, QueryMode::All),
            ("/cart".into(), Some("id=7&token=s3cr3t&flag".into()))
        );
        assert_eq!(url_path("/a?", 100, QueryMode::All), ("/a".into(), None));
    }

    #[test]
    fn target_forms() {
        assert_eq!(url_path("*", 10, QueryMode::All), ("*".into(), None));
        assert_eq!(
            url_path("http://h:8080/p/q?x=1", 100, QueryMode::Keys),
            ("/p/q".into(), Some("x=".into()))
        );
        assert_eq!(
            url_path("HTTPS://h", 100, QueryMode::All),
            ("/".into(), None)
        );
        assert_eq!(
            url_path("http://h?x=1", 100, QueryMode::All),
            ("/".into(), Some("x=1".into()))
        );
        assert_eq!(
            url_path("example.com:443", 100, QueryMode::All),
            ("example.com:443".into(), None)
        );
        assert_eq!(
            url_path("/a#frag", 100, QueryMode::All),
            ("/a".into(), None)
        );
        assert_eq!(
            url_path("/r?u=http://x/y", 100, QueryMode::None),
            ("/r".into(), None)
        );
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(url_path("/abcdef", 3, QueryMode::None).0, "/ab");
        assert_eq!(url_path("/caf\u{e9}", 5, QueryMode::None).0, "/caf");
        assert_eq!(url_path("/caf\u{e9}", 6, QueryMode::None).0, "/caf\u{e9}");
        assert_eq!(
            url_path("/a?\u{e9}\u{e9}", 100, QueryMode::All).1,
            Some("\u{e9}\u{e9}".into())
        );
        assert_eq!(
            url_path("/a?\u{e9}\u{e9}", 3, QueryMode::All).1,
            Some("\u{e9}".into())
        );
        assert_eq!(url_path("/a", 0, QueryMode::None).0, "");
    }

    #[test]
    fn secret_fields() {
        for n in [
            "Authorization",
            "proxy-authorization",
            "COOKIE",
            "Set-Cookie",
        ] {
            assert!(is_secret_header(n.as_bytes()), "{n}");
        }
        assert!(!is_secret_header(b"Cookies"));
        assert!(!is_secret_header(b"User-Agent"));
    }
}
