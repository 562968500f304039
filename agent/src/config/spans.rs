//! Where a key sits in the config file's text, so every error names its
//! line and column.
//!
//! toml's spanned document ([`DeTable`]) is walked along a dotted key such
//! as `groups[0].endpoints[1].urls[0]`: values are validated after
//! deserialisation (in [`super::Config::try_new`], which knows nothing of
//! text), and the key their error names is looked up here afterwards. A
//! deserialisation error carries a byte span instead; [`key_at`] names the
//! key there.

use std::{fmt, ops::Range};

use lbwitness_delivery::sink::{file::FileSettings, nats::NatsSettings, syslog::SyslogSettings};
use serde::Deserialize as _;
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use super::{ConfigFile, delivery::Kind};

/// The parsed document, with the byte span of every key and value.
pub type Document<'a> = Spanned<DeTable<'a>>;

/// A position in the file: line and column, both from 1 (the column counts
/// characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCol {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for LineCol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The line and column of byte `offset` in `text` (clamped to its end).
pub fn line_col(text: &str, offset: usize) -> LineCol {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    LineCol {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// One step of a dotted key.
#[derive(Debug, PartialEq, Eq)]
enum Step<'k> {
    Name(&'k str),
    Index(usize),
}

/// `groups[0].endpoints[1].tls.ca_file` as steps. A name may be quoted
/// (`routes[0].match."event.action"`) when it holds a dot.
fn steps(key: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            out.push(Step::Name(&quoted[..end]));
            rest = quoted.get(end + 1..).unwrap_or("");
        } else if let Some(index) = rest.strip_prefix('[') {
            let end = index.find(']').unwrap_or(index.len());
            match index[..end].parse() {
                Ok(i) => out.push(Step::Index(i)),
                Err(_) => break,
            }
            rest = index.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Step::Name(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

/// The byte span of the value at `key`; when the key is not in the file (a
/// default, or a required key left out), the span of the deepest table or
/// array on its way, which is where it belongs. `None` when not even the
/// first step is in the file.
pub fn span_of(doc: &Document<'_>, key: &str) -> Option<Range<usize>> {
    let mut table = Some(doc.get_ref());
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    let mut found = None;
    for step in steps(key) {
        let value: &Spanned<DeValue<'_>> = match (step, table, array) {
            (Step::Name(name), Some(t), _) => match t.get(name) {
                Some(v) => v,
                None => break,
            },
            (Step::Index(i), _, Some(a)) => match a.get(i) {
                Some(v) => v,
                None => break,
            },
            _ => break,
        };
        found = Some(value.span());
        (table, array) = match value.get_ref() {
            DeValue::Table(t) => (Some(t), None),
            DeValue::Array(a) => (None, Some(a)),
            _ => (None, None),
        };
    }
    found
}

/// The dotted key whose name or value holds byte `offset` (the deepest
/// one), e.g. where toml reports a wrong type or an unknown key.
pub fn key_at(doc: &Document<'_>, offset: usize) -> Option<String> {
    let mut path = Vec::new();
    in_table(doc.get_ref(), offset, &mut path).then(|| path.concat())
}

/// Searches every entry, not only those whose span holds `offset`: an
/// `[[array]]` element's span is its header, and its keys follow it.
fn in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        let name = key.get_ref();
        path.push(if path.is_empty() {
            name.to_string()
        } else if name.contains(['.', '"', '[', ' ']) {
            format!(".{name:?}")
        } else {
            format!(".{name}")
        });
        if in_value(value, offset, path) || holds(key.span(), offset) {
            return true;
        }
        path.pop();
    }
    false
}

fn in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<String>) -> bool {
    let inner = match value.get_ref() {
        DeValue::Table(t) => in_table(t, offset, path),
        DeValue::Array(a) => a.iter().enumerate().any(|(i, v)| {
            path.push(format!("[{i}]"));
            let found = in_value(v, offset, path);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    };
    inner || holds(value.span(), offset)
}

/// Deserialises every `[[groups.endpoints]]` entry as its group's kind
/// defines it, from the spanned document: the config holds endpoints as
/// plain tables (their type depends on `kind`), which lose positions, so
/// an unknown or mistyped endpoint key is reported from here with its own.
pub fn check_endpoints(doc: &Document<'_>, file: &ConfigFile) -> Result<(), toml::de::Error> {
    let Some(DeValue::Array(groups)) = doc.get_ref().get("groups").map(Spanned::get_ref) else {
        return Ok(());
    };
    for (group, spanned) in file.groups.iter().zip(groups.iter()) {
        let Some(DeValue::Array(endpoints)) = spanned
            .get_ref()
            .as_table()
            .and_then(|t| t.get("endpoints"))
            .map(Spanned::get_ref)
        else {
            continue;
        };
        for endpoint in endpoints.iter() {
            let de = ValueDeserializer::from(endpoint.clone());
            match group.kind {
                Kind::File => drop(FileSettings::deserialize(de)?),
                Kind::Syslog => drop(SyslogSettings::deserialize(de)?),
                Kind::Nats => drop(NatsSettings::deserialize(de)?),
                // Checked (it takes no settings) with the group.
                Kind::Stdout => {}
            }
        }
    }
    Ok(())
}

/// Whether `span` holds `offset`; an empty span (toml's "here") holds its
/// own position.
fn holds(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || span.start == offset
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "state_dir = \"/x\"\n\
        [capture]\n\
        interfaces = [\"a\"]\n\
        [[groups]]\n\
        name = \"g\"\n\
        kind = \"nats\"\n\
        [[groups.endpoints]]\n\
        urls = [\"nats://a:1\", \"ftp://b\"]\n\
        [groups.endpoints.tls]\n\
        ca_file = \"/nope\"\n\
        [[groups]]\n\
        name = \"h\"\n\
        endpoints = [{ address = \"c\" }]\n\
        [[routes]]\n\
        match = { \"event.action\" = [\"gap\"] }\n";

    fn at(key: &str) -> Option<LineCol> {
        let doc = DeTable::parse(TEXT).unwrap();
        span_of(&doc, key).map(|s| line_col(TEXT, s.start))
    }

    fn lc(line: usize, column: usize) -> Option<LineCol> {
        Some(LineCol { line, column })
    }

    #[test]
    fn steps_of_dotted_keys() {
        use Step::{Index, Name};
        assert_eq!(
            steps("groups[0].endpoints[12].tls.ca_file"),
            [
                Name("groups"),
                Index(0),
                Name("endpoints"),
                Index(12),
                Name("tls"),
                Name("ca_file")
            ]
        );
        assert_eq!(
            steps("routes[1].match.\"event.action\""),
            [
                Name("routes"),
                Index(1),
                Name("match"),
                Name("event.action")
            ]
        );
        assert_eq!(steps("output"), [Name("output")]);
    }

    #[test]
    fn values_are_found_where_written() {
        assert_eq!(at("state_dir"), lc(1, 13));
        assert_eq!(at("capture.interfaces"), lc(3, 14));
        assert_eq!(at("capture.interfaces[0]"), lc(3, 15));
        assert_eq!(at("groups[0].kind"), lc(6, 8));
        assert_eq!(at("groups[0].endpoints[0].urls[1]"), lc(8, 23));
        assert_eq!(at("groups[0].endpoints[0].tls.ca_file"), lc(10, 11));
        assert_eq!(at("groups[1].endpoints[0].address"), lc(13, 26));
        assert_eq!(at("routes[0].match.\"event.action\""), lc(15, 28));
    }

    #[test]
    fn missing_keys_point_at_their_table() {
        // `[[groups]]` headers: where a required key was left out.
        assert_eq!(at("groups[1].hash_field"), lc(11, 1));
        assert_eq!(at("groups[0].endpoints[0].tls.server_name"), lc(9, 1));
        assert_eq!(at("capture.ring_buffer_bytes"), lc(2, 1));
        assert_eq!(at("flows.idle_timeout_secs"), None);
        assert_eq!(at("groups[7].name"), lc(4, 1));
    }

    #[test]
    fn key_at_names_the_deepest_key() {
        let doc = DeTable::parse(TEXT).unwrap();
        let key = |needle: &str| key_at(&doc, TEXT.find(needle).unwrap());
        assert_eq!(
            key("\"ftp://b\"").as_deref(),
            Some("groups[0].endpoints[0].urls[1]")
        );
        assert_eq!(
            key("ca_file").as_deref(),
            Some("groups[0].endpoints[0].tls.ca_file")
        );
        assert_eq!(
            key("address").as_deref(),
            Some("groups[1].endpoints[0].address")
        );
        assert_eq!(
            key("\"event.action\"").as_deref(),
            Some("routes[0].match.\"event.action\"")
        );
        assert_eq!(key("state_dir").as_deref(), Some("state_dir"));
        assert_eq!(key_at(&doc, TEXT.len() + 10), None);
    }

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), LineCol { line: 1, column: 1 });
        assert_eq!(line_col(text, 6), LineCol { line: 2, column: 1 });
        // Characters, not bytes: `é` is two bytes.
        assert_eq!(
            line_col(text, text.rfind('=').unwrap()),
            LineCol { line: 2, column: 4 }
        );
        assert_eq!(line_col(text, 999), LineCol { line: 3, column: 1 });
        // Inside a multi-byte character: its start.
        assert_eq!(line_col(text, 8), LineCol { line: 2, column: 2 });
    }
}
