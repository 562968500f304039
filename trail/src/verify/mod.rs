//! `lbwitness verify`: checks an audit trail against docs/AUDIT.md.
//!
//! The core is pure: [`Verifier`] takes lines and returns a [`Report`].
//! [`run`] is the shell: keys, files, output, exit code.
//!
//! ```text
//! files ─▶ input ─lines─▶ index (parse once, link in-file successors,
//!                                keep a 56-byte entry per record)
//!                         ─▶ chain (sort, link the rest, duplicates, missing)
//!                         ─▶ checkpoints (keys, rotation, coverage)
//!                         ─▶ gaps (coverage before holes, declared missing)
//!                         ─▶ report ─▶ human | JSON
//! ```

mod canonical;
mod chain;
mod checkpoints;
mod gaps;
pub mod human;
mod index;
pub mod input;
pub mod keys;
pub mod line;
pub mod report;
#[cfg(test)]
mod tests;

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use clap::builder::TypedValueParser as _;

pub use self::{
    index::{FileId, Verifier},
    report::{Report, Verdict},
};

/// `lbwitness verify` options.
#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// A trusted Ed25519 public key (repeatable): a PEM file
    /// (`-----BEGIN PUBLIC KEY-----`, as `openssl pkey -pubout` writes), or a
    /// file or argument with 64 hex digits of the raw key. `AGENT_ID=PUBKEY`
    /// trusts the key for that agent only; a bare key is trusted for every
    /// agent.
    #[arg(long = "key", value_name = "PUBKEY")]
    pub keys: Vec<String>,
    /// Print one JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// The agent is still running: accept an open end, and report records
    /// after the latest valid checkpoint as pending.
    #[arg(long)]
    pub live: bool,
    /// Longest line taken as a possible record, in bytes. A longer line (a
    /// run of NUL bytes a power loss left, a file that is not a trail) is
    /// reported unparsable with its byte offset; from a device or a pipe,
    /// reading that input stops there.
    #[arg(long, value_name = "BYTES", default_value_t = input::DEFAULT_MAX_LINE,
          value_parser = clap::value_parser!(u32).range(4096..=(1 << 30)).map(|v| v as usize))]
    pub max_line_bytes: usize,
    /// NDJSON files, or directories to read recursively.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Runs `lbwitness verify` (and `lbwitness-verify`, the same command): the
/// report goes to standard output, a failure to `report_error` (each binary
/// writes errors its own way). The exit code is that of docs/AUDIT.md (0
/// intact, 1 unreadable input or key, 3 tampering, 4 incomplete).
pub fn run(args: VerifyArgs, report_error: impl Fn(&dyn std::fmt::Display)) -> ExitCode {
    match verify_paths(&args) {
        Ok(report) => {
            let mut stdout = std::io::stdout().lock();
            let written = if args.json {
                serde_json::to_writer(&mut stdout, &report)
                    .map_err(std::io::Error::from)
                    .and_then(|()| stdout.write_all(b"\n"))
            } else {
                stdout.write_all(human::render(&report).as_bytes())
            };
            if let Err(e) = written.and_then(|()| stdout.flush()) {
                report_error(&format_args!("cannot write the report: {e}"));
                return ExitCode::FAILURE;
            }
            ExitCode::from(report.exit_code)
        }
        Err(e) => {
            report_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Why verification could not run (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A `--key`.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// An input path.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// The paths hold no file at all.
    #[error("no files to read under the given paths")]
    NoFiles,
}

/// Reads the keys and every file, and verifies.
pub fn verify_paths(args: &VerifyArgs) -> Result<Report, VerifyError> {
    let mut trusted = Vec::new();
    let mut bound = Vec::new();
    for arg in &args.keys {
        match keys::split_agent(arg) {
            Some((agent, key)) => bound.push((agent, keys::read_trusted_key(key)?)),
            None => trusted.push(keys::read_trusted_key(arg)?),
        }
    }
    let files = input::collect_files(&args.paths)?;
    if files.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut verifier = Verifier::new(&trusted, args.live);
    for (agent, key) in bound {
        verifier.trust_for(agent, key);
    }
    for file in &files {
        input::feed_path(&mut verifier, file, args.max_line_bytes)?;
    }
    Ok(verifier.finish())
}
