//! `cargo xtask`: everything around the code. Each command installs what it
//! needs first, so it works on a fresh machine.

mod bench;
mod demo;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "lbwitness developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need: nightly rust-src, bpf-linker
    /// (built against nightly's own LLVM) and the Debian test tools.
    Setup,
    /// Build target/release/lbwitness with the eBPF object embedded.
    Build,
    /// Format and lint checks, unit tests, BPF_PROG_TEST_RUN tests and the
    /// network-namespace integration tests (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmarks: XDP ns per packet against a no-op program (needs root).
    Bench,
    /// A self-contained lab: namespaces, veths, traffic, and the agent
    /// showing records live. Ctrl-C tears it down.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::all(),
        Command::Build => {
            setup::build_tools()?;
            util::build_release()
        }
        Command::Test { args } => test(&args),
        Command::Bench => bench::run(),
        Command::Demo { seconds } => demo::run(seconds),
    }
}

fn test(args: &[String]) -> Result<()> {
    setup::all()?;
    util::require_root("the tests load eBPF programs and create network namespaces")?;
    util::cargo(&["fmt", "--all", "--check"])?;
    util::cargo(&[
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    clippy_ebpf()?;
    util::build_release()?;
    // Not --workspace: that would include agent-ebpf, which only builds for
    // the BPF target (default-members leaves it out).
    let mut cmd = vec!["test", "--release"];
    cmd.extend(args.iter().map(String::as_str));
    util::cargo(&cmd)
}

/// Clippy on the kernel programs, which only build for the BPF target:
/// nightly (as aya-build builds them, through `rustup run`, since `CARGO` is
/// the stable toolchain's own cargo) with `core` built from rust-src.
fn clippy_ebpf() -> Result<()> {
    util::run(
        std::process::Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--package",
                "agent-ebpf",
            ])
            .args([
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .args(["--", "-D", "warnings"])
            // What the outer cargo set for the host toolchain.
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .current_dir(util::workspace_root()),
    )
}
