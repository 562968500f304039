//! Start-up checks that turn the usual failures into one clear sentence
//! before anything is loaded or attached: capabilities, interfaces, and
//! every kernel feature the agent uses.
//!
//! The kernel check is split in two: [`probe_kernel`] asks the running
//! kernel (aya's map, program and helper probes where aya has them, a raw
//! probe in `capture::sys` where it has not), and [`decide`] turns the
//! answers into one error naming everything missing at once, or into
//! warnings for what has a fallback. A 5.10 host is told at start, not when
//! the verifier first refuses a helper or a flow is first removed.

use std::{
    ffi::CString,
    fmt,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap as BpfHashMap, IterableMap as _, MapData, MapType},
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

use crate::capture::sys;

/// Capability bit numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The kernel's BTF, needed by the tracepoint and kprobe hooks.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A failed start-up check.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// An interface that does not exist.
    #[error("interface `{name}` does not exist; interfaces here: {available}")]
    UnknownInterface {
        /// The name given.
        name: String,
        /// What exists, for the user to pick from.
        available: String,
    },
    /// Missing capabilities.
    #[error(
        "missing capability {missing}: lbwitness loads eBPF programs and attaches XDP. Run it \
         as root, or grant them with `setcap cap_bpf,cap_net_admin,cap_perfmon+ep` on the binary"
    )]
    MissingCapability {
        /// Capability names, e.g. `CAP_BPF (or CAP_SYS_ADMIN)`.
        missing: String,
    },
    /// The kernel lacks features the agent needs, or could not be asked.
    #[error("this kernel ({release}) cannot run lbwitness: {problems}")]
    Kernel {
        /// `uname -r`.
        release: String,
        /// Every missing feature with the release that added it, every
        /// failed probe, and what to do.
        problems: String,
    },
}

/// Names of the capabilities missing from the effective set `cap_eff`.
pub fn missing_capabilities(cap_eff: u64) -> Vec<&'static str> {
    let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
    let sys_admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    // CAP_BPF and CAP_PERFMON split off CAP_SYS_ADMIN in Linux 5.8.
    if !has(CAP_BPF) && !sys_admin {
        missing.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    if !has(CAP_PERFMON) && !sys_admin {
        missing.push("CAP_PERFMON (or CAP_SYS_ADMIN)");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// Parses `CapEff` from the text of /proc/self/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Checks this process's effective capabilities.
pub fn check_capabilities() -> Result<(), PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = parse_cap_eff(&status).unwrap_or(0);
    let missing = missing_capabilities(cap_eff);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapability {
            missing: missing.join(", "),
        })
    }
}

/// Resolves interface names to `(index, name)`, in the order given.
pub fn resolve_interfaces(names: &[String]) -> Result<Vec<(u32, String)>, PreflightError> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let index = CString::new(name.as_str())
            .map(|c| {
                // SAFETY: a valid NUL-terminated string.
                unsafe { libc::if_nametoindex(c.as_ptr()) }
            })
            .unwrap_or(0);
        if index == 0 {
            let mut available: Vec<String> = std::fs::read_dir("/sys/class/net")
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            available.sort();
            return Err(PreflightError::UnknownInterface {
                name: name.clone(),
                available: available.join(", "),
            });
        }
        out.push((index, name.clone()));
    }
    Ok(out)
}

/// A kernel feature the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// The kernel's own BTF at [`VMLINUX_BTF`].
    Btf,
    /// XDP programs.
    XdpProgram,
    /// Global data (`.rodata`), which the loader rewrites to switch
    /// lifecycle events on or off.
    GlobalData,
    /// BPF ring buffers: the lifecycle events.
    RingBuf,
    /// LRU hash maps: the flow table.
    LruHash,
    /// Per-CPU arrays: the drop counters.
    PerCpuArray,
    /// XDP attached as a bpf_link, which the kernel detaches when the agent
    /// dies, so a crash leaves nothing attached.
    XdpLink,
    /// The `bpf_ktime_get_coarse_ns` helper, the hot path's clock.
    KtimeGetCoarseNs,
    /// Atomic lookup-and-delete on hash maps: a flow's final counts.
    HashLookupAndDelete,
    /// Batch lookups over hash maps: whole-table sweeps.
    HashBatch,
}

