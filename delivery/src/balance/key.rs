//! Keys for consistent hashing: a stable hash of bytes, and a field read
//! straight from a canonical JSON line without parsing all of it.

use memchr::{memchr2, memchr3};

/// FNV-1a 64 parameters (the published offset basis and prime).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// MurmurHash3's 64-bit finaliser: every input bit flips each output bit
/// with probability about 1/2, which FNV alone does not give for short,
/// similar keys (addresses that differ in one octet).
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A stable 64-bit hash of `value`: FNV-1a then the Murmur3 finaliser.
/// Fixed constants, no per-process seed, so the same on every run and host
/// (a key keeps its collector across agent restarts).
pub fn hash_key(value: &[u8]) -> u64 {
    mix(value.iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    }))
}

/// The value at `path` (dotted member names, e.g. `source.ip`) in the JSON
/// object `line`, or `None` when absent or the line is not well-formed
/// there.
///
/// A string comes back without its quotes and with its escapes as written
/// (canonical JSON writes each string one way, so the bytes are a stable
/// key); any other value comes back as its JSON text. Member names are
/// compared as written, so a name containing escapes is never found. Reads
/// only as far as the member; skips other members with `memchr`.
pub fn field_of_line<'a>(line: &'a [u8], path: &str) -> Option<&'a [u8]> {
    let mut c = Cursor { b: line, i: 0 };
    let mut names = path.split('.').peekable();
    while let Some(name) = names.next() {
        c.expect(b'{')?;
        loop {
            c.ws();
            let key = c.string()?;
            c.ws();
            c.expect(b':')?;
            c.ws();
            if key == name.as_bytes() {
                break;
            }
            c.skip_value()?;
            c.ws();
            match c.next()? {
                b',' => continue,
                _ => return None,
            }
        }
        if names.peek().is_none() {
            return c.value();
        }
        c.ws();
    }
    None
}

