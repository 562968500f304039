//! The kernel side of a run: the loaded eBPF object, its XDP attachments
//! and the bpffs directory its maps are pinned in.

use agent_common::names;
use anyhow::{Context as _, anyhow};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf};
use lbwitness_trail::record::audit::Hook;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    audit::{Control, records::AuditRecords},
    capture::{
        self,
        attach::{self, Attachment, attach},
        pins::Pins,
    },
    config::Config,
    flows::{Baselines, FlowMaps, recover::Recovered},
};

/// The loaded object, attached. Dropping it detaches what is still
/// attached (aya's links) and leaves the pins for the next start.
pub(super) struct Hooks {
    ebpf: aya::Ebpf,
    attachments: Vec<Attachment>,
    /// `None` when the maps could not be pinned: the run goes on, and a
    /// crash loses the counts not yet reported.
    pins: Option<Pins>,
}

/// What the stages read from the kernel.
pub(super) struct Taken {
    /// The events ring buffer.
    pub(super) ring: RingBuf<MapData>,
    /// The flow task's maps.
    pub(super) maps: FlowMaps,
    /// What crashed runs left pinned.
    pub(super) recovered: Recovered,
}

impl Hooks {
    /// Reads what crashed runs left pinned, loads the object, pins its maps
    /// in this run's directory and attaches XDP to every interface.
    pub(super) fn attach(
        config: &Config,
        interfaces: &[(u32, String)],
        agent_id: &str,
    ) -> anyhow::Result<(Self, Taken)> {
        // What crashed runs left pinned, read before this run pins its own.
        let (mut pins, recovered) = match Pins::prepare(&config.bpffs, agent_id) {
            Ok((pins, left)) => (Some(pins), Recovered::read(left)),
            Err(err) => {
                warn!(%err, "the flow maps will not be pinned; a crash will lose the counts not yet reported");
                (None, Recovered::default())
            }
        };
        raise_memlock();
        let mut ebpf = capture::load(
            config.flow_table_entries,
            config.ring_buffer_bytes,
            config.lifecycle_records,
        )?;
        // Pinned before attach, so every packet counted is in a pinned map.
        let (ring, maps) = take_maps(&mut ebpf, &mut pins, config.flow_table_entries)?;
        let mut attachments = Vec::new();
        let prog = capture::xdp_program(&mut ebpf)?;
        for (ifindex, name) in interfaces {
            // On error, dropping `ebpf` detaches what was attached so far;
            // the run counted nothing, so its pins go too.
            let a = attach(prog, name, *ifindex, config.xdp_mode).inspect_err(|_| {
                if let Some(pins) = &pins {
                    pins.remove();
                }
            })?;
            info!(iface = %a.iface, ifindex = a.ifindex, mode = a.mode.as_str(), "attached XDP");
            if let Some(why) = &a.fallback {
                warn!(
                    iface = %a.iface,
                    native_refused = %why,
                    "capturing in GENERIC XDP mode, not native: {}; flow records say \
                     lbwitness.capture.xdp_mode \"generic\"",
                    attach::GENERIC_COUNTS
                );
            }
            attachments.push(a);
        }
        let hooks = Self {
            ebpf,
            attachments,
            pins,
        };
        let taken = Taken {
            ring,
            maps,
            recovered,
        };
        Ok((hooks, taken))
    }

    /// The XDP attachments, in the order of the configured interfaces.
    pub(super) fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Detaches every attachment, so that what the maps hold afterwards is
    /// final, and sends a `hook-detach` record for each to the audit stage
    /// (when it is still there: after an early stop nobody records it).
    pub(super) async fn detach(
        &mut self,
        records: &AuditRecords,
        control: &mpsc::Sender<Control>,
    ) -> anyhow::Result<()> {
        let prog = capture::xdp_program(&mut self.ebpf)?;
        for a in self.attachments.drain(..) {
            let record = records.hook(std::time::SystemTime::now(), false, hook(&a));
            prog.detach(a.link)
                .with_context(|| format!("detaching XDP from {}", a.iface))?;
            info!(iface = %a.iface, "detached XDP");
            let _ = control.send(Control::Record(Box::new(record))).await;
        }
        Ok(())
    }

    /// Removes this run's pins: a clean stop reported everything, so
    /// nothing is left for a restart to recover.
    pub(super) fn unpin(&self) {
        if let Some(pins) = &self.pins {
            pins.remove();
        }
    }
}

/// `lbwitness.hook` of an XDP attachment.
pub(super) fn hook(a: &Attachment) -> Hook {
    Hook {
        ifindex: a.ifindex,
        interface: a.iface.clone(),
        kind: "xdp",
        mode: a.mode.as_str(),
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it. Later
/// kernels use memory cgroups and ignore it, so failure is only logged.
fn raise_memlock() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    if setrlimit(Resource::Memlock, unlimited).is_err() {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// Takes the ring buffer and the flow task's maps from the loaded object,
/// and pins them with their baselines in this run's directory, so that a
/// crash leaves their unreported counts for the next start. When pinning
/// fails the run goes on unpinned (`pins` becomes `None`), with a warning.
fn take_maps(
    ebpf: &mut aya::Ebpf,
    pins: &mut Option<Pins>,
    entries: u32,
) -> anyhow::Result<(RingBuf<MapData>, FlowMaps)> {
    let mut take = |name: &str| {
        ebpf.take_map(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map `{name}`: rebuild the agent"))
    };
    let (flows, counters, events) = (
        take(names::FLOW_MAP)?,
        take(names::COUNTERS_MAP)?,
        take(names::EVENTS_MAP)?,
    );
    let baselines = pins.as_ref().and_then(|p| {
        let pin = |map: &Map, name: &str| map.pin(p.path(name)).map_err(anyhow::Error::from);
        // Baselines first: a run directory with FLOWS always has them.
        let pinned = Baselines::create_pinned(entries, p)
            .map_err(anyhow::Error::from)
            .and_then(|b| {
                pin(&flows, names::FLOW_MAP)?;
                pin(&counters, names::COUNTERS_MAP)?;
                pin(&events, names::EVENTS_MAP)?;
                Ok(b)
            });
        match pinned {
            Ok(b) => Some(b),
            Err(err) => {
                warn!(%err, "pinning the flow maps failed; a crash will lose the counts not yet reported");
                p.remove();
                None
            }
        }
    });
    if baselines.is_none() {
        *pins = None;
    }
    let maps = FlowMaps {
        flows: BpfHashMap::try_from(flows)?,
        counters: PerCpuArray::try_from(counters)?,
        baselines,
    };
    Ok((RingBuf::try_from(events)?, maps))
}