impl Feature {
    /// Every feature, in the order they are reported.
    pub const ALL: [Self; 10] = [
        Self::Btf,
        Self::XdpProgram,
        Self::GlobalData,
        Self::RingBuf,
        Self::LruHash,
        Self::PerCpuArray,
        Self::XdpLink,
        Self::KtimeGetCoarseNs,
        Self::HashLookupAndDelete,
        Self::HashBatch,
    ];

    /// Name in messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Btf => "kernel BTF",
            Self::XdpProgram => "XDP programs",
            Self::GlobalData => "BPF global data",
            Self::RingBuf => "BPF ring buffers",
            Self::LruHash => "LRU hash maps",
            Self::PerCpuArray => "per-CPU array maps",
            Self::XdpLink => "XDP bpf_link attachment",
            Self::KtimeGetCoarseNs => "bpf_ktime_get_coarse_ns",
            Self::HashLookupAndDelete => "hash-map lookup-and-delete",
            Self::HashBatch => "hash-map batch lookups",
        }
    }

    /// The mainline release that added it.
    pub const fn since(self) -> &'static str {
        match self {
            Self::Btf => "5.4",
            Self::XdpProgram => "4.8",
            Self::GlobalData => "5.2",
            Self::RingBuf => "5.8",
            Self::LruHash => "4.10",
            Self::PerCpuArray => "4.6",
            Self::XdpLink => "5.9",
            Self::KtimeGetCoarseNs => "5.11",
            Self::HashLookupAndDelete => "5.14",
            Self::HashBatch => "5.6",
        }
    }

    /// What the agent does without it; `None` when it cannot run.
    pub const fn fallback(self) -> Option<&'static str> {
        match self {
            Self::HashBatch => Some(
                "whole-table sweeps use per-element passes (two bpf(2) calls per flow: slower \
                 sweeps and final flush on big flow tables)",
            ),
            _ => None,
        }
    }
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The kernel has it.
    Present,
    /// The kernel lacks it.
    Missing,
    /// The kernel could not be asked (the reason).
    Failed(String),
}

impl<E: fmt::Display> From<Result<bool, E>> for Probe {
    fn from(r: Result<bool, E>) -> Self {
        match r {
            Ok(true) => Self::Present,
            Ok(false) => Self::Missing,
            Err(e) => Self::Failed(e.to_string()),
        }
    }
}

/// What the running kernel answered, feature by feature.
#[derive(Clone, Debug)]
pub struct KernelProbe {
    /// `uname -r`.
    pub release: String,
    /// Where kernel BTF was looked for.
    pub btf_path: PathBuf,
    /// One answer per feature, in [`Feature::ALL`] order.
    pub results: Vec<(Feature, Probe)>,
}

/// Asks the running kernel about every [`Feature`] (needs CAP_BPF or root;
/// check capabilities first). Nothing is attached; probe programs and maps
/// are closed before it returns.
pub fn probe_kernel(btf_path: &Path) -> KernelProbe {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown release".to_owned(), |r| r.trim().to_owned());
    let results = Feature::ALL
        .iter()
        .map(|&f| (f, probe_one(f, btf_path)))
        .collect();
    KernelProbe {
        release,
        btf_path: btf_path.to_owned(),
        results,
    }
}

