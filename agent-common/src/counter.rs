//! Kernel-side counters: every drop and every malformed packet, by reason.

/// Index into the per-CPU `COUNTERS` array. Ids are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `bpf_ringbuf_reserve` failed: a lifecycle event was lost (the kernel
    /// sends events only when lifecycle records are on).
    RingbufReserveFailed = 0,
    /// Inserting a new flow into the flow map failed: the flow is not accounted.
    FlowInsertFailed = 1,
    /// Frame shorter than an Ethernet header.
    MalformedEthernet = 2,
    /// A VLAN tag was cut short.
    MalformedVlan = 3,
    /// More than two VLAN tags: the frame is not parsed further.
    VlanTooDeep = 4,
    /// IPv4 header truncated, with a bad version, IHL below 5 or beyond the frame.
    MalformedIpv4 = 5,
    /// IPv4 total length smaller than its header or larger than the frame.
    MalformedIpv4Length = 6,
    /// IPv6 fixed header truncated or with a bad version.
    MalformedIpv6 = 7,
    /// An IPv6 extension header was cut short.
    MalformedIpv6Ext = 8,
    /// More IPv6 extension headers than the parser follows.
    Ipv6ExtTooDeep = 9,
    /// TCP header truncated or with a data offset below 5.
    MalformedTcp = 10,
    /// UDP header truncated.
    MalformedUdp = 11,
    /// ICMP or ICMPv6 header truncated.
    MalformedIcmp = 12,
    /// A non-first IP fragment: counted, not parsed as L4, not a flow.
    NonFirstFragment = 13,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed without accounting.
    NonIp = 14,
    /// SCTP common header (12 bytes, RFC 9260 3.1) truncated.
    MalformedSctp = 15,
    /// A new flow entered the flow map. With the flows the agent removed and
    /// the ones still present, it tells how many the LRU evicted, without
    /// relying on any ring-buffer event.
    FlowsInserted = 16,
}

impl Counter {
    /// Number of counters; the size of the `COUNTERS` array.
    pub const COUNT: u32 = 17;

    /// Every counter, in id order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Self::RingbufReserveFailed,
        Self::FlowInsertFailed,
        Self::MalformedEthernet,
        Self::MalformedVlan,
        Self::VlanTooDeep,
        Self::MalformedIpv4,
        Self::MalformedIpv4Length,
        Self::MalformedIpv6,
        Self::MalformedIpv6Ext,
        Self::Ipv6ExtTooDeep,
        Self::MalformedTcp,
        Self::MalformedUdp,
        Self::MalformedIcmp,
        Self::NonFirstFragment,
        Self::NonIp,
        Self::MalformedSctp,
        Self::FlowsInserted,
    ];

    /// Stable snake_case name used in records and telemetry.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RingbufReserveFailed => "ringbuf_reserve_failed",
            Self::FlowInsertFailed => "flow_insert_failed",
            Self::MalformedEthernet => "malformed_ethernet",
            Self::MalformedVlan => "malformed_vlan",
            Self::VlanTooDeep => "vlan_too_deep",
            Self::MalformedIpv4 => "malformed_ipv4",
            Self::MalformedIpv4Length => "malformed_ipv4_length",
            Self::MalformedIpv6 => "malformed_ipv6",
            Self::MalformedIpv6Ext => "malformed_ipv6_ext",
            Self::Ipv6ExtTooDeep => "ipv6_ext_too_deep",
            Self::MalformedTcp => "malformed_tcp",
            Self::MalformedUdp => "malformed_udp",
            Self::MalformedIcmp => "malformed_icmp",
            Self::NonFirstFragment => "non_first_fragment",
            Self::NonIp => "non_ip",
            Self::MalformedSctp => "malformed_sctp",
            Self::FlowsInserted => "flows_inserted",
        }
    }

    /// What the counter means for the trail: a loss of data the agent should
    /// have captured, a rejected (malformed) packet, or plain information.
    pub const fn class(self) -> CounterClass {
        match self {
            Self::RingbufReserveFailed | Self::FlowInsertFailed => CounterClass::Loss,
            Self::NonFirstFragment | Self::NonIp | Self::FlowsInserted => CounterClass::Info,
            _ => CounterClass::Malformed,
        }
    }
}

/// See [`Counter::class`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterClass {
    /// Data the agent should have captured and did not.
    Loss,
    /// A packet rejected as malformed (passed on, never recorded).
    Malformed,
    /// Seen and deliberately not turned into a flow.
    Info,
}

const _: () = assert!(Counter::ALL.len() == Counter::COUNT as usize);
