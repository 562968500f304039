//! Loading the request programs (the second eBPF object) and choosing, per
//! hook, what serves it on this kernel.
//!
//! Fallback order, per hook: the tracepoint variant first (a stable ABI,
//! and the loader checks every field the program reads against the
//! kernel's tracefs format before attaching), then the kprobe variant
//! (kernel function names and the first, long-stable fields of
//! `struct sock_common`, IPv6 address offsets from the kernel BTF), else the hook
//! is unavailable. Each decision is kept as a [`HookChoice`] with its
//! reason. The syscall hook has no fallback and is required: without it
//! nothing is captured, so [`RequestProbes::load`] fails.
//!
//! The request object is separate from the flow object: the flow agent's
//! load is unchanged, and request events have their own ring buffer, so
//! neither kind can starve the other.

mod btf;
mod choice;
mod perf;

use std::{
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

pub use choice::{Hook, HookChoice, Via};

use agent_common::{
    names::requests::{self as names, Kprobe, Tracepoint},
    request::{DATA_MAX, RequestCounter, layout},
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        KProbe, TracePoint, UProbe,
        uprobe::{UProbeLink, UProbeScope},
    },
};

use super::tracefs::{self, Format, Mismatch};

/// The request programs, built by build.rs and embedded in the binary.
pub static REQUEST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf-requests"));

/// Validated load settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSettings {
    ring_bytes: u32,
    capture_bytes: u32,
    /// The TLS libraries to probe; empty: `libssl.so.3` where the dynamic
    /// loader finds it.
    tls_libraries: Vec<std::path::PathBuf>,
    /// Whether sends wake the reader only once an eighth of the ring
    /// waits; off (the default), every send wakes it.
    batched_wakeups: bool,
}

/// An invalid [`RequestSettings`] value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The ring size is not a power of two of at least one page.
    #[error("requests ring buffer size {0} must be a power of two of at least 4096 bytes")]
    Ring(u32),
    /// The capture limit is above what an event carries.
    #[error("requests capture of {0} bytes is more than the {DATA_MAX} an event carries")]
    Capture(u32),
}

impl RequestSettings {
    /// 4 MiB: about 3,000 requests at ~1.3 KiB of events each.
    pub const DEFAULT_RING_BYTES: u32 = 4 * 1024 * 1024;

    /// Checks both values.
    pub fn try_new(ring_bytes: u32, capture_bytes: u32) -> Result<Self, SettingsError> {
        if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
            return Err(SettingsError::Ring(ring_bytes));
        }
        if capture_bytes as usize > DATA_MAX {
            return Err(SettingsError::Capture(capture_bytes));
        }
        Ok(Self {
            ring_bytes,
            capture_bytes,
            tls_libraries: Vec::new(),
            batched_wakeups: false,
        })
    }

    /// Sends wake the reader only once an eighth of the ring waits: for a
    /// reader that also polls on a timer (the agent's), which then takes
    /// a batch per wakeup instead of an event or two.
    pub fn with_batched_wakeups(mut self) -> Self {
        self.batched_wakeups = true;
        self
    }

    /// Probes these libssl builds (e.g. a load balancer's own OpenSSL
    /// under `/opt`) instead of the system's `libssl.so.3`.
    pub fn with_tls_libraries(mut self, libraries: Vec<std::path::PathBuf>) -> Self {
        self.tls_libraries = libraries;
        self
    }

    /// Ring buffer size in bytes.
    pub const fn ring_bytes(&self) -> u32 {
        self.ring_bytes
    }

    /// Payload bytes captured per data event.
    pub const fn capture_bytes(&self) -> u32 {
        self.capture_bytes
    }
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self {
            ring_bytes: Self::DEFAULT_RING_BYTES,
            capture_bytes: agent_common::request::CAPTURE_DEFAULT,
            tls_libraries: Vec::new(),
            batched_wakeups: false,
        }
    }
}

