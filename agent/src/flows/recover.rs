//! Recovering what a crashed run had counted but not reported, from the
//! maps it left pinned (`capture::pins`).
//!
//! A run keeps two userspace-written maps next to the kernel's: `REPORTED`,
//! what its records already carry of each flow (written with each
//! active-timeout report, removed when the flow ends), and
//! `COUNTERS_REPORTED`, the counter totals of its last counters record. A
//! restart reads the crashed run's `FLOWS` and `COUNTERS` against them:
//! - a flow's counts beyond its baseline become one `recovered` flow
//!   record (the whole instance when the baseline is of another instance);
//! - loss and malformed counters beyond their last reported totals become
//!   gap records, as the crashed run would have declared them;
//! - events still unread in its ring buffer cannot be recovered as
//!   records (their flows' counts are in `FLOWS`) and are declared in one
//!   `ringbuf_unread` gap record with their count.
//!
//! Counts of records the crashed run had made but not yet written when it
//! died are lost with those records; the restart gap record declares the
//! sequence range they would have had.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent_common::{
    counter::Counter,
    flow::{FlowKey, FlowStats},
};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf};

use super::{
    maps::FlowMaps,
    table::{FlowReport, ReportReason},
};
use crate::capture::pins;

/// What a run's records carry of one flow instance: its cumulative kernel
/// counts at the last report. `#[repr(C)]`: it is a pinned map's value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    /// The instance's first packet (tells instances of a key apart).
    pub first_seen_ns: u64,
    /// Packets reported so far.
    pub packets: u64,
    /// Bytes reported so far.
    pub bytes: u64,
    /// End of the last report (ktime ns).
    pub until_ns: u64,
}

/// The kernel counter totals of a run's last counters record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterBaseline {
    /// Totals by [`Counter`] id.
    pub totals: [u64; Counter::COUNT as usize],
    /// When the record was made (ns since the Unix epoch).
    pub at_unix_ns: u64,
}

impl Default for CounterBaseline {
    fn default() -> Self {
        Self {
            totals: [0; Counter::COUNT as usize],
            at_unix_ns: 0,
        }
    }
}

// SAFETY: plain `#[repr(C)]` u64 fields, no padding, valid for any bytes.
unsafe impl aya::Pod for Baseline {}
// SAFETY: as above.
unsafe impl aya::Pod for CounterBaseline {}

/// The report of what `stats` holds beyond `baseline`, or `None` when its
/// records already carry everything. A baseline of another instance of
/// the key (the kernel evicted the reported one) does not count.
pub fn unreported(
    key: FlowKey,
    stats: &FlowStats,
    baseline: Option<Baseline>,
) -> Option<FlowReport> {
    let base = baseline
        .filter(|b| b.first_seen_ns == stats.first_seen_ns)
        .unwrap_or_default();
    let packets = stats.packets.saturating_sub(base.packets);
    (packets > 0).then(|| FlowReport {
        key,
        start_ns: if base.packets > 0 {
            base.until_ns
        } else {
            stats.first_seen_ns
        },
        end_ns: stats.last_seen_ns,
        packets,
        bytes: stats.bytes.saturating_sub(base.bytes),
        tcp_flags: (stats.tcp_flags & u32::from(agent_common::flow::tcp_flag::MASK)) as u16,
        reason: ReportReason::Recovered,
    })
}

/// The counters that moved beyond `baseline`, with how much.
pub fn counter_deltas(
    totals: &[u64; Counter::COUNT as usize],
    baseline: &CounterBaseline,
) -> Vec<(Counter, u64)> {
    Counter::ALL
        .into_iter()
        .map(|c| {
            (
                c,
                totals[c as usize].saturating_sub(baseline.totals[c as usize]),
            )
        })
        .filter(|&(_, delta)| delta > 0)
        .collect()
}

/// What the restart recovered from crashed runs' pins.
#[derive(Debug, Default)]
pub struct Recovered {
    /// One report per flow with unreported counts.
    pub flows: Vec<FlowReport>,
    /// Counter deltas the crashed runs had not reported, and since when.
    pub counters: Vec<(Counter, u64, SystemTime)>,
    /// Ring-buffer events the crashed runs had not read.
    pub unread_events: u64,
    /// The run directories read, removed once the records are out.
    pub dirs: Vec<PathBuf>,
}

