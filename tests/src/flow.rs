//! The flow key and counters that the frame builder predicts and the tshark
//! oracle measures, in the agent's conventions so tests can compare them with
//! the agent's flow records field by field.

use std::fmt;
use std::net::IpAddr;

/// One direction of a flow, keyed like the agent's `FlowKey` (minus the
/// interface index, which the test knows).
///
/// Conventions, matching the agent:
/// * ICMP and ICMPv6: `src_port` is the type and `dst_port` the code;
/// * protocols without ports (GRE, ...): both ports are 0;
/// * `protocol` is the transport after IPv6 extension headers;
/// * `vlan_outer` is the first tag's VLAN id, `vlan_inner` the second's (0
///   when absent); `vlan_depth` is the number of tags, which can be 3 or
///   more here although the agent stops at 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowTuple {
    /// 4 or 6.
    pub ip_version: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IANA protocol number of the transport.
    pub protocol: u8,
    /// Source port, or ICMP type.
    pub src_port: u16,
    /// Destination port, or ICMP code.
    pub dst_port: u16,
    /// VLAN id of the outermost tag, 0 if untagged.
    pub vlan_outer: u16,
    /// VLAN id of the second tag, 0 if fewer than two tags.
    pub vlan_inner: u16,
    /// Number of VLAN tags.
    pub vlan_depth: u8,
}

impl fmt::Display for FlowTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{} {} {}:{} -> {}:{} vlan {}/{} (depth {})",
            self.ip_version,
            self.protocol,
            self.src,
            self.src_port,
            self.dst,
            self.dst_port,
            self.vlan_outer,
            self.vlan_inner,
            self.vlan_depth
        )
    }
}

/// Packets and bytes of one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowCount {
    /// Number of packets.
    pub packets: u64,
    /// Sum of the IPv4 total length, or IPv6 payload length + 40.
    pub bytes: u64,
    /// OR of the packets' TCP flags (low 9 bits of header bytes 12..14).
    pub tcp_flags: u16,
}

impl FlowCount {
    /// Accounts one packet of `ip_len` bytes with TCP flags `tcp_flags`.
    pub fn add(&mut self, ip_len: u64, tcp_flags: u16) {
        self.packets += 1;
        self.bytes += ip_len;
        self.tcp_flags |= tcp_flags;
    }
}
