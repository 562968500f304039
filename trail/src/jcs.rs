//! RFC 8785 JSON canonicalization (JCS).
//!
//! Two directions:
//!
//! - writing: [`Formatter`] plugs into `serde_json`'s serializer so that
//!   numbers come out as ECMAScript's `Number.prototype.toString` writes them;
//!   [`to_canonical_vec`] uses it. Member order is the caller's: the agent
//!   declares struct fields in sorted order, and `BTreeMap<&str, _>` iterates
//!   sorted (for the names it holds, UTF-8 byte order and UTF-16 order agree
//!   unless names mix U+E000..U+FFFF with characters above U+FFFF).
//! - reading: [`parse`] turns a JSON text someone else wrote into a [`Value`]
//!   whose objects are sorted by the UTF-16 code units of their names, and
//!   [`Value::write_canonical`] writes it back canonically. This is what a
//!   verifier hashes, so a collector that re-serialised a line (re-ordered
//!   members, added whitespace, re-escaped strings) does not break it.
//!
//! Strings are escaped as ECMAScript's `JSON.stringify` does: only `"`, `\`
//! and U+0000..U+001F, the latter as `\b \t \n \f \r` or `\u00xx` with
//! lowercase hex. `serde_json`'s own escaping is exactly that (tested below).
//!
//! Limits: `serde_json` writes a non-finite float as `null` before the
//! formatter sees it (RFC 8785 has no representation for them; the agent
//! writes none). Without `serde_json`'s `float_roundtrip` feature, parsing a
//! number with more than 15 significant digits or a large exponent may land
//! one ULP off the correctly rounded double; integers, and decimals such as
//! `1.5` or `1480.0`, parse exactly.

use std::{borrow::Cow, cmp::Ordering, fmt, io};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};
use serde_json::ser::{CompactFormatter, Formatter as _};
use thiserror::Error;

/// Integers up to this magnitude are exact doubles and print as plain digits.
const MAX_SAFE: u64 = 1 << 53;

/// A `serde_json` formatter that writes numbers per RFC 8785 (ECMAScript
/// `Number.prototype.toString` of the double they denote). Output is compact.
#[derive(Clone, Copy, Debug, Default)]
pub struct Formatter;

impl serde_json::ser::Formatter for Formatter {
    fn write_i64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: i64) -> io::Result<()> {
        if value.unsigned_abs() <= MAX_SAFE {
            CompactFormatter.write_i64(w, value)
        } else {
            write_f64(w, value as f64)
        }
    }

    fn write_u64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: u64) -> io::Result<()> {
        if value <= MAX_SAFE {
            CompactFormatter.write_u64(w, value)
        } else {
            write_f64(w, value as f64)
        }
    }

    fn write_i128<W: ?Sized + io::Write>(&mut self, w: &mut W, value: i128) -> io::Result<()> {
        if value.unsigned_abs() <= u128::from(MAX_SAFE) {
            CompactFormatter.write_i128(w, value)
        } else {
            write_f64(w, value as f64)
        }
    }

    fn write_u128<W: ?Sized + io::Write>(&mut self, w: &mut W, value: u128) -> io::Result<()> {
        if value <= u128::from(MAX_SAFE) {
            CompactFormatter.write_u128(w, value)
        } else {
            write_f64(w, value as f64)
        }
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        write_f64(w, f64::from(value))
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        write_f64(w, value)
    }
}

/// Serialises `value` as canonical JSON onto `out`: compact, numbers per
/// RFC 8785. Struct fields come out in declaration order and are not sorted.
pub fn to_canonical_vec<T: serde::Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    value.serialize(&mut serde_json::Serializer::with_formatter(out, Formatter))
}

fn write_f64<W: ?Sized + io::Write>(w: &mut W, value: f64) -> io::Result<()> {
    w.write_all(EsNumber::new(value).as_bytes())
}

/// A small stack buffer: number formatting allocates nothing.
struct StackText {
    buf: [u8; 40],
    len: usize,
}