fn probe_one(feature: Feature, btf_path: &Path) -> Probe {
    match feature {
        Feature::Btf => Probe::from(Ok::<_, String>(btf_path.exists())),
        Feature::XdpProgram => is_program_supported(ProgramType::Xdp).into(),
        Feature::GlobalData => Probe::from(Ok::<_, String>(aya::features().bpf_global_data())),
        Feature::RingBuf => is_map_supported(MapType::RingBuf).into(),
        Feature::LruHash => is_map_supported(MapType::LruHash).into(),
        Feature::PerCpuArray => is_map_supported(MapType::PerCpuArray).into(),
        Feature::XdpLink => sys::xdp_link_supported().into(),
        Feature::KtimeGetCoarseNs => {
            is_helper_supported(ProgramType::Xdp, BpfHelper::BPF_FUNC_ktime_get_coarse_ns).into()
        }
        Feature::HashLookupAndDelete => probe_hash_map(|map| {
            // Kernels before 5.14 (commit 3e87f192b405) refuse this command
            // on every hash map type with ENOTSUPP; later ones find no key.
            match sys::lookup_and_delete::<u32, u64>(map.fd().as_fd(), &0) {
                Ok(_) => Ok(true),
                Err(e) if is_unsupported(&e) => Ok(false),
                Err(e) => Err(e),
            }
        }),
        // Batch ops came to every hash map type, LRU included, in 5.6
        // (commit 05799638); `batch_pass` says `None` when they are absent.
        Feature::HashBatch => probe_hash_map(|map| {
            sys::batch_pass::<u32, u64>(map.fd().as_fd(), sys::Pass::Read, |_, _| {})
                .map(|read| read.is_some())
        }),
    }
}

/// Runs `check` on a fresh one-entry hash map, closed afterwards.
fn probe_hash_map(check: impl FnOnce(&MapData) -> std::io::Result<bool>) -> Probe {
    match BpfHashMap::<MapData, u32, u64>::create(1, 0) {
        Ok(map) => check(map.map()).into(),
        Err(e) => Probe::Failed(format!("creating a probe hash map: {e}")),
    }
}

/// ENOTSUPP (524, the kernel's internal "not supported"), EOPNOTSUPP or
/// EINVAL: what kernels answer for a command they do not have.
fn is_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
    )
}

/// Turns probe answers into the start-up error (every missing feature and
/// failed probe at once) or into warnings naming each fallback in use.
pub fn decide(probe: &KernelProbe) -> Result<Vec<String>, PreflightError> {
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    let mut warnings = Vec::new();
    let mut need_btf = false;
    for (feature, result) in &probe.results {
        match (result, feature.fallback()) {
            (Probe::Present, _) => {}
            (Probe::Missing, Some(fallback)) => warnings.push(format!(
                "this kernel ({}) lacks {} ({}+): {fallback}",
                probe.release,
                feature.name(),
                feature.since()
            )),
            (Probe::Missing, None) => {
                need_btf |= *feature == Feature::Btf;
                missing.push(*feature);
            }
            (Probe::Failed(why), _) => failed.push(format!("{} ({why})", feature.name())),
        }
    }
    if missing.is_empty() && failed.is_empty() {
        return Ok(warnings);
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|f| format!("{} ({}+)", f.name(), f.since()))
            .collect();
        problems.push(format!("it lacks {}", names.join(", ")));
        let kernel_needed = missing
            .iter()
            .filter(|f| **f != Feature::Btf)
            .map(|f| f.since())
            .max_by_key(|v| release_key(v));
        if let Some(version) = kernel_needed {
            problems.push(format!("run lbwitness on Linux {version} or later"));
        }
        if need_btf {
            problems.push(format!(
                "no kernel BTF at {}: use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
                probe.btf_path.display()
            ));
        }
    }
    if !failed.is_empty() {
        problems.push(format!(
            "could not check {} (run as root, or grant cap_bpf and cap_perfmon)",
            failed.join(", ")
        ));
    }
    Err(PreflightError::Kernel {
        release: probe.release.clone(),
        problems: problems.join("; "),
    })
}

