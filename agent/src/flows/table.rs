//! The pure core of flow export: which kernel flows to report, and with
//! what counts. No I/O: the sweeper task feeds it map entries and applies
//! its decisions.
//!
//! Records follow IPFIX: each report carries the packets and bytes since the
//! previous report of the same flow, so summing reports gives the totals.
//! The first report covers `[first packet, last packet]`; a later one covers
//! `(previous report's end, last packet]`.

use std::collections::HashMap;

use agent_common::flow::{FlowKey, FlowStats, tcp_flag};

use crate::config::FlowTimeouts;

/// Why a flow is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportReason {
    /// Active timeout: the flow goes on.
    ActiveTimeout,
    /// No packet for the idle timeout.
    IdleTimeout,
    /// FIN or RST seen, then quiet for the closed timeout.
    EndOfFlow,
    /// The agent is stopping.
    Shutdown,
    /// Counts a crashed run had not reported, recovered from its pinned
    /// map at the restart (flows/recover.rs).
    Recovered,
}

impl ReportReason {
    /// Value of `event.reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ActiveTimeout => "active-timeout",
            Self::IdleTimeout => "idle-timeout",
            Self::EndOfFlow => "end-of-flow",
            Self::Shutdown => "shutdown",
            Self::Recovered => "recovered",
        }
    }

    /// Whether the flow ends with this report.
    pub const fn is_final(self) -> bool {
        !matches!(self, Self::ActiveTimeout)
    }
}

/// What the sweeper should do with one kernel flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet.
    Keep,
    /// Report it and keep it (active timeout).
    Report,
    /// Remove it from the kernel map (atomically, with its final counts) and
    /// report it as ended.
    End(ReportReason),
}

/// One flow record's worth of data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowReport {
    /// The flow.
    pub key: FlowKey,
    /// Start of the interval this report covers (ktime ns).
    pub start_ns: u64,
    /// Last packet in the interval (ktime ns).
    pub end_ns: u64,
    /// Packets in the interval.
    pub packets: u64,
    /// Bytes in the interval.
    pub bytes: u64,
    /// TCP flags seen over the whole flow so far.
    pub tcp_flags: u16,
    /// Why it is reported.
    pub reason: ReportReason,
}

/// What the agent remembers of a flow the kernel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    /// ktime of the flow instance's first packet (tells instances apart).
    first_seen_ns: u64,
    /// Counts already reported.
    packets: u64,
    bytes: u64,
    /// End of the previous report, if any.
    reported_until_ns: Option<u64>,
}

/// Flows the agent knows, with what it has reported of each.
#[derive(Debug)]
pub struct FlowTable {
    known: HashMap<FlowKey, Known>,
    timeouts: FlowTimeouts,
}

impl FlowTable {
    /// An empty table.
    pub fn new(timeouts: FlowTimeouts) -> Self {
        Self {
            known: HashMap::new(),
            timeouts,
        }
    }