/// Failure to load request capture.
#[derive(Debug, thiserror::Error)]
pub enum RequestLoadError {
    /// tracefs could not be found or mounted.
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    /// The object or one of its maps was refused.
    #[error("loading the request eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    /// The syscall tracepoints, which nothing replaces, could not attach.
    #[error("request capture needs the syscall tracepoints: {0}")]
    Syscalls(String),
    /// A map the object must have is missing or of the wrong type.
    #[error(
        "the request object's map `{0}` is missing or mistyped: rebuild with `cargo xtask build`"
    )]
    Map(&'static str),
}

/// The processes whose sockets are captured: the kernel's `PROCS` map.
pub struct ProcFilter {
    map: HashMap<MapData, u32, u32>,
}

impl ProcFilter {
    /// Follows `tgid` (and, from now on, the children it forks).
    pub fn add(&mut self, tgid: u32) -> Result<(), aya::maps::MapError> {
        self.map.insert(tgid, 1, 0)
    }

    /// Stops following `tgid`; not an error when it was not followed.
    pub fn remove(&mut self, tgid: u32) -> Result<(), aya::maps::MapError> {
        match self.map.remove(&tgid) {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other,
        }
    }

    /// The followed tgids.
    pub fn tgids(&self) -> Vec<u32> {
        self.map.keys().filter_map(Result::ok).collect()
    }
}

/// Request capture, loaded and attached. Dropping it detaches everything.
pub struct RequestProbes {
    ebpf: Ebpf,
    /// Perf event fds of the attached tracepoints: closing one detaches it.
    _tracepoints: Vec<OwnedFd>,
    /// The libssl uprobes: dropping one detaches it.
    _uprobes: Vec<UProbeLink>,
    choices: Vec<HookChoice>,
}

impl RequestProbes {
    /// Detaches everything, closing the tracepoints' perf events in
    /// parallel. Each close waits for an RCU grace period in the kernel
    /// (tens of ms on a busy VM); one after another, the 30-odd hooks took
    /// over 5 s, concurrent closes share their grace periods. Blocking:
    /// run it off the async runtime.
    pub fn detach(self) {
        let Self {
            ebpf,
            _tracepoints: fds,
            _uprobes: uprobes,
            choices: _,
        } = self;
        std::thread::scope(|scope| {
            for fd in fds {
                scope.spawn(move || drop(fd));
            }
            for link in uprobes {
                scope.spawn(move || drop(link));
            }
        });
        drop(ebpf);
    }

    /// Loads the request object with `settings` and attaches, per hook, the
    /// variant this kernel offers (see the module doc for the order).
    pub fn load(settings: &RequestSettings) -> Result<Self, RequestLoadError> {
        Self::load_with_tracefs(settings, tracefs::root()?)
    }

    /// [`RequestProbes::load`] reading tracepoint ids and formats under
    /// `root` instead of the mounted tracefs (tests give a copy with a
    /// changed record, to see the hook refused).
    pub fn load_with_tracefs(
        settings: &RequestSettings,
        root: &Path,
    ) -> Result<Self, RequestLoadError> {
        let v6 = V6Offsets::from_kernel();
        // What the programs read as `WAKE_BYTES`: 0 wakes on every send.
        let wake_bytes = if settings.batched_wakeups {
            settings.ring_bytes / 8
        } else {
            0
        };
        let ebpf = v6
            .set(
                EbpfLoader::new()
                    .map_max_entries(names::EVENTS_MAP, settings.ring_bytes)
                    .override_global(names::CAPTURE_GLOBAL, &settings.capture_bytes, true)
                    .override_global(names::WAKE_GLOBAL, &wake_bytes, true),
            )
            .load(REQUEST_OBJECT)?;
        let mut attacher = Attacher {
            ebpf,
            root,
            tls_libraries: &settings.tls_libraries,
            perf: Vec::new(),
            uprobes: Vec::new(),
            v6,
        };
        let choices = attacher.choose_all()?;
        set_taking(&mut attacher.ebpf, true)?;
        for c in &choices {
            tracing::info!(hook = c.hook.as_str(), via = c.via.as_str(), why = %c.why, "request hook");
        }
        Ok(Self {
            ebpf: attacher.ebpf,
            _tracepoints: attacher.perf,
            _uprobes: attacher.uprobes,
            choices,
        })
    }

