//! An oracle from outside the project: capture with dumpcap (Wireshark's
//! capture engine) and dissect with tshark into per-flow packet and byte
//! counts, keyed like the agent's flows.
//!
//! ```no_run
//! use integration_tests::netns::{NetNs, VethPair};
//! use integration_tests::tshark::{Capture, flows_from_pcap};
//!
//! let (a, b) = (NetNs::new("a"), NetNs::new("b"));
//! let veth = VethPair::with_default_addrs(&a, &b);
//! let capture = Capture::start(&b, &veth.b.name);
//! // ... generate traffic ...
//! let pcap = capture.stop();
//! let flows = flows_from_pcap(&pcap, "ip.src == 192.0.2.1");
//! std::fs::remove_file(pcap).unwrap();
//! ```
//!
//! Dissection turns off IP reassembly and TCP stream reassembly, so every
//! frame is counted on its own as the agent counts it, and decodes 802.1ad
//! (0x88a8) tags as plain VLAN tags so QinQ ids are read the same way as
//! 802.1Q ids.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::flow::{FlowCount, FlowTuple};
use crate::netns::{ChildGuard, NetNs};
use crate::{describe, run};

/// How to run a [`Capture`].
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Bytes kept per frame (`dumpcap -s`); `None` keeps whole frames. The
    /// flow counts come from headers, so 256 is plenty for large transfers.
    pub snaplen: Option<u32>,
    /// Kernel capture buffer in MiB (`dumpcap -B`); raise it for floods.
    pub buffer_mib: u32,
    /// A BPF capture filter (`dumpcap -f`), e.g. `"udp"`.
    pub capture_filter: Option<String>,
    /// How long [`Capture::stop`] waits before stopping dumpcap, so frames
    /// still in the kernel's capture ring (handed over in blocks, every
    /// 250 ms at worst, when traffic is light) reach the file. Without it the
    /// last packets of a test are lost.
    pub settle: Duration,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            snaplen: None,
            buffer_mib: 16,
            capture_filter: None,
            settle: Duration::from_millis(500),
        }
    }
}

/// dumpcap's own account of a capture, from its exit report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames written to the file.
    pub captured: u64,
    /// Frames the interface handed to the capture.
    pub received: u64,
    /// Frames dropped (kernel ring full, ...): the file is incomplete.
    pub dropped: u64,
}

/// A running `dumpcap` writing a pcap file; stopped (and the file removed)
/// on drop unless [`Capture::stop`] was called.
#[derive(Debug)]
pub struct Capture {
    child: Option<ChildGuard>,
    path: PathBuf,
    iface: String,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    settle: Duration,
}

impl Capture {
    /// Starts capturing on `iface` inside `ns` with default options; returns
    /// once the capture is running, so traffic sent afterwards is seen.
    ///
    /// # Panics
    /// If dumpcap fails to start or does not start capturing within 10 s.
    #[track_caller]
    pub fn start(ns: &NetNs, iface: &str) -> Self {
        Self::start_with(Some(ns), iface, CaptureOptions::default())
    }

