//! XDP flow capture: parse, account per flow, send lifecycle events.
//!
//! Returns `XDP_PASS` on every path: capture never changes traffic. A
//! malformed or truncated header ends parsing with the [`Counter`] that names
//! the reason, so it is counted and never becomes a record with wrong fields.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::MaybeUninit,
};

use agent_common::{
    counter::Counter,
    event::{EventHeader, EventKind},
    flow::{FlowEvent, FlowKey, FlowStats, IP_V4, IP_V6, proto, reason, tcp_flag},
};
use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};

use crate::{
    maps::{EVENTS, FLOWS, count},
    packet::{Ipv4Hdr, Ipv6Hdr, Packet},
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
/// IPv6 extension headers followed; a ninth is `Ipv6ExtTooDeep`.
const IPV6_MAX_EXT: usize = 8;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// SCTP's common header: ports, verification tag, checksum (RFC 9260 3.1).
const SCTP_HLEN: usize = 12;
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
    /// Transport protocol (after any IPv6 extension headers).
    protocol: u8,
}

/// The flow key, written field by field in place. Building it as one value
/// (or zeroing it first) makes LLVM emit byte-by-byte memset and memcpy
/// loops, which cost more than all the parsing; raw field writes compile to
/// a handful of stores.
struct KeyBuf(MaybeUninit<FlowKey>);

impl KeyBuf {
    #[inline(always)]
    fn ptr(&mut self) -> *mut FlowKey {
        self.0.as_mut_ptr()
    }

    #[inline(always)]
    fn set_vlan(&mut self, depth: u8, outer: u16, inner: u16) {
        let k = self.ptr();
        // SAFETY: writes to fields of our own stack value.
        unsafe {
            (&raw mut (*k).vlan_depth).write(depth);
            (&raw mut (*k).vlan_outer).write(outer);
            (&raw mut (*k).vlan_inner).write(inner);
        }
    }

    #[inline(always)]
    fn set_v4(&mut self, src: u32, dst: u32) {
        let k = self.ptr();
        // SAFETY: as above; the address fields are at 8-aligned offsets of an
        // 8-aligned struct, so u32 and u64 stores are aligned.
        unsafe {
            (&raw mut (*k).ip_version).write(IP_V4);
            let s = (&raw mut (*k).src_addr).cast::<u32>();
            s.write(src);
            s.add(1).write(0);
            s.cast::<u64>().add(1).write(0);
            let d = (&raw mut (*k).dst_addr).cast::<u32>();
            d.write(dst);
            d.add(1).write(0);
            d.cast::<u64>().add(1).write(0);
        }
    }

    #[inline(always)]
    fn set_v6_addrs(&mut self, src: [u64; 2], dst: [u64; 2]) {
        let k = self.ptr();
        // SAFETY: as in `set_v4`.
        unsafe {
            (&raw mut (*k).ip_version).write(IP_V6);
            let s = (&raw mut (*k).src_addr).cast::<u64>();
            s.write(src[0]);
            s.add(1).write(src[1]);
            let d = (&raw mut (*k).dst_addr).cast::<u64>();
            d.write(dst[0]);
            d.add(1).write(dst[1]);
        }
    }

    #[inline(always)]
    fn set_ports(&mut self, src: u16, dst: u16) {
        let k = self.ptr();
        // SAFETY: as above.
        unsafe {
            (&raw mut (*k).src_port).write(src);
            (&raw mut (*k).dst_port).write(dst);
        }
    }

    /// The finished key. Every field has been written: VLAN by
    /// `parse_ethernet`, addresses and version by the IP parser, ports by
    /// `parse_l4`, the rest here.
    #[inline(always)]
    fn finish(&mut self, ifindex: u32, protocol: u8) -> &FlowKey {
        let k = self.ptr();
        // SAFETY: the remaining fields are written here; see above for the rest.
        unsafe {
            (&raw mut (*k).ifindex).write(ifindex);
            (&raw mut (*k).protocol).write(protocol);
            (&raw mut (*k)._pad).write(0);
            self.0.assume_init_ref()
        }
    }
}