impl StackText {
    const fn new() -> Self {
        Self {
            buf: [0; 40],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > self.buf.len() {
            return Err(fmt::Error);
        }
        self.extend(s.as_bytes());
        Ok(())
    }
}

/// A double written as ECMAScript's `Number.prototype.toString` writes it
/// (ECMA-262, Number::toString, radix 10).
struct EsNumber(StackText);

impl EsNumber {
    fn new(value: f64) -> Self {
        use fmt::Write as _;

        let mut out = StackText::new();
        if !value.is_finite() {
            // Unreachable from serde_json (it writes `null` first) and from
            // `parse` (it rejects out-of-range numbers); JSON has no spelling.
            out.extend(b"null");
            return Self(out);
        }
        if value == 0.0 {
            out.push(b'0'); // also -0
            return Self(out);
        }
        if value < 0.0 {
            out.push(b'-');
        }
        let sci = shortest_sci(value.abs());
        let sci = sci.as_bytes();
        let e = sci
            .iter()
            .position(|&b| b == b'e')
            .expect("{:e} has an exponent");
        let mut digits = [0u8; 20];
        let mut k = 0;
        for &b in sci[..e].iter().filter(|b| b.is_ascii_digit()) {
            digits[k] = b;
            k += 1;
        }
        while k > 1 && digits[k - 1] == b'0' {
            k -= 1;
        }
        let digits = &digits[..k];
        let (negative, exp_digits) = match sci[e + 1..] {
            [b'-', ref rest @ ..] => (true, rest),
            ref rest => (false, rest),
        };
        let magnitude = exp_digits
            .iter()
            .fold(0i32, |acc, &d| acc * 10 + i32::from(d - b'0'));
        let exp = if negative { -magnitude } else { magnitude };
        // value = 0.d1d2...dk × 10^n
        let k = k as i32;
        let n = exp + 1;
        if k <= n && n <= 21 {
            out.extend(digits);
            for _ in 0..n - k {
                out.push(b'0');
            }
        } else if 0 < n && n <= 21 {
            out.extend(&digits[..n as usize]);
            out.push(b'.');
            out.extend(&digits[n as usize..]);
        } else if -6 < n && n <= 0 {
            out.extend(b"0.");
            for _ in 0..-n {
                out.push(b'0');
            }
            out.extend(digits);
        } else {
            out.push(digits[0]);
            if k > 1 {
                out.push(b'.');
                out.extend(&digits[1..]);
            }
            out.push(b'e');
            out.push(if n - 1 < 0 { b'-' } else { b'+' });
            write!(out, "{}", (n - 1).unsigned_abs()).expect("fits");
        }
        Self(out)
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The shortest decimal that reads back as `value` (> 0), in `{:e}` form.
///
/// Rust's `{:e}` gives the fewest digits; ECMAScript also wants, among the
/// candidates with that many digits, the one closest to the exact value,
/// ties to even (RFC 8785 Appendix B: 0x43143ff3c1cb0959 is
/// 1424953923781206.25 and prints as ...206.2, where `{:e}` says ...206.3).
/// `{:.N e}` rounds the exact value half-to-even, so it is that candidate
/// whenever it still reads back as `value`.
fn shortest_sci(value: f64) -> StackText {
    use fmt::Write as _;

    let mut shortest = StackText::new();
    write!(shortest, "{value:e}").expect("a double's {:e} fits 40 bytes");
    let bytes = shortest.as_bytes();
    let mantissa = &bytes[..bytes.iter().position(|&b| b == b'e').unwrap_or(bytes.len())];
    let k = mantissa.iter().filter(|b| b.is_ascii_digit()).count();
    if k < 2 {
        return shortest;
    }
    let mut nearest = StackText::new();
    write!(nearest, "{value:.*e}", k - 1).expect("fits");
    let reads_back = std::str::from_utf8(nearest.as_bytes())
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        == Some(value);
    if reads_back { nearest } else { shortest }
}

/// Why a JSON text could not be read.
#[derive(Debug, Error)]
pub enum JcsError {
    /// Not JSON (RFC 8259), or more than one value, or an invalid string.
    #[error("not valid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    /// An object names a member twice (RFC 8785 §3.1 requires I-JSON).
    #[error("{0}")]
    DuplicateName(#[source] serde_json::Error),
}

/// A JSON number, kept so that it can be written canonically and read back
/// exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// An integer ≥ 0 as written.
    U64(u64),
    /// An integer < 0 as written.
    I64(i64),
    /// Anything else (a fraction, an exponent, or beyond 64 bits).
    F64(f64),
}

impl Number {
    /// The number as an exact non-negative integer, if it is one. Integers
    /// above 2^53 count only when the double they denote is that integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U64(n) if n <= MAX_SAFE => Some(n),
            Self::U64(n) => {
                let f = n as f64;
                (f < 18_446_744_073_709_551_616.0 && f as u64 == n).then_some(n)
            }
            Self::I64(_) => None,
            Self::F64(f) => (f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0)
                .then_some(f as u64),
        }
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        let mut f = Formatter;
        let written = match *self {
            Self::U64(n) => f.write_u64(out, n),
            Self::I64(n) => f.write_i64(out, n),
            Self::F64(x) => f.write_f64(out, x),
        };
        written.expect("writing to a Vec cannot fail");
    }
}

/// An object member: its name and value.
pub type Member<'a> = (Cow<'a, str>, Value<'a>);

/// A JSON object whose members are sorted by the UTF-16 code units of their
/// names, with no name twice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object<'a> {
    members: Vec<Member<'a>>,
}

