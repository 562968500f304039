//! A pure builder of raw Ethernet frames for `BPF_PROG_TEST_RUN` tests,
//! packet injection and benchmarks.
//!
//! ```
//! use integration_tests::frames::{Frame, tcp_flags};
//!
//! // QinQ (S-tag 100, C-tag 200), IPv4 with DF, TCP SYN with an MSS option.
//! let frame = Frame::ipv4([192, 0, 2, 1], [192, 0, 2, 2])
//!     .vlan_ad(100)
//!     .vlan(200)
//!     .df()
//!     .tcp(40000, 80)
//!     .tcp_flags(tcp_flags::SYN)
//!     .tcp_options(vec![2, 4, 0x05, 0xb4])
//!     .payload(b"hello".to_vec());
//! let bytes = frame.build();
//! assert_eq!(bytes.len(), 14 + 8 + 20 + 24 + 5);
//! assert_eq!(frame.ip_len(), Some(20 + 24 + 5));
//! ```
//!
//! Every length and checksum is computed from what is actually serialized,
//! so a default frame is valid on a real kernel stack; the `*_override`
//! fields (and builder methods such as [`Frame::ipv4_total_len`]) replace a
//! computed value to craft malformed headers, and [`Frame::truncate`] cuts
//! the frame at any byte. The L4 checksum is computed over the segment as
//! serialized in this frame, even for fragments (a fragment's checksum is
//! therefore not that of the reassembled datagram; the agent does not check
//! it), and the IPv6 pseudo-header uses the IPv6 header's destination even
//! when a routing header is present.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flow::FlowTuple;

/// TPID of an 802.1Q (customer) VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad (service, "QinQ") VLAN tag.
pub const TPID_8021AD: u16 = 0x88a8;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of an untagged Ethernet header.
pub const ETH_HLEN: usize = 14;
/// Minimum Ethernet frame length without the FCS; see [`Frame::pad`].
pub const ETH_ZLEN: usize = 60;

/// IANA protocol numbers used by the builder.
pub mod proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// Reserved for experimentation (RFC 3692); the default IPv4 payload.
    pub const EXPERIMENTAL: u8 = 253;
}

/// TCP flag bits: the low 9 bits of TCP header bytes 12..14, as the agent
/// stores them. Bits 0x200..0x800 are the reserved bits, settable too.
pub mod tcp_flags {
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
    /// NS (RFC 3540), the low bit of header byte 12.
    pub const NS: u16 = 0x100;
}

/// One VLAN tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// [`TPID_8021Q`], [`TPID_8021AD`] or anything else.
    pub tpid: u16,
    /// VLAN id; only the low 12 bits are serialized.
    pub vid: u16,
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
}

/// IPv4 header fields. Lengths and the checksum are computed unless their
/// `*_override` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Type of service / DSCP+ECN byte.
    pub tos: u8,
    /// Identification.
    pub id: u16,
    /// The reserved ("evil") flag bit.
    pub reserved_flag: bool,
    /// Don't fragment.
    pub df: bool,
    /// More fragments.
    pub mf: bool,
    /// Fragment offset in 8-byte units (13 bits).
    pub frag_offset: u16,
    /// Time to live.
    pub ttl: u8,
    /// Option bytes; zero-padded (EOL) to a multiple of 4, at most 40.
    pub options: Vec<u8>,
    /// Replaces the version nibble (4).
    pub version_override: Option<u8>,
    /// Replaces the IHL nibble (header length / 4).
    pub ihl_override: Option<u8>,
    /// Replaces the total length.
    pub total_len_override: Option<u16>,
    /// Replaces the protocol (by default that of the [`L4`]).
    pub protocol_override: Option<u8>,
    /// Replaces the header checksum.
    pub checksum_override: Option<u16>,
}

/// IPv6 header fields. The payload length and next headers are computed
/// unless overridden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Hop limit.
    pub hop_limit: u8,
    /// Extension headers in wire order.
    pub ext: Vec<ExtHeader>,
    /// Replaces the version nibble (6).
    pub version_override: Option<u8>,
    /// Replaces the payload length.
    pub payload_len_override: Option<u16>,
    /// Replaces the fixed header's next header.
    pub next_header_override: Option<u8>,
}

/// An IPv6 extension header. The builder fills in each next-header byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options (type 0): option TLVs, padded with Pad1/PadN to a
    /// multiple of 8 bytes.
    HopByHop(Vec<u8>),
    /// Routing header (type 43): the 4 fixed bytes, then `data`, zero-padded
    /// to a multiple of 8 bytes.
    Routing {
        /// Routing type (e.g. 4 for a segment routing header).
        routing_type: u8,
        /// Segments left.
        segments_left: u8,
        /// Type-specific data after the first 4 bytes.
        data: Vec<u8>,
    },
    /// Destination options (type 60), padded like [`ExtHeader::HopByHop`].
    DestOpts(Vec<u8>),
    /// Fragment header (type 44).
    Fragment {
        /// Fragment offset in 8-byte units (13 bits).
        offset: u16,
        /// More fragments.
        more: bool,
        /// Identification.
        id: u32,
    },
    /// Any header, serialized as `bytes` with byte 0 replaced by the next
    /// header; for unknown types or a lying `hdr_ext_len`.
    Raw {
        /// The protocol number announcing this header.
        header_type: u8,
        /// The header, including the next-header byte.
        bytes: Vec<u8>,
    },
}

impl ExtHeader {
    /// A well-formed segment routing header (routing type 4, RFC 8754)
    /// listing `segments` (in header order: the final one first).
    pub fn srh(segments: &[Ipv6Addr], segments_left: u8) -> Self {
        // Last entry, flags, tag (2 bytes), then the addresses.
        let mut data = vec![segments.len().saturating_sub(1) as u8, 0, 0, 0];
        for segment in segments {
            data.extend_from_slice(&segment.octets());
        }
        Self::Routing {
            routing_type: 4,
            segments_left,
            data,
        }
    }

    /// The protocol number that announces this header.
    pub fn header_type(&self) -> u8 {
        match self {
            Self::HopByHop(_) => proto::HOPOPT,
            Self::Routing { .. } => proto::ROUTING,
            Self::DestOpts(_) => proto::DSTOPTS,
            Self::Fragment { .. } => proto::FRAGMENT,
            Self::Raw { header_type, .. } => *header_type,
        }
    }

    /// Serializes the header with `next` as its next header.
    fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Self::HopByHop(opts) | Self::DestOpts(opts) => {
                let mut out = vec![next, 0];
                out.extend_from_slice(opts);
                // Pad1 for a single byte, PadN otherwise (RFC 8200 4.2).
                match (8 - out.len() % 8) % 8 {
                    0 => {}
                    1 => out.push(0),
                    n => {
                        out.extend_from_slice(&[1, (n - 2) as u8]);
                        out.resize(out.len() + n - 2, 0);
                    }
                }
                out[1] = (out.len() / 8 - 1) as u8;
                out
            }
            Self::Routing {
                routing_type,
                segments_left,
                data,
            } => {
                let mut out = vec![next, 0, *routing_type, *segments_left];
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(8).max(1) * 8, 0);
                out[1] = (out.len() / 8 - 1) as u8;
                out
            }
            Self::Fragment { offset, more, id } => {
                let mut out = vec![next, 0];
                out.extend_from_slice(&((offset & 0x1fff) << 3 | u16::from(*more)).to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
                out
            }
            Self::Raw { bytes, .. } => {
                let mut out = bytes.clone();
                if let Some(first) = out.first_mut() {
                    *first = next;
                }
                out
            }
        }
    }
}

