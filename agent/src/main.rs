//! The `lbwitness` command line.

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use lbwitness::{
    config::{Config, Overrides, XdpMode},
    logging::{self, LogFormat, error_line},
};

#[derive(Parser)]
#[command(version, about = "eBPF/XDP capture agent for load-balancer hosts")]
struct Cli {
    /// How the agent's own log on stderr is written: `text` (colour only at
    /// a terminal) or `json` (one object per line, for journald and log
    /// shippers).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture on interfaces and write ECS flow records as NDJSON.
    Run {
        #[command(flatten)]
        flags: OverrideFlags,
        /// TOML config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// When the state directory kept agent.id but lost its chain's head
        /// (audit.head and the spool), start a new chain under a new id
        /// instead of refusing to start. Ignored while the head is intact.
        #[arg(long)]
        new_chain: bool,
    },
    /// Make a checkpoint signing key pair: PATH (private, mode 0600) and
    /// PATH.pub (public, for `lbwitness verify --key`).
    Keygen {
        /// Private key path. Default: /var/lib/lbwitness/signing.key.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Replace an existing key. Keep the old public key: old
        /// checkpoints still verify only with it.
        #[arg(long)]
        force: bool,
    },
    /// Check an audit trail (NDJSON files or directories): exit 0 intact,
    /// 1 unreadable input or key, 3 tampering, 4 incomplete.
    Verify(lbwitness_trail::verify::VerifyArgs),
    /// Print what this host offers the agent (XDP, ring buffers, BTF,
    /// tracepoints, kprobes, uprobes, fentry, privileges), what serves each
    /// request-capture hook and why, and what to do about anything missing.
    Doctor,
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config as `run` would, without starting anything: no
    /// root needed, no interface or state touched. Prints what the agent
    /// would do; exit 0 valid, 2 invalid (naming file, line and key).
    Check {
        /// TOML config file (without one: the defaults and the flags).
        file: Option<PathBuf>,
        #[command(flatten)]
        flags: OverrideFlags,
    },
}

/// The flags that override the config file, shared by `run` and `config
/// check` so that a check validates exactly what a run would.
#[derive(clap::Args)]
struct OverrideFlags {
    /// Interface to attach to (repeatable). Overrides the config's list.
    #[arg(long = "iface", value_name = "IF")]
    interfaces: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpMode>,
    /// NDJSON output path; `-` for standard output.
    /// Default: <state dir>/records.ndjson.
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// State directory (default /var/lib/lbwitness).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl OverrideFlags {
    fn overrides(self, new_chain: bool) -> Overrides {
        Overrides {
            interfaces: self.interfaces,
            xdp_mode: self.xdp_mode,
            output: self.output,
            state_dir: self.state_dir,
            new_chain,
        }
    }
}

/// `lbwitness config check`.
fn config_check(file: Option<&std::path::Path>, overrides: Overrides) -> ExitCode {
    match Config::load(file, overrides) {
        Ok(config) => {
            // Not print!: it panics when stdout is a closed pipe.
            let summary = lbwitness::config::summary::summary(&config);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), summary.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            error_line(e);
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Verify(args) => lbwitness_trail::verify::run(args, |e| logging::error_line(e)),
        Command::Doctor => {
            lbwitness::doctor::run();
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check { file, flags },
            // A check starts no chain: `new_chain` stays off.
        } => config_check(file.as_deref(), flags.overrides(false)),
        Command::Keygen { out, force } => {
            let path = out.unwrap_or_else(|| {
                PathBuf::from(lbwitness::config::DEFAULT_STATE_DIR).join("signing.key")
            });
            match lbwitness_trail::keys::generate(&path, force) {
                Ok(key) => {
                    // A closed stdout must not panic; the files are written.
                    let _ = writeln!(
                        std::io::stdout(),
                        "private key: {}\npublic key:  {}\nkey id:      {}",
                        path.display(),
                        lbwitness_trail::keys::public_path(&path).display(),
                        lbwitness_trail::keys::key_id(&key.verifying_key())
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    error_line(e);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            flags,
            config,
            new_chain,
        } => {
            let overrides = flags.overrides(new_chain);
            let config = match Config::load(config.as_deref(), overrides.clone()) {
                Ok(c) => c,
                Err(e) => {
                    error_line(e);
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error_line(format_args!("cannot start the async runtime: {e}"));
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(lbwitness::run::run(config, overrides)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error_line(format_args!("{e:#}"));
                    ExitCode::FAILURE
                }
            }
        }
    }
}
