//! The fast path for a line already in canonical form, which is how the
//! agent writes every line: one pass over the bytes, no allocation, checks
//! that the text is exactly its own RFC 8785 form and finds the fields the
//! verifier needs. Then the chain body is the line with the `event.hash`
//! member cut out. Anything else (re-serialised by a collector, names with
//! escapes, non-integer or large numbers, checkpoints and gaps, a field
//! missing or odd) returns `None` and goes through the full parse, which
//! decides.

use std::cmp::Ordering;

use crate::jcs::cmp_utf16;

/// serde_json's nesting limit; deeper texts take the full parse (and fail).
const MAX_DEPTH: usize = 127;

/// What the fast path found in a canonical plain record.
#[derive(Debug, PartialEq)]
pub(crate) struct Fast<'a> {
    pub agent_id: &'a str,
    pub sequence: u64,
    pub hash: [u8; 32],
    /// The bytes to cut for the body: `"hash":"…"` and one adjacent comma.
    pub cut: (usize, usize),
}

/// The fields of a canonical plain record, or `None`.
pub(crate) fn scan(text: &str) -> Option<Fast<'_>> {
    let mut s = Scanner {
        s: text.as_bytes(),
        text,
        i: 0,
        depth: 0,
        top_key: "",
        found: Found::default(),
    };
    if s.s.first() != Some(&b'{') {
        return None;
    }
    s.object()?;
    if s.i != s.s.len() {
        return None;
    }
    let f = s.found;
    let action = f.action?;
    if action == "checkpoint" || action == "gap" {
        return None;
    }
    let sequence = f.sequence?;
    Some(Fast {
        agent_id: f.agent_id.filter(|id| !id.is_empty())?,
        sequence: (sequence >= 1).then_some(sequence)?,
        hash: f.hash?,
        cut: f.cut?,
    })
}

#[derive(Default)]
struct Found<'a> {
    agent_id: Option<&'a str>,
    sequence: Option<u64>,
    hash: Option<[u8; 32]>,
    action: Option<&'a str>,
    cut: Option<(usize, usize)>,
}

struct Scanner<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    /// Objects and arrays open.
    depth: usize,
    /// The name of the top-level member being scanned.
    top_key: &'a str,
    found: Found<'a>,
}

/// The bytes that end a run of plain string content.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Hex digit values; 0xff for anything but `0-9a-f`.
static NIBBLE: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = d as u8;
        d += 1;
    }
    let mut d = 0;
    while d < 6 {
        t[b'a' as usize + d] = 10 + d as u8;
        d += 1;
    }
    t
};