/// The network layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L3 {
    /// IPv4.
    Ipv4(Ipv4),
    /// IPv6.
    Ipv6(Ipv6),
    /// Not IP: the frame's payload follows the Ethernet header directly and
    /// the [`L4`] is ignored.
    Other {
        /// The EtherType.
        ethertype: u16,
    },
}

/// TCP header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// [`tcp_flags`] bits (up to 12 bits: NS and the reserved bits too).
    pub flags: u16,
    /// Window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Option bytes, zero-padded (EOL) to a multiple of 4.
    pub options: Vec<u8>,
    /// Replaces the data offset nibble (header length / 4).
    pub data_offset_override: Option<u8>,
    /// Replaces the checksum.
    pub checksum_override: Option<u16>,
}

/// UDP header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Udp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Replaces the length.
    pub length_override: Option<u16>,
    /// Replaces the checksum (`Some(0)`: "no checksum" over IPv4).
    pub checksum_override: Option<u16>,
}

/// ICMP or ICMPv6 header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Icmp {
    /// Type.
    pub icmp_type: u8,
    /// Code.
    pub code: u8,
    /// The 4 bytes after the checksum (identifier and sequence for echo).
    pub rest: [u8; 4],
    /// Replaces the checksum.
    pub checksum_override: Option<u16>,
}

/// SCTP common header fields (RFC 9260 3.1). The frame's payload holds the
/// chunks (see [`sctp_chunk`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sctp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Verification tag.
    pub verification_tag: u32,
    /// Replaces the CRC32c checksum (as stored: little-endian bytes).
    pub checksum_override: Option<u32>,
}

/// SCTP chunk types used by the tests (RFC 9260 3.2).
pub mod sctp_chunk_type {
    /// Payload data.
    pub const DATA: u8 = 0;
    /// Association initiation.
    pub const INIT: u8 = 1;
}

/// One SCTP chunk: type, flags, length, value, zero-padded to 4 bytes.
pub fn sctp_chunk(chunk_type: u8, flags: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![chunk_type, flags];
    out.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    out.extend_from_slice(value);
    pad_to(&out, 4)
}

/// An SCTP INIT chunk with `initiate_tag`, a 64 KiB window and one stream
/// each way.
pub fn sctp_init_chunk(initiate_tag: u32) -> Vec<u8> {
    let mut value = initiate_tag.to_be_bytes().to_vec();
    value.extend_from_slice(&65536u32.to_be_bytes());
    value.extend_from_slice(&1u16.to_be_bytes());
    value.extend_from_slice(&1u16.to_be_bytes());
    value.extend_from_slice(&initiate_tag.to_be_bytes());
    sctp_chunk(sctp_chunk_type::INIT, 0, &value)
}

/// The transport layer; the frame's payload follows its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP (6).
    Tcp(Tcp),
    /// UDP (17).
    Udp(Udp),
    /// ICMP (1).
    Icmpv4(Icmp),
    /// ICMPv6 (58), checksummed with the IPv6 pseudo-header.
    Icmpv6(Icmp),
    /// SCTP (132), checksummed with CRC32c over the packet alone.
    Sctp(Sctp),
    /// Any other protocol (e.g. [`proto::GRE`]): no header, the payload is
    /// the whole L4 content. Also the way to build a non-first fragment,
    /// whose bytes are not an L4 header: `.frag_offset(n).other(proto::TCP)`.
    Other {
        /// The IP protocol number.
        protocol: u8,
    },
}

impl L4 {
    /// The IP protocol number.
    pub fn protocol(&self) -> u8 {
        match self {
            Self::Tcp(_) => proto::TCP,
            Self::Udp(_) => proto::UDP,
            Self::Icmpv4(_) => proto::ICMP,
            Self::Icmpv6(_) => proto::ICMPV6,
            Self::Sctp(_) => proto::SCTP,
            Self::Other { protocol } => *protocol,
        }
    }

    /// Length of the header the builder writes (the payload excluded).
    pub fn header_len(&self) -> usize {
        match self {
            Self::Tcp(tcp) => 20 + tcp.options.len().div_ceil(4) * 4,
            Self::Udp(_) | Self::Icmpv4(_) | Self::Icmpv6(_) => 8,
            Self::Sctp(_) => 12,
            Self::Other { .. } => 0,
        }
    }
}

/// A raw Ethernet frame: build it with the chainable methods, then
/// [`Frame::build`]. All fields are public for cases the methods miss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tags, outermost first.
    pub vlans: Vec<VlanTag>,
    /// Replaces the innermost EtherType (by default that of the [`L3`]).
    pub ethertype_override: Option<u16>,
    /// Network layer.
    pub l3: L3,
    /// Transport layer (ignored for [`L3::Other`]).
    pub l4: L4,
    /// Bytes after the L4 header (or after the Ethernet header for
    /// [`L3::Other`]).
    pub payload: Vec<u8>,
    /// Zero-pad the frame to [`ETH_ZLEN`] bytes, as a NIC would on the wire.
    pub pad: bool,
    /// Cut the built frame to this many bytes (after padding).
    pub truncate: Option<usize>,
}

/// Default source MAC: locally administered, so never a real NIC's.
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Default destination MAC.
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

impl Default for Frame {
    /// Same as [`Frame::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Frame {
    /// IPv4 UDP from 192.0.2.1:10000 to 192.0.2.2:20000 with no payload,
    /// between [`DEFAULT_SRC_MAC`] and [`DEFAULT_DST_MAC`].
    pub fn new() -> Self {
        Self::ipv4([192, 0, 2, 1], [192, 0, 2, 2]).udp(10000, 20000)
    }