impl<'a> Object<'a> {
    /// Sorts `members`; fails with the first name found twice.
    fn try_from_members(mut members: Vec<Member<'a>>) -> Result<Self, Cow<'a, str>> {
        let sorted = members
            .windows(2)
            .all(|w| cmp_utf16(&w[0].0, &w[1].0) == Ordering::Less);
        if !sorted {
            members.sort_unstable_by(|a, b| cmp_utf16(&a.0, &b.0));
            if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(w[0].0.clone());
            }
        }
        Ok(Self { members })
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.members.binary_search_by(|(k, _)| cmp_utf16(k, name))
    }

    /// The member called `name`.
    pub fn get(&self, name: &str) -> Option<&Value<'a>> {
        self.position(name).ok().map(|i| &self.members[i].1)
    }

    /// The member called `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value<'a>> {
        self.position(name).ok().map(|i| &mut self.members[i].1)
    }

    /// Takes the member called `name` out.
    pub fn remove(&mut self, name: &str) -> Option<Value<'a>> {
        self.position(name).ok().map(|i| self.members.remove(i).1)
    }

    /// The members, in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value<'a>)> {
        self.members.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// A parsed JSON value. Strings borrow from the input unless they contain
/// escapes.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object.
    Object(Object<'a>),
}

impl<'a> Value<'a> {
    /// The member `name` of an object (`None` for other values).
    pub fn get(&self, name: &str) -> Option<&Value<'a>> {
        match self {
            Self::Object(o) => o.get(name),
            _ => None,
        }
    }

    /// The value at `path` (member names from the root), e.g.
    /// `["event", "sequence"]`.
    pub fn get_path(&self, path: &[&str]) -> Option<&Value<'a>> {
        path.iter().try_fold(self, |v, name| v.get(name))
    }

    /// Takes the value at `path` out of its object, e.g. `["event", "hash"]`.
    pub fn remove_path(&mut self, path: &[&str]) -> Option<Value<'a>> {
        let (last, parents) = path.split_last()?;
        let mut v = self;
        for name in parents {
            match v {
                Self::Object(o) => v = o.get_mut(name)?,
                _ => return None,
            }
        }
        match v {
            Self::Object(o) => o.remove(last),
            _ => None,
        }
    }

    /// An exact non-negative integer (see [`Number::as_u64`]).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// A string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An object.
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Self::Object(o) => Some(o),
            _ => None,
        }
    }

    /// An array's elements.
    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Appends the RFC 8785 form of this value to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Self::Null => out.extend_from_slice(b"null"),
            Self::Bool(true) => out.extend_from_slice(b"true"),
            Self::Bool(false) => out.extend_from_slice(b"false"),
            Self::Number(n) => n.write_canonical(out),
            Self::String(s) => write_str(out, s),
            Self::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out);
                }
                out.push(b']');
            }
            Self::Object(o) => {
                out.push(b'{');
                for (i, (name, value)) in o.members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, name);
                    out.push(b':');
                    value.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// Writes `s` as a JSON string, escaped as ECMAScript's `JSON.stringify`.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Compares two strings by their UTF-16 code units (RFC 8785 §3.2.3).
