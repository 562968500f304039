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

/// What the agent remembers of a flow it has reported part of (an active
/// timeout). 32 bytes, with a 48-byte key: about 90 bytes per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reported {
    /// ktime of the flow instance's first packet (tells instances apart).
    first_seen_ns: u64,
    /// Counts already reported.
    packets: u64,
    bytes: u64,
    /// End of the previous report.
    until_ns: u64,
}

/// The flows the agent has reported part of, with what it reported.
///
/// A flow nothing has been reported of needs no entry: the kernel's counts
/// are its report. So the table holds only long flows past an active
/// timeout, and a busy balancer's short flows cost userspace nothing; the
/// kernel map is the flow table. Sweeps are the only input: lifecycle
/// events, which can arrive late or not at all, play no part.
#[derive(Debug)]
pub struct FlowTable {
    reported: HashMap<FlowKey, Reported>,
    /// Keys of `reported` met by the current sweep.
    seen: std::collections::HashSet<FlowKey>,
    timeouts: FlowTimeouts,
}

impl FlowTable {
    /// An empty table.
    pub fn new(timeouts: FlowTimeouts) -> Self {
        Self {
            reported: HashMap::new(),
            seen: std::collections::HashSet::new(),
            timeouts,
        }
    }

    /// Number of flows with a partial report.
    pub fn len(&self) -> usize {
        self.reported.len()
    }

    /// Whether no flow has a partial report.
    pub fn is_empty(&self) -> bool {
        self.reported.is_empty()
    }

    /// Starts a sweep: no flow has been met yet.
    pub fn begin_sweep(&mut self) {
        self.seen.clear();
    }

    /// What was reported of the instance `stats` belongs to. An entry for an
    /// earlier instance (the LRU evicted it and the key came back) is
    /// dropped: the new instance starts from zero.
    fn reported_of(&mut self, key: &FlowKey, stats: &FlowStats) -> Option<Reported> {
        let r = *self.reported.get(key)?;
        if r.first_seen_ns == stats.first_seen_ns {
            Some(r)
        } else {
            self.reported.remove(key);
            None
        }
    }

    /// Decides what to do with a kernel flow at monotonic time `now_ns`.
    pub fn classify(&mut self, key: &FlowKey, stats: &FlowStats, now_ns: u64) -> Verdict {
        let reported = self.reported_of(key, stats);
        if reported.is_some() {
            self.seen.insert(*key);
        }
        let idle = now_ns.saturating_sub(stats.last_seen_ns);
        let closed = stats.tcp_flags & u32::from(tcp_flag::FIN | tcp_flag::RST) != 0;
        if closed && idle >= nanos(self.timeouts.closed) {
            return Verdict::End(ReportReason::EndOfFlow);
        }
        if idle >= nanos(self.timeouts.idle) {
            return Verdict::End(ReportReason::IdleTimeout);
        }
        let (since, packets) =
            reported.map_or((stats.first_seen_ns, 0), |r| (r.until_ns, r.packets));
        if stats.packets > packets && now_ns.saturating_sub(since) >= nanos(self.timeouts.active) {
            return Verdict::Report;
        }
        Verdict::Keep
    }

    /// Reports `stats` (the kernel's cumulative counts) for `key`. With a
    /// final reason the flow is forgotten: the caller removed it from the map.
    pub fn report(&mut self, key: FlowKey, stats: &FlowStats, reason: ReportReason) -> FlowReport {
        let reported = self.reported_of(&key, stats);
        // The kernel only adds to one instance, so the counts never shrink;
        // saturate rather than wrap all the same.
        let report = FlowReport {
            key,
            start_ns: reported.map_or(stats.first_seen_ns, |r| r.until_ns),
            end_ns: stats.last_seen_ns,
            packets: stats
                .packets
                .saturating_sub(reported.map_or(0, |r| r.packets)),
            bytes: stats.bytes.saturating_sub(reported.map_or(0, |r| r.bytes)),
            tcp_flags: (stats.tcp_flags & u32::from(tcp_flag::MASK)) as u16,
            reason,
        };
        if reason.is_final() {
            self.reported.remove(&key);
            self.seen.remove(&key);
        } else {
            self.reported.insert(
                key,
                Reported {
                    first_seen_ns: stats.first_seen_ns,
                    packets: stats.packets,
                    bytes: stats.bytes,
                    until_ns: stats.last_seen_ns,
                },
            );
            self.seen.insert(key);
        }
        report
    }

