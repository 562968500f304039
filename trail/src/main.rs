//! `lbwitness-verify`: the verifier on its own, for auditors who receive a
//! trail and do not run the agent. Same arguments, report and exit codes as
//! `lbwitness verify` (the same code, [`lbwitness_trail::verify::run`]).
//!
//! `cargo install --path trail` builds it with stable Rust on any OS.

use std::{io::Write as _, process::ExitCode};

use clap::Parser;
use lbwitness_trail::verify::{self, VerifyArgs};

/// Check an lbwitness audit trail (NDJSON files or directories): exit 0
/// intact, 1 unreadable input or key, 3 tampering, 4 incomplete.
#[derive(Parser)]
#[command(name = "lbwitness-verify", version)]
struct Cli {
    #[command(flatten)]
    args: VerifyArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    verify::run(cli.args, |e| {
        let _ = writeln!(std::io::stderr(), "error: {e}");
    })
}
