//! Parsing a head (start line and fields) that has been gathered whole, or
//! the complete lines of one that was cut.
//!
//! Lines end with CRLF or a bare LF (RFC 9112 §2.2). A CR anywhere else, a
//! NUL anywhere, obs-fold, whitespace before a colon and control characters
//! in a value are malformed: each is a known way to make two parsers see
//! different messages.

use super::{LostReason, Version};

/// One field line, borrowed from the head: the name as sent, the value with
/// surrounding whitespace removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Field<'_> {
    /// Whether the field's name is `name` (given in lowercase).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A parsed request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RequestLine<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub version: Version,
}

/// A parsed status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StatusLine {
    pub status: u16,
    pub version: Version,
}

/// The lines of `head` without their line ends, up to (not including) the
/// empty line that ends a head or the last line end (a cut head's partial
/// last line is left out).
pub(super) fn lines(head: &[u8]) -> Result<Vec<&[u8]>, LostReason> {
    if head.contains(&0) {
        return Err(LostReason::Malformed("NUL byte in a head"));
    }
    let mut out = Vec::new();
    let mut rest = head;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let raw = &rest[..lf];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.contains(&b'\r') {
            return Err(LostReason::Malformed("bare CR in a head"));
        }
        if line.is_empty() {
            break;
        }
        out.push(line);
        rest = &rest[lf + 1..];
    }
    Ok(out)
}

/// Parses `method SP request-target SP HTTP-version`.
pub(super) fn request_line(line: &[u8]) -> Result<RequestLine<'_>, LostReason> {
    let line = std::str::from_utf8(line)
        .map_err(|_| LostReason::Malformed("request line is not UTF-8"))?;
    let mut parts = line.splitn(3, ' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(LostReason::Malformed("request line without three parts"));
    };
    if method == "PRI" && target == "*" && version == "HTTP/2.0" {
        return Err(LostReason::Http2Preface);
    }
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(LostReason::Malformed("invalid method"));
    }
    if target.is_empty() || !target.chars().all(|c| !c.is_control() && c != ' ') {
        return Err(LostReason::Malformed("invalid request-target"));
    }
    Ok(RequestLine {
        method,
        target,
        version: version_of(version.as_bytes())?,
    })
}

/// Parses `HTTP-version SP 3DIGIT [SP reason-phrase]`. The reason's space
/// may be missing, as some servers send `HTTP/1.1 200`.
pub(super) fn status_line(line: &[u8]) -> Result<StatusLine, LostReason> {
    let (version, rest) = line
        .split_at_checked(8)
        .ok_or(LostReason::Malformed("status line too short"))?;
    let version = version_of(version)?;
    let (sp, rest) = rest
        .split_first()
        .ok_or(LostReason::Malformed("status line too short"))?;
    let (code, reason) = rest
        .split_at_checked(3)
        .ok_or(LostReason::Malformed("status line too short"))?;
    if *sp != b' ' || !code.iter().all(u8::is_ascii_digit) {
        return Err(LostReason::Malformed("invalid status code"));
    }
    if !reason.is_empty() && reason[0] != b' ' {
        return Err(LostReason::Malformed("invalid status code"));
    }
    if reason.iter().any(|&b| is_ctl(b)) {
        return Err(LostReason::Malformed("control character in reason phrase"));
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if status < 100 {
        return Err(LostReason::Malformed("status code below 100"));
    }
    Ok(StatusLine { status, version })
}

/// Parses field lines; more than `max` of them is too long.
pub(super) fn fields<'a>(lines: &[&'a [u8]], max: usize) -> Result<Vec<Field<'a>>, LostReason> {
    if lines.len() > max {
        return Err(LostReason::TooLong);
    }
    lines.iter().map(|line| field(line)).collect()
}

fn field(line: &[u8]) -> Result<Field<'_>, LostReason> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(LostReason::Malformed(
            "obs-fold (a line starting with whitespace)",
        ));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(LostReason::Malformed("field line without a colon"))?;
    let name = &line[..colon];
    if matches!(name.last(), Some(b' ' | b'\t')) {
        return Err(LostReason::Malformed("whitespace before a field's colon"));
    }
    if name.is_empty() || !name.iter().copied().all(is_tchar) {
        return Err(LostReason::Malformed("invalid field name"));
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.iter().any(|&b| is_ctl(b)) {
        return Err(LostReason::Malformed("control character in a field value"));
    }
    Ok(Field { name, value })
}

