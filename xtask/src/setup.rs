//! Installs what is missing, from the package registries only: nightly's
//! rust-src (rustup), bpf-linker (crates.io, built against nightly's own
//! LLVM) and Debian packages for tests and the demo.

use std::{path::Path, process::Command};

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
];

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
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
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
