//! `cargo xtask demo`: a self-contained lab. Two network namespaces joined
//! by a veth pair: a client generating TCP, UDP, ICMP, IPv6 and VLAN-tagged
//! traffic, and a "load balancer" running servers and the agent on its end
//! of the veth. Records are shown as they arrive; Ctrl-C (or --seconds)
//! stops the agent cleanly and tears the lab down.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use integration_tests::{
    frames::Frame,
    inject::RawSender,
    netns::{ChildGuard, NetNs, VethPair, in_netns},
};
use serde_json::Value;

use crate::{setup, util};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

const DEMO_CONFIG: &str = "\
[flows]
active_timeout_secs = 10
idle_timeout_secs = 5
closed_timeout_secs = 1

[audit]
checkpoint_interval_secs = 5
";

/// Runs the lab until Ctrl-C or `seconds`.
pub fn run(seconds: Option<u64>) -> Result<()> {
    setup::build_tools()?;
    util::require_root("the lab creates network namespaces and attaches XDP")?;
    util::build_release()?;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let client = Arc::new(NetNs::new("demo-cl"));
    let lb = Arc::new(NetNs::new("demo-lb"));
    let veth = VethPair::with_default_addrs(&client, &lb);
    println!(
        "lab: client {} ({}) <-> load balancer {} ({}), agent on {}",
        client.name(),
        veth.a.name,
        lb.name(),
        veth.b.name,
        veth.b.name
    );

    let config = std::env::temp_dir().join(format!("lbwitness-demo-{}.toml", std::process::id()));
    std::fs::write(&config, DEMO_CONFIG)?;
    // A fresh state directory: a new agent id, key and chain each run.
    let state = std::env::temp_dir().join(format!("lbwitness-demo-{}-state", std::process::id()));
    let trail = state.join("trail.ndjson");
    let agent_bin = util::agent_binary();
    let mut agent = lb.command(&agent_bin);
    agent
        .args(["run", "--iface", &veth.b.name, "--output", "-", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped());
    let mut agent = ChildGuard::spawn(&mut agent).context("starting the agent")?;
    let stdout = agent.child_mut().stdout.take().context("agent stdout")?;
    std::fs::create_dir_all(&state)?;
    let copy = std::fs::File::create(&trail)?;
    let printer = thread::spawn(move || print_records(stdout, copy));

    start_servers(&lb);
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let sender = RawSender::open(Some(&client), &veth.a.name)?;
    let (src_mac, dst_mac) = (veth.a.mac, veth.b.mac);
    let mut round = 0u16;
    while !STOP.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        round = round.wrapping_add(1);
        in_netns(&client, || client_round(round));
        // A VLAN-tagged frame: no VLAN device exists, so it is injected.
        let tagged = Frame::ipv4([192, 0, 2, 1], [192, 0, 2, 2])
            .src_mac(src_mac)
            .dst_mac(dst_mac)
            .vlan(100)
            .udp(40000 + round % 4, 53)
            .payload_len(32)
            .build();
        sender.send(&tagged)?;
        thread::sleep(Duration::from_millis(700));
    }

    println!("stopping the agent (it reports every open flow before exiting)...");
    let status = agent.stop_with(libc::SIGTERM);
    let _ = printer.join();
    let _ = std::fs::remove_file(&config);
    println!("agent exited: {status}; verifying the trail it wrote:");
    let _ = Command::new(&agent_bin)
        .arg("verify")
        .arg("--key")
        .arg(state.join("signing.key.pub"))
        .arg(&trail)
        .status();
    let _ = std::fs::remove_dir_all(&state);
    println!("tearing the lab down");
    Ok(())
}

/// TCP and UDP servers in the load balancer's namespace, for v4 and v6.
fn start_servers(lb: &Arc<NetNs>) {
    for addr in ["192.0.2.2:8080", "[2001:db8::2]:8080"] {
        let ns = lb.clone();
        let listener = in_netns(&ns, move || TcpListener::bind(addr)).expect("bind TCP server");
        thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 512];
                let n = conn.read(&mut buf).unwrap_or(0);
                let _ = conn.write_all(&buf[..n]);
            }
        });
    }
    for addr in ["192.0.2.2:5353", "[2001:db8::2]:5353"] {
        let socket = in_netns(lb, move || UdpSocket::bind(addr)).expect("bind UDP server");
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], peer);
            }
        });
    }
}

/// One round of client traffic (runs inside the client namespace).
fn client_round(round: u16) {
    let v6: Ipv6Addr = "2001:db8::2".parse().expect("address");
    let targets: [SocketAddr; 2] = [([192, 0, 2, 2], 8080).into(), (v6, 8080).into()];
    for target in targets {
        if let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            let _ = s.write_all(format!("GET /{round} HTTP/1.0\r\n\r\n").as_bytes());
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
        }
    }
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(b"query", "192.0.2.2:5353");
    }
    if let Ok(s) = UdpSocket::bind("[::]:0") {
        let _ = s.send_to(b"query", "[2001:db8::2]:5353");
    }
    if round.is_multiple_of(3) {
        let _ = Command::new("ping")
            .args(["-c", "1", "-W", "1", "192.0.2.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One line per record, as it arrives; every line is also copied to `copy`
/// for `lbwitness verify` at the end.
fn print_records(stdout: impl Read, mut copy: std::fs::File) {
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let _ = writeln!(copy, "{line}");
        let Ok(r) = serde_json::from_str::<Value>(&line) else {
            println!("(unparsable record) {line}");
            continue;
        };
        let s = |v: &Value| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        };
        let ev = &r["event"];
        let endpoint = |e: &Value| match e.get("port") {
            Some(p) => format!("{}:{}", s(&e["ip"]), p),
            None => s(&e["ip"]),
        };
        let mut text = format!("#{:<5} {:<16}", ev["sequence"], s(&ev["action"]));
        if let Some(net) = r.get("network") {
            text += &format!(
                " {:<9} {} -> {}",
                s(&net["transport"]),
                endpoint(&r["source"]),
                endpoint(&r["destination"])
            );
            if let Some(p) = net.get("packets") {
                text += &format!("  {p} pkts {} B", net["bytes"]);
            }
            if let Some(vlan) = net.get("vlan") {
                text += &format!("  vlan {}", s(&vlan["id"]));
            }
            if let Some(why) = ev.get("reason") {
                text += &format!("  ({})", s(why));
            }
        } else if let Some(c) = r["lbwitness"].get("checkpoint") {
            text += &format!(
                " {} records {}..{} signed by {}..",
                c["count"],
                c["first_sequence"],
                c["last_sequence"],
                &s(&c["key_id"])[..12]
            );
        } else if let Some(g) = r["lbwitness"].get("gap") {
            text += &format!(
                " {} {} lost ({})",
                g["count"],
                s(&g["reason"]),
                s(&g["source"])
            );
        } else if let Some(f) = r.get("file") {
            text += &format!(" {} now {}", s(&f["path"]), s(&f["hash"]["sha256"]));
        } else if let Some(kernel) = r["lbwitness"].get("kernel") {
            let moved: Vec<String> = kernel
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v["delta"].as_u64() > Some(0))
                .map(|(k, v)| format!("{k}+{}", v["delta"]))
                .collect();
            text += &format!(
                " kernel counters: {}",
                if moved.is_empty() {
                    "no change".into()
                } else {
                    moved.join(" ")
                }
            );
        }
        println!("{text}");
    }
}