    /// What serves each hook, and why.
    pub fn choices(&self) -> &[HookChoice] {
        &self.choices
    }

    /// Stops every request program from sending, at once: what the ring
    /// holds afterwards is final, before the (slow) detach.
    pub fn switch_off(&mut self) -> Result<(), RequestLoadError> {
        set_taking(&mut self.ebpf, false)
    }

    /// The request events' ring buffer (once: it moves out).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, RequestLoadError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS_MAP)
            .ok_or(RequestLoadError::Map(names::EVENTS_MAP))?;
        RingBuf::try_from(map).map_err(|_| RequestLoadError::Map(names::EVENTS_MAP))
    }

    /// The process filter (once: it moves out).
    pub fn take_procs(&mut self) -> Result<ProcFilter, RequestLoadError> {
        let map = self
            .ebpf
            .take_map(names::PROCS_MAP)
            .ok_or(RequestLoadError::Map(names::PROCS_MAP))?;
        let map = HashMap::try_from(map).map_err(|_| RequestLoadError::Map(names::PROCS_MAP))?;
        Ok(ProcFilter { map })
    }

    /// The per-CPU counters (once: it moves out).
    pub fn take_counters(&mut self) -> Result<RequestCounters, RequestLoadError> {
        let map = self
            .ebpf
            .take_map(names::COUNTERS_MAP)
            .ok_or(RequestLoadError::Map(names::COUNTERS_MAP))?;
        let map =
            PerCpuArray::try_from(map).map_err(|_| RequestLoadError::Map(names::COUNTERS_MAP))?;
        Ok(RequestCounters { map })
    }
}

/// The kernel's per-CPU request counters.
pub struct RequestCounters {
    map: PerCpuArray<MapData, u64>,
}

impl RequestCounters {
    /// Every counter summed over CPUs, in id order.
    pub fn read(&self) -> Result<Vec<(RequestCounter, u64)>, aya::maps::MapError> {
        RequestCounter::ALL
            .iter()
            .map(|&c| Ok((c, self.map.get(&(c as u32), 0)?.iter().sum())))
            .collect()
    }
}

/// What the program of a tracepoint reads, to check against its format.
enum Expect {
    /// Named fields at fixed offsets.
    Fields(Vec<layout::Field>),
    /// 8-byte syscall arguments at these offsets (names vary per syscall).
    Arguments(Vec<usize>),
}

fn expect(tp: &Tracepoint) -> Expect {
    use layout::sys_enter::arg;
    let fields = |f: &[layout::Field]| Expect::Fields(f.to_vec());
    match (tp.category, tp.name) {
        ("syscalls", n) if n.starts_with("sys_exit_") => fields(layout::sys_exit::FIELDS),
        ("syscalls", "sys_enter_close" | "sys_enter_pipe" | "sys_enter_pipe2") => {
            Expect::Arguments(vec![arg(0)])
        }
        ("syscalls", "sys_enter_splice") => Expect::Arguments(vec![arg(0), arg(2), arg(4)]),
        ("syscalls", "sys_enter_accept" | "sys_enter_accept4" | "sys_enter_connect") => {
            Expect::Arguments(vec![arg(0), arg(1)])
        }
        ("syscalls", _) => Expect::Arguments(vec![arg(0), arg(1), arg(2)]),
        ("sock", "inet_sock_set_state") => fields(layout::inet_sock_set_state::FIELDS),
        ("sock", _) => fields(layout::sock_length::FIELDS),
        ("tcp", "tcp_send_reset") => fields(layout::tcp_send_reset::FIELDS),
        ("tcp", "tcp_retransmit_skb") => fields(&layout::TCP_RETRANSMIT.fields()),
        ("tcp", _) => fields(&layout::TCP_SK_TUPLE.fields()),
        ("sched", "sched_process_fork") => fields(layout::sched_process_fork::FIELDS),
        _ => fields(layout::sched_process_exit::FIELDS),
    }
}

