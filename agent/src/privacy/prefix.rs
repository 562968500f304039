//! An address prefix as written in the config (`198.51.100.0/24`,
//! `2001:db8::/32`, or a bare address for one host).

use std::{fmt, net::IpAddr, str::FromStr};

/// A network: an address with its host bits zero, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// Whether `ip` is in this network (IPv4 never matches an IPv6 prefix
    /// or the reverse; callers pass canonical addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)) << 96, self.len) == u128::from(u32::from(net)) << 96
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(ip), self.len) == u128::from(net),
            _ => false,
        }
    }

    /// Whether this prefix holds every address of its family (`/0`).
    pub fn is_everything(&self) -> bool {
        self.len == 0
    }
}

/// `bits` with all but its first `len` bits cleared.
fn mask(bits: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l => bits & (u128::MAX << (128 - u32::from(l))),
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or a prefix such as 10.2.0.0/16"))?;
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Err(format!(
                "`{s}`: write an IPv4 network in IPv4 form ({v4}/...)"
            ));
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        // IPv4 sits in the top 32 bits, so one mask serves both families.
        let (bits, shift) = match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 96),
            IpAddr::V6(a) => (u128::from(a), 0),
        };
        let net = mask(bits, len);
        if net != bits {
            let net: IpAddr = match addr {
                IpAddr::V4(_) => IpAddr::from(
                    u32::try_from(net >> shift)
                        .unwrap_or_default()
                        .to_be_bytes(),
                ),
                IpAddr::V6(_) => IpAddr::from(net.to_be_bytes()),
            };
            return Err(format!(
                "`{s}` has host bits set; write the network, `{net}/{len}`"
            ));
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn containment() {
        assert!(p("198.51.100.0/24").contains(ip("198.51.100.255")));
        assert!(!p("198.51.100.0/24").contains(ip("198.51.101.0")));
        assert!(p("10.0.0.0/8").contains(ip("10.200.1.1")));
        assert!(p("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!p("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(p("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!p("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(p("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!p("0.0.0.0/0").contains(ip("::1")));
        assert!(!p("::/0").contains(ip("203.0.113.9")));
        assert!(p("::/0").is_everything());
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn bad_prefixes_say_what_to_write() {
        let err = |s: &str| s.parse::<Prefix>().unwrap_err();
        assert!(
            err("10.0.0.1/8").contains("`10.0.0.0/8`"),
            "{}",
            err("10.0.0.1/8")
        );
        assert!(err("2001:db8::1/32").contains("`2001:db8::/32`"));
        assert!(err("10.0.0.0/33").contains("0 to 32"));
        assert!(err("::/129").contains("0 to 128"));
        assert!(err("backends").contains("not an address"));
        assert!(err("10.0.0.0/x").contains("0 to 32"));
        assert!(err("::ffff:10.0.0.0/104").contains("IPv4 form"));
    }
}
