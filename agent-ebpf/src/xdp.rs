//! XDP flow capture: parse, account per flow, send lifecycle events.
//!
//! Returns `XDP_PASS` on every path: capture never changes traffic. A
//! malformed or truncated header ends parsing with the [`Counter`] that names
//! the reason, so it is counted and never becomes a record with wrong fields.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use agent_common::{
    counter::Counter,
    event::{EventHeader, EventKind},
    flow::{FlowEvent, FlowKey, FlowStats, IP_V4, IP_V6, proto, reason, tcp_flag},
};
use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::xdp,
    programs::XdpContext,
};

use crate::{
    maps::{EVENTS, FLOWS, count},
    packet::Packet,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// Offset of the EtherType in an untagged Ethernet header.
const ETH_TYPE_OFFSET: usize = 12;
/// Size of one 802.1Q / 802.1ad tag.
const VLAN_TAG_LEN: usize = 4;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// IPv6 extension headers followed before giving up (`Ipv6ExtTooDeep`).
const IPV6_MAX_EXT: usize = 8;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// ICMPv4's fixed header is 8 bytes (RFC 792); ICMPv6's is 4 (RFC 4443).
const ICMP_HLEN: usize = 8;
const ICMPV6_HLEN: usize = 4;

/// The XDP entry point: capture, count any failure, pass the frame.
#[xdp]
pub fn lbwitness_xdp(ctx: XdpContext) -> u32 {
    if let Err(counter) = try_capture(&ctx) {
        count(counter);
    }
    xdp_action::XDP_PASS
}

/// Where the transport header starts and where the IP datagram ends.
struct L3 {
    l4: usize,
    ip_end: usize,
    /// Accounted bytes: IPv4 total length, or IPv6 payload length + 40.
    len: u32,
}

#[inline(always)]
fn try_capture(ctx: &XdpContext) -> Result<(), Counter> {
    let pkt = Packet::new(ctx);
    let mut key = FlowKey {
        ifindex: ctx.ingress_ifindex() as u32,
        ..FlowKey::default()
    };

    let l3 = parse_ethernet(&pkt, &mut key)?;
    let l3 = match l3 {
        (ETH_P_IP, off) => parse_ipv4(&pkt, off, &mut key)?,
        (ETH_P_IPV6, off) => parse_ipv6(&pkt, off, &mut key)?,
        _ => return Err(Counter::NonIp),
    };
    let flags = parse_l4(&pkt, &l3, &mut key)?;
    account(&key, l3.len, flags);
    Ok(())
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Parses Ethernet and up to two VLAN tags. Returns the EtherType of the
/// payload and its offset.
#[inline(always)]
fn parse_ethernet(pkt: &Packet, key: &mut FlowKey) -> Result<(u16, usize), Counter> {
    let mut type_off = ETH_TYPE_OFFSET;
    let mut ethertype = pkt.be16_at(type_off).ok_or(Counter::MalformedEthernet)?;
    if is_vlan(ethertype) {
        key.vlan_outer = pkt.be16_at(type_off + 2).ok_or(Counter::MalformedVlan)? & 0x0fff;
        type_off += VLAN_TAG_LEN;
        ethertype = pkt.be16_at(type_off).ok_or(Counter::MalformedVlan)?;
        key.vlan_depth = 1;
        if is_vlan(ethertype) {
            key.vlan_inner = pkt.be16_at(type_off + 2).ok_or(Counter::MalformedVlan)? & 0x0fff;
            type_off += VLAN_TAG_LEN;
            ethertype = pkt.be16_at(type_off).ok_or(Counter::MalformedVlan)?;
            key.vlan_depth = 2;
            if is_vlan(ethertype) {
                return Err(Counter::VlanTooDeep);
            }
        }
    }
    Ok((ethertype, type_off + 2))
}

#[inline(always)]
fn parse_ipv4(pkt: &Packet, off: usize, key: &mut FlowKey) -> Result<L3, Counter> {
    let hdr = pkt
        .bytes::<IPV4_MIN_HLEN>(off)
        .ok_or(Counter::MalformedIpv4)?;
    // SAFETY: `bytes` proved the 20 bytes are inside the frame.
    let hdr = unsafe { &*hdr };
    if hdr[0] >> 4 != 4 {
        return Err(Counter::MalformedIpv4);
    }
    let ihl = usize::from(hdr[0] & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN {
        return Err(Counter::MalformedIpv4);
    }
    let total = u16::from_be_bytes([hdr[2], hdr[3]]);
    let total_len = usize::from(total);
    // The frame may carry Ethernet padding after the datagram, never less.
    if total_len < ihl || total_len > pkt.remaining(off) {
        return Err(Counter::MalformedIpv4Length);
    }
    // Fragment offset (low 13 bits of bytes 6..8): only the first fragment
    // carries the transport header.
    if u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff != 0 {
        return Err(Counter::NonFirstFragment);
    }
    key.ip_version = IP_V4;
    key.protocol = hdr[9];
    key.src_addr[..4].copy_from_slice(&hdr[12..16]);
    key.dst_addr[..4].copy_from_slice(&hdr[16..20]);
    Ok(L3 {
        l4: off + ihl,
        ip_end: off + total_len,
        len: u32::from(total),
    })
}

#[inline(always)]
fn parse_ipv6(pkt: &Packet, off: usize, key: &mut FlowKey) -> Result<L3, Counter> {
    let hdr = pkt.bytes::<IPV6_HLEN>(off).ok_or(Counter::MalformedIpv6)?;
    // SAFETY: `bytes` proved the 40 bytes are inside the frame.
    let hdr = unsafe { &*hdr };
    if hdr[0] >> 4 != 6 {
        return Err(Counter::MalformedIpv6);
    }
    let payload = u16::from_be_bytes([hdr[4], hdr[5]]);
    let ip_end = off + IPV6_HLEN + usize::from(payload);
    if IPV6_HLEN + usize::from(payload) > pkt.remaining(off) {
        return Err(Counter::MalformedIpv6);
    }
    key.src_addr.copy_from_slice(&hdr[8..24]);
    key.dst_addr.copy_from_slice(&hdr[24..40]);

    let mut next = hdr[6];
    let mut l4 = off + IPV6_HLEN;
    let mut done = false;
    for _ in 0..IPV6_MAX_EXT {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext = pkt.bytes::<2>(l4).ok_or(Counter::MalformedIpv6Ext)?;
                // SAFETY: `bytes` proved both bytes are inside the frame.
                let ext = unsafe { *ext };
                next = ext[0];
                l4 += (usize::from(ext[1]) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let ext = pkt.bytes::<8>(l4).ok_or(Counter::MalformedIpv6Ext)?;
                // SAFETY: as above, 8 bytes.
                let ext = unsafe { *ext };
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return Err(Counter::NonFirstFragment);
                }
                next = ext[0];
                l4 += 8;
            }
            _ => {
                done = true;
                break;
            }
        }
        if l4 > ip_end {
            return Err(Counter::MalformedIpv6Ext);
        }
    }
    if !done {
        return Err(Counter::Ipv6ExtTooDeep);
    }
    key.ip_version = IP_V6;
    key.protocol = next;
    Ok(L3 {
        l4,
        ip_end,
        len: u32::from(payload) + IPV6_HLEN as u32,
    })
}

/// Fills ports (or ICMP type and code) and returns the TCP flags (0 for
/// other protocols).
#[inline(always)]
fn parse_l4(pkt: &Packet, l3: &L3, key: &mut FlowKey) -> Result<u16, Counter> {
    let avail = l3.ip_end - l3.l4;
    match key.protocol {
        proto::TCP => {
            let hdr = pkt
                .bytes::<TCP_MIN_HLEN>(l3.l4)
                .ok_or(Counter::MalformedTcp)?;
            // SAFETY: `bytes` proved the 20 bytes are inside the frame.
            let hdr = unsafe { &*hdr };
            let doff = usize::from(hdr[12] >> 4) * 4;
            if doff < TCP_MIN_HLEN || doff > avail {
                return Err(Counter::MalformedTcp);
            }
            key.src_port = u16::from_be_bytes([hdr[0], hdr[1]]);
            key.dst_port = u16::from_be_bytes([hdr[2], hdr[3]]);
            Ok(u16::from_be_bytes([hdr[12], hdr[13]]) & tcp_flag::MASK)
        }
        proto::UDP => {
            let hdr = pkt.bytes::<UDP_HLEN>(l3.l4).ok_or(Counter::MalformedUdp)?;
            if avail < UDP_HLEN {
                return Err(Counter::MalformedUdp);
            }
            // SAFETY: `bytes` proved the 8 bytes are inside the frame.
            let hdr = unsafe { &*hdr };
            key.src_port = u16::from_be_bytes([hdr[0], hdr[1]]);
            key.dst_port = u16::from_be_bytes([hdr[2], hdr[3]]);
            Ok(0)
        }
        proto::ICMP | proto::ICMPV6 => {
            let need = if key.protocol == proto::ICMP {
                ICMP_HLEN
            } else {
                ICMPV6_HLEN
            };
            let hdr = pkt.bytes::<ICMPV6_HLEN>(l3.l4).ok_or(Counter::MalformedIcmp)?;
            if avail < need {
                return Err(Counter::MalformedIcmp);
            }
            // SAFETY: `bytes` proved the 4 bytes are inside the frame.
            let hdr = unsafe { &*hdr };
            key.src_port = u16::from(hdr[0]);
            key.dst_port = u16::from(hdr[1]);
            Ok(0)
        }
        // Other transports are flows of their own, without ports.
        _ => Ok(0),
    }
}

/// Adds the packet to its flow and sends a lifecycle event when it starts a
/// flow or carries SYN, FIN or RST.
#[inline(always)]
fn account(key: &FlowKey, len: u32, flags: u16) {
    let now = unsafe { bpf_ktime_get_ns() };
    let mut reasons = 0;
    if flags & tcp_flag::SYN != 0 {
        reasons |= reason::SYN;
    }
    if flags & tcp_flag::FIN != 0 {
        reasons |= reason::FIN;
    }
    if flags & tcp_flag::RST != 0 {
        reasons |= reason::RST;
    }

    if let Some(stats) = FLOWS.get_ptr_mut(key) {
        update(stats, len, flags, now);
    } else {
        let stats = FlowStats {
            first_seen_ns: now,
            last_seen_ns: now,
            packets: 1,
            bytes: u64::from(len),
            tcp_flags: u32::from(flags),
            _pad: 0,
        };
        if FLOWS.insert(key, &stats, u64::from(BPF_NOEXIST)).is_ok() {
            reasons |= reason::NEW;
        } else if let Some(stats) = FLOWS.get_ptr_mut(key) {
            // Another CPU inserted the flow between our lookup and insert.
            update(stats, len, flags, now);
        } else {
            count(Counter::FlowInsertFailed);
        }
    }

    if reasons != 0 {
        send_event(key, reasons, flags, len, now);
    }
}

#[inline(always)]
fn update(stats: *mut FlowStats, len: u32, flags: u16, now: u64) {
    // SAFETY: a map value pointer from the kernel, valid and 8-byte aligned
    // for the duration of the program; other CPUs update it concurrently,
    // hence atomic adds for the counters.
    unsafe {
        // The BPF target has no `AtomicU64::fetch_add` (no CAS in ISA v1);
        // the intrinsic with an unused result lowers to BPF_XADD.
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*stats).packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*stats).bytes,
            u64::from(len),
        );
        (*stats).last_seen_ns = now;
        // Flags change a few times per flow, so test before writing. RSS keeps
        // a flow on one CPU, so a racing writer is rare; an atomic OR would
        // need BPF ISA v3 (cpu=v3), which aya-build does not select.
        let flags = u32::from(flags);
        if (*stats).tcp_flags & flags != flags {
            (*stats).tcp_flags |= flags;
        }
    }
}

#[inline(always)]
fn send_event(key: &FlowKey, reasons: u32, flags: u16, len: u32, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        count(Counter::RingbufReserveFailed);
        return;
    };
    entry.write(FlowEvent {
        header: EventHeader {
            kind: EventKind::Flow as u32,
            len: core::mem::size_of::<FlowEvent>() as u32,
            ktime_ns: now,
        },
        key: *key,
        reasons,
        tcp_flags: flags,
        _pad: 0,
        ip_len: len,
        _pad2: 0,
    });
    entry.submit(0);
}