fn check(format: &Format, expected: &Expect) -> Result<(), Mismatch> {
    match expected {
        Expect::Fields(f) => format.check(f),
        Expect::Arguments(a) => format.check_arguments(a),
    }
}

struct Attacher<'r> {
    ebpf: Ebpf,
    root: &'r Path,
    tls_libraries: &'r [std::path::PathBuf],
    perf: Vec<OwnedFd>,
    uprobes: Vec<UProbeLink>,
    v6: V6Offsets,
}

/// Where `struct sock_common` keeps the IPv6 addresses, for the kprobe on
/// tcp_set_state (0 and the reason when the kernel's BTF did not say).
#[derive(Clone, Debug)]
struct V6Offsets {
    daddr: u32,
    saddr: u32,
    why: String,
}

impl V6Offsets {
    fn from_kernel() -> Self {
        let path = crate::preflight::VMLINUX_BTF;
        let found = std::fs::read(path)
            .map_err(|e| format!("{path}: {e}"))
            .and_then(|blob| {
                btf::member_offsets(&blob, "sock_common", &["skc_v6_daddr", "skc_v6_rcv_saddr"])
                    .map_err(|e| e.to_string())
            });
        match found.as_deref() {
            Ok(&[daddr, saddr]) => Self {
                daddr,
                saddr,
                why: format!("IPv6 addresses at sock_common+{daddr}/+{saddr} from BTF"),
            },
            Ok(_) => Self::unknown("unexpected BTF answer".into()),
            Err(e) => Self::unknown(e.clone()),
        }
    }

    fn unknown(reason: String) -> Self {
        Self {
            daddr: 0,
            saddr: 0,
            why: format!("IPv6 state changes skipped and counted ({reason})"),
        }
    }

    fn set<'l, 'a>(&'a self, loader: &'l mut EbpfLoader<'a>) -> &'l mut EbpfLoader<'a> {
        loader
            .override_global(names::KP_V6_DADDR_GLOBAL, &self.daddr, true)
            .override_global(names::KP_V6_SADDR_GLOBAL, &self.saddr, true)
    }
}

