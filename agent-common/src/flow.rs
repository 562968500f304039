//! Flow accounting: the flow map's key and value, and lifecycle events.

use crate::event::EventHeader;

/// IP version values stored in [`FlowKey::ip_version`].
pub const IP_V4: u8 = 4;
/// See [`IP_V4`].
pub const IP_V6: u8 = 6;

/// IANA protocol numbers the parser understands.
pub mod proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP (RFC 9260): ports sit where TCP's and UDP's do.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits as stored in [`FlowStats::tcp_flags`] and
/// [`FlowEvent::tcp_flags`]: the low 9 bits of TCP header bytes 12..14.
pub mod tcp_flag {
    /// FIN.
    pub const FIN: u16 = 0x001;
    /// SYN.
    pub const SYN: u16 = 0x002;
    /// RST.
    pub const RST: u16 = 0x004;
    /// PSH.
    pub const PSH: u16 = 0x008;
    /// ACK.
    pub const ACK: u16 = 0x010;
    /// URG.
    pub const URG: u16 = 0x020;
    /// ECE.
    pub const ECE: u16 = 0x040;
    /// CWR.
    pub const CWR: u16 = 0x080;
    /// NS (RFC 3540, historic).
    pub const NS: u16 = 0x100;
    /// Every flag bit.
    pub const MASK: u16 = 0x1ff;
}

/// Why a [`FlowEvent`] was sent: a bit set, one packet can be several.
pub mod reason {
    /// First packet of a flow the map did not hold.
    pub const NEW: u32 = 1;
    /// The packet carries SYN.
    pub const SYN: u32 = 2;
    /// The packet carries FIN.
    pub const FIN: u32 = 4;
    /// The packet carries RST.
    pub const RST: u32 = 8;
}

/// Key of the flow map: one direction of a flow as seen on one interface.
///
/// IPv4 addresses fill the first 4 bytes of the 16-byte fields and the rest
/// is zero. TCP, UDP and SCTP carry their ports. For ICMP and ICMPv6, `src_port` holds the type and `dst_port` the
/// code (the Community ID convention); for other protocols without ports both
/// are zero.
///
/// Aligned to 8 so the XDP program can fill the address fields with 64-bit
/// stores (the verifier refuses misaligned stack access).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address, network byte order.
    pub src_addr: [u8; 16],
    /// Destination address, network byte order.
    pub dst_addr: [u8; 16],
    /// Ingress interface index.
    pub ifindex: u32,
    /// Source port (host byte order), or ICMP type.
    pub src_port: u16,
    /// Destination port (host byte order), or ICMP code.
    pub dst_port: u16,
    /// Outer VLAN id (12 bits) when `vlan_depth >= 1`, else 0.
    pub vlan_outer: u16,
    /// Inner VLAN id when `vlan_depth == 2`, else 0.
    pub vlan_inner: u16,
    /// [`IP_V4`] or [`IP_V6`].
    pub ip_version: u8,
    /// IANA protocol number of the transport (after IPv6 extension headers).
    pub protocol: u8,
    /// Number of VLAN tags on the frame: 0, 1 or 2.
    pub vlan_depth: u8,
    /// Explicit padding, always zero (the key is hashed byte for byte).
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 8);

impl FlowKey {
    /// Source address as an [`core::net::IpAddr`].
    pub fn src_ip(&self) -> core::net::IpAddr {
        ip_from(self.ip_version, &self.src_addr)
    }

    /// Destination address as an [`core::net::IpAddr`].
    pub fn dst_ip(&self) -> core::net::IpAddr {
        ip_from(self.ip_version, &self.dst_addr)
    }
}

fn ip_from(version: u8, raw: &[u8; 16]) -> core::net::IpAddr {
    if version == IP_V4 {
        core::net::IpAddr::from([raw[0], raw[1], raw[2], raw[3]])
    } else {
        core::net::IpAddr::from(*raw)
    }
}

/// Value of the flow map. Updated concurrently by every CPU with atomic adds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// `bpf_ktime_get_ns()` of the first packet (CLOCK_MONOTONIC, ns).
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_ns()` of the latest packet.
    pub last_seen_ns: u64,
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen: the IP total length (IPv4) or payload length + 40 (IPv6).
    pub bytes: u64,
    /// OR of every packet's [`tcp_flag`] bits.
    pub tcp_flags: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<FlowStats>() == 40);

/// A lifecycle event: the first packet of a flow, or a SYN, FIN or RST.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// Common header; `kind` is [`crate::event::EventKind::Flow`].
    pub header: EventHeader,
    /// The flow.
    pub key: FlowKey,
    /// [`reason`] bits.
    pub reasons: u32,
    /// The packet's own [`tcp_flag`] bits (0 for non-TCP).
    pub tcp_flags: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// The packet's accounted length in bytes (see [`FlowStats::bytes`]).
    pub ip_len: u32,
    /// Explicit padding, always zero.
    pub _pad2: u32,
}

const _: () = assert!(core::mem::size_of::<FlowEvent>() == 80);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with explicit padding, valid for any bytes.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowStats {}
}
