//! Client-address pseudonyms (`[privacy] pseudonymise_clients`): what a
//! record shows in place of a client's IP address, decided before the
//! record is built, so nothing chained, spooled or delivered holds it.
//!
//! The pseudonym of an address is an IPv6 address in `100::/64`, the
//! discard-only prefix of RFC 6666, whose low 64 bits are the first 8 bytes
//! of HMAC-SHA256(key, address), the address in network byte order: 4
//! bytes for IPv4, 16 for IPv6 (an IPv4-mapped IPv6 address is its IPv4
//! address first, so a client has one pseudonym whichever socket saw it).
//! So `source.ip` stays an ECS `ip`, a pseudonym is never a routable
//! address anyone could take for a real one, the same client gets the same
//! pseudonym for as long as the key lives (on every host that has the same
//! key), and without the key nobody can tell which address it stands for:
//! unlike a plain hash, there is no table of the 2^32 IPv4 addresses to
//! look it up in.
//!
//! Who is a client: every address except the ones this host has
//! ([`Keep::local`], read at start), the networks configured in
//! `privacy.keep_networks` (backends, and VIPs a failover may move here)
//! and addresses that name no one (unspecified, loopback, multicast, the
//! IPv4 broadcast). One rule for flow, lifecycle, request and connection
//! records, so the records of one connection show the same pseudonym and,
//! computed over what they show, the same `network.community_id`.

pub mod hmac;
pub mod key;
pub mod local;
pub mod prefix;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lbwitness_trail::record::{PrivacyExtra, audit::StartPseudonyms};

use self::{hmac::HmacSha256, prefix::Prefix};

/// The discard-only prefix (RFC 6666) pseudonyms live in: `100::/64`.
pub const PSEUDONYM_PREFIX: u128 = 0x0100_0000_0000_0000 << 64;

/// The HMAC message that gives the key's public id; its length (6 bytes)
/// is no address's, so no address's MAC is the id.
const KEY_ID_MESSAGE: &[u8] = b"key-id";

/// The addresses that are not clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// This host's own addresses.
    pub local: BTreeSet<IpAddr>,
    /// `privacy.keep_networks`.
    pub networks: Vec<Prefix>,
}

impl Keep {
    /// Whether `ip` (canonical) is shown as it is.
    fn keeps(&self, ip: IpAddr) -> bool {
        let names_no_one = ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_multicast()
            || ip == IpAddr::V4(Ipv4Addr::BROADCAST);
        names_no_one || self.local.contains(&ip) || self.networks.iter().any(|n| n.contains(ip))
    }
}

/// What a record shows for one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// The address itself: not a client.
    Real(IpAddr),
    /// A client's pseudonym.
    Pseudonym(Ipv6Addr),
}

impl Shown {
    /// The address the record carries.
    pub fn ip(self) -> IpAddr {
        match self {
            Self::Real(ip) => ip,
            Self::Pseudonym(p) => IpAddr::V6(p),
        }
    }

    /// Whether it is a pseudonym.
    pub fn is_pseudonym(self) -> bool {
        matches!(self, Self::Pseudonym(_))
    }
}

/// Maps client addresses to their pseudonyms with one key.
#[derive(Clone, Debug)]
pub struct Pseudonymiser {
    mac: HmacSha256,
    key_id: String,
    keep: Keep,
}

impl Pseudonymiser {
    /// Pseudonyms under `key`, for every address `keep` does not keep.
    pub fn new(key: &[u8; 32], keep: Keep) -> Self {
        let mac = HmacSha256::new(key);
        let key_id = hex::encode(&mac.mac(KEY_ID_MESSAGE)[..8]);
        Self { mac, key_id, keep }
    }

    /// The key's public id (16 hex digits): records made under different
    /// keys have different ids, so equal pseudonyms mean one client only
    /// when the ids are equal too. It tells nothing about the key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// What this run pseudonymises, for its `agent-start` record.
    pub fn start_record(&self) -> StartPseudonyms {
        StartPseudonyms {
            keep_networks: self.keep.networks.iter().map(ToString::to_string).collect(),
            key_id: self.key_id.clone(),
            local_addresses: self.keep.local.iter().map(ToString::to_string).collect(),
        }
    }

    /// The pseudonym of `ip`, whoever it is.
    pub fn pseudonym(&self, ip: IpAddr) -> Ipv6Addr {
        let mac = match ip.to_canonical() {
            IpAddr::V4(a) => self.mac.mac(&a.octets()),
            IpAddr::V6(a) => self.mac.mac(&a.octets()),
        };
        let mut low = [0u8; 8];
        low.copy_from_slice(&mac[..8]);
        Ipv6Addr::from(PSEUDONYM_PREFIX | u128::from(u64::from_be_bytes(low)))
    }

    /// What a record shows for `ip`: a client's pseudonym, anyone else's
    /// address as it is.
    pub fn show(&self, ip: IpAddr) -> Shown {
        let canonical = ip.to_canonical();
        if self.keep.keeps(canonical) {
            Shown::Real(ip)
        } else {
            Shown::Pseudonym(self.pseudonym(canonical))
        }
    }

    /// `lbwitness.privacy` of a record whose `fields` hold pseudonyms
    /// (listed sorted); `None` when none does.
    pub fn mark(&self, mut fields: Vec<&'static str>) -> Option<PrivacyExtra> {
        fields.sort_unstable();
        fields.dedup();
        (!fields.is_empty()).then(|| PrivacyExtra {
            fields,
            key_id: self.key_id.clone(),
            pseudonymised: true,
        })
    }
}