impl Attacher<'_> {
    fn choose_all(&mut self) -> Result<Vec<HookChoice>, RequestLoadError> {
        let mut out = Vec::new();
        let syscalls = self
            .tracepoints(names::SYSCALLS)
            .map_err(RequestLoadError::Syscalls)?;
        out.push(choice(Hook::Syscalls, Via::Tracepoint, syscalls));
        out.push(self.tracepoint_only(
            Hook::ProcessFollow,
            &[names::SCHED_PROCESS_FORK, names::SCHED_PROCESS_EXIT],
        ));
        out.push(self.either(
            Hook::SockOfData,
            &[names::SOCK_SEND_LENGTH, names::SOCK_RECV_LENGTH],
            &[names::KP_TCP_SENDMSG, names::KP_TCP_RECVMSG],
        ));
        let mut state = self.either(
            Hook::SockState,
            &[names::INET_SOCK_SET_STATE],
            &[names::KP_TCP_SET_STATE],
        );
        if state.via == Via::Kprobe {
            state.why = format!("{}; {}", state.why, self.v6.why);
        }
        let state_via = state.via;
        out.push(state);
        out.push(if state_via == Via::Tracepoint {
            choice(
                Hook::SockOfConnect,
                Via::Tracepoint,
                "sock:inet_sock_set_state CLOSE->SYN_SENT inside connect(), on its thread".into(),
            )
        } else {
            self.kprobe_only(
                Hook::SockOfConnect,
                &[names::KP_TCP_V4_CONNECT, names::KP_TCP_V6_CONNECT],
            )
        });
        let mut accept = self.kprobe_only(Hook::SockOfAccept, &[names::KP_INET_CSK_ACCEPT]);
        if accept.via == Via::Unavailable {
            accept.why.push_str(
                "; no tracepoint gives it: the accepted socket's sk comes with its first data event",
            );
        }
        out.push(accept);
        out.push(self.tracepoint_only(
            Hook::TcpResets,
            &[names::TCP_SEND_RESET, names::TCP_RECEIVE_RESET],
        ));
        out.push(self.tracepoint_only(Hook::TcpRetransmits, &[names::TCP_RETRANSMIT_SKB]));
        out.push(self.tracepoint_only(Hook::TcpDestroy, &[names::TCP_DESTROY_SOCK]));
        let mut splice = self.tracepoint_only(Hook::Splice, names::SPLICE);
        if splice.via == Via::Unavailable {
            splice
                .why
                .push_str("; a splicing proxy's connections get records without their backend");
        } else {
            match self.tracepoints(names::PIPE) {
                Ok(why) => splice.why = format!("{}; {why}", splice.why),
                Err(why) => splice.why = format!("{}; pipe(2) not followed ({why})", splice.why),
            }
        }
        out.push(splice);
        out.push(match self.libssl() {
            Ok(why) => choice(Hook::TlsPlaintext, Via::Uprobe, why),
            Err(why) => choice(
                Hook::TlsPlaintext,
                Via::Unavailable,
                format!("{why}; TLS connections get connection records, and no request records"),
            ),
        });
        Ok(out)
    }

    /// Attaches the libssl uprobes to each configured library (else the
    /// system's `libssl.so.3`), all or none per library, for every process
    /// that maps it (the programs filter on the followed processes). A load
    /// balancer linked statically to its TLS library is not seen.
    fn libssl(&mut self) -> Result<String, String> {
        let libraries: Vec<Result<std::path::PathBuf, String>> = if self.tls_libraries.is_empty() {
            vec![find_library(names::LIBSSL)]
        } else {
            self.tls_libraries
                .iter()
                .map(|p| std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display())))
                .collect()
        };
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for library in libraries {
            match library.and_then(|l| self.probe_library(&l).map(|()| l)) {
                Ok(l) => done.push(l.display().to_string()),
                Err(why) => failed.push(why),
            }
        }
        if done.is_empty() {
            return Err(failed.join("; "));
        }
        let functions: Vec<&str> = names::SSL_ENTRIES.iter().map(|(_, f)| *f).collect();
        let mut why = format!(
            "uprobe and uretprobe on {} in {}",
            functions.join(", "),
            done.join(", ")
        );
        if !failed.is_empty() {
            why = format!("{why}; not probed: {}", failed.join("; "));
        }
        Ok(why)
    }

    /// The uprobes on one library, all or none.
    fn probe_library(&mut self, library: &Path) -> Result<(), String> {
        let mut links = Vec::new();
        let mut attach = |program: &str, function: &str| -> Result<(), String> {
            let prog: &mut UProbe = self
                .ebpf
                .program_mut(program)
                .ok_or_else(|| format!("the object lacks program {program}"))?
                .try_into()
                .map_err(|e| format!("{program}: {e}"))?;
            if prog.fd().is_err() {
                prog.load()
                    .map_err(|e| format!("{program}: loading failed: {}", error_chain(&e)))?;
            }
            let id = prog
                .attach(function, library, UProbeScope::AllProcesses)
                .map_err(|e| format!("{}:{function}: {}", library.display(), error_chain(&e)))?;
            links.push(
                prog.take_link(id)
                    .map_err(|e| format!("{program}: {}", error_chain(&e)))?,
            );
            Ok(())
        };
        for (program, function) in names::SSL_ENTRIES {
            attach(program, function)?;
            attach(names::SSL_RETURN, function)?;
        }
        // Dropping `links` on an error above detaches what was attached.
        self.uprobes.extend(links);
        Ok(())
    }

    /// Tracepoints first, then kprobes.
    fn either(&mut self, hook: Hook, tps: &[Tracepoint], kps: &[Kprobe]) -> HookChoice {
        match self.tracepoints(tps) {
            Ok(why) => choice(hook, Via::Tracepoint, why),
            Err(tp_why) => match self.kprobes(kps) {
                Ok(why) => choice(hook, Via::Kprobe, format!("{why} (tracepoint: {tp_why})")),
                Err(kp_why) => choice(
                    hook,
                    Via::Unavailable,
                    format!("tracepoint: {tp_why}; kprobe: {kp_why}"),
                ),
            },
        }
    }

    fn tracepoint_only(&mut self, hook: Hook, tps: &[Tracepoint]) -> HookChoice {
        match self.tracepoints(tps) {
            Ok(why) => choice(hook, Via::Tracepoint, why),
            Err(why) => choice(hook, Via::Unavailable, format!("tracepoint: {why}")),
        }
    }

    fn kprobe_only(&mut self, hook: Hook, kps: &[Kprobe]) -> HookChoice {
        match self.kprobes(kps) {
            Ok(why) => choice(hook, Via::Kprobe, why),
            Err(why) => choice(hook, Via::Unavailable, format!("kprobe: {why}")),
        }
    }

    /// Attaches every tracepoint of a hook, or none: on a failure the ones
    /// already attached are detached again.
    fn tracepoints(&mut self, tps: &[Tracepoint]) -> Result<String, String> {
        let mut fds = Vec::with_capacity(tps.len());
        for tp in tps {
            fds.push(self.tracepoint(tp)?);
        }
        self.perf.extend(fds);
        let list: Vec<String> = tps
            .iter()
            .map(|t| format!("{}:{}", t.category, t.name))
            .collect();
        Ok(if list.len() > 4 {
            format!(
                "{} tracepoints ({}, ...), formats checked",
                list.len(),
                list[0]
            )
        } else {
            format!("{}, format checked", list.join(", "))
        })
    }

    fn tracepoint(&mut self, tp: &Tracepoint) -> Result<OwnedFd, String> {
        let at = format!("{}:{}", tp.category, tp.name);
        let format = tracefs::format(self.root, tp.category, tp.name).map_err(|e| e.to_string())?;
        check(&format, &expect(tp)).map_err(|m| format!("{at}: record differs: {m}"))?;
        let id = tracefs::id(self.root, tp.category, tp.name).map_err(|e| e.to_string())?;
        let prog: &mut TracePoint = self
            .ebpf
            .program_mut(tp.program)
            .ok_or_else(|| format!("the object lacks program {}", tp.program))?
            .try_into()
            .map_err(|e| format!("{}: {e}", tp.program))?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| format!("{at}: loading failed: {e}"))?;
        }
        let fd = prog.fd().map_err(|e| format!("{at}: {e}"))?;
        perf::attach_tracepoint(id, fd.as_fd()).map_err(|e| format!("{at}: attach failed: {e}"))
    }

    /// Loads and attaches every kprobe of a hook. (A kprobe attached before
    /// a later one fails stays attached; its events are harmless: they only
    /// fill the `sk` of syscalls in flight.)
    fn kprobes(&mut self, kps: &[Kprobe]) -> Result<String, String> {
        for kp in kps {
            let prog = load_kprobe(&mut self.ebpf, kp)?;
            prog.attach(kp.function, 0)
                .map_err(|e| format!("{}: attach failed: {}", kp.function, error_chain(&e)))?;
        }
        let list: Vec<&str> = kps.iter().map(|k| k.function).collect();
        Ok(format!("kprobe on {}", list.join(", ")))
    }
}

