//! The agent's memory at 100 000 and 1 000 000 flows (issue #10, item 15):
//! the real agent with its default capture sizes, flooded with distinct
//! flows by BPF_PROG_TEST_RUN on its attached program, holding them (long
//! timeouts) until it has caught up; then stopped, which reports them all.
//! Each size runs with and without lifecycle records (`lifecycle=on` or
//! `lifecycle=off` picks one). Prints `agent_memory flows=<n> ...`:
//! - `idle_mb`: RSS before the flood;
//! - `holding_mb`: RSS while the agent holds every flow, after its sweeps;
//! - `peak_mb`: the highest RSS (VmHWM) up to the end of the shutdown,
//!   which reports every flow;
//! - `flows_map_mb`, `ring_mb`: kernel memory of the flow map and the ring
//!   buffer (`memlock` in the maps' fdinfo).

#[path = "../tests/support/flood.rs"]
mod flood;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use integration_tests::Scratch;

use self::flood::{flood, quiet_lab, wait_quiet};

/// `field` of /proc/PID/status in MiB (`None` once the process is gone).
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Kernel memory (fdinfo `memlock`, MiB) of the first map of `map_type`
/// the agent holds (it has one LRU hash and one ring buffer).
fn map_mib(pid: u32, map_type: u32) -> f64 {
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir)
        .expect("the agent's fdinfo")
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if field("map_type:") == Some(u64::from(map_type)) {
            return field("memlock:").unwrap_or(0) as f64 / (1024.0 * 1024.0);
        }
    }
    0.0
}

const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

fn measure(n: u32, lifecycle: bool) {
    let lab = quiet_lab("accmem");
    // Default sizes; timeouts long enough that every flow stays open.
    let config = Scratch::path("accmem.toml");
    std::fs::write(
        &config.0,
        format!(
            "[flows]\nactive_timeout_secs = 3600\nidle_timeout_secs = 3600\n\
             lifecycle_records = {lifecycle}\n[audit]\nwatch_files = []\n"
        ),
    )
    .unwrap();
    let mut agent = lab.start_agent(&["--config", config.as_str()]);
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(2));
    let idle = status_mib(pid, "VmRSS:").unwrap_or(0.0);
    let flows_map = map_mib(pid, BPF_MAP_TYPE_LRU_HASH);
    let ring = map_mib(pid, BPF_MAP_TYPE_RINGBUF);
    flood(&lab, n);
    wait_quiet(
        &agent.output,
        Duration::from_secs(3),
        Duration::from_secs(300),
    );
    // Two more sweeps over the full table.
    std::thread::sleep(Duration::from_secs(2));
    let holding = status_mib(pid, "VmRSS:").unwrap_or(0.0);
    let anon = status_mib(pid, "RssAnon:").unwrap_or(0.0);
    if std::env::var_os("AGENT_MEMORY_SMAPS").is_some() {
        print_largest_mappings(pid);
    }
    let started = Instant::now();
    agent.signal(libc::SIGTERM);
    let mut peak = 0.0_f64;
    let status = loop {
        if let Some(status) = agent.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the agent did not stop"
        );
        if let Some(hwm) = status_mib(pid, "VmHWM:") {
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stop = started.elapsed();
    if !status.success() {
        // A shutdown that cannot report every flow in its budget (issue #10
        // item 4) still leaves the memory figures valid.
        let log = agent.log_text();
        println!(
            "  agent exited {status}: {}",
            log.lines().last().unwrap_or("")
        );
    }
    println!("  declared: {:?}", declared(&agent.output));
    let out = std::fs::metadata(&agent.output).map_or(0, |m| m.len());
    println!(
        "agent_memory flows={n} lifecycle_records={lifecycle} idle_mb={idle:.1} holding_mb={holding:.1} (anon {anon:.1}) peak_mb={peak:.1} \
         holding_per_flow_bytes={:.0} flows_map_mb={flows_map:.1} ring_mb={ring:.1} \
         stop_s={:.1} output_mb={:.0}",
        (holding - idle) * 1024.0 * 1024.0 / f64::from(n),
        stop.as_secs_f64(),
        out as f64 / (1024.0 * 1024.0),
    );
    remove(&agent.output);
}

/// The mappings holding the most RSS (to see where memory goes).
fn print_largest_mappings(pid: u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .unwrap_or(0);
            maps.push((kib, name.clone()));
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-'))
        {
            name = line.to_owned();
        }
    }
    maps.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
    for (kib, name) in maps.iter().take(8) {
        println!("  {kib:>8} kB  {name}");
    }
}

/// Gap records' counts by reason.
fn declared(path: &Path) -> std::collections::BTreeMap<String, u64> {
    use std::io::BufRead as _;
    let mut gaps = std::collections::BTreeMap::new();
    let Ok(file) = std::fs::File::open(path) else {
        return gaps;
    };
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if !line.contains(r#""action":"gap""#) {
            continue;
        }
        let r: serde_json::Value = serde_json::from_str(&line).expect("a JSON record");
        let gap = &r["lbwitness"]["gap"];
        *gaps
            .entry(gap["reason"].as_str().unwrap_or("?").to_owned())
            .or_default() += gap["count"].as_u64().unwrap_or(0);
    }
    gaps
}

fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<u32> = args.iter().filter_map(|a| a.parse().ok()).collect();
    // `cargo bench` passes `--bench`; `lifecycle=off` measures without
    // lifecycle records only.
    let lifecycle = [true, false]
        .into_iter()
        .filter(|&on| on || !args.iter().any(|a| a == "lifecycle=on"))
        .filter(|&on| !on || !args.iter().any(|a| a == "lifecycle=off"));
    let lifecycle: Vec<bool> = lifecycle.collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    for n in sizes {
        for &on in &lifecycle {
            measure(n, on);
        }
    }
}