/// Whether any byte of `w` is `"`, `\` or below 0x20 (SWAR).
fn special_in(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_0x20 = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (zero_in(w ^ (ONES * u64::from(b'"'))) | zero_in(w ^ (ONES * u64::from(b'\\'))) | below_0x20)
        != 0
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn open(&mut self) -> Option<()> {
        self.i += 1;
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.s[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    fn object(&mut self) -> Option<()> {
        self.open()?;
        if self.peek()? == b'}' {
            self.i += 1;
            self.depth -= 1;
            return Some(());
        }
        let mut prev: Option<&str> = None;
        let mut first = true;
        loop {
            let member_start = self.i;
            if self.peek()? != b'"' {
                return None;
            }
            let (name, escaped) = self.string()?;
            // Canonical order, and no name twice. Names with escapes take
            // the full parse (their order is that of the decoded text).
            if escaped || prev.is_some_and(|p| cmp_utf16(p, name) != Ordering::Less) {
                return None;
            }
            prev = Some(name);
            if self.bump()? != b':' {
                return None;
            }
            if self.depth == 1 {
                self.top_key = name;
            }
            let value_start = self.i;
            self.value()?;
            if self.depth == 2 {
                self.note(name, value_start, member_start, first)?;
            }
            first = false;
            match self.bump()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Records the fields of `agent` and `event` at top level.
    fn note(
        &mut self,
        name: &str,
        value_start: usize,
        member_start: usize,
        first: bool,
    ) -> Option<()> {
        let value = &self.text[value_start..self.i];
        let string = || {
            let inner = value.strip_prefix('"')?.strip_suffix('"')?;
            (!inner.contains('\\')).then_some(inner)
        };
        match (self.top_key, name) {
            ("agent", "id") => self.found.agent_id = Some(string()?),
            ("event", "action") => self.found.action = Some(string()?),
            ("event", "sequence") => self.found.sequence = Some(value.parse().ok()?),
            ("event", "hash") => {
                self.found.hash = Some(hex32(string()?)?);
                self.found.cut = Some(match (first, self.peek()?) {
                    (true, b',') => (member_start, self.i + 1),
                    (true, _) => (member_start, self.i),
                    (false, _) => (member_start - 1, self.i),
                });
            }
            _ => {}
        }
        Some(())
    }

    fn array(&mut self) -> Option<()> {
        self.open()?;
        if self.peek()? == b']' {
            self.i += 1;
            self.depth -= 1;
            return Some(());
        }
        loop {
            self.value()?;
            match self.bump()? {
                b',' => {}
                b']' => break,
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// A string whose escapes are the canonical ones; returns its raw
    /// content and whether it had escapes.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        let s = self.s;
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            while let Some(chunk) = s.get(i..i + 8) {
                if special_in(u64::from_le_bytes(chunk.try_into().expect("8 bytes"))) {
                    break;
                }
                i += 8;
            }
            while s.get(i).is_some_and(|&b| !SPECIAL[usize::from(b)]) {
                i += 1;
            }
            match *s.get(i)? {
                b'"' => {
                    self.i = i + 1;
                    return Some((&self.text[start..i], escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i = i + 1;
                    self.escape()?;
                    i = self.i;
                }
                _ => return None, // a raw control character
            }
        }
    }

    /// After a `\`: only what ECMAScript's JSON.stringify writes.
    fn escape(&mut self) -> Option<()> {
        match self.bump()? {
            b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => Some(()),
            b'u' => {
                let hex = self.s.get(self.i..self.i + 4)?;
                self.i += 4;
                let lower = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
                let canonical = hex[0] == b'0'
                    && hex[1] == b'0'
                    && matches!(hex[2], b'0' | b'1')
                    && lower(hex[3])
                    && !matches!((hex[2], hex[3]), (b'0', b'8' | b'9' | b'a' | b'c' | b'd'));
                canonical.then_some(())
            }
            _ => None,
        }
    }

    /// An integer of at most 2^53 in magnitude, not `-0`; anything else
    /// takes the full parse.
    fn number(&mut self) -> Option<()> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let start = self.i;
        match self.bump()? {
            b'0' => {}
            b'1'..=b'9' => {
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E' | b'0'..=b'9')) {
            return None;
        }
        let digits = &self.text[start..self.i];
        let n: u64 = if digits.len() <= 16 {
            digits.parse().ok()?
        } else {
            return None;
        };
        (n <= 1 << 53 && !(negative && n == 0)).then_some(())
    }
}

/// 64 lowercase hex digits.
pub(crate) fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    (bad & 0xf0 == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value as Json, json};

    use super::*;
    use crate::{
        jcs,
        verify::line::{Kind, parse_line_full},
    };

    /// The sample record of the agent's documentation.
    pub(crate) const SAMPLE: &str = r#"{"@timestamp":"2026-11-21T05:20:01.123456789Z","agent":{"id":"6f1c2a4e-8b9d-4c3e-9f10-2a3b4c5d6e7f","type":"lbwitness","version":"0.1.0"},"destination":{"ip":"192.0.2.2","port":8080},"event":{"action":"flow","category":["network"],"dataset":"lbwitness.flow","duration":1500000000,"end":"2026-11-21T05:20:01.123456789Z","hash":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","kind":"event","module":"lbwitness","reason":"idle-timeout","sequence":42,"start":"2026-11-21T05:19:59.623456789Z","type":["connection","end"]},"lbwitness":{"tcp_flags":["ACK","PSH","SYN","FIN"]},"network":{"bytes":2960,"community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg=","iana_number":"6","packets":12,"transport":"tcp","type":"ipv4"},"observer":{"hostname":"lb-1","ingress":{"interface":{"id":"7","name":"veth0"}},"product":"lbwitness","type":"sensor"},"source":{"bytes":1480,"ip":"192.0.2.1","packets":6,"port":40000}}"#;

    /// The fast path, when it answers, says what the full parse says.
    fn agrees(text: &[u8]) -> Result<bool, TestCaseError> {
        let Some(fast) = std::str::from_utf8(text).ok().and_then(scan) else {
            return Ok(false);
        };
        let mut body = Vec::new();
        let full = parse_line_full(text, &mut body);
        let full = full.map_err(|e| TestCaseError::fail(format!("fast accepted, full: {e}")))?;
        prop_assert_eq!(fast.agent_id, &*full.agent_id);
        prop_assert_eq!(fast.sequence, full.sequence);
        prop_assert_eq!(fast.hash, full.hash);
        prop_assert!(matches!(full.kind, Kind::Plain));
        let mut fast_body = text[..fast.cut.0].to_vec();
        fast_body.extend_from_slice(&text[fast.cut.1..]);
        prop_assert_eq!(
            String::from_utf8_lossy(&fast_body),
            String::from_utf8_lossy(&body)
        );
        Ok(true)
    }

    #[test]
    fn the_sample_takes_the_fast_path() {
        let fast = scan(SAMPLE).unwrap();
        assert_eq!(
            (fast.agent_id, fast.sequence),
            ("6f1c2a4e-8b9d-4c3e-9f10-2a3b4c5d6e7f", 42)
        );
        assert!(agrees(SAMPLE.as_bytes()).unwrap());
    }

    #[test]
    fn anything_unusual_takes_the_full_parse() {
        let with = |from: &str, to: &str| SAMPLE.replacen(from, to, 1);
        for text in [
            with("{\"@timestamp", "{ \"@timestamp"),  // whitespace
            with("\"port\":8080", "\"port\":8080.0"), // non-canonical number
            with("\"port\":8080", "\"port\":8e3"),
            with("\"packets\":12", "\"packets\":-0"),
            with("\"packets\":12", "\"packets\":9007199254740993"),
            with("lb-1", "lb\\u002d1"), // non-canonical escape
            with("lb-1", "lb\\/1"),
            with("lb-1", "lb\\u0008"),
            with("lb-1", "lb\\u000a"),
            with("lb-1", "lb\\u001F"),
            with("lb-1", "lb\\u0020"),
            with("lb-1", "lb\\ud83d\\ude00"),
            with("lb-1", "lb\u{1}"),
            with("\"kind\"", "\"k\\u0069nd\""), // escaped name
            with("\"agent\":{", "\"zgent\":{"), // order
            with("\"kind\":\"event\"", "\"action\":\"event\""), // duplicate
            with("\"sequence\":42", "\"sequence\":0"),
            with("\"action\":\"flow\"", "\"action\":\"gap\""),
            with("6f1c2a4e", "6F1C2A4E\\n"),
            SAMPLE.to_owned() + " ",
            SAMPLE.to_owned() + "\r",
            SAMPLE.replace(
                "\"hash\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\",",
                "",
            ),
        ] {
            assert!(scan(&text).is_none(), "{text}");
        }
        // Canonical escapes in values are fine.
        let text = with("lb-1", "lb\\\"1\\u001f\\n\u{2028}\u{7f}");
        assert!(scan(&text).is_some());
        assert!(agrees(text.as_bytes()).unwrap());
    }

    #[test]
    fn the_hash_member_is_cut_with_its_comma() {
        // `action` < `hash` < `sequence`: the member is always in the middle.
        let h = "ab".repeat(32);
        let text = format!(
            r#"{{"agent":{{"id":"a"}},"event":{{"action":"x","hash":"{h}","sequence":1}}}}"#
        );
        let f = scan(&text).unwrap();
        let cut = format!("{}{}", &text[..f.cut.0], &text[f.cut.1..]);
        assert_eq!(
            cut,
            r#"{"agent":{"id":"a"},"event":{"action":"x","sequence":1}}"#
        );
    }

    /// JSON values; `plain` keeps to what the fast path takes: integers of
    /// at most 2^53 and names without escapes.
    fn tree(plain: bool) -> impl Strategy<Value = Json> {
        let chars = prop::sample::select(vec![
            'a',
            'Z',
            '0',
            ' ',
            '"',
            '\\',
            '/',
            '\n',
            '\u{1}',
            '\u{1f}',
            '\u{7f}',
            'é',
            '\u{2028}',
            '\u{e000}',
            '\u{1f600}',
        ]);
        let string = prop::collection::vec(chars, 0..6)
            .prop_map(|c| Json::from(c.into_iter().collect::<String>()));
        let leaf = if plain {
            prop_oneof![
                Just(Json::Null),
                any::<bool>().prop_map(Json::from),
                (0u64..=1 << 53).prop_map(Json::from),
                (-(1i64 << 53)..0).prop_map(Json::from),
                string,
            ]
            .boxed()
        } else {
            prop_oneof![
                (0u64..=(1 << 53) + 2).prop_map(Json::from),
                any::<i64>().prop_map(Json::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Json::from),
                string,
            ]
            .boxed()
        };
        let mut names = vec!["a", "b", "hash", "id", "Ω", "\u{e000}", "\u{1f600}"];
        if !plain {
            names.extend(["q\"", "x\ny"]);
        }
        let name = prop::sample::select(names);
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::btree_map(name.clone().prop_map(str::to_owned), inner, 0..4)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    fn record(plain: bool) -> impl Strategy<Value = Json> {
        (tree(plain), tree(plain), 1u64..=1 << 53, any::<[u8; 32]>()).prop_map(
            |(extra, more, seq, hash)| {
                json!({
                    "agent": {"id": "6f1c", "x": extra},
                    "event": {"action": "flow", "hash": hex::encode(hash), "sequence": seq,
                              "y": more.clone()},
                    "source": more,
                })
            },
        )
    }

    fn canonical(v: &Json) -> Vec<u8> {
        let text = serde_json::to_vec(v).unwrap();
        let mut out = Vec::new();
        jcs::parse(&text).unwrap().write_canonical(&mut out);
        out
    }

    proptest! {
        #[test]
        fn fast_and_full_agree_on_records(r in record(false), gap in any::<bool>()) {
            let mut r = r;
            if gap {
                r["event"]["action"] = json!("gap");
            }
            agrees(&canonical(&r))?;
        }

        #[test]
        fn plain_canonical_records_take_the_fast_path(r in record(true)) {
            let text = canonical(&r);
            prop_assert!(agrees(&text)?, "{}", String::from_utf8_lossy(&text));
        }

        #[test]
        fn fast_and_full_agree_on_damaged_lines(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
            let mut text = SAMPLE.as_bytes().to_vec();
            let i = at.index(text.len());
            text[i] ^= mask;
            agrees(&text)?;
        }

        #[test]
        fn fast_and_full_agree_on_edited_lines(at in any::<prop::sample::Index>(), insert in prop::sample::select(vec![" ", "\\", "\"", "0", "-", ".", "e", ",", "}", "]", "\\u0000", "\\u0008", "\\u000a", "\\u001F", "\\t", "é"])) {
            let mut text = SAMPLE.to_owned();
            let mut i = at.index(text.len());
            while !text.is_char_boundary(i) { i -= 1; }
            text.insert_str(i, insert);
            agrees(text.as_bytes())?;
        }
    }
}