/// Where the dynamic loader finds the libraries on Debian, Ubuntu, Fedora,
/// RHEL and Alpine (multiarch first). A uprobe binds to the file's inode,
/// so the path is canonical: every process mapping that file is covered.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
    "/usr/local/lib64",
    "/usr/local/lib",
];

/// The canonical path of shared library `name` in [`LIBRARY_DIRS`].
fn find_library(name: &str) -> Result<std::path::PathBuf, String> {
    LIBRARY_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find_map(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(|| format!("{name} is in none of {}", LIBRARY_DIRS.join(", ")))
}

/// Sets the programs' `REQ_ON` switch.
fn set_taking(ebpf: &mut Ebpf, on: bool) -> Result<(), RequestLoadError> {
    let map = ebpf
        .map_mut(names::ON_MAP)
        .ok_or(RequestLoadError::Map(names::ON_MAP))?;
    let mut switch: Array<&mut MapData, u32> =
        Array::try_from(map).map_err(|_| RequestLoadError::Map(names::ON_MAP))?;
    switch
        .set(0, u32::from(on), 0)
        .map_err(|_| RequestLoadError::Map(names::ON_MAP))
}

fn choice(hook: Hook, via: Via, why: String) -> HookChoice {
    HookChoice { hook, via, why }
}

/// An error with its sources, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn load_kprobe<'a>(ebpf: &'a mut Ebpf, kp: &Kprobe) -> Result<&'a mut KProbe, String> {
    let prog: &mut KProbe = ebpf
        .program_mut(kp.program)
        .ok_or_else(|| format!("the object lacks program {}", kp.program))?
        .try_into()
        .map_err(|e| format!("{}: {e}", kp.program))?;
    if prog.fd().is_err() {
        prog.load()
            .map_err(|e| format!("{}: loading failed: {}", kp.function, error_chain(&e)))?;
    }
    Ok(prog)
}

