//! The flow task's kernel maps and the whole-map passes over them: batched
//! (one bpf(2) call per 8192 entries, `capture::sys::batch_pass`) where the
//! kernel has the batch commands, per element where it has not.
//!
//! A per-element pass costs two syscalls per flow (next key, then lookup or
//! lookup-and-delete); at a million open flows that is seconds, which is
//! what made the final sweep overrun the stop budget (issue #10, item 4).

use std::{io, os::fd::AsFd};

use agent_common::{
    counter::Counter,
    flow::{FlowKey, FlowStats},
};
use aya::maps::{Array, HashMap as BpfHashMap, IterableMap as _, MapData, MapError, PerCpuArray};

use super::recover::{Baseline, CounterBaseline};
use crate::capture::{
    pins::{PinError, Pins},
    sys::{Pass, batch_pass, lookup_and_delete},
};

/// `BPF_F_NO_PREALLOC`: only flows with an active-timeout report have a
/// baseline, so the map grows as needed instead of taking its capacity's
/// memory up front.
const BPF_F_NO_PREALLOC: u32 = 1;

/// One walk over the flow map.
pub struct Entries {
    /// The flows met, with their counts.
    pub all: Vec<(FlowKey, FlowStats)>,
    /// Whether the walk met every flow that was in the map throughout: a
    /// per-element walk over a changing map can skip some.
    pub complete: bool,
}

/// The kernel maps the flow task owns.
pub struct FlowMaps {
    /// `FLOWS`.
    pub flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    /// `COUNTERS`.
    pub counters: PerCpuArray<MapData, u64>,
    /// What the records carry, pinned next to them; `None` when the maps
    /// are not pinned (a crash then loses the unreported counts).
    pub baselines: Option<Baselines>,
}

/// The userspace-written maps a restart reads the kernel's against
/// (flows/recover.rs).
pub struct Baselines {
    /// `REPORTED`: per flow, what its active-timeout reports carried.
    reported: BpfHashMap<MapData, FlowKey, Baseline>,
    /// `COUNTERS_REPORTED`: one entry, the last counters record's totals.
    counters: Array<MapData, CounterBaseline>,
}

impl Baselines {
    /// Creates the maps for a flow table of `entries` and pins them in
    /// this run's directory.
    pub fn create_pinned(entries: u32, pins: &Pins) -> Result<Self, PinError> {
        let err = |what, name: &str| {
            let path = pins.path(name);
            move |e: MapError| PinError::Io {
                what,
                path,
                source: io::Error::other(e),
            }
        };
        let reported =
            BpfHashMap::create(entries, BPF_F_NO_PREALLOC).map_err(err("creating", "REPORTED"))?;
        let counters = Array::create(1, 0).map_err(err("creating", "COUNTERS_REPORTED"))?;
        for (name, data) in [
            ("REPORTED", reported.map()),
            ("COUNTERS_REPORTED", counters.map()),
        ] {
            data.pin(pins.path(name)).map_err(|e| PinError::Io {
                what: "pinning",
                path: pins.path(name),
                source: io::Error::other(e),
            })?;
        }
        Ok(Self { reported, counters })
    }
}

impl FlowMaps {
    /// Every flow in the map, left in place (the periodic sweep). Entries
    /// that change under a per-element walk are skipped; the next sweep
    /// sees them.
    pub fn entries(&self) -> io::Result<Entries> {
        if let Some(all) = self.pass(Pass::Read)? {
            // The batch walk visits every bucket once: each flow present
            // before it began is met unless it left the map meanwhile.
            return Ok(Entries {
                all,
                complete: true,
            });
        }
        let mut complete = true;
        let all = self
            .flows
            .iter()
            .filter_map(|entry| entry.map_err(|_| complete = false).ok())
            .collect();
        Ok(Entries { all, complete })
    }

    /// Removes every flow from the map with its final counts (at shutdown,
    /// after detach, and when recovering a crashed run's map).
    pub fn drain(&self) -> io::Result<Vec<(FlowKey, FlowStats)>> {
        if let Some(all) = self.pass(Pass::Drain)? {
            return Ok(all);
        }
        let keys: Vec<FlowKey> = self.flows.keys().filter_map(Result::ok).collect();
        let mut all = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(stats) = self.remove(&key)? {
                all.push((key, stats));
            }
        }
        Ok(all)
    }

    fn pass(&self, pass: Pass) -> io::Result<Option<Vec<(FlowKey, FlowStats)>>> {
        let mut all = Vec::new();
        let read =
            batch_pass::<FlowKey, FlowStats>(self.flows.map().fd().as_fd(), pass, |k, v| {
                all.extend(k.iter().copied().zip(v.iter().copied()));
            })?;
        Ok(read.map(|_| all))
    }

    /// Removes one flow with its final counts; `None` when it is not there.
    pub fn remove(&self, key: &FlowKey) -> io::Result<Option<FlowStats>> {
        lookup_and_delete::<FlowKey, FlowStats>(self.flows.map().fd().as_fd(), key)
    }

    /// Whether the map holds `key`.
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.flows.get(key, 0).is_ok()
    }

    /// Records that the flow's reports now carry `stats` (after an
    /// active-timeout report).
    pub fn note_reported(&mut self, key: &FlowKey, stats: &FlowStats) -> Result<(), MapError> {
        let Some(b) = &mut self.baselines else {
            return Ok(());
        };
        let baseline = Baseline {
            first_seen_ns: stats.first_seen_ns,
            packets: stats.packets,
            bytes: stats.bytes,
            until_ns: stats.last_seen_ns,
        };
        b.reported.insert(key, baseline, 0)
    }

    /// Drops a flow's baseline: the flow ended or the kernel evicted it.
    pub fn forget(&mut self, key: &FlowKey) -> Result<(), MapError> {
        match &mut self.baselines {
            // Only flows with an active-timeout report have one.
            Some(b) => match b.reported.remove(key) {
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                r => r,
            },
            None => Ok(()),
        }
    }

    /// Records the kernel counter totals a counters record carried.
    pub fn note_counters(&mut self, baseline: &CounterBaseline) -> Result<(), MapError> {
        match &mut self.baselines {
            Some(b) => b.counters.set(0, baseline, 0),
            None => Ok(()),
        }
    }

    /// A kernel counter's total over every CPU.
    pub fn counter_total(&self, counter: Counter) -> Result<u64, MapError> {
        Ok(self.counters.get(&(counter as u32), 0)?.iter().sum())
    }
}
