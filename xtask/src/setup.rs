//! Installs what is missing, from the package registries only: nightly's
//! rust-src (rustup), bpf-linker (crates.io, built against nightly's own
//! LLVM) and Debian packages for tests and the demo.

use std::{fs::Permissions, os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{output, run};

/// The bpf-linker release known to work with this nightly.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and the demo use, each with a command or a
/// file that shows it is installed.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("tshark", "tshark"),
    ("ethtool", "ethtool"),
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("openssl", "openssl"),
    ("nats-server", "nats-server"),
    ("rsyslog", "rsyslogd"),
    (
        "rsyslog-relp",
        "/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so",
    ),
    (
        "rsyslog-gnutls",
        "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
    ),
    (
        "rsyslog-openssl",
        "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so",
    ),
    // syslog-ng's own libraries; the daemon itself is unpacked apart (below).
    ("libivykis0", "/usr/lib/x86_64-linux-gnu/libivykis.so.0"),
    ("libnet1", "/usr/lib/x86_64-linux-gnu/libnet.so.1"),
    ("libjson-c5", "/usr/lib/x86_64-linux-gnu/libjson-c.so.5"),
    ("libwrap0", "/usr/lib/x86_64-linux-gnu/libwrap.so.0"),
    ("libglib2.0-0", "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0"),
    ("libpcre3", "/usr/lib/x86_64-linux-gnu/libpcre.so.3"),
    // The load-balancer lab (#12): HAProxy 2.6 and nginx 1.22 as load
    // balancers, nginx (a renamed copy) as the backends, wrk for the bench.
    ("haproxy", "haproxy"),
    ("nginx", "nginx"),
    ("wrk", "wrk"),
];

/// The hook Debian's maintainer scripts ask (through `invoke-rc.d`)
/// whether they may start a service; exit status 101 means "no".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Packages whose postinst would start a daemon, with the pid file that
/// daemon writes: installing them must leave nothing running (the tests
/// start their own instances in network namespaces).
const SERVICES: &[(&str, &str)] = &[("haproxy", "/run/haproxy.pid"), ("nginx", "/run/nginx.pid")];

/// Where syslog-ng is unpacked. Debian's syslog-ng and rsyslog packages
/// conflict (both provide `system-log-daemon`), and the tests need both, so
/// syslog-ng's package is unpacked here instead of installed.
pub const SYSLOG_NG_ROOT: &str = "/opt/syslog-ng";

/// Everything: build tools and test tools.
pub fn all() -> Result<()> {
    build_tools()?;
    debian_packages()?;
    syslog_ng()?;
    python_packages()
}

/// The Community ID reference implementation, an oracle for the tests.
fn python_packages() -> Result<()> {
    let present = Command::new("python3")
        .args(["-c", "import communityid"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing the communityid Python package");
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "communityid",
    ]))
}

/// rust-src for nightly and bpf-linker.
pub fn build_tools() -> Result<()> {
    rust_src()?;
    bpf_linker()
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context(
        "the nightly toolchain is needed to build the eBPF programs; \
         install it with `rustup toolchain install nightly`",
    )?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: installing rust-src for nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// The LLVM shared library nightly ships, e.g. (22, "LLVM-22-rust-1.97.0-nightly").
fn nightly_llvm(sysroot: &Path) -> Result<(u32, String)> {
    let lib = sysroot.join("lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        // libLLVM-22-rust-1.97.0-nightly.so
        if let Some(stem) = name.strip_prefix("lib").and_then(|n| n.strip_suffix(".so"))
            && let Some(rest) = stem.strip_prefix("LLVM-")
            && let Some((major, _)) = rest.split_once("-rust-")
            && let Ok(major) = major.parse()
        {
            return Ok((major, stem.to_owned()));
        }
    }
    bail!(
        "no libLLVM-*-rust-*.so in {}: is the nightly toolchain complete?",
        lib.display()
    )
}

fn bpf_linker() -> Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot = Path::new(sysroot.trim());
    let (major, lib) = nightly_llvm(sysroot)?;
    let libdir = sysroot.join("lib");
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} ({lib})"
    );
    // Link against the LLVM that nightly ships instead of a system LLVM, and
    // find it at run time through an rpath.
    let rustflags = format!(
        "-C link-arg=-L{dir} -C link-arg=-l{lib} -C link-arg=-Wl,-rpath,{dir}",
        dir = libdir.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{major},no-llvm-linking"),
        ])
        .env("RUSTFLAGS", rustflags))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, check)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {check} || test -e {check}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    let policy = DenyServiceStarts::install()?;
    let installed = run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    drop(policy);
    installed?;
    stop_package_services();
    Ok(())
}

/// A `policy-rc.d` that denies every service start, in place while it
/// lives. An existing one (Docker images ship one that denies everything)
/// is left as it is and never removed.
struct DenyServiceStarts {
    created: bool,
}

impl DenyServiceStarts {
    fn install() -> Result<Self> {
        let path = Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(Self { created: false });
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# xtask setup: no service starts\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(path, Permissions::from_mode(0o755))
            .with_context(|| format!("making {POLICY_RC_D} executable"))?;
        Ok(Self { created: true })
    }
}

impl Drop for DenyServiceStarts {
    fn drop(&mut self) {
        if self.created
            && let Err(e) = std::fs::remove_file(POLICY_RC_D)
        {
            eprintln!("xtask: cannot remove the {POLICY_RC_D} it created: {e}");
        }
    }
}

/// Stops a haproxy or nginx the packages started anyway (an init system
/// that ignores `policy-rc.d`), found by the pid file the package's service
/// writes and checked by its name, so no other process is signalled.
fn stop_package_services() {
    for (name, pid_file) in SERVICES {
        let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == *name {
            eprintln!("xtask: stopping the {name} (pid {pid}) its package started");
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// syslog-ng, unpacked from Debian's package into [`SYSLOG_NG_ROOT`] (see
/// there for why it is not installed).
fn syslog_ng() -> Result<()> {
    let daemon = Path::new(SYSLOG_NG_ROOT).join("usr/sbin/syslog-ng");
    if daemon.exists() {
        return Ok(());
    }
    eprintln!("xtask: unpacking syslog-ng-core into {SYSLOG_NG_ROOT}");
    let dir = std::env::temp_dir().join(format!("lbw-syslog-ng-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let unpacked = (|| {
        run(Command::new("apt-get")
            .args(["download", "-q", "syslog-ng-core"])
            .current_dir(&dir))?;
        let deb = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no syslog-ng-core .deb")?;
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(SYSLOG_NG_ROOT))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    unpacked
}