/// Whether `ip` is in the pseudonyms' prefix, `100::/64`.
pub fn is_pseudonym(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(a) => u128::from(a) >> 64 == PSEUDONYM_PREFIX >> 64,
        IpAddr::V4(_) => false,
    }
}

/// The pair a Community ID is computed over, from the two addresses a
/// record shows: a pseudonym is IPv6, so beside an IPv4 address the IPv4
/// one is taken as its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`), which
/// every Community ID implementation hashes as 16 bytes like the other.
pub fn id_pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    let widen = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (widen(a), widen(b))
    }
}

/// The pseudonymiser of the record samples: key `[9; 32]`, this host
/// `192.0.2.1` and `198.51.100.1`, backends in `198.51.100.0/24`.
#[cfg(test)]
pub(crate) fn sample() -> std::sync::Arc<Pseudonymiser> {
    std::sync::Arc::new(Pseudonymiser::new(
        &[9; 32],
        Keep {
            local: ["192.0.2.1", "198.51.100.1"]
                .map(|a| a.parse().unwrap())
                .into(),
            networks: vec!["198.51.100.0/24".parse().unwrap()],
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn with(key: u8, keep: Keep) -> Pseudonymiser {
        Pseudonymiser::new(&[key; 32], keep)
    }

    fn lb_keep() -> Keep {
        Keep {
            local: [ip("192.0.2.1"), ip("198.51.100.1"), ip("fe80::1")].into(),
            networks: vec!["198.51.100.0/24".parse().unwrap()],
        }
    }

    #[test]
    fn a_pseudonym_is_the_truncated_hmac_in_100_64() {
        let p = with(7, Keep::default());
        let key = [7u8; 32];
        for addr in ["192.0.2.10", "2001:db8::10"] {
            let a = ip(addr);
            let bytes = match a {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            };
            let mac = HmacSha256::new(&key).mac(&bytes);
            let got = p.pseudonym(a).octets();
            assert_eq!(got[..8], [1, 0, 0, 0, 0, 0, 0, 0], "{addr}");
            assert_eq!(got[8..], mac[..8], "{addr}");
            assert!(is_pseudonym(IpAddr::V6(p.pseudonym(a))));
        }
    }

    #[test]
    fn deterministic_per_key_and_different_across_keys() {
        let (a, b) = (with(1, Keep::default()), with(2, Keep::default()));
        let again = with(1, Keep::default());
        for addr in [
            "192.0.2.10",
            "192.0.2.11",
            "2001:db8::1",
            "::ffff:192.0.2.10",
        ] {
            assert_eq!(a.pseudonym(ip(addr)), again.pseudonym(ip(addr)));
            assert_ne!(a.pseudonym(ip(addr)), b.pseudonym(ip(addr)));
        }
        assert_ne!(a.pseudonym(ip("192.0.2.10")), a.pseudonym(ip("192.0.2.11")));
        // A v4 address and its v4-mapped form are one client; the IPv6
        // address with the same low bytes is another.
        assert_eq!(
            a.pseudonym(ip("192.0.2.10")),
            a.pseudonym(ip("::ffff:192.0.2.10"))
        );
        assert_ne!(a.pseudonym(ip("192.0.2.10")), a.pseudonym(ip("::c000:20a")));
        assert_eq!(a.key_id(), again.key_id());
        assert_ne!(a.key_id(), b.key_id());
        assert_eq!(a.key_id().len(), 16);
    }

    #[test]
    fn distinct_clients_get_distinct_pseudonyms() {
        let p = with(3, Keep::default());
        let seen: BTreeSet<Ipv6Addr> = (0..=255u8)
            .flat_map(|c| (0..=255u8).map(move |d| IpAddr::from([10, 9, c, d])))
            .map(|a| p.pseudonym(a))
            .collect();
        assert_eq!(seen.len(), 65_536);
    }

    #[test]
    fn only_clients_are_pseudonymised() {
        let p = with(5, lb_keep());
        for kept in [
            "192.0.2.1",
            "198.51.100.2",
            "fe80::1",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "224.0.0.251",
            "ff02::1",
            "255.255.255.255",
            "::ffff:198.51.100.6",
        ] {
            assert_eq!(p.show(ip(kept)), Shown::Real(ip(kept)), "{kept}");
        }
        for client in [
            "192.0.2.10",
            "203.0.113.9",
            "fe80::2",
            "2001:db8::7",
            "::ffff:192.0.2.10",
        ] {
            let shown = p.show(ip(client));
            assert!(shown.is_pseudonym(), "{client}");
            assert!(is_pseudonym(shown.ip()), "{client}");
        }
    }

    #[test]
    fn marks_name_the_fields_and_the_key() {
        let p = with(5, lb_keep());
        assert!(p.mark(Vec::new()).is_none());
        let m = p.mark(vec!["source.ip"]).unwrap();
        assert!(m.pseudonymised);
        assert_eq!(m.fields, ["source.ip"]);
        let both = p
            .mark(vec!["source.ip", "destination.ip", "source.ip"])
            .unwrap();
        assert_eq!(both.fields, ["destination.ip", "source.ip"]);
        assert_eq!(m.key_id, p.key_id());
    }

    #[test]
    fn id_pairs_share_a_family() {
        assert_eq!(
            id_pair(ip("100::1"), ip("192.0.2.1")),
            (ip("100::1"), ip("::ffff:192.0.2.1"))
        );
        assert_eq!(
            id_pair(ip("192.0.2.1"), ip("192.0.2.2")),
            (ip("192.0.2.1"), ip("192.0.2.2"))
        );
        assert_eq!(
            id_pair(ip("100::1"), ip("2001:db8::1")),
            (ip("100::1"), ip("2001:db8::1"))
        );
    }
}