    /// Starts capturing on `iface` in `ns` (or the test's namespace for
    /// `None`) with `options`.
    ///
    /// # Panics
    /// If dumpcap fails to start or does not start capturing within 10 s.
    #[track_caller]
    pub fn start_with(ns: Option<&NetNs>, iface: &str, options: CaptureOptions) -> Self {
        let path = crate::temp_path(&format!("{iface}.pcap"));
        let mut cmd = match ns {
            Some(ns) => ns.command("dumpcap"),
            None => Command::new("dumpcap"),
        };
        // -P: classic pcap, which crate::pcap can read too; -q: no running
        // count on stderr, the exit report still comes.
        cmd.args(["-q", "-P", "-i", iface, "-w"]).arg(&path);
        cmd.args(["-B", &options.buffer_mib.to_string()]);
        if let Some(snaplen) = options.snaplen {
            cmd.args(["-s", &snaplen.to_string()]);
        }
        if let Some(filter) = &options.capture_filter {
            cmd.args(["-f", filter]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let what = describe(&cmd);
        let mut child = ChildGuard::spawn(&mut cmd)
            .unwrap_or_else(|e| panic!("{e:#}"))
            .with_grace(Duration::from_secs(10));
        // Drain stderr on a thread so dumpcap can never block on the pipe.
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.child_mut().stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        let mut capture = Self {
            child: Some(child),
            path,
            iface: iface.to_owned(),
            stderr,
            reader: Some(reader),
            settle: options.settle,
        };
        capture.wait_started(&what);
        capture
    }

    /// Waits for the pcap file header. dumpcap opens the interface before
    /// it creates the file and flushes the header, so a header on disk means
    /// the kernel is already queueing frames for the capture. (Its
    /// "Capturing on" line comes earlier and proves nothing.)
    fn wait_started(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= 24) {
                return;
            }
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait() {
                self.join_reader();
                panic!(
                    "`{what}` exited with {status} before capturing: {}",
                    self.stderr_text().trim()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{what}` did not start capturing within 10 s: {}",
                    self.stderr_text().trim()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pcap file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What dumpcap has printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Stops the capture and returns the pcap file, which the caller
    /// removes when done (keep it to debug a failure).
    ///
    /// # Panics
    /// If dumpcap fails, or reports dropped frames (the oracle would be
    /// incomplete; use [`Capture::stop_with_stats`] to tolerate drops).
    #[track_caller]
    pub fn stop(self) -> PathBuf {
        let iface = self.iface.clone();
        let (path, stats) = self.stop_with_stats();
        assert!(
            stats.dropped == 0,
            "dumpcap on {iface} dropped {} of {} frames; {} is incomplete",
            stats.dropped,
            stats.received,
            path.display()
        );
        path
    }

    /// Stops the capture: waits [`CaptureOptions::settle`], sends SIGINT
    /// (dumpcap then flushes and closes the file), waits for it to exit, and
    /// returns the file and dumpcap's statistics.
    ///
    /// # Panics
    /// If dumpcap does not exit cleanly.
    #[track_caller]
    pub fn stop_with_stats(mut self) -> (PathBuf, CaptureStats) {
        std::thread::sleep(self.settle);
        let mut child = self.child.take().expect("running");
        let what = child.what().to_owned();
        let status = child.stop_with(libc::SIGINT);
        self.join_reader();
        let stderr = self.stderr_text();
        assert!(
            status.success(),
            "`{what}` exited with {status}: {}",
            stderr.trim()
        );
        let stats = parse_stats(&stderr)
            .unwrap_or_else(|e| panic!("`{what}`: {e:#}; stderr: {}", stderr.trim()));
        (std::mem::take(&mut self.path), stats)
    }

    /// Stops the capture (see [`Capture::stop`]), dissects it with
    /// [`dissect_pcap`] and removes the file, unless `LBW_KEEP_PCAP` is set
    /// in the environment (then its path is printed).
    ///
    /// # Panics
    /// As [`Capture::stop`] and [`dissect_pcap`].
    #[track_caller]
    pub fn stop_and_dissect(self, filter: &str) -> Dissection {
        let path = self.stop();
        let dissection = dissect_pcap(&path, filter).unwrap_or_else(|e| panic!("{e:#}"));
        if std::env::var_os("LBW_KEEP_PCAP").is_some() {
            eprintln!("kept capture {}", path.display());
        } else {
            let _ = std::fs::remove_file(&path);
        }
        dissection
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Only reached without stop(): a test failed while capturing.
        if let Some(child) = self.child.take() {
            drop(child);
            self.join_reader();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Parses dumpcap's exit report:
/// `Packets captured: 12` and
/// `Packets received/dropped on interface 'x': 12/0 (pcap:0/...)`.
fn parse_stats(stderr: &str) -> anyhow::Result<CaptureStats> {
    let mut stats = CaptureStats::default();
    let mut seen = false;
    // Without a terminal dumpcap still starts its count line with '\r'.
    for line in stderr.lines().map(|l| l.trim_start_matches('\r')) {
        if let Some(n) = line.strip_prefix("Packets captured: ") {
            stats.captured = n.trim().parse().context("bad captured count")?;
        } else if line.starts_with("Packets received/dropped on interface") {
            let counts = line
                .rsplit_once("': ")
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default())
                .context("bad received/dropped line")?;
            let (received, dropped) = counts
                .split_once('/')
                .context("bad received/dropped counts")?;
            stats.received = received.parse().context("bad received count")?;
            stats.dropped = dropped.parse().context("bad dropped count")?;
            seen = true;
        }
    }
    if !seen {
        bail!("no received/dropped report");
    }
    Ok(stats)
}

/// What tshark made of a capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dissection {
    /// IP packets that are flows for the agent: everything except the
    /// entries below.
    pub flows: BTreeMap<FlowTuple, FlowCount>,
    /// Non-first fragments (IPv4 offset > 0, or an IPv6 fragment header with
    /// offset > 0), keyed with the fragment's protocol and ports 0. The
    /// agent counts them but makes no flow of them.
    pub non_first_fragments: BTreeMap<FlowTuple, FlowCount>,
    /// IP packets shorter than their IP header claims, or whose TCP, UDP,
    /// ICMP or ICMPv6 header tshark could not dissect (truncated or
    /// malformed), or whose IPv6 extension chain it could not follow:
    /// `(frame number, frame.protocols)`.
    pub undissected: Vec<(u64, String)>,
    /// Frames without an IPv4 or IPv6 header (ARP, ...).
    pub non_ip: u64,
    /// Frames that passed the display filter.
    pub frames: u64,
}

impl Dissection {
    /// Sum over [`Dissection::flows`].
    pub fn total(&self) -> FlowCount {
        let mut total = FlowCount::default();
        for count in self.flows.values() {
            total.packets += count.packets;
            total.bytes += count.bytes;
            total.tcp_flags |= count.tcp_flags;
        }
        total
    }
}

/// [`dissect_pcap`]'s flows only.
///
/// # Panics
/// If tshark fails (the message names the command).
#[track_caller]
pub fn flows_from_pcap(path: &Path, filter: &str) -> BTreeMap<FlowTuple, FlowCount> {
    dissect_pcap(path, filter)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .flows
}

/// The fields [`dissect_pcap`] asks for, in column order.
const FIELDS: &[&str] = &[
    "frame.number",
    "frame.len",
    "frame.protocols",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.len",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.plen",
    "ipv6.nxt",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.offset",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "udp.srcport",
    "udp.dstport",
    "sctp.srcport",
    "sctp.dstport",
    "icmp.type",
    "icmp.code",
    "icmpv6.type",
    "icmpv6.code",
];

/// The tshark options every dissection here uses: no name resolution, no
/// reassembly (every frame counts on its own), 802.1ad read as VLAN.
fn tshark_base(path: &Path, filter: &str) -> Command {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(path);
    for pref in [
        "ip.defragment:FALSE",
        "ipv6.defragment:FALSE",
        "tcp.desegment_tcp_streams:FALSE",
    ] {
        cmd.args(["-o", pref]);
    }
    cmd.args(["-d", "ethertype==0x88a8,vlan"]);
    if !filter.is_empty() {
        cmd.args(["-Y", filter]);
    }
    cmd
}

/// Runs tshark on `path` with display filter `filter` (empty: every frame)
/// and returns, per frame, every occurrence of each of `fields` (e.g. two
/// `vlan.id` values for a QinQ frame, or the inner header's `ip.src` of an
/// ICMP error after the outer one).
pub fn tshark_fields(
    path: &Path,
    filter: &str,
    fields: &[&str],
) -> anyhow::Result<Vec<Vec<Vec<String>>>> {
    tshark_fields_with(tshark_base(path, filter), fields)
}

fn tshark_fields_with(mut cmd: Command, fields: &[&str]) -> anyhow::Result<Vec<Vec<Vec<String>>>> {
    cmd.args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a"]);
    cmd.args(["-E", "aggregator=;", "-E", "quote=n", "-E", "header=n"]);
    for field in fields {
        cmd.args(["-e", field]);
    }
    let out = run(&mut cmd)?;
    Ok(out
        .lines()
        .map(|line| {
            let mut cols: Vec<Vec<String>> = line
                .split('\t')
                .map(|col| {
                    col.split(';')
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .collect();
            cols.resize(fields.len(), Vec::new());
            cols
        })
        .collect())
}

/// Dissects the pcap at `path`, keeping frames that match the tshark
/// display filter `filter` (e.g. `"eth.src == 02:00:00:00:00:01"` or
/// `"ip.src == 192.0.2.1 || ipv6.src == 2001:db8::1"`; empty for all), into
/// per-flow counts in the agent's conventions (see [`FlowTuple`]): bytes are
/// the IPv4 total length or the IPv6 payload length + 40, ICMP "ports" are
/// type and code, and for tunnels or ICMP errors only the outer headers
/// count.
pub fn dissect_pcap(path: &Path, filter: &str) -> anyhow::Result<Dissection> {
    let rows = tshark_fields(path, filter, FIELDS)
        .with_context(|| format!("dissecting {}", path.display()))?;
    let mut out = Dissection::default();
    for row in rows {
        out.frames += 1;
        classify(&row, &mut out)
            .with_context(|| format!("{}: frame {:?}", path.display(), row.first()))?;
    }
    Ok(out)
}

/// Column `name` of a row.
fn col<'a>(row: &'a [Vec<String>], name: &str) -> &'a [String] {
    let i = FIELDS.iter().position(|f| *f == name).expect("known field");
    &row[i]
}

/// The first occurrence of `name` parsed as a number (decimal, or hex with
/// 0x), if present.
fn first_num(row: &[Vec<String>], name: &str) -> anyhow::Result<Option<u64>> {
    let Some(text) = col(row, name).first() else {
        return Ok(None);
    };
    let value = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    value
        .map(Some)
        .with_context(|| format!("{name} = {text:?} is not a number"))
}

fn first_ip(row: &[Vec<String>], name: &str) -> anyhow::Result<IpAddr> {
    let text = col(row, name)
        .first()
        .with_context(|| format!("no {name}"))?;
    text.parse()
        .with_context(|| format!("{name} = {text:?} is not an address"))
}

/// Adds one frame to `out`.
fn classify(row: &[Vec<String>], out: &mut Dissection) -> anyhow::Result<()> {
    let number = first_num(row, "frame.number")?.unwrap_or_default();
    let protocols = col(row, "frame.protocols").join(";");
    let layers: Vec<&str> = protocols.split(':').collect();
    // The outer IP header is the first one; later ones are tunnelled or
    // quoted in ICMP errors.
    let Some(ip_at) = layers.iter().position(|l| *l == "ip" || *l == "ipv6") else {
        out.non_ip += 1;
        return Ok(());
    };
    let vlan_depth = layers[..ip_at].iter().filter(|l| **l == "vlan").count();
    let vlans: Vec<u16> = col(row, "vlan.id")
        .iter()
        .take(vlan_depth)
        .map(|v| v.parse())
        .collect::<Result<_, _>>()
        .context("bad vlan.id")?;
    // The first layer after the IP header and its extension headers.
    let l4_layer = layers[ip_at + 1..]
        .iter()
        .find(|l| !l.starts_with("ipv6."))
        .copied()
        .unwrap_or("");
    let undissected = |out: &mut Dissection| out.undissected.push((number, protocols.clone()));

    let v4 = layers[ip_at] == "ip";
    let (src, dst, ip_len, protocol, non_first) = if v4 {
        let len = first_num(row, "ip.len")?.context("no ip.len")?;
        let protocol = first_num(row, "ip.proto")?.context("no ip.proto")? as u8;
        let offset = first_num(row, "ip.frag_offset")?.unwrap_or(0);
        (
            first_ip(row, "ip.src")?,
            first_ip(row, "ip.dst")?,
            len,
            protocol,
            offset != 0,
        )
    } else {
        let plen = first_num(row, "ipv6.plen")?.context("no ipv6.plen")?;
        let Some((protocol, non_first)) = ipv6_chain(row)? else {
            undissected(out);
            return Ok(());
        };
        (
            first_ip(row, "ipv6.src")?,
            first_ip(row, "ipv6.dst")?,
            plen + 40,
            protocol,
            non_first,
        )
    };

    // A frame cut short of the length its IP header claims is malformed
    // for the agent, however much of it tshark could dissect.
    let wire_len = first_num(row, "frame.len")?.context("no frame.len")?;
    if wire_len < 14 + 4 * vlan_depth as u64 + ip_len {
        undissected(out);
        return Ok(());
    }

    let mut key = FlowTuple {
        ip_version: if v4 { 4 } else { 6 },
        src,
        dst,
        protocol,
        src_port: 0,
        dst_port: 0,
        vlan_outer: vlans.first().copied().unwrap_or(0),
        vlan_inner: vlans.get(1).copied().unwrap_or(0),
        vlan_depth: vlan_depth as u8,
    };
    if non_first {
        out.non_first_fragments
            .entry(key)
            .or_default()
            .add(ip_len, 0);
        return Ok(());
    }
    // Ports from the transport the IP header announces, and only if tshark
    // dissected that very layer (not, say, the TCP header quoted in an ICMP
    // error).
    let (layer, src_field, dst_field) = match (protocol, v4) {
        (6, _) => ("tcp", "tcp.srcport", "tcp.dstport"),
        (17, _) => ("udp", "udp.srcport", "udp.dstport"),
        (132, _) => ("sctp", "sctp.srcport", "sctp.dstport"),
        (1, true) => ("icmp", "icmp.type", "icmp.code"),
        (58, false) => ("icmpv6", "icmpv6.type", "icmpv6.code"),
        _ => ("", "", ""),
    };
    let mut tcp_flags = 0;
    if !layer.is_empty() {
        if l4_layer != layer {
            undissected(out);
            return Ok(());
        }
        key.src_port =
            first_num(row, src_field)?.with_context(|| format!("no {src_field}"))? as u16;
        key.dst_port =
            first_num(row, dst_field)?.with_context(|| format!("no {dst_field}"))? as u16;
        if protocol == 6 {
            tcp_flags = first_num(row, "tcp.flags")?.context("no tcp.flags")? as u16 & 0x1ff;
        }
    }
    out.flows.entry(key).or_default().add(ip_len, tcp_flags);
    Ok(())
}

/// Follows the outer IPv6 header's next-header chain: returns the
/// transport protocol and whether a fragment header with a non-zero offset
/// was crossed, or `None` if tshark did not report a link of the chain.
///
/// Each extension type's fields list its headers in wire order, outer packet
/// first, so taking the next unused occurrence per type walks the chain.
fn ipv6_chain(row: &[Vec<String>]) -> anyhow::Result<Option<(u8, bool)>> {
    let parse = |name: &str, i: usize| -> anyhow::Result<Option<u64>> {
        col(row, name)
            .get(i)
            .map(|v| v.parse().with_context(|| format!("bad {name} {v:?}")))
            .transpose()
    };
    let Some(mut next) = parse("ipv6.nxt", 0)? else {
        return Ok(None);
    };
    let mut used = [0usize; 4];
    let mut non_first = false;
    for _ in 0..64 {
        let (slot, field) = match next {
            0 => (0, "ipv6.hopopts.nxt"),
            43 => (1, "ipv6.routing.nxt"),
            60 => (2, "ipv6.dstopts.nxt"),
            44 => {
                let offset = parse("ipv6.fraghdr.offset", used[3])?.unwrap_or(0);
                non_first |= offset != 0;
                (3, "ipv6.fraghdr.nxt")
            }
            transport => return Ok(Some((transport as u8, non_first))),
        };
        let Some(n) = parse(field, used[slot])? else {
            return Ok(None);
        };
        used[slot] += 1;
        next = n;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};

    use super::*;
    use crate::frames::{
        ExtHeader, Frame, L3, proto, sctp_chunk, sctp_chunk_type, sctp_init_chunk, tcp_flags,
    };
    use crate::inject::RawSender;
    use crate::netns::{
        DEFAULT_A_V4, DEFAULT_A_V6, DEFAULT_B_V4, DEFAULT_B_V6, VethPair, disable_offloads,
        in_netns, require_root,
    };

    const A4: Ipv4Addr = DEFAULT_A_V4;
    const B4: Ipv4Addr = DEFAULT_B_V4;
    const A6: Ipv6Addr = DEFAULT_A_V6;
    const B6: Ipv6Addr = DEFAULT_B_V6;

    /// A mix of frames covering every dissection path.
    fn sample_frames() -> Vec<Frame> {
        let srh = ExtHeader::srh(&[B6], 0);
        vec![
            Frame::ipv4(A4, B4)
                .tcp(40000, 80)
                .tcp_flags(tcp_flags::SYN)
                .payload_len(10),
            Frame::ipv4(A4, B4)
                .tcp(40000, 80)
                .tcp_flags(tcp_flags::ACK | tcp_flags::NS)
                .tcp_options(vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
            Frame::ipv4(A4, B4)
                .ipv4_options(vec![7, 7, 4, 0, 0, 0, 0])
                .udp(1, 2)
                .payload_len(100),
            Frame::ipv4(A4, B4).vlan(10).udp(1, 2),
            Frame::ipv4(A4, B4).vlan_ad(20).vlan(30).udp(1, 2).pad(),
            Frame::ipv4(A4, B4).vlan(20).vlan(30).udp(1, 2),
            Frame::ipv4(A4, B4).vlan_ad(1).vlan_ad(2).vlan(3).udp(1, 2),
            Frame::ipv4(A4, B4).mf().ip_id(7).tcp(5, 6).payload_len(64),
            Frame::ipv4(A4, B4)
                .ip_id(7)
                .frag_offset(11)
                .other(proto::TCP)
                .payload_len(24),
            Frame::ipv4(A4, B4)
                .icmpv4(3, 3)
                .payload(Frame::ipv4(B4, A4).udp(9, 10).build()[14..].to_vec()),
            Frame::ipv4(A4, B4).icmpv4(8, 0).payload_len(56),
            Frame::ipv4(A4, B4)
                .other(proto::GRE)
                .payload(vec![0, 0, 0x08, 0x00]),
            Frame::ipv6(A6, B6)
                .tcp(1, 443)
                .tcp_flags(tcp_flags::FIN | tcp_flags::ACK),
            Frame::ipv6(A6, B6).udp(53, 5353).payload_len(30).vlan(99),
            Frame::ipv6(A6, B6).icmpv6(128, 0).payload_len(8),
            Frame::ipv6(A6, B6)
                .hop_by_hop()
                .ext(srh)
                .dest_opts()
                .fragment(0, true)
                .udp(7, 8)
                .payload_len(16),
            Frame::ipv6(A6, B6)
                .dest_opts()
                .fragment(3, false)
                .other(proto::UDP)
                .payload_len(16),
            Frame::ipv6(A6, B6).routing(0, 0).icmpv6(129, 0),
            Frame::ipv6(A6, B6)
                .other(proto::GRE)
                .payload(vec![0, 0, 0x86, 0xdd]),
            Frame::ipv4(A4, B4)
                .sctp(5000, 36412)
                .payload(sctp_init_chunk(1)),
            Frame::ipv6(A6, B6)
                .dest_opts()
                .sctp(2905, 2905)
                .sctp_verification_tag(9)
                .payload(sctp_chunk(sctp_chunk_type::DATA, 3, &[0; 13])),
        ]
    }

    /// What the builder says the frames should yield.
    fn expected(frames: &[Frame]) -> (BTreeMap<FlowTuple, FlowCount>, u64) {
        let mut flows: BTreeMap<FlowTuple, FlowCount> = BTreeMap::new();
        let mut fragments = 0;
        for frame in frames {
            match frame.flow_tuple() {
                Some(key) => flows
                    .entry(key)
                    .or_default()
                    .add(frame.ip_len().unwrap().into(), frame.tcp_flag_bits()),
                None => fragments += 1,
            }
        }
        (flows, fragments)
    }

    #[test]
    fn tshark_agrees_with_the_builder_and_its_checksums() {
        let frames = sample_frames();
        let mut bytes: Vec<Vec<u8>> = frames.iter().map(Frame::build).collect();
        bytes.push(Frame::non_ip(crate::frames::ETHERTYPE_ARP, vec![0; 28]).build());
        // Truncated in the UDP header: IP, but no dissectable transport.
        bytes.push(Frame::ipv4(A4, B4).udp(1, 2).truncate(14 + 20 + 4).build());
        let path = crate::temp_path("builder.pcap");
        crate::pcap::write_pcap(&path, &bytes).unwrap();

        let dissection = dissect_pcap(&path, "").unwrap();
        let (flows, fragments) = expected(&frames);
        assert_eq!(dissection.flows, flows);
        assert_eq!(
            dissection
                .non_first_fragments
                .values()
                .map(|c| c.packets)
                .sum::<u64>(),
            fragments
        );
        assert_eq!(dissection.non_ip, 1);
        assert_eq!(
            dissection.undissected.len(),
            1,
            "{:?}",
            dissection.undissected
        );
        assert_eq!(dissection.frames, bytes.len() as u64);
        // A filter applies.
        let v6 = flows_from_pcap(&path, "ipv6");
        assert_eq!(v6.len(), flows.keys().filter(|k| k.ip_version == 6).count());

        // Every checksum tshark can verify is good.
        let mut cmd = Command::new("tshark");
        cmd.args(["-n", "-r"]).arg(&path);
        for pref in [
            "ip.check_checksum:TRUE",
            "tcp.check_checksum:TRUE",
            "udp.check_checksum:TRUE",
            "sctp.checksum:CRC 32c",
            "ip.defragment:FALSE",
            "ipv6.defragment:FALSE",
        ] {
            cmd.args(["-o", pref]);
        }
        let statuses = [
            "ip.checksum.status",
            "tcp.checksum.status",
            "udp.checksum.status",
            "icmp.checksum.status",
            "icmpv6.checksum.status",
            "sctp.checksum.status",
        ];
        let rows = tshark_fields_with(cmd, &statuses).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut checked = [0; 6];
        for (n, (row, frame)) in rows.iter().zip(&frames).enumerate() {
            // tshark leaves the L4 checksum of a fragment unverified.
            let fragment = match &frame.l3 {
                L3::Ipv4(ip) => ip.mf || ip.frag_offset != 0,
                L3::Ipv6(ip) => ip
                    .ext
                    .iter()
                    .any(|h| matches!(h, ExtHeader::Fragment { .. })),
                L3::Other { .. } => false,
            };
            for (i, values) in row.iter().enumerate() {
                // 1 is "Good" (0 bad, 2 unverified). The quoted header of an
                // ICMP error is verified too.
                for value in values {
                    if fragment && i > 0 && value == "2" {
                        continue;
                    }
                    assert_eq!(value, "1", "frame {}: {} = {value}", n + 1, statuses[i]);
                    checked[i] += 1;
                }
            }
        }
        assert!(checked.iter().all(|&c| c > 0), "{checked:?}");
    }

    #[test]
    fn parses_dumpcap_reports() {
        let report = "Capturing on 'x'\nFile: /tmp/f\n\rPackets captured: 12\n\
                      Packets received/dropped on interface 'x': 14/2 (pcap:2/dumpcap:0/flushed:0/ps_ifdrop:0) (85.7%)\n";
        assert_eq!(
            parse_stats(report).unwrap(),
            CaptureStats {
                captured: 12,
                received: 14,
                dropped: 2
            }
        );
        assert!(parse_stats("Capturing on 'x'\n").is_err());
    }

    #[test]
    fn capture_counts_socket_traffic() {
        require_root();
        let client = NetNs::new("capc");
        let server = NetNs::new("caps");
        let veth = VethPair::with_default_addrs(&client, &server);
        // Wire-size TCP segments, as the agent sees them.
        disable_offloads(Some(&client), &veth.a.name).unwrap();
        disable_offloads(Some(&server), &veth.b.name).unwrap();
        let capture = Capture::start(&server, &veth.b.name);

        const N: u64 = 500;
        for dst in [SocketAddr::from((B4, 7000)), SocketAddr::from((B6, 7000))] {
            let rx = in_netns(&server, || UdpSocket::bind(dst)).unwrap();
            let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let tx = in_netns(&client, || UdpSocket::bind(any)).unwrap();
            for i in 0..N {
                tx.send_to(&vec![0u8; (i % 100) as usize], dst).unwrap();
            }
            drop(rx);
        }
        // One TCP connection with a 100 kB transfer.
        let listener = in_netns(&server, || TcpListener::bind((B4, 8000))).unwrap();
        let sink = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut conn, &mut data).unwrap();
            data.len()
        });
        let mut stream = in_netns(&client, || TcpStream::connect((B4, 8000))).unwrap();
        std::io::Write::write_all(&mut stream, &vec![7u8; 100_000]).unwrap();
        drop(stream);
        assert_eq!(sink.join().unwrap(), 100_000);

        let (path, stats) = capture.stop_with_stats();
        assert_eq!(stats.dropped, 0);
        assert!(stats.captured > 2 * N, "{stats:?}");
        let flows = flows_from_pcap(&path, &format!("eth.src == {}", veth.a.mac_string()));
        std::fs::remove_file(&path).unwrap();

        let payload_sum: u64 = (0..N).map(|i| i % 100).sum();
        let udp = |v6: bool| {
            flows
                .iter()
                .find(|(k, _)| k.protocol == 17 && k.dst_port == 7000 && (k.ip_version == 6) == v6)
                .map(|(_, c)| *c)
                .unwrap_or_else(|| panic!("no UDP v6={v6} flow in {flows:#?}"))
        };
        let v4 = udp(false);
        assert_eq!((v4.packets, v4.bytes), (N, N * 28 + payload_sum));
        let v6 = udp(true);
        assert_eq!((v6.packets, v6.bytes), (N, N * 48 + payload_sum));
        let (key, tcp) = flows
            .iter()
            .find(|(k, _)| k.protocol == 6 && k.dst_port == 8000)
            .expect("TCP flow");
        assert_eq!(key.src, IpAddr::V4(A4));
        assert_eq!(key.vlan_depth, 0);
        assert_eq!(tcp.tcp_flags & 0x13, 0x13, "SYN, ACK and FIN seen");
        // Offloads off: no segment above the MTU, so at least 100000/1448
        // data segments.
        assert!(tcp.packets >= 100_000 / 1448, "{tcp:?}");
        assert!(tcp.bytes >= 100_000, "{tcp:?}");
    }

    #[test]
    fn capture_counts_injected_frames() {
        require_root();
        let a = NetNs::new("inja");
        let b = NetNs::new("injb");
        let veth = VethPair::with_default_addrs(&a, &b);
        let capture = Capture::start(&b, &veth.b.name);
        let sender = RawSender::open(Some(&a), &veth.a.name).unwrap();
        // A source MAC of our own, so the filter sees only injected frames.
        let mac = [0x02, 0, 0, 0, 0x77, 0x01];
        let frames: Vec<Frame> = sample_frames()
            .into_iter()
            .map(|f| f.src_mac(mac).dst_mac(veth.b.mac))
            .collect();
        for _ in 0..3 {
            for frame in &frames {
                sender.send(&frame.build()).unwrap();
            }
        }
        let err = sender.send(&[0u8; 10]).unwrap_err();
        assert!(format!("{err:#}").contains(&veth.a.name), "{err:#}");
        let filter = format!("eth.src == {}", crate::netns::format_mac(&mac));
        let dissection = capture.stop_and_dissect(&filter);

        let (mut flows, fragments) = expected(&frames);
        for count in flows.values_mut() {
            count.packets *= 3;
            count.bytes *= 3;
        }
        assert_eq!(dissection.flows, flows);
        assert_eq!(dissection.frames, 3 * frames.len() as u64);
        assert_eq!(
            dissection
                .non_first_fragments
                .values()
                .map(|c| c.packets)
                .sum::<u64>(),
            3 * fragments
        );
    }
}