    /// IPv4 from `src` to `dst` carrying protocol [`proto::EXPERIMENTAL`]
    /// until an L4 method is called. TTL 64, no flags.
    pub fn ipv4(src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Self {
        Self::with_l3(L3::Ipv4(Ipv4 {
            src: src.into(),
            dst: dst.into(),
            tos: 0,
            id: 0x1234,
            reserved_flag: false,
            df: false,
            mf: false,
            frag_offset: 0,
            ttl: 64,
            options: Vec::new(),
            version_override: None,
            ihl_override: None,
            total_len_override: None,
            protocol_override: None,
            checksum_override: None,
        }))
        .other(proto::EXPERIMENTAL)
    }

    /// IPv6 from `src` to `dst` with next header [`proto::NONE`] until an L4
    /// method is called. Hop limit 64.
    pub fn ipv6(src: impl Into<Ipv6Addr>, dst: impl Into<Ipv6Addr>) -> Self {
        Self::with_l3(L3::Ipv6(Ipv6 {
            src: src.into(),
            dst: dst.into(),
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 64,
            ext: Vec::new(),
            version_override: None,
            payload_len_override: None,
            next_header_override: None,
        }))
        .other(proto::NONE)
    }

    /// IPv4 or IPv6 depending on the addresses.
    ///
    /// # Panics
    /// If the families differ.
    pub fn ip(src: IpAddr, dst: IpAddr) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Self::ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Self::ipv6(s, d),
            _ => panic!("Frame::ip: mixed address families {src} -> {dst}"),
        }
    }

    /// A non-IP frame (ARP, LLDP, ...) whose `payload` follows the
    /// Ethernet header.
    pub fn non_ip(ethertype: u16, payload: Vec<u8>) -> Self {
        let mut frame = Self::with_l3(L3::Other { ethertype });
        frame.payload = payload;
        frame
    }

    fn with_l3(l3: L3) -> Self {
        Self {
            dst_mac: DEFAULT_DST_MAC,
            src_mac: DEFAULT_SRC_MAC,
            vlans: Vec::new(),
            ethertype_override: None,
            l3,
            l4: L4::Other {
                protocol: proto::EXPERIMENTAL,
            },
            payload: Vec::new(),
            pad: false,
            truncate: None,
        }
    }

    // ---- Ethernet ----

    /// Sets the source MAC.
    pub fn src_mac(mut self, mac: [u8; 6]) -> Self {
        self.src_mac = mac;
        self
    }

    /// Sets the destination MAC.
    pub fn dst_mac(mut self, mac: [u8; 6]) -> Self {
        self.dst_mac = mac;
        self
    }

    /// Appends an 802.1Q tag (inside the tags already added).
    pub fn vlan(self, vid: u16) -> Self {
        self.vlan_tag(TPID_8021Q, vid, 0)
    }

    /// Appends an 802.1ad tag (inside the tags already added); the usual
    /// QinQ frame is `.vlan_ad(outer).vlan(inner)`.
    pub fn vlan_ad(self, vid: u16) -> Self {
        self.vlan_tag(TPID_8021AD, vid, 0)
    }

    /// Appends a tag with any TPID and priority.
    pub fn vlan_tag(mut self, tpid: u16, vid: u16, pcp: u8) -> Self {
        self.vlans.push(VlanTag {
            tpid,
            vid,
            pcp,
            dei: false,
        });
        self
    }

    /// Replaces the innermost EtherType.
    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.ethertype_override = Some(ethertype);
        self
    }

    /// Zero-pads the frame to the 60-byte Ethernet minimum. The padding is
    /// after the IP packet, so [`Frame::ip_len`] is unchanged.
    pub fn pad(mut self) -> Self {
        self.pad = true;
        self
    }

    /// Cuts the built frame to `len` bytes (for malformed-frame tests).
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    // ---- IP, both versions ----

    /// Replaces the IP version nibble.
    pub fn ip_version_nibble(mut self, version: u8) -> Self {
        match &mut self.l3 {
            L3::Ipv4(ip) => ip.version_override = Some(version),
            L3::Ipv6(ip) => ip.version_override = Some(version),
            L3::Other { .. } => panic!("ip_version_nibble: not an IP frame"),
        }
        self
    }

    /// Replaces the protocol of the IPv4 header, or the next header of the
    /// fixed IPv6 header.
    pub fn ip_protocol(mut self, protocol: u8) -> Self {
        match &mut self.l3 {
            L3::Ipv4(ip) => ip.protocol_override = Some(protocol),
            L3::Ipv6(ip) => ip.next_header_override = Some(protocol),
            L3::Other { .. } => panic!("ip_protocol: not an IP frame"),
        }
        self
    }

    /// Sets the IPv4 TTL or IPv6 hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        match &mut self.l3 {
            L3::Ipv4(ip) => ip.ttl = ttl,
            L3::Ipv6(ip) => ip.hop_limit = ttl,
            L3::Other { .. } => panic!("ttl: not an IP frame"),
        }
        self
    }

    // ---- IPv4 ----

    fn v4(&mut self) -> &mut Ipv4 {
        match &mut self.l3 {
            L3::Ipv4(ip) => ip,
            _ => panic!("not an IPv4 frame"),
        }
    }

    /// Sets the IPv4 identification.
    pub fn ip_id(mut self, id: u16) -> Self {
        self.v4().id = id;
        self
    }

    /// Sets the IPv4 TOS byte.
    pub fn tos(mut self, tos: u8) -> Self {
        self.v4().tos = tos;
        self
    }

    /// Sets the IPv4 don't-fragment flag.
    pub fn df(mut self) -> Self {
        self.v4().df = true;
        self
    }

    /// Sets the IPv4 more-fragments flag.
    pub fn mf(mut self) -> Self {
        self.v4().mf = true;
        self
    }

    /// Sets the IPv4 fragment offset, in 8-byte units.
    pub fn frag_offset(mut self, units: u16) -> Self {
        self.v4().frag_offset = units;
        self
    }

    /// Sets the IPv4 options (zero-padded to a multiple of 4 bytes).
    ///
    /// # Panics
    /// In [`Frame::build`] if they exceed 40 bytes.
    pub fn ipv4_options(mut self, options: Vec<u8>) -> Self {
        self.v4().options = options;
        self
    }

    /// Replaces the IPv4 total length.
    pub fn ipv4_total_len(mut self, len: u16) -> Self {
        self.v4().total_len_override = Some(len);
        self
    }

    /// Replaces the IPv4 IHL nibble.
    pub fn ipv4_ihl(mut self, ihl: u8) -> Self {
        self.v4().ihl_override = Some(ihl);
        self
    }

    /// Replaces the IPv4 header checksum.
    pub fn ipv4_checksum(mut self, checksum: u16) -> Self {
        self.v4().checksum_override = Some(checksum);
        self
    }

    // ---- IPv6 ----

    fn v6(&mut self) -> &mut Ipv6 {
        match &mut self.l3 {
            L3::Ipv6(ip) => ip,
            _ => panic!("not an IPv6 frame"),
        }
    }

    /// Appends an extension header.
    pub fn ext(mut self, header: ExtHeader) -> Self {
        self.v6().ext.push(header);
        self
    }

    /// Appends an empty (padding-only) hop-by-hop options header.
    pub fn hop_by_hop(self) -> Self {
        self.ext(ExtHeader::HopByHop(Vec::new()))
    }

    /// Appends a routing header with no addresses. tshark flags type 4 (a
    /// segment routing header needs one) as malformed; see
    /// [`ExtHeader::srh`] for a valid one.
    pub fn routing(self, routing_type: u8, segments_left: u8) -> Self {
        self.ext(ExtHeader::Routing {
            routing_type,
            segments_left,
            data: Vec::new(),
        })
    }

    /// Appends an empty (padding-only) destination options header.
    pub fn dest_opts(self) -> Self {
        self.ext(ExtHeader::DestOpts(Vec::new()))
    }

    /// Appends a fragment header; `offset` in 8-byte units.
    pub fn fragment(self, offset: u16, more: bool) -> Self {
        self.ext(ExtHeader::Fragment {
            offset,
            more,
            id: 0x0bad_cafe,
        })
    }

    /// Replaces the IPv6 payload length.
    pub fn ipv6_payload_len(mut self, len: u16) -> Self {
        self.v6().payload_len_override = Some(len);
        self
    }

    /// Sets the IPv6 traffic class.
    pub fn traffic_class(mut self, tc: u8) -> Self {
        self.v6().traffic_class = tc;
        self
    }

    /// Sets the IPv6 flow label (20 bits).
    pub fn flow_label(mut self, label: u32) -> Self {
        self.v6().flow_label = label;
        self
    }

    // ---- L4 ----

    /// TCP from `src_port` to `dst_port`, no flags, window 65535.
    pub fn tcp(mut self, src_port: u16, dst_port: u16) -> Self {
        self.l4 = L4::Tcp(Tcp {
            src_port,
            dst_port,
            seq: 1,
            ack: 0,
            flags: 0,
            window: 65535,
            urgent: 0,
            options: Vec::new(),
            data_offset_override: None,
            checksum_override: None,
        });
        self
    }

    fn tcp_mut(&mut self) -> &mut Tcp {
        match &mut self.l4 {
            L4::Tcp(tcp) => tcp,
            _ => panic!("not a TCP frame: call .tcp() first"),
        }
    }

    /// Sets the TCP flags ([`tcp_flags`] bits).
    pub fn tcp_flags(mut self, flags: u16) -> Self {
        self.tcp_mut().flags = flags;
        self
    }

    /// Sets the TCP sequence and acknowledgment numbers.
    pub fn tcp_seq(mut self, seq: u32, ack: u32) -> Self {
        let tcp = self.tcp_mut();
        tcp.seq = seq;
        tcp.ack = ack;
        self
    }

    /// Sets the TCP window.
    pub fn tcp_window(mut self, window: u16) -> Self {
        self.tcp_mut().window = window;
        self
    }

    /// Sets the TCP options (zero-padded to a multiple of 4 bytes).
    pub fn tcp_options(mut self, options: Vec<u8>) -> Self {
        self.tcp_mut().options = options;
        self
    }

    /// Replaces the TCP data offset nibble.
    pub fn tcp_data_offset(mut self, words: u8) -> Self {
        self.tcp_mut().data_offset_override = Some(words);
        self
    }

    /// UDP from `src_port` to `dst_port`.
    pub fn udp(mut self, src_port: u16, dst_port: u16) -> Self {
        self.l4 = L4::Udp(Udp {
            src_port,
            dst_port,
            length_override: None,
            checksum_override: None,
        });
        self
    }

    /// Replaces the UDP length.
    pub fn udp_len(mut self, len: u16) -> Self {
        match &mut self.l4 {
            L4::Udp(udp) => udp.length_override = Some(len),
            _ => panic!("not a UDP frame: call .udp() first"),
        }
        self
    }

    /// ICMP with `icmp_type` and `code` (8/0 is an echo request).
    pub fn icmpv4(mut self, icmp_type: u8, code: u8) -> Self {
        self.l4 = L4::Icmpv4(Icmp {
            icmp_type,
            code,
            rest: [0, 1, 0, 1],
            checksum_override: None,
        });
        self
    }

    /// ICMPv6 with `icmp_type` and `code` (128/0 is an echo request).
    pub fn icmpv6(mut self, icmp_type: u8, code: u8) -> Self {
        self.l4 = L4::Icmpv6(Icmp {
            icmp_type,
            code,
            rest: [0, 1, 0, 1],
            checksum_override: None,
        });
        self
    }

    /// SCTP from `src_port` to `dst_port` with verification tag 0 (as an
    /// INIT has); the payload is the chunks.
    pub fn sctp(mut self, src_port: u16, dst_port: u16) -> Self {
        self.l4 = L4::Sctp(Sctp {
            src_port,
            dst_port,
            verification_tag: 0,
            checksum_override: None,
        });
        self
    }

    /// Sets the SCTP verification tag.
    pub fn sctp_verification_tag(mut self, tag: u32) -> Self {
        match &mut self.l4 {
            L4::Sctp(sctp) => sctp.verification_tag = tag,
            _ => panic!("not an SCTP frame: call .sctp() first"),
        }
        self
    }

    /// Another protocol with no header of its own: the payload is the whole
    /// L4 content. E.g. GRE: `.other(proto::GRE).payload(vec![0, 0, 0x08, 0])`.
    pub fn other(mut self, protocol: u8) -> Self {
        self.l4 = L4::Other { protocol };
        self
    }

    /// Replaces the TCP, UDP, ICMP or ICMPv6 checksum.
    pub fn l4_checksum(mut self, checksum: u16) -> Self {
        match &mut self.l4 {
            L4::Tcp(h) => h.checksum_override = Some(checksum),
            L4::Udp(h) => h.checksum_override = Some(checksum),
            L4::Icmpv4(h) | L4::Icmpv6(h) => h.checksum_override = Some(checksum),
            L4::Sctp(h) => h.checksum_override = Some(u32::from(checksum)),
            L4::Other { .. } => panic!("l4_checksum: the L4 has no checksum field"),
        }
        self
    }

    /// Sets the bytes after the L4 header.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Sets a payload of `len` bytes of a recognizable pattern.
    pub fn payload_len(self, len: usize) -> Self {
        self.payload((0..len).map(|i| i as u8).collect::<Vec<_>>())
    }

    // ---- serialization ----

    /// The frame's bytes.
    ///
    /// # Panics
    /// If IPv4 or TCP options exceed what a header can hold.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.l3_offset() + 64 + self.payload.len());
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        for tag in &self.vlans {
            out.extend_from_slice(&tag.tpid.to_be_bytes());
            let tci = u16::from(tag.pcp & 7) << 13 | u16::from(tag.dei) << 12 | (tag.vid & 0x0fff);
            out.extend_from_slice(&tci.to_be_bytes());
        }
        let ethertype = match &self.l3 {
            L3::Ipv4(_) => ETHERTYPE_IPV4,
            L3::Ipv6(_) => ETHERTYPE_IPV6,
            L3::Other { ethertype } => *ethertype,
        };
        out.extend_from_slice(&self.ethertype_override.unwrap_or(ethertype).to_be_bytes());
        match &self.l3 {
            L3::Ipv4(ip) => self.ipv4_bytes(ip, &mut out),
            L3::Ipv6(ip) => self.ipv6_bytes(ip, &mut out),
            L3::Other { .. } => out.extend_from_slice(&self.payload),
        }
        if self.pad && out.len() < ETH_ZLEN {
            out.resize(ETH_ZLEN, 0);
        }
        if let Some(len) = self.truncate {
            out.truncate(len);
        }
        out
    }

    fn ipv4_bytes(&self, ip: &Ipv4, out: &mut Vec<u8>) {
        let options = pad_to(&ip.options, 4);
        assert!(options.len() <= 40, "IPv4 options longer than 40 bytes");
        let header_len = 20 + options.len();
        let pseudo = Pseudo::V4 {
            src: ip.src,
            dst: ip.dst,
        };
        let segment = self.l4_bytes(&pseudo);
        let total_len = ip
            .total_len_override
            .unwrap_or((header_len + segment.len()) as u16);
        let flags =
            u16::from(ip.reserved_flag) << 15 | u16::from(ip.df) << 14 | u16::from(ip.mf) << 13;
        let start = out.len();
        let version = ip.version_override.unwrap_or(4);
        let ihl = ip.ihl_override.unwrap_or((header_len / 4) as u8);
        out.push(version << 4 | (ihl & 0x0f));
        out.push(ip.tos);
        out.extend_from_slice(&total_len.to_be_bytes());
        out.extend_from_slice(&ip.id.to_be_bytes());
        out.extend_from_slice(&(flags | (ip.frag_offset & 0x1fff)).to_be_bytes());
        out.push(ip.ttl);
        out.push(ip.protocol_override.unwrap_or(self.l4.protocol()));
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&ip.src.octets());
        out.extend_from_slice(&ip.dst.octets());
        out.extend_from_slice(&options);
        let checksum = ip
            .checksum_override
            .unwrap_or_else(|| checksum(&out[start..]));
        out[start + 10..start + 12].copy_from_slice(&checksum.to_be_bytes());
        out.extend_from_slice(&segment);
    }

    fn ipv6_bytes(&self, ip: &Ipv6, out: &mut Vec<u8>) {
        let pseudo = Pseudo::V6 {
            src: ip.src,
            dst: ip.dst,
        };
        let segment = self.l4_bytes(&pseudo);
        let mut ext = Vec::new();
        for (i, header) in ip.ext.iter().enumerate() {
            let next = ip
                .ext
                .get(i + 1)
                .map_or_else(|| self.l4.protocol(), ExtHeader::header_type);
            ext.extend_from_slice(&header.bytes(next));
        }
        let first = ip
            .ext
            .first()
            .map_or_else(|| self.l4.protocol(), ExtHeader::header_type);
        let payload_len = ip
            .payload_len_override
            .unwrap_or((ext.len() + segment.len()) as u16);
        let version = u32::from(ip.version_override.unwrap_or(6));
        let word0 = version << 28 | u32::from(ip.traffic_class) << 20 | (ip.flow_label & 0xf_ffff);
        out.extend_from_slice(&word0.to_be_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.push(ip.next_header_override.unwrap_or(first));
        out.push(ip.hop_limit);
        out.extend_from_slice(&ip.src.octets());
        out.extend_from_slice(&ip.dst.octets());
        out.extend_from_slice(&ext);
        out.extend_from_slice(&segment);
    }

    /// The L4 header and payload, checksummed against `pseudo`.
    fn l4_bytes(&self, pseudo: &Pseudo) -> Vec<u8> {
        let mut seg = Vec::with_capacity(self.l4.header_len() + self.payload.len());
        // Offset of the checksum field and its override, if the L4 has one.
        let (csum_at, csum_override, pseudo_header) = match &self.l4 {
            L4::Tcp(tcp) => {
                let options = pad_to(&tcp.options, 4);
                assert!(options.len() <= 40, "TCP options longer than 40 bytes");
                let doff = tcp
                    .data_offset_override
                    .unwrap_or(((20 + options.len()) / 4) as u8);
                seg.extend_from_slice(&tcp.src_port.to_be_bytes());
                seg.extend_from_slice(&tcp.dst_port.to_be_bytes());
                seg.extend_from_slice(&tcp.seq.to_be_bytes());
                seg.extend_from_slice(&tcp.ack.to_be_bytes());
                seg.push(doff << 4 | ((tcp.flags >> 8) & 0x0f) as u8);
                seg.push(tcp.flags as u8);
                seg.extend_from_slice(&tcp.window.to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                seg.extend_from_slice(&tcp.urgent.to_be_bytes());
                seg.extend_from_slice(&options);
                (16, tcp.checksum_override, true)
            }
            L4::Udp(udp) => {
                let len = udp
                    .length_override
                    .unwrap_or((8 + self.payload.len()) as u16);
                seg.extend_from_slice(&udp.src_port.to_be_bytes());
                seg.extend_from_slice(&udp.dst_port.to_be_bytes());
                seg.extend_from_slice(&len.to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                (6, udp.checksum_override, true)
            }
            L4::Icmpv4(icmp) | L4::Icmpv6(icmp) => {
                seg.extend_from_slice(&[icmp.icmp_type, icmp.code, 0, 0]);
                seg.extend_from_slice(&icmp.rest);
                // ICMPv4 is the only one without a pseudo-header.
                let v6 = matches!(self.l4, L4::Icmpv6(_));
                (2, icmp.checksum_override, v6)
            }
            L4::Sctp(sctp) => {
                seg.extend_from_slice(&sctp.src_port.to_be_bytes());
                seg.extend_from_slice(&sctp.dst_port.to_be_bytes());
                seg.extend_from_slice(&sctp.verification_tag.to_be_bytes());
                seg.extend_from_slice(&[0; 4]);
                seg.extend_from_slice(&self.payload);
                // CRC32c over the packet with the field zeroed, stored in
                // little-endian order (RFC 9260 appendix A, as Linux does).
                let sum = sctp.checksum_override.unwrap_or_else(|| crc32c(&seg));
                seg[8..12].copy_from_slice(&sum.to_le_bytes());
                return seg;
            }
            L4::Other { .. } => {
                seg.extend_from_slice(&self.payload);
                return seg;
            }
        };
        seg.extend_from_slice(&self.payload);
        let csum = csum_override.unwrap_or_else(|| {
            let sum = if pseudo_header {
                checksum_parts(&[&pseudo.bytes(self.l4.protocol(), seg.len()), &seg])
            } else {
                checksum(&seg)
            };
            // A computed UDP checksum of 0 is sent as all ones (RFC 768),
            // since 0 means "no checksum".
            if sum == 0 && matches!(self.l4, L4::Udp(_)) {
                0xffff
            } else {
                sum
            }
        });
        seg[csum_at..csum_at + 2].copy_from_slice(&csum.to_be_bytes());
        seg
    }

    // ---- what the frame should yield ----

    /// Length of the built frame (after padding and truncation).
    pub fn len(&self) -> usize {
        self.build().len()
    }

    /// Always false: a frame has at least an Ethernet header unless
    /// truncated to nothing (then true).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset of the IP header: 14 + 4 per VLAN tag.
    pub fn l3_offset(&self) -> usize {
        ETH_HLEN + 4 * self.vlans.len()
    }

    /// Offset of the L4 header (after IPv4 options or IPv6 extension
    /// headers as serialized, whatever the IHL override says), or `None` for
    /// a non-IP frame.
    pub fn l4_offset(&self) -> Option<usize> {
        match &self.l3 {
            L3::Ipv4(ip) => Some(self.l3_offset() + 20 + ip.options.len().div_ceil(4) * 4),
            L3::Ipv6(ip) => {
                let ext: usize = ip.ext.iter().map(|h| h.bytes(0).len()).sum();
                Some(self.l3_offset() + 40 + ext)
            }
            L3::Other { .. } => None,
        }
    }

    /// 4, 6, or `None` for a non-IP frame (whatever the version override).
    pub fn ip_version(&self) -> Option<u8> {
        match self.l3 {
            L3::Ipv4(_) => Some(4),
            L3::Ipv6(_) => Some(6),
            L3::Other { .. } => None,
        }
    }

    /// The length the agent accounts for this packet, read from the header
    /// as serialized (so overrides count): the IPv4 total length, or the
    /// IPv6 payload length + 40. `None` for a non-IP frame.
    pub fn ip_len(&self) -> Option<u32> {
        let l4_len = (self.l4.header_len() + self.payload.len()) as u32;
        match &self.l3 {
            L3::Ipv4(ip) => Some(ip.total_len_override.map_or_else(
                || 20 + ip.options.len().div_ceil(4) as u32 * 4 + l4_len,
                u32::from,
            )),
            L3::Ipv6(ip) => {
                let ext: usize = ip.ext.iter().map(|h| h.bytes(0).len()).sum();
                Some(
                    40 + ip
                        .payload_len_override
                        .map_or(ext as u32 + l4_len, u32::from),
                )
            }
            L3::Other { .. } => None,
        }
    }

    /// The transport protocol as the agent should find it: the IPv4
    /// protocol field, or the last next header of the IPv6 chain.
    pub fn protocol(&self) -> Option<u8> {
        match &self.l3 {
            L3::Ipv4(ip) => Some(ip.protocol_override.unwrap_or(self.l4.protocol())),
            L3::Ipv6(ip) if ip.ext.is_empty() => {
                Some(ip.next_header_override.unwrap_or(self.l4.protocol()))
            }
            L3::Ipv6(_) => Some(self.l4.protocol()),
            L3::Other { .. } => None,
        }
    }

    /// Whether this is a fragment other than the first (IPv4 offset > 0 or
    /// an IPv6 fragment header with offset > 0): counted by the agent but not
    /// turned into a flow.
    pub fn is_non_first_fragment(&self) -> bool {
        match &self.l3 {
            L3::Ipv4(ip) => ip.frag_offset & 0x1fff != 0,
            L3::Ipv6(ip) => ip
                .ext
                .iter()
                .any(|h| matches!(h, ExtHeader::Fragment { offset, .. } if offset & 0x1fff != 0)),
            L3::Other { .. } => false,
        }
    }

    /// The flow-key ports in the agent's convention: TCP/UDP/SCTP ports,
    /// ICMP (type, code), else (0, 0).
    pub fn ports(&self) -> (u16, u16) {
        match &self.l4 {
            L4::Tcp(h) => (h.src_port, h.dst_port),
            L4::Udp(h) => (h.src_port, h.dst_port),
            L4::Sctp(h) => (h.src_port, h.dst_port),
            L4::Icmpv4(h) | L4::Icmpv6(h) => (u16::from(h.icmp_type), u16::from(h.code)),
            L4::Other { .. } => (0, 0),
        }
    }

    /// TCP flag bits as the agent stores them (low 9 bits), 0 if not TCP.
    pub fn tcp_flag_bits(&self) -> u16 {
        match &self.l4 {
            L4::Tcp(tcp) => tcp.flags & 0x1ff,
            _ => 0,
        }
    }

    /// The (outer, inner) VLAN ids, 0 when absent.
    pub fn vlan_ids(&self) -> (u16, u16) {
        let id = |i: usize| self.vlans.get(i).map_or(0, |t| t.vid & 0x0fff);
        (id(0), id(1))
    }

    /// The flow this frame belongs to, or `None` for a non-IP frame or a
    /// non-first fragment. Describes the frame as built, with no regard to
    /// overrides or truncation that would make the agent reject it.
    pub fn flow_tuple(&self) -> Option<FlowTuple> {
        if self.is_non_first_fragment() {
            return None;
        }
        let (src, dst) = match &self.l3 {
            L3::Ipv4(ip) => (IpAddr::V4(ip.src), IpAddr::V4(ip.dst)),
            L3::Ipv6(ip) => (IpAddr::V6(ip.src), IpAddr::V6(ip.dst)),
            L3::Other { .. } => return None,
        };
        let (src_port, dst_port) = self.ports();
        let (vlan_outer, vlan_inner) = self.vlan_ids();
        Some(FlowTuple {
            ip_version: self.ip_version()?,
            src,
            dst,
            protocol: self.protocol()?,
            src_port,
            dst_port,
            vlan_outer,
            vlan_inner,
            vlan_depth: self.vlans.len() as u8,
        })
    }
}

/// The addresses of a checksum pseudo-header.
enum Pseudo {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl Pseudo {
    /// The pseudo-header for `protocol` and an L4 segment of `len` bytes.
    fn bytes(&self, protocol: u8, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        match self {
            Self::V4 { src, dst } => {
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(&[0, protocol]);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Self::V6 { src, dst } => {
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(&(len as u32).to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, protocol]);
            }
        }
        out
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, RFC 9260
/// appendix A) of `data`, bit by bit: test frames are small, and no crate
/// the workspace already uses has this polynomial.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `bytes` zero-padded to a multiple of `n`.
fn pad_to(bytes: &[u8], n: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.resize(bytes.len().div_ceil(n) * n, 0);
    out
}

/// The Internet checksum (RFC 1071) of `data`: the one's complement of the
/// one's-complement sum of its 16-bit big-endian words. Over a header that
/// already holds a correct checksum the result is 0, which is how the tests
/// verify checksums.
pub fn checksum(data: &[u8]) -> u16 {
    checksum_parts(&[data])
}

/// [`checksum`] of the concatenation of `parts` (e.g. pseudo-header and
/// segment). Each part but the last must have an even length.
pub fn checksum_parts(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for word in &mut words {
            sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const B4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Verifies the L4 checksum of an IP packet by summing pseudo-header and
    /// segment, independently of the builder's own code path.
    fn l4_checksum_ok(frame: &[u8], l3: usize, l4: usize, v6: bool, protocol: u8) -> bool {
        let seg = &frame[l4..];
        let mut pseudo = Vec::new();
        if v6 {
            pseudo.extend_from_slice(&frame[l3 + 8..l3 + 40]);
            pseudo.extend_from_slice(&(seg.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        } else {
            pseudo.extend_from_slice(&frame[l3 + 12..l3 + 20]);
            pseudo.extend_from_slice(&[0, protocol]);
            pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        }
        checksum_parts(&[&pseudo, seg]) == 0
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum 0xddf2, checksum !sum.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        // Odd length: the last byte is padded with a zero.
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum_parts(&[&data[..4], &data[4..]]), checksum(&data));
    }

    #[test]
    fn ethernet_and_vlan_layout() {
        for depth in 0..=3 {
            let mut frame = Frame::new().src_mac([1, 2, 3, 4, 5, 6]).dst_mac([7; 6]);
            for i in 0..depth {
                frame = if i % 2 == 0 {
                    frame.vlan_ad(100 + i as u16)
                } else {
                    frame.vlan(100 + i as u16)
                };
            }
            let b = frame.build();
            assert_eq!(&b[0..6], &[7; 6]);
            assert_eq!(&b[6..12], &[1, 2, 3, 4, 5, 6]);
            for i in 0..depth {
                let tpid = if i % 2 == 0 { TPID_8021AD } else { TPID_8021Q };
                assert_eq!(be16(&b, 12 + 4 * i), tpid);
                assert_eq!(be16(&b, 14 + 4 * i), 100 + i as u16);
            }
            assert_eq!(be16(&b, 12 + 4 * depth), ETHERTYPE_IPV4);
            assert_eq!(frame.l3_offset(), 14 + 4 * depth);
            assert_eq!(b[frame.l3_offset()], 0x45);
            let expect_vlans = match depth {
                0 => (0, 0),
                1 => (100, 0),
                _ => (100, 101),
            };
            assert_eq!(frame.vlan_ids(), expect_vlans);
            assert_eq!(frame.flow_tuple().unwrap().vlan_depth, depth as u8);
        }
        // Priority and DEI live in the TCI's top bits.
        let mut frame = Frame::new().vlan_tag(TPID_8021Q, 0xfff, 5);
        frame.vlans[0].dei = true;
        assert_eq!(be16(&frame.build(), 14), 0xbfff);
        assert_eq!(be16(&Frame::new().ethertype(0x1234).build(), 12), 0x1234);
    }

    #[test]
    fn ipv4_header_fields_and_checksum() {
        let frame = Frame::ipv4(A4, B4)
            .ipv4_options(vec![1, 1, 1]) // three NOPs, padded to 4
            .df()
            .mf()
            .frag_offset(0)
            .ip_id(0xbeef)
            .ttl(7)
            .tos(0xb8)
            .udp(1, 2)
            .payload(vec![0xaa; 11]);
        let b = frame.build();
        let ip = &b[14..];
        assert_eq!(ip[0], 0x46, "version 4, IHL 6");
        assert_eq!(ip[1], 0xb8);
        assert_eq!(be16(ip, 2), 24 + 8 + 11);
        assert_eq!(be16(ip, 4), 0xbeef);
        assert_eq!(be16(ip, 6), 0x6000, "DF and MF, offset 0");
        assert_eq!(ip[8], 7);
        assert_eq!(ip[9], proto::UDP);
        assert_eq!(&ip[12..16], &A4.octets());
        assert_eq!(&ip[16..20], &B4.octets());
        assert_eq!(&ip[20..24], &[1, 1, 1, 0]);
        assert_eq!(checksum(&ip[..24]), 0, "IPv4 header checksum");
        assert_eq!(frame.ip_len(), Some(43));
        assert_eq!(frame.l4_offset(), Some(14 + 24));
        assert!(l4_checksum_ok(&b, 14, 38, false, proto::UDP));
        assert_eq!(b.len(), 14 + 43);

        let frag = Frame::ipv4(A4, B4)
            .frag_offset(185)
            .other(proto::TCP)
            .payload_len(16);
        let ip = &frag.build()[14..];
        assert_eq!(be16(ip, 6), 185);
        assert_eq!(ip[9], proto::TCP);
        assert!(frag.is_non_first_fragment());
        assert_eq!(frag.flow_tuple(), None);
        assert_eq!(frag.ip_len(), Some(36));
    }

    #[test]
    fn ipv4_overrides_make_malformed_headers() {
        let frame = Frame::new()
            .ipv4_total_len(9000)
            .ipv4_ihl(4)
            .ip_version_nibble(5)
            .ip_protocol(99)
            .ipv4_checksum(0xdead);
        let ip = &frame.build()[14..];
        assert_eq!(ip[0], 0x54);
        assert_eq!(be16(ip, 2), 9000);
        assert_eq!(ip[9], 99);
        assert_eq!(be16(ip, 10), 0xdead);
        assert_eq!(frame.ip_len(), Some(9000));
        assert_eq!(frame.protocol(), Some(99));
        // With overrides but no checksum override, the checksum still covers
        // the bytes as written.
        let frame = Frame::new().ipv4_ihl(15).ipv4_total_len(3);
        assert_eq!(checksum(&frame.build()[14..34]), 0);
    }

    #[test]
    fn ipv6_extension_chain() {
        let frame = Frame::ipv6(A6, B6)
            .hop_by_hop()
            .ext(ExtHeader::Routing {
                routing_type: 4,
                segments_left: 0,
                data: vec![0xee; 20],
            })
            .dest_opts()
            .ext(ExtHeader::DestOpts(vec![0x1e, 3, 1, 2, 3])) // 7 bytes, then a Pad1
            .fragment(0, true)
            .tcp(1234, 443)
            .tcp_flags(tcp_flags::SYN);
        let b = frame.build();
        let ip = &b[14..];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(ip[6], proto::HOPOPT);
        let mut at = 40;
        let mut types = Vec::new();
        let mut next = ip[6];
        while matches!(next, 0 | 43 | 60 | 44) {
            types.push(next);
            let len = if next == 44 {
                8
            } else {
                (usize::from(ip[at + 1]) + 1) * 8
            };
            next = ip[at];
            at += len;
        }
        assert_eq!(types, [0, 43, 60, 60, 44]);
        assert_eq!(next, proto::TCP);
        assert_eq!(frame.l4_offset(), Some(14 + at));
        // Routing: 4 + 20 bytes padded to 24 -> hdr_ext_len 2.
        assert_eq!(ip[40 + 8 + 1], 2);
        // Fragment header: offset 0, M set.
        assert_eq!(be16(ip, at - 8 + 2), 1);
        assert_eq!(usize::from(be16(ip, 4)), b.len() - 14 - 40);
        assert_eq!(frame.ip_len(), Some((b.len() - 14) as u32));
        assert_eq!(frame.protocol(), Some(proto::TCP));
        assert!(!frame.is_non_first_fragment());
        assert!(l4_checksum_ok(&b, 14, 14 + at, true, proto::TCP));

        let frag = Frame::ipv6(A6, B6)
            .fragment(100, false)
            .other(proto::UDP)
            .payload_len(8);
        let b = frag.build();
        assert_eq!(be16(&b, 14 + 40 + 2), 100 << 3);
        assert!(frag.is_non_first_fragment());
        assert_eq!(frag.ip_len(), Some(40 + 16));

        let bad = Frame::ipv6(A6, B6)
            .udp(1, 2)
            .ipv6_payload_len(1000)
            .ip_version_nibble(4);
        let b = bad.build();
        assert_eq!(be16(&b, 18), 1000);
        assert_eq!(b[14] >> 4, 4);
        assert_eq!(bad.ip_len(), Some(1040));
    }

    #[test]
    fn ext_header_padding() {
        for n in 0..20 {
            let bytes = ExtHeader::HopByHop(vec![0x1e; n]).bytes(6);
            assert_eq!(bytes.len() % 8, 0, "{n}");
            assert_eq!(bytes.len(), (usize::from(bytes[1]) + 1) * 8);
            assert_eq!(bytes[0], 6);
        }
        assert_eq!(
            ExtHeader::HopByHop(vec![]).bytes(17),
            [17, 0, 1, 4, 0, 0, 0, 0]
        );
        let raw = ExtHeader::Raw {
            header_type: 60,
            bytes: vec![0xff, 200, 1, 2],
        };
        assert_eq!(raw.bytes(6), [6, 200, 1, 2]);
        let srh = ExtHeader::srh(&[B6, A6], 1).bytes(58);
        assert_eq!(srh.len(), 8 + 32);
        assert_eq!(&srh[..8], &[58, 4, 4, 1, 1, 0, 0, 0]);
        assert_eq!(&srh[8..24], &B6.octets());
    }

    #[test]
    fn tcp_fields_options_ns_and_checksums() {
        for v6 in [false, true] {
            let base = if v6 {
                Frame::ipv6(A6, B6)
            } else {
                Frame::ipv4(A4, B4)
            };
            let frame = base
                .tcp(40000, 80)
                .tcp_flags(tcp_flags::NS | tcp_flags::SYN | tcp_flags::ACK | tcp_flags::CWR)
                .tcp_seq(0x01020304, 0x05060708)
                .tcp_options(vec![2, 4, 5, 0xb4, 4, 2]) // MSS + SACK-permitted, padded to 8
                .payload(b"abc".to_vec());
            let b = frame.build();
            let l4 = frame.l4_offset().unwrap();
            let tcp = &b[l4..];
            assert_eq!(be16(tcp, 0), 40000);
            assert_eq!(be16(tcp, 2), 80);
            assert_eq!(&tcp[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
            assert_eq!(tcp[12], 7 << 4 | 1, "data offset 7, NS");
            assert_eq!(tcp[13], 0x92);
            assert_eq!(&tcp[28..], b"abc");
            assert!(l4_checksum_ok(&b, 14, l4, v6, proto::TCP));
            assert_eq!(frame.tcp_flag_bits(), 0x192);
        }
        let bad = Frame::new()
            .tcp(1, 2)
            .tcp_data_offset(3)
            .l4_checksum(0x1111);
        let b = bad.build();
        assert_eq!(b[34 + 12] >> 4, 3);
        assert_eq!(be16(&b, 34 + 16), 0x1111);
    }

    #[test]
    fn udp_and_icmp_checksums() {
        for v6 in [false, true] {
            let base = || {
                if v6 {
                    Frame::ipv6(A6, B6)
                } else {
                    Frame::ipv4(A4, B4)
                }
            };
            let udp = base().udp(5353, 53).payload_len(33);
            let b = udp.build();
            let l4 = udp.l4_offset().unwrap();
            assert_eq!(be16(&b, l4 + 4), 41);
            assert!(l4_checksum_ok(&b, 14, l4, v6, proto::UDP));

            let (icmp, protocol) = if v6 {
                (base().icmpv6(128, 0), proto::ICMPV6)
            } else {
                (base().icmpv4(8, 0), proto::ICMP)
            };
            let icmp = icmp.payload_len(21);
            let b = icmp.build();
            let l4 = icmp.l4_offset().unwrap();
            if v6 {
                assert!(l4_checksum_ok(&b, 14, l4, true, protocol));
            } else {
                assert_eq!(checksum(&b[l4..]), 0, "ICMPv4 has no pseudo-header");
            }
            assert_eq!(icmp.ports(), if v6 { (128, 0) } else { (8, 0) });
            assert_eq!(icmp.flow_tuple().unwrap().protocol, protocol);
        }
        let bad = Frame::new().udp_len(3).l4_checksum(0);
        let b = bad.build();
        assert_eq!(be16(&b, 38), 3);
        assert_eq!(be16(&b, 40), 0);
    }

    #[test]
    fn crc32c_check_value() {
        // The catalogue's check value for CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn sctp_layout() {
        let frame = Frame::ipv4(A4, B4)
            .sctp(5000, 36412)
            .sctp_verification_tag(0x0102_0304)
            .payload(sctp_init_chunk(7));
        let b = frame.build();
        let l4 = frame.l4_offset().unwrap();
        assert_eq!(b[14 + 9], proto::SCTP);
        assert_eq!((be16(&b, l4), be16(&b, l4 + 2)), (5000, 36412));
        assert_eq!(&b[l4 + 4..l4 + 8], &[1, 2, 3, 4]);
        assert_eq!(frame.ports(), (5000, 36412));
        assert_eq!(frame.ip_len(), Some(20 + 12 + 20));
        // The stored checksum is the CRC32c of the packet with it zeroed.
        let mut zeroed = b[l4..].to_vec();
        zeroed[8..12].fill(0);
        assert_eq!(&b[l4 + 8..l4 + 12], &crc32c(&zeroed).to_le_bytes());
        // INIT chunk: type 1, length 20.
        assert_eq!((b[l4 + 12], be16(&b, l4 + 14)), (1, 20));
        assert_eq!(sctp_chunk(0, 3, &[1]).len(), 8);
    }

    #[test]
    fn other_protocols_and_non_ip() {
        let gre = Frame::ipv4(A4, B4)
            .other(proto::GRE)
            .payload(vec![0, 0, 0x08, 0]);
        let b = gre.build();
        assert_eq!(b[14 + 9], proto::GRE);
        assert_eq!(&b[34..], &[0, 0, 8, 0]);
        assert_eq!(gre.ports(), (0, 0));
        assert_eq!(gre.ip_len(), Some(24));

        let arp = Frame::non_ip(ETHERTYPE_ARP, vec![0; 28]).vlan(5);
        let b = arp.build();
        assert_eq!(be16(&b, 16), ETHERTYPE_ARP);
        assert_eq!(b.len(), 18 + 28);
        assert_eq!(arp.ip_len(), None);
        assert_eq!(arp.flow_tuple(), None);
    }

    #[test]
    fn padding_and_truncation() {
        let frame = Frame::new();
        assert_eq!(frame.len(), 14 + 28);
        let padded = frame.clone().pad();
        let b = padded.build();
        assert_eq!(b.len(), ETH_ZLEN);
        assert!(b[42..].iter().all(|&x| x == 0));
        assert_eq!(padded.ip_len(), Some(28), "padding is not IP length");
        assert_eq!(Frame::new().payload_len(100).pad().len(), 142);
        let full = Frame::new().build();
        for n in 0..full.len() {
            assert_eq!(Frame::new().truncate(n).build(), full[..n]);
        }
        assert_eq!(Frame::new().pad().truncate(50).len(), 50);
    }

    #[test]
    fn flow_tuple_describes_the_frame() {
        let frame = Frame::ipv6(A6, B6).vlan_ad(10).vlan(20).udp(1000, 2000);
        assert_eq!(
            frame.flow_tuple(),
            Some(FlowTuple {
                ip_version: 6,
                src: A6.into(),
                dst: B6.into(),
                protocol: proto::UDP,
                src_port: 1000,
                dst_port: 2000,
                vlan_outer: 10,
                vlan_inner: 20,
                vlan_depth: 2,
            })
        );
        assert_eq!(
            Frame::ip(A4.into(), B4.into())
                .icmpv4(3, 1)
                .flow_tuple()
                .unwrap()
                .dst_port,
            1
        );
    }
}