impl Recovered {
    /// Reads every crashed run's pinned maps in `dirs`. A directory whose
    /// maps cannot be opened is logged and removed (its counts are gone).
    pub fn read(dirs: Vec<PathBuf>) -> Self {
        let mut recovered = Self::default();
        for dir in &dirs {
            if let Err(err) = recovered.read_run(dir) {
                tracing::warn!(dir = %dir.display(), %err, "recovering a crashed run's flow maps failed");
            }
        }
        recovered.dirs = dirs;
        recovered
    }

    fn read_run(&mut self, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let open = |name: &str| -> Result<Map, aya::maps::MapError> {
            Map::from_map_data(MapData::from_pin(dir.join(name))?)
        };
        let maps = FlowMaps {
            flows: BpfHashMap::try_from(open("FLOWS")?)?,
            counters: PerCpuArray::try_from(open("COUNTERS")?)?,
            baselines: None,
        };
        let reported: BpfHashMap<MapData, FlowKey, Baseline> =
            BpfHashMap::try_from(open("REPORTED")?)?;
        let counters_reported: Array<MapData, CounterBaseline> =
            Array::try_from(open("COUNTERS_REPORTED")?)?;
        for (key, stats) in maps.entries()?.all {
            let baseline = reported.get(&key, 0).ok();
            self.flows.extend(unreported(key, &stats, baseline));
        }
        let mut totals = [0; Counter::COUNT as usize];
        for c in Counter::ALL {
            totals[c as usize] = maps.counter_total(c)?;
        }
        let baseline = counters_reported.get(&0, 0)?;
        let since = UNIX_EPOCH + Duration::from_nanos(baseline.at_unix_ns);
        self.counters.extend(
            counter_deltas(&totals, &baseline)
                .into_iter()
                .map(|(c, d)| (c, d, since)),
        );
        if let Ok(map) = open("EVENTS") {
            let mut ring = RingBuf::try_from(map)?;
            while ring.next().is_some() {
                self.unread_events += 1;
            }
        }
        Ok(())
    }

    /// Unpins the crashed runs' maps.
    pub fn remove_pins(&self) {
        for dir in &self.dirs {
            pins::remove_run(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(first: u64, last: u64, packets: u64, bytes: u64) -> FlowStats {
        FlowStats {
            first_seen_ns: first,
            last_seen_ns: last,
            packets,
            bytes,
            tcp_flags: 0,
            _pad: 0,
        }
    }

    #[test]
    fn a_flow_never_reported_is_recovered_whole() {
        let r = unreported(FlowKey::default(), &stats(10, 20, 3, 300), None).unwrap();
        assert_eq!((r.start_ns, r.end_ns, r.packets, r.bytes), (10, 20, 3, 300));
        assert_eq!(r.reason, ReportReason::Recovered);
    }

    #[test]
    fn only_what_the_baseline_lacks_is_recovered() {
        let base = Baseline {
            first_seen_ns: 10,
            packets: 2,
            bytes: 200,
            until_ns: 15,
        };
        let r = unreported(FlowKey::default(), &stats(10, 20, 3, 330), Some(base)).unwrap();
        assert_eq!((r.start_ns, r.end_ns, r.packets, r.bytes), (15, 20, 1, 130));
        // Everything reported already: nothing to recover.
        let done = Baseline {
            packets: 3,
            bytes: 330,
            ..base
        };
        assert_eq!(
            unreported(FlowKey::default(), &stats(10, 20, 3, 330), Some(done)),
            None
        );
    }

    #[test]
    fn a_baseline_of_another_instance_is_ignored() {
        let old = Baseline {
            first_seen_ns: 1,
            packets: 50,
            bytes: 5000,
            until_ns: 5,
        };
        let r = unreported(FlowKey::default(), &stats(10, 20, 3, 300), Some(old)).unwrap();
        assert_eq!((r.start_ns, r.packets, r.bytes), (10, 3, 300));
    }

    #[test]
    fn counter_deltas_are_what_moved_since_the_last_record() {
        let mut totals = [0; Counter::COUNT as usize];
        totals[Counter::ALL[0] as usize] = 7;
        totals[Counter::ALL[1] as usize] = 4;
        let mut baseline = CounterBaseline::default();
        baseline.totals[Counter::ALL[1] as usize] = 4;
        assert_eq!(
            counter_deltas(&totals, &baseline),
            vec![(Counter::ALL[0], 7)]
        );
    }
}