    /// Number of flows known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no flow is known.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// A flow-start event for the instance that began at `first_seen_ns`.
    /// Returns `true` when it replaces an instance the table still held: the
    /// kernel evicted that one (LRU) before its last packets were reported.
    pub fn started(&mut self, key: FlowKey, first_seen_ns: u64) -> bool {
        let fresh = Known {
            first_seen_ns,
            packets: 0,
            bytes: 0,
            reported_until_ns: None,
        };
        match self.known.insert(key, fresh) {
            // The sweep adopted this very instance before its event arrived.
            Some(old) if old.first_seen_ns == first_seen_ns => {
                self.known.insert(key, old);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Decides what to do with a kernel flow at monotonic time `now_ns`.
    /// A flow the table does not know (its start event was lost) is adopted.
    pub fn classify(&mut self, key: &FlowKey, stats: &FlowStats, now_ns: u64) -> Verdict {
        let known = *self.known.entry(*key).or_insert(Known {
            first_seen_ns: stats.first_seen_ns,
            packets: 0,
            bytes: 0,
            reported_until_ns: None,
        });
        let idle = now_ns.saturating_sub(stats.last_seen_ns);
        let closed = stats.tcp_flags & u32::from(tcp_flag::FIN | tcp_flag::RST) != 0;
        if closed && idle >= nanos(self.timeouts.closed) {
            return Verdict::End(ReportReason::EndOfFlow);
        }
        if idle >= nanos(self.timeouts.idle) {
            return Verdict::End(ReportReason::IdleTimeout);
        }
        let since = known.reported_until_ns.unwrap_or(stats.first_seen_ns);
        if stats.packets > known.packets
            && now_ns.saturating_sub(since) >= nanos(self.timeouts.active)
        {
            return Verdict::Report;
        }
        Verdict::Keep
    }

    /// Reports `stats` (the kernel's cumulative counts) for `key`. With a
    /// final reason the flow is forgotten: the caller removed it from the map.
    pub fn report(&mut self, key: FlowKey, stats: &FlowStats, reason: ReportReason) -> FlowReport {
        let known = self.known.remove(&key).unwrap_or(Known {
            first_seen_ns: stats.first_seen_ns,
            packets: 0,
            bytes: 0,
            reported_until_ns: None,
        });
        // The kernel only adds; smaller counts would mean another instance,
        // which `started` already handled, so saturate rather than wrap.
        let report = FlowReport {
            key,
            start_ns: known.reported_until_ns.unwrap_or(stats.first_seen_ns),
            end_ns: stats.last_seen_ns,
            packets: stats.packets.saturating_sub(known.packets),
            bytes: stats.bytes.saturating_sub(known.bytes),
            tcp_flags: (stats.tcp_flags & u32::from(tcp_flag::MASK)) as u16,
            reason,
        };
        if !reason.is_final() {
            self.known.insert(
                key,
                Known {
                    first_seen_ns: known.first_seen_ns,
                    packets: stats.packets,
                    bytes: stats.bytes,
                    reported_until_ns: Some(stats.last_seen_ns),
                },
            );
        }
        report
    }

    /// Known flows not in `present` (the keys one sweep found in the map).
    pub fn absent<'a>(
        &'a self,
        present: &'a std::collections::HashSet<FlowKey>,
    ) -> impl Iterator<Item = FlowKey> + 'a {
        self.known.keys().filter(|k| !present.contains(k)).copied()
    }

    /// Forgets a flow that vanished from the kernel map without the agent
    /// removing it: LRU eviction. Its unreported packets are lost.
    pub fn evicted(&mut self, key: &FlowKey) {
        self.known.remove(key);
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn table() -> FlowTable {
        FlowTable::new(FlowTimeouts {
            active: Duration::from_secs(60),
            idle: Duration::from_secs(15),
            closed: Duration::from_secs(2),
        })
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src_port: port,
            ip_version: 4,
            protocol: 6,
            ..FlowKey::default()
        }
    }

    fn stats(first: u64, last: u64, packets: u64, bytes: u64, flags: u16) -> FlowStats {
        FlowStats {
            first_seen_ns: first,
            last_seen_ns: last,
            packets,
            bytes,
            tcp_flags: u32::from(flags),
            _pad: 0,
        }
    }

    #[test]
    fn idle_flow_ends_with_its_totals() {
        let mut t = table();
        let k = key(1);
        assert!(!t.started(k, 10 * S));
        let s = stats(10 * S, 11 * S, 5, 500, tcp_flag::ACK);
        assert_eq!(t.classify(&k, &s, 20 * S), Verdict::Keep);
        assert_eq!(
            t.classify(&k, &s, 26 * S),
            Verdict::End(ReportReason::IdleTimeout)
        );
        let r = t.report(k, &s, ReportReason::IdleTimeout);
        assert_eq!(
            (r.start_ns, r.end_ns, r.packets, r.bytes),
            (10 * S, 11 * S, 5, 500)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn closed_flow_ends_sooner() {
        let mut t = table();
        let k = key(1);
        let s = stats(0, S, 3, 180, tcp_flag::FIN | tcp_flag::ACK);
        assert_eq!(t.classify(&k, &s, 2 * S), Verdict::Keep);
        assert_eq!(
            t.classify(&k, &s, 3 * S),
            Verdict::End(ReportReason::EndOfFlow)
        );
    }

    #[test]
    fn active_reports_are_deltas_that_sum_to_totals() {
        let mut t = table();
        let k = key(7);
        t.started(k, 0);
        let s1 = stats(0, 59 * S, 100, 10_000, 0);
        assert_eq!(t.classify(&k, &s1, 60 * S), Verdict::Report);
        let r1 = t.report(k, &s1, ReportReason::ActiveTimeout);
        // Same counts a moment later: nothing new to report.
        assert_eq!(t.classify(&k, &s1, 61 * S), Verdict::Keep);
        let s2 = stats(0, 125 * S, 150, 16_000, 0);
        assert_eq!(t.classify(&k, &s2, 125 * S), Verdict::Report);
        let r2 = t.report(k, &s2, ReportReason::ActiveTimeout);
        let s3 = stats(0, 130 * S, 151, 16_100, 0);
        let r3 = t.report(k, &s3, ReportReason::Shutdown);
        assert_eq!(r1.packets + r2.packets + r3.packets, 151);
        assert_eq!(r1.bytes + r2.bytes + r3.bytes, 16_100);
        assert_eq!((r2.start_ns, r2.end_ns), (59 * S, 125 * S));
        assert_eq!(r3.start_ns, 125 * S);
        assert!(t.is_empty());
    }

    #[test]
    fn unknown_flows_are_adopted() {
        let mut t = table();
        let k = key(9);
        let s = stats(5, 6, 1, 60, 0);
        assert_eq!(t.classify(&k, &s, 7), Verdict::Keep);
        assert_eq!(t.len(), 1);
        // Its late start event names the same instance: not an eviction.
        assert!(!t.started(k, 5));
        // A later instance of the same key means the earlier was evicted.
        assert!(t.started(k, 50));
    }

    #[test]
    fn absent_flows_are_found() {
        let mut t = table();
        t.started(key(1), 1);
        t.started(key(2), 1);
        let present: HashSet<_> = [key(1)].into();
        let gone: Vec<_> = t.absent(&present).collect();
        assert_eq!(gone, vec![key(2)]);
        t.evicted(&key(2));
        assert_eq!(t.len(), 1);
    }
}
