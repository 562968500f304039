//! The few record fields the syslog header needs, looked up in the
//! canonical JSON line without building the record: the strings are
//! borrowed from the line unless they contain escapes, and every other
//! member is skipped unparsed.

use std::borrow::Cow;

use serde::Deserialize;

/// `@timestamp`, `event.action`, `event.kind` and `observer.hostname` of one
/// record; `None` when absent (or when the line is not a JSON object, which
/// the agent never writes: the header then says `-` everywhere).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    /// `@timestamp`.
    pub timestamp: Option<Cow<'a, str>>,
    /// `event.action`.
    pub action: Option<Cow<'a, str>>,
    /// `event.kind`.
    pub kind: Option<Cow<'a, str>>,
    /// `observer.hostname`.
    pub hostname: Option<Cow<'a, str>>,
}

/// A string borrowed from the line unless it has escapes. (serde borrows
/// a `Cow` only as a direct field, not inside an `Option`, hence the
/// newtype.)
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The line as serde sees it: nested objects for `event` and `observer`.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "@timestamp", borrow, default)]
    timestamp: Option<Text<'a>>,
    #[serde(borrow, default)]
    event: Option<Event<'a>>,
    #[serde(borrow, default)]
    observer: Option<Observer<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    action: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Observer<'a> {
    #[serde(borrow, default)]
    hostname: Option<Text<'a>>,
}

impl<'a> Fields<'a> {
    /// Looks the fields up in `line`. Never fails: anything unreadable is
    /// `None`.
    pub fn parse(line: &'a [u8]) -> Self {
        let Ok(parsed) = serde_json::from_slice::<Line<'a>>(line) else {
            return Self::default();
        };
        let text = |t: Option<Text<'a>>| t.map(|Text(s)| s);
        let (action, kind) = parsed.event.map_or((None, None), |e| (e.action, e.kind));
        Self {
            timestamp: text(parsed.timestamp),
            action: text(action),
            kind: text(kind),
            hostname: text(parsed.observer.and_then(|o| o.hostname)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_fields_and_borrows_them() {
        let line = br#"{"@timestamp":"2026-01-02T03:04:05.123456789Z","agent":{"id":"x"},"event":{"action":"flow","kind":"event","sequence":7},"network":{"type":"ipv4"},"observer":{"hostname":"lb1","type":"sensor"}}"#;
        let f = Fields::parse(line);
        assert_eq!(
            f.timestamp.as_deref(),
            Some("2026-01-02T03:04:05.123456789Z")
        );
        assert_eq!(f.action.as_deref(), Some("flow"));
        assert_eq!(f.kind.as_deref(), Some("event"));
        assert_eq!(f.hostname.as_deref(), Some("lb1"));
        assert!(matches!(f.hostname, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let f = Fields::parse(br#"{"observer":{"hostname":"l\u0062\"1"}}"#);
        assert_eq!(f.hostname.as_deref(), Some("lb\"1"));
    }

    #[test]
    fn missing_or_unreadable_gives_none() {
        assert_eq!(Fields::parse(b"{}"), Fields::default());
        assert_eq!(Fields::parse(b"not json"), Fields::default());
        assert_eq!(Fields::parse(b"[1,2]"), Fields::default());
        assert_eq!(
            Fields::parse(br#"{"event":{"action":5}}"#),
            Fields::default()
        );
        assert_eq!(Fields::parse(b""), Fields::default());
    }
}