fn version_of(v: &[u8]) -> Result<Version, LostReason> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        _ => Err(LostReason::Malformed("unsupported HTTP version")),
    }
}

/// Removes optional whitespace (SP, HTAB) at both ends.
pub(super) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A token character (RFC 9110 §5.6.2).
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A control character other than HTAB.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_accept_crlf_and_bare_lf_and_stop_at_the_empty_line() {
        let l = lines(b"GET / HTTP/1.1\r\nA: 1\nB: 2\r\n\r\nbody\r\n").unwrap();
        assert_eq!(l, vec![&b"GET / HTTP/1.1"[..], b"A: 1", b"B: 2"]);
    }

    #[test]
    fn lines_leave_out_a_partial_last_line() {
        assert_eq!(
            lines(b"GET / HTTP/1.1\r\nHost: a").unwrap(),
            vec![&b"GET / HTTP/1.1"[..]]
        );
    }

    #[test]
    fn lines_reject_nul_and_bare_cr() {
        assert_eq!(
            lines(b"GET / HTTP/1.1\r\nA: \x001\r\n\r\n"),
            Err(LostReason::Malformed("NUL byte in a head"))
        );
        assert_eq!(
            lines(b"GET / HTTP/1.1\r\nA: 1\rB: 2\r\n\r\n"),
            Err(LostReason::Malformed("bare CR in a head"))
        );
    }

    #[test]
    fn request_lines() {
        let r = request_line(b"POST /a?b=c HTTP/1.0").unwrap();
        assert_eq!(
            (r.method, r.target, r.version),
            ("POST", "/a?b=c", Version::Http10)
        );
        assert!(request_line("GET /caf\u{e9} HTTP/1.1".as_bytes()).is_ok());
        for bad in [
            &b"GET  / HTTP/1.1"[..],
            b"GET / HTTP/1.1 x",
            b"GET /",
            b"G(T / HTTP/1.1",
            b"GET / HTTP/1.2",
            b"GET / http/1.1",
            b"GET /\xff HTTP/1.1",
            b"GET /\x7f HTTP/1.1",
        ] {
            assert!(
                matches!(request_line(bad), Err(LostReason::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            request_line(b"PRI * HTTP/2.0"),
            Err(LostReason::Http2Preface)
        );
    }

    #[test]
    fn status_lines() {
        let s = status_line(b"HTTP/1.1 404 Not Found").unwrap();
        assert_eq!((s.status, s.version), (404, Version::Http11));
        assert_eq!(status_line(b"HTTP/1.0 200").unwrap().status, 200);
        assert_eq!(status_line(b"HTTP/1.1 200 ").unwrap().status, 200);
        for bad in [
            &b"HTTP/1.1 20"[..],
            b"HTTP/1.1 2000",
            b"HTTP/1.1 099 x",
            b"HTTP/1.1  200",
            b"HTTP/2 200",
            b"HTTP/1.1 2x0 OK",
            b"",
        ] {
            assert!(
                status_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn fields_trim_values_and_reject_smuggling_shapes() {
        let f = fields(&[b"Host:  a.example \t", b"X-E:"], 10).unwrap();
        assert_eq!(f[0].name, b"Host");
        assert_eq!(f[0].value, b"a.example");
        assert!(f[0].is("host"));
        assert_eq!(f[1].value, b"");
        for bad in [
            &b" folded"[..],
            b"\tfolded",
            b"Host : a",
            b"Ho st: a",
            b": a",
            b"no colon",
            b"A: b\x01c",
        ] {
            assert!(
                matches!(fields(&[bad], 10), Err(LostReason::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(fields(&[b"A: 1", b"B: 2"], 1), Err(LostReason::TooLong));
    }

    #[test]
    fn obs_text_is_allowed_in_values() {
        assert_eq!(fields(&[b"A: caf\xe9"], 1).unwrap()[0].value, b"caf\xe9");
    }
}
