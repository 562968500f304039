//! `lbwitness doctor`: what this host offers the agent, what request
//! capture chose per hook and why, and what to do about anything missing.
//!
//! [`gather`] asks the system (capabilities, kernel probes, tracefs, the
//! event sources in /sys/bus/event_source, a load of the request programs);
//! [`report`] is the pure part that turns those facts into text.

use std::{fmt::Write as _, path::Path};

use aya::programs::ProgramType;

use crate::{
    capture::{
        requests::{HookChoice, RequestProbes, RequestSettings, Via},
        tracefs,
    },
    preflight::{self, KernelProbe, Probe},
};

/// Whether one request-capture mechanism is there, with a detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mechanism {
    /// Name (e.g. "kprobes").
    pub name: &'static str,
    /// Present.
    pub present: bool,
    /// What was found, or why not.
    pub detail: String,
    /// What to do when it is missing.
    pub advice: &'static str,
}

/// Everything the doctor found.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Capabilities missing from the effective set (names).
    pub missing_caps: Vec<&'static str>,
    /// The flow agent's kernel features.
    pub kernel: KernelProbe,
    /// Tracepoints, kprobes, uprobes, fentry.
    pub mechanisms: Vec<Mechanism>,
    /// The request hooks' choices, or why the request programs did not load.
    pub hooks: Result<Vec<HookChoice>, String>,
}

fn exists(path: &str) -> bool {
    Path::new(path).exists()
}