/// Loads every kprobe program of the request object (without attaching)
/// and reports, per kernel function, whether the verifier accepted it.
pub fn probe_kprobes() -> Vec<(&'static str, Result<(), String>)> {
    let v6 = V6Offsets::from_kernel();
    let mut ebpf = match v6.set(&mut EbpfLoader::new()).load(REQUEST_OBJECT) {
        Ok(e) => e,
        Err(e) => {
            let why = format!("loading the object failed: {}", error_chain(&e));
            return names::KPROBES
                .iter()
                .map(|k| (k.function, Err(why.clone())))
                .collect();
        }
    };
    names::KPROBES
        .iter()
        .map(|kp| (kp.function, load_kprobe(&mut ebpf, kp).map(|_| ())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        assert!(RequestSettings::try_new(4096, 0).is_ok());
        assert!(RequestSettings::try_new(1 << 22, 1024).is_ok());
        assert_eq!(
            RequestSettings::try_new(3000, 256),
            Err(SettingsError::Ring(3000))
        );
        assert_eq!(
            RequestSettings::try_new(2048, 256),
            Err(SettingsError::Ring(2048))
        );
        assert_eq!(
            RequestSettings::try_new(4096, 1025),
            Err(SettingsError::Capture(1025))
        );
        let d = RequestSettings::default();
        assert_eq!((d.ring_bytes(), d.capture_bytes()), (1 << 22, 256));
    }

    #[test]
    fn every_tracepoint_has_the_check_its_program_needs() {
        let close = expect(&names::SYSCALLS[11]);
        assert_eq!(names::SYSCALLS[11].name, "sys_enter_close");
        assert!(matches!(close, Expect::Arguments(ref a) if a == &[16]));
        let exit = expect(&names::SYSCALLS[12]);
        assert!(matches!(exit, Expect::Fields(ref f) if f[0].name == "ret"));
        let reset = expect(&names::TCP_SEND_RESET);
        assert!(matches!(reset, Expect::Fields(ref f) if f.len() == 3 && f[1].size == 28));
        let exit = expect(&names::SCHED_PROCESS_EXIT);
        assert!(matches!(exit, Expect::Fields(ref f) if f[0].name == "group_dead"));
        // splice(fd_in, off_in, fd_out, off_out, len, flags): the fds and len.
        assert_eq!(names::SPLICE[0].name, "sys_enter_splice");
        let splice = expect(&names::SPLICE[0]);
        assert!(matches!(splice, Expect::Arguments(ref a) if a == &[16, 32, 48]));
        for pipe in [&names::SPLICE[2], &names::PIPE[0]] {
            assert!(pipe.name.starts_with("sys_enter_pipe"));
            assert!(matches!(expect(pipe), Expect::Arguments(ref a) if a == &[16]));
        }
    }
}