///
/// UTF-8 byte order is code point order; the two differ from UTF-16 order
/// only between U+E000..U+FFFF (lead byte 0xEE or 0xEF) and characters above
/// U+FFFF (lead byte 0xF0..0xF4, surrogate pairs in UTF-16, which sort first).
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) else {
        return a.len().cmp(&b.len());
    };
    // Everything before `i` is equal, so `i` is at a character start in
    // both or inside characters with the same lead byte: only lead bytes
    // can be ≥ 0xEE.
    let (x, y) = (a[i], b[i]);
    let high_bmp = |c: u8| (0xee..=0xef).contains(&c);
    let astral = |c: u8| c >= 0xf0;
    if high_bmp(x) && astral(y) {
        Ordering::Greater
    } else if astral(x) && high_bmp(y) {
        Ordering::Less
    } else {
        x.cmp(&y)
    }
}

/// Parses one JSON text (surrounding whitespace allowed, nothing else).
/// Objects are sorted canonically; a name given twice is an error.
pub fn parse(bytes: &[u8]) -> Result<Value<'_>, JcsError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Value::deserialize(&mut de).map_err(|e| {
        // Our visitor's only own error is the duplicate name; serde_json
        // files custom errors under `Data`.
        if e.classify() == serde_json::error::Category::Data {
            JcsError::DuplicateName(e)
        } else {
            JcsError::Syntax(e)
        }
    })?;
    de.end().map_err(JcsError::Syntax)?;
    Ok(value)
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value<'de>, E> {
        Ok(Value::Number(Number::U64(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value<'de>, E> {
        Ok(Value::Number(match u64::try_from(v) {
            Ok(u) => Number::U64(u),
            Err(_) => Number::I64(v),
        }))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value<'de>, E> {
        Ok(Value::Number(Number::F64(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(Name(name)) = map.next_key()? {
            members.push((name, map.next_value()?));
        }
        Object::try_from_members(members)
            .map(Value::Object)
            .map_err(|name| de::Error::custom(format_args!("duplicate member name {name:?}")))
    }
}

/// An object member name, borrowed when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn canon_f64(x: f64) -> String {
        let mut out = Vec::new();
        to_canonical_vec(&x, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn canon_text(text: &str) -> String {
        let mut out = Vec::new();
        parse(text.as_bytes()).unwrap().write_canonical(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// RFC 8785 Appendix B, verbatim (IEEE-754 bits, expected text).
    const APPENDIX_B: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];

    #[test]
    fn rfc8785_appendix_b_numbers() {
        for &(bits, want) in APPENDIX_B {
            let x = f64::from_bits(bits);
            assert_eq!(canon_f64(x), want, "{bits:016x}");
            // The parsed-tree path writes the same.
            let mut out = Vec::new();
            Value::Number(Number::F64(x)).write_canonical(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{bits:016x}");
        }
    }

    #[test]
    fn non_finite_numbers_have_no_spelling() {
        // Appendix B lists NaN and Infinity as errors; serde_json writes
        // `null` before the formatter is asked, and `parse` rejects them.
        assert_eq!(canon_f64(f64::NAN), "null");
        assert_eq!(canon_f64(f64::INFINITY), "null");
        assert!(parse(b"1e400").is_err());
        assert!(parse(b"NaN").is_err());
    }

    #[test]
    fn integers_print_plain_up_to_2_pow_53_then_as_doubles() {
        let u = |n: u64| {
            let mut out = Vec::new();
            to_canonical_vec(&n, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let i = |n: i64| {
            let mut out = Vec::new();
            to_canonical_vec(&n, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(u(0), "0");
        assert_eq!(u(42), "42");
        assert_eq!(u(9_007_199_254_740_992), "9007199254740992");
        assert_eq!(u(9_007_199_254_740_993), "9007199254740992");
        assert_eq!(u(u64::MAX), "18446744073709552000");
        assert_eq!(i(-1), "-1");
        assert_eq!(i(-9_007_199_254_740_993), "-9007199254740992");
        assert_eq!(i(i64::MIN), "-9223372036854776000");
        let mut out = Vec::new();
        to_canonical_vec(&(1u128 << 70), &mut out).unwrap();
        assert_eq!(out, b"1.1805916207174113e+21");
        // The same through the parser.
        assert_eq!(canon_text("18446744073709551615"), "18446744073709552000");
        assert_eq!(canon_text("-9223372036854775808"), "-9223372036854776000");
    }

    #[test]
    fn doubles_follow_the_ecmascript_layout() {
        for (x, want) in [
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (100.0, "100"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.25e-7, "1.25e-7"),
            (123.456, "123.456"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (-0.0, "0"),
            (4.5, "4.5"),
            (0.002, "0.002"),
            (1e30, "1e+30"),
            (1e-27, "1e-27"),
        ] {
            assert_eq!(canon_f64(x), want, "{x:e}");
        }
        assert_eq!(canon_text("1480.0"), "1480");
        assert_eq!(canon_text("1.48e3"), "1480");
        assert_eq!(canon_text("-0"), "0");
        assert_eq!(canon_text("-0.0"), "0");
    }

    /// What RFC 8785 says a string's characters become.
    fn jcs_escape(c: char) -> String {
        match c {
            '"' => "\\\"".into(),
            '\\' => "\\\\".into(),
            '\u{8}' => "\\b".into(),
            '\t' => "\\t".into(),
            '\n' => "\\n".into(),
            '\u{c}' => "\\f".into(),
            '\r' => "\\r".into(),
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        }
    }

    #[test]
    fn strings_are_escaped_as_json_stringify_does() {
        let chars = (0u32..0x80)
            .chain([0x80, 0xff, 0x2028, 0x2029, 0xfeff, 0xfffd, 0x1f600])
            .filter_map(char::from_u32);
        for c in chars {
            let s = format!("a{c}b");
            let want = format!("\"a{}b\"", jcs_escape(c));
            // serde_json's default escaping (what the Formatter uses) ...
            let mut via_serde = Vec::new();
            to_canonical_vec(&s, &mut via_serde).unwrap();
            assert_eq!(
                String::from_utf8(via_serde).unwrap(),
                want,
                "U+{:04X}",
                c as u32
            );
            // ... and the parsed tree's writer agree with RFC 8785.
            let mut via_tree = Vec::new();
            Value::String(Cow::Borrowed(&s)).write_canonical(&mut via_tree);
            assert_eq!(
                String::from_utf8(via_tree).unwrap(),
                want,
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn rfc8785_section_3_2_2_example() {
        // cyberphone/json-canonicalization testdata values.json, minus the
        // 17-digit 333333333.33333329 (see the module doc on float parsing).
        let input = r#"{
          "numbers": [1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            canon_text(input),
            r#"{"literals":[null,true,false],"numbers":[1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn seventeen_digit_decimals_depend_on_serde_json_float_parsing() {
        // RFC 8785's 333333333.33333329 denotes 333333333.3333333. serde_json
        // rounds it correctly only with its `float_roundtrip` feature; without
        // it the double is one ULP off. This test follows whichever is built.
        let correct = serde_json::from_str::<f64>("333333333.33333329").unwrap()
            == "333333333.33333329".parse::<f64>().unwrap();
        let want = if correct {
            "333333333.3333333"
        } else {
            "333333333.33333325"
        };
        assert_eq!(canon_text("333333333.33333329"), want);
    }

    #[test]
    fn rfc8785_section_3_2_3_sorting() {
        let input = r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let want = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
                    \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
                    \"\u{1f600}\":\"Emoji: Grinning Face\",\
                    \"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canon_text(input), want);
    }

    #[test]
    fn cyberphone_weird_names() {
        let input = r#"{
          "\u20ac": "Euro Sign",
          "1": "One",
          "\u0080": "Control\u007f",
          "\ud83d\ude02": "Smiley",
          "\u00f6": "Latin Small Letter O With Diaeresis",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "</script>": "Browser Challenge"
        }"#;
        let want = "{\"1\":\"One\",\"</script>\":\"Browser Challenge\",\"\u{80}\":\"Control\u{7f}\",\
                    \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
                    \"\u{1f602}\":\"Smiley\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canon_text(input), want);
    }

    #[test]
    fn arrays_keep_their_order_and_nested_objects_are_sorted() {
        assert_eq!(
            canon_text(r#"[56, {"d": true, "10": null, "1": [ ]}]"#),
            r#"[56,{"1":[],"10":null,"d":true}]"#
        );
    }

    #[test]
    fn duplicate_names_are_rejected() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":1}"#,
            r#"{"x":{"b":1,"c":2,"b":1}}"#,
            r#"[{"z":0,"z":0}]"#,
        ] {
            let err = parse(text.as_bytes()).unwrap_err();
            assert!(matches!(err, JcsError::DuplicateName(_)), "{text}: {err}");
            assert!(err.to_string().contains("duplicate member name"), "{err}");
        }
    }

    #[test]
    fn garbage_is_rejected_whitespace_is_not() {
        for text in [
            "",
            "{",
            "{}x",
            "{} {}",
            "[1,]",
            "{\"a\":01}",
            "\"\\ud800\"",
            "'a'",
            "{\"a\":1}\n,",
        ] {
            assert!(
                matches!(parse(text.as_bytes()), Err(JcsError::Syntax(_))),
                "{text:?}"
            );
        }
        assert!(parse(b"\"\xff\"").is_err());
        assert_eq!(
            canon_text(" \t{ \"b\" : 1 , \"a\" : [ 2 ] }\r\n"),
            r#"{"a":[2],"b":1}"#
        );
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let v = parse(br#"{"plain":"abc","esc":"a\nb"}"#).unwrap();
        assert!(matches!(
            v.get("plain"),
            Some(Value::String(Cow::Borrowed("abc")))
        ));
        assert!(matches!(v.get("esc"), Some(Value::String(Cow::Owned(_)))));
    }

    #[test]
    fn accessors_and_removal() {
        let text = br#"{"event":{"hash":"ab","sequence":42,"neg":-1,"big":18446744073709551615,
                       "f":42.0,"frac":1.5,"huge":1e300},"ok":true,"s":"x"}"#;
        let mut v = parse(text).unwrap();
        assert_eq!(
            v.get_path(&["event", "sequence"]).and_then(Value::as_u64),
            Some(42)
        );
        assert_eq!(
            v.get_path(&["event", "f"]).and_then(Value::as_u64),
            Some(42)
        );
        for path in ["neg", "big", "frac", "huge", "hash", "absent"] {
            assert_eq!(
                v.get_path(&["event", path]).and_then(Value::as_u64),
                None,
                "{path}"
            );
        }
        assert_eq!(v.get("ok").and_then(Value::as_bool), Some(true));
        assert_eq!(v.get("s").and_then(Value::as_str), Some("x"));
        assert_eq!(v.get_path(&["s", "x"]), None);
        assert_eq!(
            v.remove_path(&["event", "hash"])
                .as_ref()
                .and_then(Value::as_str),
            Some("ab")
        );
        assert_eq!(v.remove_path(&["event", "hash"]), None);
        assert_eq!(v.remove_path(&["s", "x"]), None);
        assert_eq!(v.remove_path(&[]), None);
        let mut out = Vec::new();
        v.write_canonical(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"event":{"big":18446744073709552000,"f":42,"frac":1.5,"huge":1e+300,"neg":-1,"sequence":42},"ok":true,"s":"x"}"#
        );
        assert_eq!(Number::U64(1 << 60).as_u64(), Some(1 << 60));
        assert_eq!(Number::U64((1 << 60) + 1).as_u64(), None);
        assert_eq!(Number::U64(u64::MAX).as_u64(), None);
        assert_eq!(Number::F64(18_446_744_073_709_551_616.0).as_u64(), None);
    }

    #[test]
    fn maps_come_out_sorted_and_structs_in_declaration_order() {
        #[derive(serde::Serialize)]
        struct S<'a> {
            b: u64,
            a: &'a str,
            m: BTreeMap<&'a str, f64>,
        }
        let s = S {
            b: 1 << 60,
            a: "\u{1}",
            m: BTreeMap::from([("z", 0.5), ("a", 1e21)]),
        };
        let mut out = Vec::new();
        to_canonical_vec(&s, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"b":1152921504606847000,"a":"\u0001","m":{"a":1e+21,"z":0.5}}"#
        );
    }

    proptest! {
        #[test]
        fn utf16_order_matches_encode_utf16(a in "\\PC{0,6}", b in "\\PC{0,6}") {
            prop_assert_eq!(cmp_utf16(&a, &b), a.encode_utf16().cmp(b.encode_utf16()));
        }

        #[test]
        fn utf16_order_on_mixed_planes(
            a in prop::collection::vec(prop::sample::select(vec!['a', '\u{7ff}', '\u{d7ff}', '\u{e000}', '\u{ffff}', '\u{10000}', '\u{10ffff}']), 0..4),
            b in prop::collection::vec(prop::sample::select(vec!['a', '\u{7ff}', '\u{d7ff}', '\u{e000}', '\u{ffff}', '\u{10000}', '\u{10ffff}']), 0..4),
        ) {
            let (a, b): (String, String) = (a.into_iter().collect(), b.into_iter().collect());
            prop_assert_eq!(cmp_utf16(&a, &b), a.encode_utf16().cmp(b.encode_utf16()));
        }

        #[test]
        fn doubles_round_trip_in_the_es_layout(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let text = canon_f64(x);
            let back: f64 = text.parse().unwrap();
            prop_assert_eq!(back, if x == 0.0 { 0.0 } else { x });
            let a = x.abs();
            let plain = a == 0.0 || (1e-6..1e21).contains(&a);
            prop_assert_eq!(!text.contains('e'), plain, "{}", text);
            // As many digits as Rust's shortest round-trip representation,
            // and the same ones but on a tie, where ECMAScript takes the
            // even one (1424953923781206.25 → ...206.2, `{:e}` says .3).
            let digits = |s: &str| s.split('e').next().unwrap().chars()
                .filter(char::is_ascii_digit).collect::<String>()
                .trim_matches('0').to_owned();
            let (ours, rust) = (digits(&text), digits(&format!("{a:e}")));
            prop_assert_eq!(ours.len(), rust.len());
            if ours != rust {
                let (o, r): (u64, u64) = (ours.parse().unwrap(), rust.parse().unwrap());
                prop_assert!(o.abs_diff(r) == 1 && o % 2 == 0, "{} vs {}", ours, rust);
            }
        }

        #[test]
        fn canonical_text_is_a_fixed_point(
            m in prop::collection::btree_map("[a-z\u{e000}\u{10000}\\\\\"\n]{0,3}", (any::<i64>(), "\\PC{0,4}", any::<bool>()), 0..6)
        ) {
            let mut first = Vec::new();
            to_canonical_vec(&m, &mut first).unwrap();
            let mut second = Vec::new();
            parse(&first).unwrap().write_canonical(&mut second);
            let mut third = Vec::new();
            parse(&second).unwrap().write_canonical(&mut third);
            prop_assert_eq!(&second, &third);
            // BTreeMap sorts by UTF-8, so the first text differs from the
            // canonical one at most in member order.
            prop_assert_eq!(first.len(), second.len());
        }
    }
}