/// Asks the system. Loads the request programs (and detaches them again)
/// to learn each hook's choice; needs the agent's privileges.
pub fn gather() -> Facts {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing_caps = preflight::parse_cap_eff(&status).map_or_else(
        || vec!["(CapEff unreadable)"],
        preflight::missing_capabilities,
    );
    let kernel = preflight::probe_kernel(Path::new(preflight::VMLINUX_BTF));
    let tracefs = tracefs::root();
    let mut mechanisms = vec![Mechanism {
        name: "tracepoints",
        present: tracefs
            .as_ref()
            .is_ok_and(|r| r.join("events/syscalls").is_dir()),
        detail: match &tracefs {
            Ok(root) => format!("tracefs at {}", root.display()),
            Err(e) => e.to_string(),
        },
        advice: "build the kernel with CONFIG_FTRACE_SYSCALLS and mount tracefs; request capture \
                 needs the syscall tracepoints",
    }];
    let kprobe_events = tracefs
        .as_ref()
        .is_ok_and(|r| r.join("kprobe_events").exists());
    mechanisms.push(Mechanism {
        name: "kprobes",
        present: exists("/sys/bus/event_source/devices/kprobe/type") || kprobe_events,
        detail: "the kprobe PMU (/sys/bus/event_source/devices/kprobe) or tracefs kprobe_events"
            .into(),
        advice: "CONFIG_KPROBES / CONFIG_KPROBE_EVENTS: only a fallback for the TCP hooks when \
                 their tracepoints are missing, and the source of the accepted socket's sk at \
                 accept time",
    });
    mechanisms.push(Mechanism {
        name: "uprobes",
        present: exists("/sys/bus/event_source/devices/uprobe/type"),
        detail: "the uprobe PMU (/sys/bus/event_source/devices/uprobe)".into(),
        advice: "CONFIG_UPROBES / CONFIG_UPROBE_EVENTS: needed for plaintext of TLS-terminating \
                 frontends (SSL_read/SSL_write)",
    });
    let fentry = aya::sys::is_program_supported(ProgramType::Tracing);
    mechanisms.push(Mechanism {
        name: "fentry",
        present: matches!(fentry, Ok(true)),
        detail: match fentry {
            Ok(true) => "BPF tracing programs load".into(),
            Ok(false) => "BPF tracing programs are refused".into(),
            Err(e) => format!("could not probe: {e}"),
        },
        advice: "not used today; needs CONFIG_DEBUG_INFO_BTF and a kernel that allows BPF \
                 trampolines (lockdown refuses them)",
    });
    let hooks = RequestProbes::load(&RequestSettings::default())
        .map(|p| p.choices().to_vec())
        .map_err(|e| e.to_string());
    Facts {
        missing_caps,
        kernel,
        mechanisms,
        hooks,
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok     " } else { "MISSING" }
}

/// The report for `facts`, ending with what to do.
pub fn report(facts: &Facts) -> String {
    let mut out = String::new();
    let mut todo: Vec<String> = Vec::new();
    let _ = writeln!(out, "kernel {}", facts.kernel.release);

    let _ = writeln!(out, "\nprivileges");
    if facts.missing_caps.is_empty() {
        let _ = writeln!(out, "  ok      every capability the agent uses");
    } else {
        let _ = writeln!(out, "  MISSING {}", facts.missing_caps.join(", "));
        todo.push(
            "run as root, or `setcap cap_bpf,cap_net_admin,cap_perfmon+ep` on the binary".into(),
        );
    }

    let _ = writeln!(out, "\nflow capture (XDP)");
    for (feature, probe) in &facts.kernel.results {
        let (ok, note) = match probe {
            Probe::Present => (true, String::new()),
            Probe::Missing => (false, format!(" (since Linux {})", feature.since())),
            Probe::Failed(e) => (false, format!(" (probe failed: {e})")),
        };
        let _ = writeln!(out, "  {} {}{note}", mark(ok), feature.name());
        if !ok {
            todo.push(match feature.fallback() {
                Some(f) => format!("{}: {f}", feature.name()),
                None => format!(
                    "{}: needs Linux {} or later",
                    feature.name(),
                    feature.since()
                ),
            });
        }
    }
    let _ = writeln!(
        out,
        "  note    XDP modes: generic works on every interface; native depends on the driver \
         (`--xdp-mode auto` tries native first and says why it fell back)"
    );

    let _ = writeln!(out, "\nrequest capture mechanisms");
    for m in &facts.mechanisms {
        let _ = writeln!(out, "  {} {:<12} {}", mark(m.present), m.name, m.detail);
        if !m.present {
            todo.push(format!("{}: {}", m.name, m.advice));
        }
    }

    let _ = writeln!(out, "\nrequest hooks");
    match &facts.hooks {
        Ok(choices) => {
            for c in choices {
                let _ = writeln!(out, "  {c}");
                if c.via == Via::Unavailable {
                    todo.push(format!("hook {}: {}", c.hook.as_str(), c.why));
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  MISSING request programs did not load: {e}");
            todo.push(e.clone());
        }
    }

    let _ = writeln!(out, "\nto do");
    if todo.is_empty() {
        let _ = writeln!(out, "  nothing: every hook is served");
    }
    for t in todo {
        let _ = writeln!(out, "  - {t}");
    }
    out
}

/// Prints the report to stdout.
pub fn run() {
    print!("{}", report(&gather()));
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{capture::requests::Hook, preflight::Feature};

    fn facts() -> Facts {
        Facts {
            missing_caps: vec![],
            kernel: KernelProbe {
                release: "6.18.0".into(),
                btf_path: PathBuf::from("/sys/kernel/btf/vmlinux"),
                results: vec![
                    (Feature::Btf, Probe::Present),
                    (Feature::RingBuf, Probe::Present),
                ],
            },
            mechanisms: vec![Mechanism {
                name: "kprobes",
                present: false,
                detail: "no PMU".into(),
                advice: "CONFIG_KPROBES",
            }],
            hooks: Ok(vec![
                HookChoice {
                    hook: Hook::Syscalls,
                    via: Via::Tracepoint,
                    why: "24 tracepoints".into(),
                },
                HookChoice {
                    hook: Hook::SockOfAccept,
                    via: Via::Unavailable,
                    why: "kprobe: attach failed".into(),
                },
            ]),
        }
    }

    #[test]
    fn names_every_section_and_each_thing_to_do() {
        let text = report(&facts());
        for section in [
            "kernel 6.18.0",
            "privileges",
            "flow capture",
            "request hooks",
            "to do",
        ] {
            assert!(text.contains(section), "{section} in\n{text}");
        }
        assert!(text.contains("ok      kernel BTF"), "{text}");
        assert!(text.contains("MISSING kprobes"), "{text}");
        assert!(text.contains("  - kprobes: CONFIG_KPROBES"), "{text}");
        assert!(
            text.contains("  - hook sock_of_accept: kprobe: attach failed"),
            "{text}"
        );
        assert!(!text.contains("nothing: every hook is served"));
    }

    #[test]
    fn missing_privileges_and_features_say_what_to_do() {
        let mut f = facts();
        f.missing_caps = vec!["CAP_BPF (or CAP_SYS_ADMIN)"];
        f.kernel.results = vec![(Feature::RingBuf, Probe::Missing)];
        f.mechanisms.clear();
        f.hooks = Err("tracefs is not mounted".into());
        let text = report(&f);
        assert!(
            text.contains("MISSING CAP_BPF (or CAP_SYS_ADMIN)"),
            "{text}"
        );
        assert!(text.contains("setcap"), "{text}");
        assert!(
            text.contains("BPF ring buffers (since Linux 5.8)"),
            "{text}"
        );
        assert!(
            text.contains("  - BPF ring buffers: needs Linux 5.8 or later"),
            "{text}"
        );
        assert!(text.contains("  - tracefs is not mounted"), "{text}");
    }

    #[test]
    fn a_healthy_host_has_nothing_to_do() {
        let mut f = facts();
        f.mechanisms[0].present = true;
        if let Ok(h) = &mut f.hooks {
            h.retain(|c| c.via != Via::Unavailable);
        }
        let text = report(&f);
        assert!(text.contains("nothing: every hook is served"), "{text}");
    }
}
