//! The agent's own log: `tracing` events on standard error, as text or as
//! one JSON object per line.
//!
//! Logging must never take the agent down. `tracing-subscriber` reports a
//! failed write with `eprintln!`, which panics when stderr is a closed pipe
//! (`lbwitness run 2>&1 | logger` after logger restarts): exit 101. So the
//! writer here swallows write errors (the log line is lost, nothing else),
//! the subscriber's own error reporting is off, and every other message for
//! the user goes through [`error_line`], which never panics either.

use std::{
    io::{self, IsTerminal as _, Write},
    sync::atomic::{AtomicBool, Ordering},
};

use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message`
    /// and the event's fields), for journald and log shippers.
    Json,
}

/// Set once a write to stderr failed with EPIPE: its reader is gone for
/// good, so later lines are not even tried.
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Set by [`init`] for `--log-format json`, so [`error_line`] keeps every
/// line of stderr JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// Standard error, minus the failures: a write that fails is reported to
/// the caller as done, so no log line can stop or crash the agent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !STDERR_CLOSED.load(Ordering::Relaxed)
            && let Err(e) = io::stderr().write_all(buf)
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            STDERR_CLOSED.store(true, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .log_internal_errors(false);
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        // Flattened, so a shipper finds `message` and the fields at the top.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// ANSI colours only for a person at a terminal: never into a pipe, a file
/// or journald, and not when `NO_COLOR` is set (no-color.org).
fn colour() -> bool {
    io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes `error: MESSAGE` on stderr (with `--log-format json`, an ERROR
/// event), ignoring failure, unlike `eprintln!`, which panics when stderr is
/// closed.
pub fn error_line(message: impl std::fmt::Display) {
    if JSON.load(Ordering::Relaxed) {
        tracing::error!("{message}");
    } else {
        let _ = writeln!(Stderr, "error: {message}");
    }
}
