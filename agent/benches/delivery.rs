//! Delivery from the spool to a TCP syslog collector on loopback, through
//! the agent's own wiring (`run::delivery::{open, start}`: spooler, group,
//! balancer, endpoint worker, RFC 6587 octet-counted syslog over TCP).
//!
//! * Throughput: 500 000 flow-sized records (~900 bytes) are spooled first,
//!   then one group delivers them all on a single-threaded runtime: every
//!   agent-side task (reader, group, worker, spooler) shares one core. The
//!   collector, in another thread, parses every frame and counts them, so
//!   the figure is end to end: read, frame, write, acknowledge.
//! * Latency at 50 000 records/s: batches of 100 records every 2 ms enter
//!   the spooler (append, fdatasync, then readable), on the agent's runtime
//!   (2 worker threads). A thread samples the group's acknowledgement
//!   watermark every 50 µs; a record's latency is from its batch entering
//!   the spooler to the watermark passing it. The first second is warm-up.
//!
//! The spool lives under the system temporary directory, which must be on
//! a real disk for the fsync figures to mean anything.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lbwitness::{
    config::{Config, ConfigFile, Overrides},
    run::delivery,
};
use lbwitness_delivery::sealed::Batch;
use lbwitness_delivery::{deliver::declare::LossBook, spool::SpoolRecord};
use tokio::sync::{mpsc, watch};

#[path = "../../delivery/benches/common/mod.rs"]
mod common;

use common::{AGENT, Scratch, line};

const THROUGHPUT_RECORDS: u64 = 500_000;
const RATE: u64 = 50_000;
const TICK: Duration = Duration::from_millis(2);
const LATENCY_SECS: u64 = 10;

/// A collector that parses RFC 6587 octet-counted frames and counts them.
struct Collector {
    addr: SocketAddr,
    frames: Arc<AtomicU64>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let frames = Arc::new(AtomicU64::new(0));
        let count = frames.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || read_frames(conn, &count));
            }
        });
        Self { addr, frames }
    }
}