    /// Flows with a partial report that the current sweep has not met.
    pub fn unseen(&self) -> impl Iterator<Item = FlowKey> + '_ {
        self.reported
            .keys()
            .filter(|k| !self.seen.contains(k))
            .copied()
    }

    /// Forgets a flow that vanished from the kernel map without the agent
    /// removing it: the LRU evicted it, and its unreported packets are lost.
    /// [`super::evictions::Evictions`] counts it, with the evictions of flows
    /// the table never held.
    pub fn forget(&mut self, key: &FlowKey) {
        self.reported.remove(key);
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    fn flows_with_nothing_reported_need_no_entry() {
        let mut t = table();
        let k = key(9);
        let s = stats(5, 6, 1, 60, 0);
        assert_eq!(t.classify(&k, &s, 7), Verdict::Keep);
        assert!(t.is_empty(), "the kernel's counts are the whole state");
        let r = t.report(k, &s, ReportReason::Shutdown);
        assert_eq!((r.start_ns, r.end_ns, r.packets, r.bytes), (5, 6, 1, 60));
    }

    /// Issue #10 item 5: the ring-buffer reader lags, so a flow's NEW event
    /// reaches the agent after the sweep adopted, ended and reported the
    /// flow. The old table took the late event for a flow still open, and
    /// the next sweep, not finding it, declared an LRU eviction. The table
    /// now learns of flows from sweeps only: after the final report nothing
    /// is left that a later sweep could find missing.
    #[test]
    fn a_flow_ended_before_its_new_event_arrives_leaves_nothing_to_evict() {
        let mut t = table();
        let k = key(3);
        let s = stats(S, S, 1, 60, tcp_flag::SYN);
        assert_eq!(t.classify(&k, &s, 2 * S), Verdict::Keep);
        assert_eq!(
            t.classify(&k, &s, 17 * S),
            Verdict::End(ReportReason::IdleTimeout)
        );
        let r = t.report(k, &s, ReportReason::IdleTimeout);
        assert_eq!((r.packets, r.start_ns), (1, S));
        // The late NEW event (ktime = first_seen = S) arrives here; the
        // table has no way to take it. The next sweep finds an empty map.
        t.begin_sweep();
        assert_eq!(t.unseen().count(), 0, "nothing can be declared evicted");
    }

    /// When the LRU evicts a flow and its key comes back between two sweeps,
    /// the new instance's counts start from zero: they are reported in full,
    /// not as a delta against the evicted instance's (which would saturate
    /// to zero and lose them).
    #[test]
    fn a_later_instance_of_a_key_is_reported_from_zero() {
        let mut t = table();
        let k = key(4);
        let old = stats(0, 59 * S, 100, 10_000, 0);
        assert_eq!(t.classify(&k, &old, 60 * S), Verdict::Report);
        t.report(k, &old, ReportReason::ActiveTimeout);
        let new = stats(70 * S, 71 * S, 3, 180, 0);
        assert_eq!(t.classify(&k, &new, 72 * S), Verdict::Keep);
        let r = t.report(k, &new, ReportReason::Shutdown);
        assert_eq!(
            (r.start_ns, r.end_ns, r.packets, r.bytes),
            (70 * S, 71 * S, 3, 180)
        );
        // The same without a sweep between: report() alone tells too.
        t.classify(&k, &old, 60 * S);
        t.report(k, &old, ReportReason::ActiveTimeout);
        let r = t.report(k, &new, ReportReason::Shutdown);
        assert_eq!((r.packets, r.bytes), (3, 180));
    }

    #[test]
    fn reported_flows_a_sweep_misses_are_found() {
        let mut t = table();
        let long = stats(0, 59 * S, 10, 600, 0);
        for port in [1, 2] {
            assert_eq!(t.classify(&key(port), &long, 60 * S), Verdict::Report);
            t.report(key(port), &long, ReportReason::ActiveTimeout);
        }
        t.begin_sweep();
        assert_eq!(t.classify(&key(1), &long, 61 * S), Verdict::Keep);
        let gone: Vec<_> = t.unseen().collect();
        assert_eq!(gone, vec![key(2)]);
        t.forget(&key(2));
        assert_eq!(t.len(), 1);
    }
}