#[inline(always)]
fn try_capture(ctx: &XdpContext) -> Result<(), Counter> {
    let pkt = Packet::new(ctx);
    let mut key = KeyBuf(MaybeUninit::uninit());
    let l3 = match parse_ethernet(&pkt, &mut key)? {
        (ETH_P_IP, off) => parse_ipv4(&pkt, off, &mut key)?,
        (ETH_P_IPV6, off) => parse_ipv6(&pkt, off, &mut key)?,
        _ => return Err(Counter::NonIp),
    };
    let flags = parse_l4(&pkt, &l3, &mut key)?;
    account(
        key.finish(ctx.ingress_ifindex() as u32, l3.protocol),
        l3.len,
        flags,
    );
    Ok(())
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Parses Ethernet and up to two VLAN tags. Returns the EtherType of the
/// payload and its offset.
#[inline(always)]
fn parse_ethernet(pkt: &Packet, key: &mut KeyBuf) -> Result<(u16, usize), Counter> {
    let ethertype = pkt
        .be16(ETH_TYPE_OFFSET)
        .ok_or(Counter::MalformedEthernet)?;
    if !is_vlan(ethertype) {
        key.set_vlan(0, 0, 0);
        return Ok((ethertype, ETH_TYPE_OFFSET + 2));
    }
    let off = ETH_TYPE_OFFSET + VLAN_TAG_LEN;
    let outer = pkt.be16(off - 2).ok_or(Counter::MalformedVlan)? & 0x0fff;
    let ethertype = pkt.be16(off).ok_or(Counter::MalformedVlan)?;
    if !is_vlan(ethertype) {
        key.set_vlan(1, outer, 0);
        return Ok((ethertype, off + 2));
    }
    let off = off + VLAN_TAG_LEN;
    let inner = pkt.be16(off - 2).ok_or(Counter::MalformedVlan)? & 0x0fff;
    let ethertype = pkt.be16(off).ok_or(Counter::MalformedVlan)?;
    if is_vlan(ethertype) {
        return Err(Counter::VlanTooDeep);
    }
    key.set_vlan(2, outer, inner);
    Ok((ethertype, off + 2))
}

#[inline(always)]
fn parse_ipv4(pkt: &Packet, off: usize, key: &mut KeyBuf) -> Result<L3, Counter> {
    let hdr: Ipv4Hdr = pkt.load(off).ok_or(Counter::MalformedIpv4)?;
    if hdr.version_ihl >> 4 != 4 {
        return Err(Counter::MalformedIpv4);
    }
    let ihl = usize::from(hdr.version_ihl & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN {
        return Err(Counter::MalformedIpv4);
    }
    let total = u16::from_be(hdr.total_len);
    let total_len = usize::from(total);
    // The frame may carry Ethernet padding after the datagram, never less.
    if total_len < ihl || total_len > pkt.remaining(off) {
        return Err(Counter::MalformedIpv4Length);
    }
    // Fragment offset (low 13 bits): only the first fragment carries the
    // transport header.
    if u16::from_be(hdr.frag_off) & 0x1fff != 0 {
        return Err(Counter::NonFirstFragment);
    }
    key.set_v4(hdr.src, hdr.dst);
    Ok(L3 {
        l4: off + ihl,
        ip_end: off + total_len,
        len: u32::from(total),
        protocol: hdr.protocol,
    })
}

/// The extension headers `parse_ipv6` follows.
#[inline(always)]
fn is_ipv6_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS
    )
}

#[inline(always)]
fn parse_ipv6(pkt: &Packet, off: usize, key: &mut KeyBuf) -> Result<L3, Counter> {
    let hdr: Ipv6Hdr = pkt.load(off).ok_or(Counter::MalformedIpv6)?;
    if u32::from_be(hdr.version_tc_flow) >> 28 != 6 {
        return Err(Counter::MalformedIpv6);
    }
    let payload = u16::from_be(hdr.payload_len);
    let ip_end = off + IPV6_HLEN + usize::from(payload);
    if IPV6_HLEN + usize::from(payload) > pkt.remaining(off) {
        return Err(Counter::MalformedIpv6);
    }
    key.set_v6_addrs(hdr.src, hdr.dst);

    let mut next = hdr.next_header;
    let mut l4 = off + IPV6_HLEN;
    // Up to IPV6_MAX_EXT headers are followed; the transport must come
    // right after the last of them, so a header still pending after the
    // loop is one too many.
    for _ in 0..IPV6_MAX_EXT {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext: [u8; 2] = pkt.load(l4).ok_or(Counter::MalformedIpv6Ext)?;
                next = ext[0];
                l4 += (usize::from(ext[1]) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let ext: [u16; 2] = pkt.load(l4).ok_or(Counter::MalformedIpv6Ext)?;
                if u16::from_be(ext[1]) >> 3 != 0 {
                    return Err(Counter::NonFirstFragment);
                }
                next = ext[0].to_ne_bytes()[0];
                l4 += 8;
            }
            _ => break,
        }
        if l4 > ip_end {
            return Err(Counter::MalformedIpv6Ext);
        }
    }
    if is_ipv6_ext(next) {
        return Err(Counter::Ipv6ExtTooDeep);
    }
    Ok(L3 {
        l4,
        ip_end,
        len: u32::from(payload) + IPV6_HLEN as u32,
        protocol: next,
    })
}