/// Reads `LEN SP MSG` frames until the connection ends.
fn read_frames(mut conn: std::net::TcpStream, frames: &AtomicU64) {
    let mut buf = vec![0u8; 1 << 20];
    let (mut have, mut at) = (0usize, 0usize);
    loop {
        // Parse every complete frame in buf[at..have].
        while let Some(sp) = buf[at..have].iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&buf[at..at + sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("an octet count");
            if at + sp + 1 + len > have {
                break;
            }
            at += sp + 1 + len;
            frames.fetch_add(1, Ordering::Relaxed);
        }
        buf.copy_within(at..have, 0);
        have -= at;
        at = 0;
        match conn.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}

fn config(dir: &Scratch, collector: SocketAddr, fsync: &str) -> Config {
    let text = format!(
        "state_dir = \"{state}\"\n[spool]\ndir = \"{state}/spool\"\nfsync = \"{fsync}\"\n\
         segment_bytes = 67108864\nmax_bytes = 2147483648\n\
         [[groups]]\nname = \"bench\"\nkind = \"syslog\"\n\
         [[groups.endpoints]]\naddress = \"{collector}\"\ntransport = \"tcp\"\n",
        state = dir.0.display()
    );
    let file: ConfigFile = toml::from_str(&text).expect("bench config");
    let overrides = Overrides {
        interfaces: vec!["lo".into()],
        ..Overrides::default()
    };
    Config::try_new(file, overrides, None).expect("valid bench config")
}

/// Spools `THROUGHPUT_RECORDS`, then times one group delivering them all
/// on one thread.
fn throughput() {
    let dir = Scratch::new("delivery");
    let collector = Collector::start();
    let config = config(&dir, collector.addr, "never");
    let mut opened = delivery::open(&config, AGENT).expect("open the spool");
    let lines: Vec<Vec<u8>> = (1..=THROUGHPUT_RECORDS).map(line).collect();
    for (i, chunk) in lines.chunks(512).enumerate() {
        let recs: Vec<SpoolRecord<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(j, l)| SpoolRecord {
                sequence: (i * 512 + j) as u64 + 1,
                routes: 1,
                line: l,
                prev: [0; 32],
                essential: false,
            })
            .collect();
        opened.spool.append(&recs).expect("append");
    }
    opened.spool.sync().expect("sync");
    let bytes: usize = lines.iter().map(Vec::len).sum();
    drop(lines);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cpu_before = thread_cpu();
    let (elapsed, cpu) = runtime.block_on(async {
        let (batches_tx, batches_rx) = mpsc::channel::<Batch>(64);
        let (durable, durable_rx) = watch::channel(THROUGHPUT_RECORDS);
        let start = Instant::now();
        let pipeline = delivery::start(
            opened.spool,
            opened.connectors,
            &config,
            AGENT,
            THROUGHPUT_RECORDS,
            LossBook::new(),
            batches_rx,
            durable,
        )
        .expect("start delivery");
        let acked = pipeline.stats()[0].clone();
        while acked.acked.load(Ordering::Relaxed) < THROUGHPUT_RECORDS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = start.elapsed();
        let cpu = thread_cpu() - cpu_before;
        drop(batches_tx);
        pipeline
            .drain(THROUGHPUT_RECORDS, durable_rx)
            .await
            .expect("drain");
        (elapsed, cpu)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.frames.load(Ordering::Relaxed) < THROUGHPUT_RECORDS && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        collector.frames.load(Ordering::Relaxed),
        THROUGHPUT_RECORDS,
        "the collector parsed every record"
    );
    let secs = elapsed.as_secs_f64();
    println!(
        "{:<44} {:>8.0} MiB/s {:>10.0} records/s (agent thread busy {:.0}%)",
        "spool -> syslog tcp collector, one thread",
        bytes as f64 / f64::from(1 << 20) / secs,
        THROUGHPUT_RECORDS as f64 / secs,
        100.0 * cpu.as_secs_f64() / secs
    );
}

/// User plus system CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &raw mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Records enter at `RATE` for `LATENCY_SECS`; prints the spool-to-ack
/// latency percentiles.
fn latency(fsync: &str) {
    let dir = Scratch::new("latency");
    let collector = Collector::start();
    let config = config(&dir, collector.addr, fsync);
    let opened = delivery::open(&config, AGENT).expect("open the spool");
    let per_tick = RATE * TICK.as_micros() as u64 / 1_000_000;
    let total = RATE * LATENCY_SECS;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (entered, acks) = runtime.block_on(async {
        let (batches_tx, batches_rx) = mpsc::channel::<Batch>(64);
        let (durable, durable_rx) = watch::channel(0);
        let pipeline = delivery::start(
            opened.spool,
            opened.connectors,
            &config,
            AGENT,
            0,
            LossBook::new(),
            batches_rx,
            durable,
        )
        .expect("start delivery");
        let stats = pipeline.stats()[0].clone();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let now = stats.acked.load(Ordering::Relaxed);
                    if now != last {
                        seen.push((now, Instant::now()));
                        last = now;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                seen
            })
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut entered = Vec::with_capacity((total / per_tick) as usize);
        let mut next = 1;
        while next <= total {
            tick.tick().await;
            let lines: Vec<Vec<u8>> = (next..next + per_tick).map(line).collect();
            let b = Batch::unchained(next, &lines, 1);
            entered.push((next, Instant::now()));
            batches_tx.send(b).await.expect("the spooler runs");
            next += per_tick;
        }
        drop(batches_tx);
        pipeline.drain(total, durable_rx).await.expect("drain");
        stop.store(true, Ordering::Relaxed);
        (entered, sampler.join().expect("sampler"))
    });
    let warm_up = RATE;
    let mut lat: Vec<Duration> = Vec::with_capacity(total as usize);
    let mut a = 0;
    for (first, at) in &entered {
        for seq in *first..*first + per_tick {
            while a < acks.len() && acks[a].0 < seq {
                a += 1;
            }
            let Some((_, acked_at)) = acks.get(a) else {
                panic!("sequence {seq} was never acknowledged");
            };
            if seq > warm_up {
                lat.push(acked_at.saturating_duration_since(*at));
            }
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "{:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms",
        format!("spool -> ack at {RATE} records/s, fsync {fsync}"),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(pct(0.999)),
        ms(*lat.last().expect("latencies"))
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    throughput();
    latency("always");
    latency("never");
}
