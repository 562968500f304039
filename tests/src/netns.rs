//! RAII guards for integration tests that need root: network namespaces,
//! veth pairs and child processes, in the style of aya's `NetNsGuard`.
//!
//! Every guard undoes its setup on drop, including while a failing test
//! unwinds, so a test run leaves no namespace, interface or process behind.
//! Names are unique per process (pid) and per guard (a counter), so tests
//! can run in parallel, in one test binary or several.
//!
//! ```no_run
//! use integration_tests::netns::{NetNs, VethPair, in_netns, require_root};
//!
//! require_root();
//! let client = NetNs::new("cli");
//! let server = NetNs::new("srv");
//! let veth = VethPair::with_default_addrs(&client, &server);
//! let listener = in_netns(&server, || std::net::TcpListener::bind("192.0.2.2:8080")).unwrap();
//! // `listener` stays in the server namespace; accept on any thread.
//! # drop((listener, veth));
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{describe, next_id, run, run_ok};

/// Maximum length of a Linux interface name (`IFNAMSIZ - 1`).
pub const IFNAMSIZ_MAX: usize = 15;

/// Panics unless the effective user is root.
///
/// Tests that need namespaces call this first so that running them
/// unprivileged fails loudly instead of passing without testing anything.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root: run `cargo xtask test` as root");
    }
}

/// A unique interface name of at most 15 characters: `prefix` (cut short if
/// needed), then the pid and a process-wide counter in hex, separated by an
/// `x` so that distinct (pid, counter) pairs never render alike.
pub fn unique_ifname(prefix: &str) -> String {
    let suffix = format!("{:x}x{:x}", std::process::id(), next_id());
    let keep = IFNAMSIZ_MAX.saturating_sub(suffix.len()).min(prefix.len());
    format!("{}{suffix}", &prefix[..keep])
}

/// Names of the namespaces `ip netns list` shows.
pub fn netns_names() -> Vec<String> {
    run_ok(Command::new("ip").args(["netns", "list"]))
        .lines()
        // Lines read `name` or `name (id: 3)`.
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// `ip` in `ns`, or in the current namespace for `None`.
fn ip_in(ns: Option<&str>) -> Command {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd
}

/// Whether an `ip` failure means a name is taken, so another one should be
/// tried (a leftover from a crashed run with a recycled pid, or a name clash
/// with another process).
fn is_exists_error(err: &anyhow::Error) -> bool {
    let msg = format!("{err:#}");
    msg.contains("File exists") || msg.contains("already exists")
}

/// A network namespace created with `ip netns add` and deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace named `lbw-<prefix>-<pid>-<n>` and brings up its
    /// loopback.
    ///
    /// # Panics
    /// If `ip netns add` or `ip link set lo up` fails (not root, no `ip`).
    #[track_caller]
    pub fn new(prefix: &str) -> Self {
        for _ in 0..100 {
            let name = format!("lbw-{prefix}-{}-{}", std::process::id(), next_id());
            match run(Command::new("ip").args(["netns", "add", &name])) {
                Ok(_) => {
                    // Construct the guard first so a failure below still
                    // deletes the namespace.
                    let ns = Self { name };
                    ns.ip(&["link", "set", "lo", "up"]);
                    return ns;
                }
                Err(e) if is_exists_error(&e) => continue,
                Err(e) => panic!("cannot create network namespace: {e:#}"),
            }
        }
        panic!("cannot find a free network namespace name for prefix {prefix:?}");
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that pins the namespace: `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A [`Command`] that runs `program` inside the namespace, through
    /// `ip netns exec` (which also mounts a matching `/sys`). `ip` execs the
    /// program, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` inside the namespace to completion and returns stdout.
    ///
    /// # Panics
    /// If the command fails; the message names it and carries its stderr.
    #[track_caller]
    pub fn exec(&self, argv: &[&str]) -> String {
        let (program, args) = argv.split_first().expect("exec: empty argv");
        run_ok(self.command(program).args(args))
    }

    /// Runs `ip -n <name> args...` and returns stdout.
    ///
    /// # Panics
    /// If the command fails; the message names it and carries its stderr.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(ip_in(Some(&self.name)).args(args))
    }

    /// Spawns `argv` inside the namespace with stdin closed and stdout and
    /// stderr inherited, guarded by a [`ChildGuard`].
    ///
    /// # Panics
    /// If the command cannot be started.
    #[track_caller]
    pub fn spawn(&self, argv: &[&str]) -> ChildGuard {
        let (program, args) = argv.split_first().expect("spawn: empty argv");
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        ChildGuard::spawn(&mut cmd).unwrap_or_else(|e| panic!("{e:#}"))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys its interfaces (and so both ends
        // of any veth with an end inside) once no process holds it.
        // Never panic here: this also runs while a failed test unwinds, and
        // a second panic would abort the whole test binary.
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: leaking network namespace {}: {e:#}", self.name);
        }
    }
}

/// Runs `f` on a fresh thread that has joined `ns`'s network namespace and
/// returns its result; a panic in `f` is resumed on the calling thread.
///
/// Sockets keep the namespace they were created in, so a listener or stream
/// returned by `f` can then be used from any thread.
///
/// # Panics
/// If the namespace cannot be entered, or if `f` panics.
pub fn in_netns<T, F>(ns: &NetNs, f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = ns.path();
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            // setns affects only the calling thread, which is why `f` gets a
            // thread of its own: the caller's namespace is left untouched.
            enter_netns(&path).unwrap_or_else(|e| panic!("{e:#}"));
            f()
        });
        match handle.join() {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// [`in_netns`] for `Some(ns)`; runs `f` on the calling thread for `None`
/// (the namespace the test runs in).
pub fn in_netns_opt<T, F>(ns: Option<&NetNs>, f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    match ns {
        Some(ns) => in_netns(ns, f),
        None => f(),
    }
}

/// Moves the calling thread into the network namespace pinned at `path`.
fn enter_netns(path: &std::path::Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: `file` is an open namespace file descriptor for the whole call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("setns(CLONE_NEWNET) into {}", path.display()));
    }
    Ok(())
}

