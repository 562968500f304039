//! Start-up checks that turn the usual failures into one clear sentence
//! before anything is loaded or attached.

use std::{ffi::CString, path::Path};

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
    /// The kernel lacks something the agent needs.
    #[error("this kernel cannot run lbwitness: {0}")]
    Kernel(String),
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

/// Checks for BTF and BPF ring buffers (Linux 5.8+).
pub fn check_kernel(btf_path: &Path) -> Result<(), PreflightError> {
    if !btf_path.exists() {
        return Err(PreflightError::Kernel(format!(
            "no kernel BTF at {} (build the kernel with CONFIG_DEBUG_INFO_BTF=y)",
            btf_path.display()
        )));
    }
    match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => Ok(()),
        Ok(false) => Err(PreflightError::Kernel(
            "BPF ring buffers are not supported (Linux 5.8 or later is required)".into(),
        )),
        Err(err) => Err(PreflightError::Kernel(format!(
            "probing for BPF ring buffer support failed: {err}"
        ))),
    }
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