/// Fills ports (or ICMP type and code) and returns the TCP flags (0 for
/// other protocols).
#[inline(always)]
fn parse_l4(pkt: &Packet, l3: &L3, key: &mut KeyBuf) -> Result<u16, Counter> {
    let avail = l3.ip_end - l3.l4;
    match l3.protocol {
        proto::TCP => {
            // Ports, then data offset and flags (bytes 12..14).
            let hdr: [u16; 7] = pkt.load(l3.l4).ok_or(Counter::MalformedTcp)?;
            let off_flags = u16::from_be(hdr[6]);
            let doff = usize::from(off_flags >> 12) * 4;
            if doff < TCP_MIN_HLEN || doff > avail {
                return Err(Counter::MalformedTcp);
            }
            key.set_ports(u16::from_be(hdr[0]), u16::from_be(hdr[1]));
            Ok(off_flags & tcp_flag::MASK)
        }
        proto::UDP => {
            let ports: [u16; 2] = pkt.load(l3.l4).ok_or(Counter::MalformedUdp)?;
            if avail < UDP_HLEN {
                return Err(Counter::MalformedUdp);
            }
            key.set_ports(u16::from_be(ports[0]), u16::from_be(ports[1]));
            Ok(0)
        }
        proto::SCTP => {
            // Ports first, as in TCP and UDP; the chunks after the common
            // header are not parsed.
            let ports: [u16; 2] = pkt.load(l3.l4).ok_or(Counter::MalformedSctp)?;
            if avail < SCTP_HLEN {
                return Err(Counter::MalformedSctp);
            }
            key.set_ports(u16::from_be(ports[0]), u16::from_be(ports[1]));
            Ok(0)
        }
        proto::ICMP | proto::ICMPV6 => {
            let need = if l3.protocol == proto::ICMP {
                ICMP_HLEN
            } else {
                ICMPV6_HLEN
            };
            let hdr: [u8; 2] = pkt.load(l3.l4).ok_or(Counter::MalformedIcmp)?;
            if avail < need {
                return Err(Counter::MalformedIcmp);
            }
            key.set_ports(u16::from(hdr[0]), u16::from(hdr[1]));
            Ok(0)
        }
        // Other transports are flows of their own, without ports.
        _ => {
            key.set_ports(0, 0);
            Ok(0)
        }
    }
}

/// Adds the packet to its flow and sends a lifecycle event when it starts a
/// flow or carries SYN, FIN or RST.
///
/// Clocks: `bpf_ktime_get_ns` costs about 30 ns per call under KVM (a TSC
/// read), as much as the map lookup. The per-packet path therefore stamps
/// `last_seen` with `bpf_ktime_get_coarse_ns` (Linux 5.11+, one jiffy of
/// resolution: 4 ms at HZ=250), while flow creation and lifecycle events,
/// which are rare, take the exact clock.
#[inline(always)]
fn account(key: &FlowKey, len: u32, flags: u16) {
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
        update(stats, len, flags);
    } else {
        // SAFETY: a BPF helper with no arguments and no side effects; the
        // verifier checks that XDP programs may call it.
        let now = unsafe { bpf_ktime_get_ns() };
        let stats = FlowStats {
            first_seen_ns: now,
            last_seen_ns: now,
            packets: 1,
            bytes: u64::from(len),
            tcp_flags: u32::from(flags),
            _pad: 0,
        };
        if FLOWS.insert(key, stats, u64::from(BPF_NOEXIST)).is_ok() {
            // Counted after the insert, so a count the agent reads never
            // runs ahead of the map: its eviction count stays a lower bound.
            count(Counter::FlowsInserted);
            send_event(key, reasons | reason::NEW, flags, len, now);
            return;
        } else if let Some(stats) = FLOWS.get_ptr_mut(key) {
            // Another CPU inserted the flow between our lookup and insert.
            update(stats, len, flags);
        } else {
            count(Counter::FlowInsertFailed);
        }
    }

    if reasons != 0 {
        // SAFETY: as above, an argument-free helper.
        let now = unsafe { bpf_ktime_get_ns() };
        send_event(key, reasons, flags, len, now);
    }
}

#[inline(always)]
fn update(stats: *mut FlowStats, len: u32, flags: u16) {
    // SAFETY: an argument-free helper (kernel 5.11+, checked by the agent's
    // preflight before loading; the verifier refuses the program otherwise).
    let now = unsafe { bpf_ktime_get_coarse_ns() };
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
        // Only forward (the coarse clock may trail the exact first_seen by
        // up to a jiffy), and only once per jiffy: fewer cache-line writes.
        if now > (*stats).last_seen_ns {
            (*stats).last_seen_ns = now;
        }
        // Flags change a few times per flow, so test before writing. RSS keeps
        // a flow on one CPU, so a racing writer is rare; an atomic OR would
        // need BPF ISA v3 (cpu=v3), which aya-build does not select.
        let flags = u32::from(flags);
        if (*stats).tcp_flags & flags != flags {
            (*stats).tcp_flags |= flags;
        }
    }
}

/// Non-zero when lifecycle events go to userspace; the agent rewrites it at
/// load time (`names::LIFECYCLE_EVENTS_GLOBAL`). Without lifecycle records
/// nothing reads the events, so none are sent and none can be lost.
#[unsafe(no_mangle)]
static LIFECYCLE_EVENTS: u8 = 1;

#[inline(always)]
fn send_event(key: &FlowKey, reasons: u32, flags: u16, len: u32, now: u64) {
    // SAFETY: a plain read of a static; volatile so the compiler does not
    // fold the default in (the loader rewrites the value in .rodata).
    if unsafe { core::ptr::read_volatile(&raw const LIFECYCLE_EVENTS) } == 0 {
        return;
    }
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