/// Addresses and MAC for one end of a [`VethPair`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VethEnd {
    /// IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and prefix length (added with `nodad`).
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// MAC address; the kernel picks a random one by default.
    pub mac: Option<[u8; 6]>,
}

impl VethEnd {
    /// An end with no address.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an IPv4 address.
    pub fn ipv4(mut self, addr: impl Into<Ipv4Addr>, prefix_len: u8) -> Self {
        self.ipv4 = Some((addr.into(), prefix_len));
        self
    }

    /// Adds an IPv6 address.
    pub fn ipv6(mut self, addr: impl Into<Ipv6Addr>, prefix_len: u8) -> Self {
        self.ipv6 = Some((addr.into(), prefix_len));
        self
    }

    /// Sets the MAC address.
    pub fn mac(mut self, mac: [u8; 6]) -> Self {
        self.mac = Some(mac);
        self
    }
}

/// One configured end of a [`VethPair`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSide {
    /// Namespace name, `None` for the namespace the test runs in.
    pub ns: Option<String>,
    /// Interface name (at most 15 characters).
    pub name: String,
    /// Interface index inside its namespace.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// IPv4 address, if one was assigned.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address, if one was assigned.
    pub ipv6: Option<Ipv6Addr>,
}

impl VethSide {
    /// The MAC as tshark prints it (`02:00:00:00:00:01`), for display
    /// filters such as `eth.src == ...`.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Default addresses of [`VethPair::with_default_addrs`] (documentation
/// ranges, RFC 5737 and RFC 3849): end A.
pub const DEFAULT_A_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// End B's default IPv4 address.
pub const DEFAULT_B_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// End A's default IPv6 address.
pub const DEFAULT_A_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// End B's default IPv6 address.
pub const DEFAULT_B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// A veth pair, end A in `ns_a` (or the test's own namespace) and end B in
/// `ns_b`, up and addressed. Dropping it deletes the pair; deleting B's
/// namespace deletes it too.
#[derive(Debug)]
pub struct VethPair {
    /// End A.
    pub a: VethSide,
    /// End B.
    pub b: VethSide,
}

impl VethPair {
    /// Creates the pair with unique names, moves each end into its
    /// namespace, assigns the addresses, disables IPv6 DAD and router
    /// solicitations (so addresses work at once and there is less noise on
    /// the link) and sets both ends up.
    ///
    /// Use documentation ranges (192.0.2.0/24, 198.51.100.0/24,
    /// 2001:db8::/32) so traffic can only reach the test's namespaces. An
    /// address on an end in the test's own namespace (`ns_a == None`) is
    /// visible to the whole host: avoid addresses there unless needed.
    ///
    /// # Panics
    /// If any `ip` command fails.
    #[track_caller]
    pub fn new(ns_a: Option<&NetNs>, ns_b: &NetNs, a: VethEnd, b: VethEnd) -> Self {
        let ns_a_name = ns_a.map(|ns| ns.name().to_owned());
        let (name_a, name_b) = Self::create(ns_a_name.as_deref(), ns_b.name());
        // Guard before configuring, so a failure below deletes the pair.
        let mut pair = Self {
            a: VethSide {
                ns: ns_a_name,
                name: name_a,
                ifindex: 0,
                mac: [0; 6],
                ipv4: None,
                ipv6: None,
            },
            b: VethSide {
                ns: Some(ns_b.name().to_owned()),
                name: name_b,
                ifindex: 0,
                mac: [0; 6],
                ipv4: None,
                ipv6: None,
            },
        };
        configure(ns_a, &mut pair.a, &a);
        configure(Some(ns_b), &mut pair.b, &b);
        pair
    }

