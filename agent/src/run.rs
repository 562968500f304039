//! `lbwitness run`: checks, load, attach, the pipeline tasks, and a clean
//! shutdown on SIGINT or SIGTERM.
//!
//! ```text
//! ring buffer ─▶ capture::ringbuf ─▶ flows (sweeps FLOWS, reads COUNTERS) ─▶ sink
//! ```

use std::{path::Path, sync::Arc, time::Duration};

use agent_common::names;
use anyhow::{Context as _, anyhow};
use aya::maps::{HashMap as BpfHashMap, PerCpuArray, RingBuf};
use tokio::{signal::unix::SignalKind, sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    capture::{self, attach::attach},
    config::{Config, Output},
    enrich::Enricher,
    flows::{FlowMaps, FlowSettings, FlowTask},
    preflight,
    sink::{self, file::FileSink},
    telemetry::Telemetry,
};

/// Channel depths: enough to ride out a burst, small enough to push back.
const EVENT_BATCHES: usize = 64;
const RECORDS: usize = 8192;
/// The whole shutdown, detach to last flush, must fit in this.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(4500);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it. Later
/// kernels use memory cgroups and ignore it, so failure is only logged.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let interfaces = preflight::resolve_interfaces(&config.interfaces)?;
    preflight::check_capabilities()?;
    preflight::check_kernel(Path::new(preflight::VMLINUX_BTF))?;
    let sink = match &config.output {
        Output::Stdout => FileSink::stdout(),
        Output::File(path) => FileSink::open(path)?,
    };
    raise_memlock();

    let mut ebpf = capture::load(config.flow_table_entries, config.ring_buffer_bytes)?;
    let mut attachments = Vec::new();
    {
        let prog = capture::xdp_program(&mut ebpf)?;
        for (ifindex, name) in &interfaces {
            // On error, dropping `ebpf` detaches what was attached so far.
            let a = attach(prog, name, *ifindex, config.xdp_mode)?;
            info!(iface = %a.iface, ifindex = a.ifindex, mode = a.mode.as_str(), "attached XDP");
            attachments.push(a);
        }
    }

    let take = |ebpf: &mut aya::Ebpf, name: &str| {
        ebpf.take_map(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map `{name}`: rebuild the agent"))
    };
    let ring = RingBuf::try_from(take(&mut ebpf, names::EVENTS_MAP)?)?;
    let maps = FlowMaps {
        flows: BpfHashMap::try_from(take(&mut ebpf, names::FLOW_MAP)?)?,
        counters: PerCpuArray::try_from(take(&mut ebpf, names::COUNTERS_MAP)?)?,
    };

    let telemetry = Arc::new(Telemetry::default());
    let shutdown = CancellationToken::new();
    let (event_tx, event_rx) = mpsc::channel(EVENT_BATCHES);
    let (record_tx, record_rx) = mpsc::channel(RECORDS);

    let mut writer = tokio::spawn(sink::run(sink, record_rx));
    let flow_task = FlowTask::new(
        maps,
        Enricher::new(hostname(), interfaces.into_iter().collect()),
        FlowSettings {
            timeouts: config.timeouts,
            sweep_interval: config.sweep_interval,
            lifecycle_records: config.lifecycle_records,
        },
        telemetry.clone(),
        record_tx,
    );
    let mut flows = tokio::spawn(flow_task.run(event_rx));
    let mut reader: JoinHandle<std::io::Result<()>> = tokio::spawn(capture::ringbuf::run(
        ring,
        event_tx,
        telemetry.clone(),
        shutdown.clone(),
    ));
    info!(
        interfaces = ?config.interfaces,
        output = ?config.output,
        "lbwitness running"
    );

    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let early = tokio::select! {
        _ = sigterm.recv() => { info!("SIGTERM: stopping"); None }
        _ = sigint.recv() => { info!("SIGINT: stopping"); None }
        r = &mut writer => Some(format!("the record writer stopped: {r:?}")),
        r = &mut flows => Some(format!("the flow task stopped: {r:?}")),
        r = &mut reader => Some(format!("the ring-buffer reader stopped: {r:?}")),
    };

    // Detach first, so what the maps hold afterwards is final.
    {
        let prog = capture::xdp_program(&mut ebpf)?;
        for a in attachments {
            prog.detach(a.link)
                .with_context(|| format!("detaching XDP from {}", a.iface))?;
            info!(iface = %a.iface, "detached XDP");
        }
    }
    if let Some(why) = early {
        return Err(anyhow!(why));
    }
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_BUDGET, async {
        reader.await.context("ring-buffer reader panicked")??;
        flows.await.context("flow task panicked")??;
        let written = writer.await.context("record writer panicked")??;
        Ok::<u64, anyhow::Error>(written)
    })
    .await
    .context("shutdown took longer than its budget; some records may be unwritten")??;
    info!(records = drained, "stopped cleanly");
    Ok(())
}
