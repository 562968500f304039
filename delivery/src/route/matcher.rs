//! One `[routes.match]` key compiled for the per-record check: the values as
//! written in the config, and the set they compile to (strings, CIDR
//! prefixes or port ranges).

use std::{fmt, net::IpAddr, ops::RangeInclusive};

use serde::{Deserialize, Deserializer, de};

use super::field::{Field, Kind, Value};

/// One value as written: a string or an integer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchValue {
    /// `"tcp"`, `"10.0.0.0/8"`, `"8000-8099"`.
    Str(String),
    /// `443`, `6`.
    Int(i64),
}

impl fmt::Display for MatchValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => i.fmt(f),
        }
    }
}

/// The values of one match key: a single value is a one-element list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchValues(pub Vec<MatchValue>);

impl<'de> Deserialize<'de> for MatchValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Visit { list: true })
    }
}

/// Reads a scalar, or (when `list`) a list of scalars.
struct Visit {
    list: bool,
}

impl<'de> de::Visitor<'de> for Visit {
    type Value = MatchValues;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.list {
            "a string, an integer, or a list of strings and integers"
        } else {
            "a string or an integer"
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MatchValues, E> {
        Ok(MatchValues(vec![MatchValue::Str(v.to_owned())]))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MatchValues, E> {
        Ok(MatchValues(vec![MatchValue::Int(v)]))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MatchValues, E> {
        i64::try_from(v)
            .map(|v| MatchValues(vec![MatchValue::Int(v)]))
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MatchValues, A::Error> {
        if !self.list {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut out = Vec::new();
        while let Some(Scalar(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(MatchValues(out))
    }
}

/// A list element: a string or an integer, never a nested list.
struct Scalar(MatchValue);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = d.deserialize_any(Visit { list: false })?;
        // `Visit` without `list` yields exactly one value.
        v.0.pop()
            .map(Self)
            .ok_or_else(|| de::Error::custom("expected a string or an integer"))
    }
}

/// A CIDR prefix; an address alone is a full-length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| {
            "is not an IP address or CIDR prefix (e.g. \"192.0.2.7\", \"10.0.0.0/8\", \"2001:db8::/32\")"
                .to_owned()
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("has a prefix length that is not 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(n.to_bits()), u128::from(i.to_bits()), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        // Only the first `prefix` bits must agree. A /0 shifts by the full
        // width: `checked_shr` refuses 128, and then no bit has to agree.
        (net ^ ip).checked_shr(shift).unwrap_or(0) == 0
    }
}

/// The compiled values of one key.
#[derive(Clone, Debug)]
enum Set {
    Strs(Box<[Box<str>]>),
    Nets(Box<[Net]>),
    Ports(Box<[RangeInclusive<u16>]>),
}

/// One key of a route: `field` must have a value in `set`.
#[derive(Clone, Debug)]
pub(super) struct Matcher {
    field: Field,
    set: Set,
}

fn port_range(v: &MatchValue) -> Result<RangeInclusive<u16>, String> {
    let bad = || "is not a port (0-65535) or a range like \"8000-8099\"".to_owned();
    let port = |s: &str| s.trim().parse::<u16>().map_err(|_| bad());
    match v {
        MatchValue::Int(i) => u16::try_from(*i).map(|p| p..=p).map_err(|_| bad()),
        MatchValue::Str(s) => match s.split_once('-') {
            None => port(s).map(|p| p..=p),
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!(
                        "is a range whose low end {lo} is above its high end {hi}"
                    ));
                }
                Ok(lo..=hi)
            }
        },
    }
}

impl Matcher {
    /// Compiles `values` for `field`; the error says what is wrong with
    /// which value.
    pub(super) fn compile(field: Field, values: &[MatchValue]) -> Result<Self, (String, String)> {
        let blame = |v: &MatchValue| {
            let value = v.to_string();
            move |problem: String| (value, problem)
        };
        let set = match field.kind() {
            Kind::Str => Set::Strs(
                values
                    .iter()
                    .map(|v| match v {
                        MatchValue::Str(s) => s.as_str().into(),
                        MatchValue::Int(i) => i.to_string().into(),
                    })
                    .collect(),
            ),
            Kind::Ip => Set::Nets(
                values
                    .iter()
                    .map(|v| match v {
                        MatchValue::Str(s) => Net::parse(s).map_err(blame(v)),
                        MatchValue::Int(_) => Err(blame(v)("must be a quoted address".into())),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Kind::Port => Set::Ports(
                values
                    .iter()
                    .map(|v| port_range(v).map_err(blame(v)))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self { field, set })
    }

    /// Whether one of the record's values of the field is in the set.
    #[inline]
    pub(super) fn matches(&self, r: &lbwitness_trail::record::Record) -> bool {
        self.field.values(r).any(|v| self.contains(v))
    }

    fn contains(&self, v: Value<'_>) -> bool {
        match (&self.set, v) {
            (Set::Strs(s), Value::Str(v)) => s.iter().any(|s| **s == *v),
            (Set::Nets(n), Value::Ip(ip)) => n.iter().any(|n| n.contains(ip)),
            (Set::Ports(p), Value::Port(port)) => p.iter().any(|r| r.contains(&port)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        Net::parse(s).unwrap()
    }

    #[test]
    fn cidr_containment() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.0")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")), "families never mix");
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!net("192.0.2.7").contains(ip("192.0.2.6")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/33").contains(ip("2001:db8:ffff::1")));
        assert!(net("192.0.2.128/25").contains(ip("192.0.2.200")));
        assert!(!net("192.0.2.128/25").contains(ip("192.0.2.100")));
    }

    #[test]
    fn bad_nets_and_ports_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/x",
            "",
        ] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
        let s = |s: &str| MatchValue::Str(s.into());
        assert_eq!(port_range(&s("8000-8099")), Ok(8000..=8099));
        assert_eq!(port_range(&s("443")), Ok(443..=443));
        assert_eq!(port_range(&MatchValue::Int(0)), Ok(0..=0));
        for bad in [s("9-1"), s("65536"), s("a-b"), s(""), MatchValue::Int(-1)] {
            assert!(port_range(&bad).is_err(), "{bad}");
        }
        assert!(port_range(&MatchValue::Int(65_536)).is_err());
    }
}