    /// [`VethPair::new`] with 192.0.2.1/24 and 2001:db8::1/64 on A,
    /// 192.0.2.2/24 and 2001:db8::2/64 on B.
    #[track_caller]
    pub fn with_default_addrs(ns_a: &NetNs, ns_b: &NetNs) -> Self {
        Self::new(
            Some(ns_a),
            ns_b,
            VethEnd::new().ipv4(DEFAULT_A_V4, 24).ipv6(DEFAULT_A_V6, 64),
            VethEnd::new().ipv4(DEFAULT_B_V4, 24).ipv6(DEFAULT_B_V6, 64),
        )
    }

    /// Creates the pair directly in its namespaces, so names only have to be
    /// free there; returns the names.
    fn create(ns_a: Option<&str>, ns_b: &str) -> (String, String) {
        for _ in 0..100 {
            // One unique stem, so the ends' names show they are a pair.
            let stem = unique_ifname("lbw");
            let stem = &stem[..stem.len().min(IFNAMSIZ_MAX - 1)];
            let (name_a, name_b) = (format!("{stem}a"), format!("{stem}b"));
            let mut cmd = Command::new("ip");
            cmd.args(["link", "add", &name_a]);
            if let Some(ns) = ns_a {
                cmd.args(["netns", ns]);
            }
            cmd.args(["type", "veth", "peer", "name", &name_b, "netns", ns_b]);
            match run(&mut cmd) {
                Ok(_) => return (name_a, name_b),
                Err(e) if is_exists_error(&e) => continue,
                Err(e) => panic!("cannot create veth pair: {e:#}"),
            }
        }
        panic!("cannot find free veth names");
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting one end deletes both. If A's namespace is already gone
        // the pair went with it and the error is expected, so stay quiet
        // unless the end is in the test's own namespace, where a leak would
        // outlive the test.
        let result = run(ip_in(self.a.ns.as_deref()).args(["link", "del", &self.a.name]));
        if let Err(e) = result
            && self.a.ns.is_none()
            && !format!("{e:#}").contains("Cannot find device")
        {
            eprintln!("warning: leaking veth {}: {e:#}", self.a.name);
        }
    }
}

/// Sets up one veth end: sysctls, MAC, up, addresses; then reads back its
/// index and MAC.
fn configure(ns: Option<&NetNs>, side: &mut VethSide, end: &VethEnd) {
    let ns_name = ns.map(NetNs::name);
    let name = side.name.clone();
    in_netns_opt(ns, || {
        // Before the link is up, so the link-local address skips DAD too and
        // no router solicitation is ever sent.
        for (key, value) in [
            ("accept_dad", "0"),
            ("router_solicitations", "0"),
            ("accept_ra", "0"),
        ] {
            let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
            std::fs::write(&path, value)
                .unwrap_or_else(|e| panic!("cannot write {value} to {path}: {e}"));
        }
    });
    let ip = |args: &[&str]| run_ok(ip_in(ns_name).args(args));
    if let Some(mac) = end.mac {
        ip(&["link", "set", &name, "address", &format_mac(&mac)]);
    }
    ip(&["link", "set", &name, "up"]);
    if let Some((addr, len)) = end.ipv4 {
        ip(&["addr", "add", &format!("{addr}/{len}"), "dev", &name]);
        side.ipv4 = Some(addr);
    }
    if let Some((addr, len)) = end.ipv6 {
        ip(&[
            "addr",
            "add",
            &format!("{addr}/{len}"),
            "dev",
            &name,
            "nodad",
        ]);
        side.ipv6 = Some(addr);
    }
    let (ifindex, mac) = link_info(ns_name, &name).unwrap_or_else(|e| panic!("{e:#}"));
    side.ifindex = ifindex;
    side.mac = mac;
}

/// Index and MAC of `iface` from `ip -j link show`.
pub fn link_info(ns: Option<&str>, iface: &str) -> anyhow::Result<(u32, [u8; 6])> {
    let mut cmd = ip_in(ns);
    cmd.args(["-j", "link", "show", "dev", iface]);
    let out = run(&mut cmd)?;
    let what = describe(&cmd);
    let json: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("`{what}`: bad JSON"))?;
    let link = &json[0];
    let ifindex = link["ifindex"]
        .as_u64()
        .with_context(|| format!("`{what}`: no ifindex"))? as u32;
    let mac = parse_mac(link["address"].as_str().unwrap_or_default())
        .with_context(|| format!("`{what}`: no MAC"))?;
    Ok((ifindex, mac))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let bytes = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad MAC {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC {text:?}"))
}

// Legacy ethtool commands (linux/ethtool.h): one feature each, and still
// served by every kernel, so no string-set lookup is needed.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_GGSO: u32 = 0x23;
const ETHTOOL_SGSO: u32 = 0x24;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member; padded to the kernel's size.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Runs one `SIOCETHTOOL` command with an `ethtool_value` on `iface`.
fn ethtool_value(iface: &str, cmd: u32, data: u32) -> anyhow::Result<u32> {
    anyhow::ensure!(
        iface.len() <= IFNAMSIZ_MAX,
        "interface name {iface:?} too long"
    );
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("socket(AF_INET) for SIOCETHTOOL");
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = EthtoolValue { cmd, data };
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&raw mut value).cast(),
        _pad: [0; 16],
    };
    ifr.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: `ifr` and `value` outlive the call, and SIOCETHTOOL with these
    // commands reads and writes only an `ethtool_value`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &raw mut ifr) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("SIOCETHTOOL cmd {cmd:#x} on {iface}"));
    }
    Ok(value.data)
}