/// `"5.14"` as `(5, 14)`, to compare releases.
fn release_key(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Checks every kernel feature the agent uses ([`probe_kernel`], then
/// [`decide`]); logs a warning per fallback in use.
pub fn check_kernel(btf_path: &Path) -> Result<(), PreflightError> {
    let probe = probe_kernel(btf_path);
    for warning in decide(&probe)? {
        tracing::warn!(release = %probe.release, "{warning}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names() {
        assert!(missing_capabilities(u64::MAX).is_empty());
        assert_eq!(
            missing_capabilities(0),
            vec![
                "CAP_BPF (or CAP_SYS_ADMIN)",
                "CAP_PERFMON (or CAP_SYS_ADMIN)",
                "CAP_NET_ADMIN"
            ]
        );
        let sys_admin_only = 1 << CAP_SYS_ADMIN;
        assert_eq!(missing_capabilities(sys_admin_only), vec!["CAP_NET_ADMIN"]);
        let modern = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert!(missing_capabilities(modern).is_empty());
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn missing_btf_is_named() {
        let err = check_kernel(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }

    /// What a 5.10 kernel with BTF answers.
    fn linux_5_10() -> KernelProbe {
        let results = Feature::ALL
            .iter()
            .map(|&f| {
                let probe = match f {
                    Feature::KtimeGetCoarseNs | Feature::HashLookupAndDelete => Probe::Missing,
                    _ => Probe::Present,
                };
                (f, probe)
            })
            .collect();
        KernelProbe {
            release: "5.10.0-28-amd64".into(),
            btf_path: VMLINUX_BTF.into(),
            results,
        }
    }

    #[test]
    fn a_5_10_kernel_is_told_everything_it_lacks_at_once() {
        let text = decide(&linux_5_10()).unwrap_err().to_string();
        assert_eq!(
            text,
            "this kernel (5.10.0-28-amd64) cannot run lbwitness: it lacks \
             bpf_ktime_get_coarse_ns (5.11+), hash-map lookup-and-delete (5.14+); run lbwitness \
             on Linux 5.14 or later"
        );
    }

    #[test]
    fn a_fallback_is_a_warning_not_an_error() {
        let mut probe = linux_5_10();
        for (f, p) in &mut probe.results {
            *p = if *f == Feature::HashBatch {
                Probe::Missing
            } else {
                Probe::Present
            };
        }
        let warnings = decide(&probe).expect("batch lookups have a fallback");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("hash-map batch lookups (5.6+)")
                && warnings[0].contains("per-element passes"),
            "{warnings:?}"
        );
    }

    #[test]
    fn missing_btf_and_failed_probes_are_named_with_the_rest() {
        let mut probe = linux_5_10();
        probe.btf_path = "/nonexistent/vmlinux".into();
        for (f, p) in &mut probe.results {
            match f {
                Feature::Btf => *p = Probe::Missing,
                Feature::RingBuf => *p = Probe::Failed("EPERM".into()),
                _ => {}
            }
        }
        let text = decide(&probe).unwrap_err().to_string();
        for part in [
            "kernel BTF (5.4+)",
            "bpf_ktime_get_coarse_ns (5.11+)",
            "Linux 5.14 or later",
            "no kernel BTF at /nonexistent/vmlinux",
            "CONFIG_DEBUG_INFO_BTF=y",
            "could not check BPF ring buffers (EPERM)",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }

    #[test]
    fn this_kernel_has_every_feature() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if !missing_capabilities(parse_cap_eff(&status).unwrap_or(0)).is_empty() {
            eprintln!("skipped: probing the kernel needs CAP_BPF and CAP_PERFMON (run as root)");
            return;
        }
        let probe = probe_kernel(Path::new(VMLINUX_BTF));
        for (feature, result) in &probe.results {
            assert_eq!(
                *result,
                Probe::Present,
                "{} on {}",
                feature.name(),
                probe.release
            );
        }
        assert_eq!(
            decide(&probe).expect("a kernel new enough"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unknown_interface_lists_alternatives() {
        let err = resolve_interfaces(&["lbw-no-such0".into()]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("lbw-no-such0") && text.contains("lo"),
            "{text}"
        );
    }
}