/// A read position in a JSON text.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<u8> {
        let b = *self.b.get(self.i)?;
        self.i += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string's raw content, the cursor after its closing quote.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            let at = self.i + memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some(&self.b[start..at]);
            }
            // A backslash escapes the next byte (`\"`, `\\`, `\u`...).
            self.i = at + 2;
        }
    }

    /// The value here: a string's content, or the text of anything else.
    fn value(&mut self) -> Option<&'a [u8]> {
        if self.b.get(self.i) == Some(&b'"') {
            return self.string();
        }
        let start = self.i;
        self.skip_value()?;
        Some(&self.b[start..self.i])
    }

    fn skip_value(&mut self) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => self.string().map(drop),
            b'{' => self.skip_nested(b'{', b'}'),
            b'[' => self.skip_nested(b'[', b']'),
            _ => {
                let start = self.i;
                while !matches!(
                    self.b.get(self.i),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }

    /// Skips an object or array. Counting only its own bracket kind is
    /// enough: the other kind nests evenly inside well-formed JSON, and
    /// strings are jumped over whole so brackets in them do not count.
    fn skip_nested(&mut self, open: u8, close: u8) -> Option<()> {
        let mut depth = 0usize;
        loop {
            let at = self.i + memchr3(b'"', open, close, self.b.get(self.i..)?)?;
            self.i = at;
            match self.b[at] {
                b'"' => {
                    self.string()?;
                }
                b if b == open => {
                    depth += 1;
                    self.i += 1;
                }
                _ => {
                    depth -= 1;
                    self.i += 1;
                    if depth == 0 {
                        return Some(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lbwitness_trail::{jcs, record::samples};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// What serde_json (the oracle) holds at `path`, in the form
    /// [`field_of_line`] returns it: a string's escaped content, otherwise
    /// the value itself.
    fn oracle(v: &Value, path: &str) -> Option<Value> {
        v.pointer(&format!("/{}", path.replace('.', "/"))).cloned()
    }

    /// Parses what [`field_of_line`] returned back into a JSON value: a
    /// string when the oracle holds one (the bytes are its content),
    /// otherwise JSON text.
    fn ours(line: &[u8], path: &str, oracle: Option<&Value>) -> Option<Value> {
        let text = std::str::from_utf8(field_of_line(line, path)?).unwrap();
        let quoted = format!("\"{text}\"");
        let json = if oracle.is_some_and(Value::is_string) {
            &quoted
        } else {
            text
        };
        Some(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        // Pinned: a change here moves every key to another collector.
        assert_eq!(hash_key(b""), mix(FNV_OFFSET));
        assert_eq!(hash_key(b"10.0.0.1"), 14_445_829_539_779_861_640);
        // One-octet differences flip about half the bits.
        let flips: u32 = (0..=255u8)
            .map(|i| {
                (hash_key(&[10, 0, 0, i]) ^ hash_key(&[10, 0, 0, i.wrapping_add(1)])).count_ones()
            })
            .sum();
        let mean = f64::from(flips) / 256.0;
        assert!((28.0..36.0).contains(&mean), "{mean} bits flip on average");
    }

    #[test]
    fn reads_fields_of_a_real_record() {
        let mut r = samples::flow(samples::SOURCE.into(), 80);
        r.agent.id = "0190d1c2-5b7e-7c3a-9f1e-2a3b4c5d6e7f";
        r.event.sequence = 42;
        let mut line = Vec::new();
        jcs::to_canonical_vec(&r, &mut line).unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(field_of_line(&line, "source.ip"), Some(&b"192.0.2.1"[..]));
        assert_eq!(field_of_line(&line, "event.sequence"), Some(&b"42"[..]));
        // Member names only: arrays are not indexed.
        assert_eq!(field_of_line(&line, "event.category.0"), None);
        for path in [
            "@timestamp",
            "agent.id",
            "event.sequence",
            "event.category",
            "network.community_id",
            "network",
            "source.port",
            "destination.ip",
            "observer.ingress.interface.name",
            "lbwitness.tcp_flags",
            "network.vlan.id",
            "network.inner.vlan.id",
            "source.nope",
            "nope",
            "source.ip.x",
            "",
        ] {
            let want = oracle(&v, path);
            assert_eq!(ours(&line, path, want.as_ref()), want, "{path}");
        }
    }

    #[test]
    fn tolerates_whitespace_and_escapes() {
        let v = json!({"a": {"b\"c": "x\"}{[", "d": [1, {"e": "]"}], "f": "q\\"}, "g": -1.5e3, "h": null});
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert_eq!(field_of_line(&pretty, "a.f"), Some(&br"q\\"[..]));
        assert_eq!(ours(&pretty, "g", None), Some(json!(-1500.0)));
        assert_eq!(ours(&pretty, "h", None), Some(Value::Null));
        assert_eq!(ours(&pretty, "a.d", None), oracle(&v, "a.d"));
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\"",
            b"{\"a\":",
            b"{\"a\":\"x",
            b"[1]",
            b"{\"a\" 1}",
            b"{\"b\":1 \"a\":2}",
        ] {
            assert_eq!(
                field_of_line(bad, "a"),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-c\"\\{}\\[\\], :é\u{1}]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[abc]{1,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_serde_json(
            map in proptest::collection::btree_map("[abc]{1,2}", json_value(), 0..6),
            path in proptest::collection::vec("[abc]{1,2}", 1..4),
        ) {
            let v = Value::Object(map.into_iter().collect());
            let path = path.join(".");
            let line = serde_json::to_vec(&v).unwrap();
            let want = oracle(&v, &path);
            prop_assert_eq!(ours(&line, &path, want.as_ref()), want);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), path in "[a-c.]{0,5}") {
            let _ = field_of_line(&bytes, &path);
        }
    }

    /// `cargo test --release -p lbwitness balance::key -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn key_cost() {
        let r = samples::flow(samples::SOURCE.into(), 80);
        let mut line = Vec::new();
        jcs::to_canonical_vec(&r, &mut line).unwrap();
        for path in ["source.ip", "network.community_id"] {
            let n = 2_000_000u32;
            let start = std::time::Instant::now();
            let mut acc = 0u64;
            for _ in 0..n {
                let f = field_of_line(std::hint::black_box(&line), path).unwrap();
                acc ^= hash_key(f);
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
            println!(
                "field_of_line + hash_key({path}) on a {}-byte flow line: {ns:.1} ns ({acc:x})",
                line.len()
            );
        }
    }
}