/// Segmentation and receive offloads of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offloads {
    /// TCP segmentation offload.
    pub tso: bool,
    /// Generic segmentation offload.
    pub gso: bool,
    /// Generic receive offload.
    pub gro: bool,
}

/// Turns off GRO, GSO and TSO on `iface` (in `ns`, or the test's namespace
/// for `None`), so every packet crosses the link, and is counted, at wire
/// size instead of as a 64 KiB super-packet.
///
/// This is what `ethtool -K IF gro off gso off tso off` does, but through
/// the `SIOCETHTOOL` ioctl, because ethtool is often not installed.
pub fn disable_offloads(ns: Option<&NetNs>, iface: &str) -> anyhow::Result<()> {
    in_netns_opt(ns, || {
        for cmd in [ETHTOOL_SGRO, ETHTOOL_SGSO, ETHTOOL_STSO] {
            ethtool_value(iface, cmd, 0)?;
        }
        Ok(())
    })
}

/// Reads the offload settings [`disable_offloads`] changes.
pub fn offloads(ns: Option<&NetNs>, iface: &str) -> anyhow::Result<Offloads> {
    in_netns_opt(ns, || {
        Ok(Offloads {
            tso: ethtool_value(iface, ETHTOOL_GTSO, 0)? != 0,
            gso: ethtool_value(iface, ETHTOOL_GGSO, 0)? != 0,
            gro: ethtool_value(iface, ETHTOOL_GGRO, 0)? != 0,
        })
    })
}

/// A child process that is stopped and reaped on drop: SIGTERM, then
/// SIGKILL if it has not exited after a grace period (default 5 s).
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    what: String,
    grace: Duration,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd`; the error names the command.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let what = describe(cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot spawn `{what}`"))?;
        Ok(Self::new(child, what))
    }

    /// Guards an already spawned child; `what` names it in messages.
    pub fn new(child: Child, what: impl Into<String>) -> Self {
        Self {
            child,
            what: what.into(),
            grace: Duration::from_secs(5),
            status: None,
        }
    }

    /// Sets how long [`ChildGuard::stop`] and drop wait after SIGTERM.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The command line, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The child, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for `{}`: {e}", self.what));
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` unless the child has already been reaped (its pid
    /// could belong to another process by then).
    pub fn signal(&mut self, signal: libc::c_int) -> io::Result<()> {
        if self.try_wait().is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on our own unreaped child.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `signal` and waits up to the grace period; then SIGKILLs and
    /// reaps. Returns the exit status.
    pub fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        let _ = self.signal(signal);
        if let Some(status) = self.wait_timeout(self.grace) {
            return status;
        }
        eprintln!(
            "warning: `{}` ignored signal {signal} for {:?}, killing it",
            self.what, self.grace
        );
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for `{}`: {e}", self.what));
        self.status = Some(status);
        status
    }

    /// Stops the child with SIGTERM (see [`ChildGuard::stop_with`]).
    pub fn stop(mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM);
    }
}

/// Spawns `argv` inside `ns` (`ip netns exec NAME argv...`), guarded.
/// Same as [`NetNs::spawn`].
#[track_caller]
pub fn spawn_in_netns(ns: &NetNs, argv: &[&str]) -> ChildGuard {
    ns.spawn(argv)
}

/// Fails unless `iface` exists in `ns`; handy after setup that could have
/// raced with namespace deletion.
pub fn ensure_link(ns: Option<&NetNs>, iface: &str) -> anyhow::Result<()> {
    match link_info(ns.map(NetNs::name), iface) {
        Ok(_) => Ok(()),
        Err(e) => bail!("interface {iface} missing: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

    use super::*;

    fn links(ns: Option<&str>) -> String {
        run_ok(ip_in(ns).args(["-o", "link", "show"]))
    }

    #[test]
    fn unique_ifnames_fit_and_differ() {
        let a = unique_ifname("averyveryverylongprefix");
        let b = unique_ifname("averyveryverylongprefix");
        assert!(a.len() <= IFNAMSIZ_MAX, "{a}");
        assert_ne!(a, b);
        assert!(unique_ifname("x").starts_with('x'));
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01").unwrap(),
            [2, 0, 10, 255, 0, 1]
        );
        assert_eq!(format_mac(&[2, 0, 10, 255, 0, 1]), "02:00:0a:ff:00:01");
        assert!(parse_mac("02:00").is_err());
    }

    #[test]
    fn namespace_is_deleted_on_drop_and_on_panic() {
        require_root();
        let ns = NetNs::new("drop");
        let name = ns.name().to_owned();
        assert!(netns_names().contains(&name));
        assert!(ns.ip(&["link", "show", "lo"]).contains("UP"));
        drop(ns);
        assert!(!netns_names().contains(&name));

        let mut names = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let ns_a = NetNs::new("panic");
            let ns_b = NetNs::new("panic");
            let _pair = VethPair::new(Some(&ns_a), &ns_b, VethEnd::new(), VethEnd::new());
            names = vec![ns_a.name().to_owned(), ns_b.name().to_owned()];
            panic!("deliberate");
        }));
        assert!(result.is_err());
        assert_eq!(names.len(), 2);
        let listed = netns_names();
        assert!(names.iter().all(|n| !listed.contains(n)), "{listed:?}");
    }

    #[test]
    fn tcp_udp_ipv4_ipv6_between_namespaces() {
        require_root();
        let client = NetNs::new("cli");
        let server = NetNs::new("srv");
        let veth = VethPair::with_default_addrs(&client, &server);
        assert!(veth.a.name.len() <= IFNAMSIZ_MAX && veth.b.name.len() <= IFNAMSIZ_MAX);
        assert_ne!(veth.a.mac, veth.b.mac);
        assert!(links(Some(client.name())).contains(&veth.a.name));
        assert!(links(Some(server.name())).contains(&veth.b.name));
        // Not in the test's own namespace.
        assert!(!links(None).contains(&veth.a.name));

        // DAD is off: the IPv6 address is not tentative.
        let addrs = server.ip(&["-6", "addr", "show", "dev", &veth.b.name]);
        assert!(
            addrs.contains("2001:db8::2") && !addrs.contains("tentative"),
            "{addrs}"
        );
        let dad = server.exec(&[
            "cat",
            &format!("/proc/sys/net/ipv6/conf/{}/accept_dad", veth.b.name),
        ]);
        assert_eq!(dad.trim(), "0");

        for server_addr in [
            SocketAddr::from((DEFAULT_B_V4, 5000)),
            SocketAddr::from((DEFAULT_B_V6, 5000)),
        ] {
            // TCP echo.
            let listener = in_netns(&server, || TcpListener::bind(server_addr)).unwrap();
            let echo = std::thread::spawn(move || {
                let (mut conn, peer) = listener.accept().unwrap();
                let mut buf = [0u8; 5];
                conn.read_exact(&mut buf).unwrap();
                conn.write_all(&buf).unwrap();
                peer
            });
            let mut stream = in_netns(&client, || TcpStream::connect(server_addr)).unwrap();
            stream.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello");
            let peer = echo.join().unwrap();
            assert_eq!(peer.ip(), stream.local_addr().unwrap().ip());

            // UDP.
            let rx = in_netns(&server, || UdpSocket::bind(server_addr)).unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let any: SocketAddr = if server_addr.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let tx = in_netns(&client, || UdpSocket::bind(any)).unwrap();
            tx.send_to(b"datagram", server_addr).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"datagram");
        }
    }

    #[test]
    fn in_netns_propagates_panics_and_values() {
        require_root();
        let ns = NetNs::new("prop");
        assert_eq!(in_netns(&ns, || 42), 42);
        let borrowed = String::from("borrowed");
        assert_eq!(in_netns(&ns, || borrowed.len()), 8);
        let result = std::panic::catch_unwind(|| in_netns(&ns, || panic!("inner")));
        let msg = result.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"inner"));
    }

    #[test]
    fn veth_with_an_end_in_the_root_namespace_is_deleted() {
        require_root();
        let ns = NetNs::new("root");
        let pair = VethPair::new(
            None,
            &ns,
            VethEnd::new(),
            VethEnd::new().mac([2, 0, 0, 0, 0x42, 1]),
        );
        assert_eq!(pair.b.mac, [2, 0, 0, 0, 0x42, 1]);
        assert_eq!(pair.b.mac_string(), "02:00:00:00:42:01");
        let name = pair.a.name.clone();
        assert!(links(None).contains(&format!(" {name}@")));
        ensure_link(None, &name).unwrap();
        drop(pair);
        assert!(!links(None).contains(&format!(" {name}@")));
        assert!(ensure_link(None, &name).is_err());
    }

    #[test]
    fn offloads_can_be_disabled() {
        require_root();
        let a = NetNs::new("offa");
        let b = NetNs::new("offb");
        let veth = VethPair::with_default_addrs(&a, &b);
        disable_offloads(Some(&a), &veth.a.name).unwrap();
        let off = offloads(Some(&a), &veth.a.name).unwrap();
        assert_eq!(
            off,
            Offloads {
                tso: false,
                gso: false,
                gro: false
            }
        );
        let err = disable_offloads(Some(&a), "nosuchif0").unwrap_err();
        assert!(format!("{err:#}").contains("nosuchif0"), "{err:#}");
    }

    #[test]
    fn child_guard_terminates_and_kills() {
        require_root();
        let ns = NetNs::new("child");
        let pid;
        {
            let mut guard = ns.spawn(&["sleep", "1000"]);
            pid = guard.id();
            assert!(guard.try_wait().is_none());
            // The child runs in the namespace once `ip` has exec'ed it: its
            // netns link then differs from ours.
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap() != "sleep\n" {
                assert!(
                    Instant::now() < deadline,
                    "ip netns exec never exec'ed sleep"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
            let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
            assert_ne!(theirs, ours);
        }
        // Reaped: the pid no longer names our child.
        assert!(
            !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains("(sleep)"))
                .unwrap_or(false)
        );

        // A child ignoring SIGTERM is killed after the grace period.
        let mut stubborn = ChildGuard::spawn(
            Command::new("sh")
                .args([
                    "-c",
                    "trap '' TERM; echo ready; while :; do sleep 0.05; done",
                ])
                .stdout(Stdio::piped()),
        )
        .unwrap()
        .with_grace(Duration::from_millis(300));
        // Signal only once the trap is in place.
        let mut ready = String::new();
        let stdout = stubborn.child_mut().stdout.take().unwrap();
        io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut ready).unwrap();
        assert_eq!(ready, "ready\n");
        let start = Instant::now();
        let status = stubborn.stop();
        assert!(start.elapsed() >= Duration::from_millis(300));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));

        let err = ChildGuard::spawn(&mut Command::new("/nonexistent/program")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/program"));
        let err = run(Command::new("ip").args(["netns", "del", "lbw-does-not-exist"])).unwrap_err();
        assert!(format!("{err:#}").contains("ip netns del lbw-does-not-exist"));
    }
}
