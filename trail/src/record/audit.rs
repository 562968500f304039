//! The trail's own records: checkpoints, gaps and self-audit (docs/AUDIT.md).
//! Fields are declared in the order of their JSON names, like every record
//! struct, so that serialising is canonical.

use serde::Serialize;

/// `lbwitness.checkpoint`.
#[derive(Clone, Debug, Serialize)]
pub struct Checkpoint {
    /// Records covered: `last_sequence - first_sequence + 1`.
    pub count: u64,
    /// Set on the agent's last record before a clean stop.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// First record covered: one past the previous checkpoint.
    pub first_sequence: u64,
    /// Hex chain hash of `last_sequence`.
    pub head_hash: String,
    /// Hex SHA-256 of the signing key's public key.
    pub key_id: String,
    /// Last record covered: the checkpoint's own sequence minus one.
    pub last_sequence: u64,
    /// The key that signs from the next checkpoint on (key rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_key: Option<NextKey>,
    /// Hex Ed25519 signature; absent only while the record is being signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `lbwitness.checkpoint.next_key`.
#[derive(Clone, Debug, Serialize)]
pub struct NextKey {
    /// Hex SHA-256 of `public_key`'s 32 bytes.
    pub key_id: String,
    /// Hex of the 32-byte Ed25519 public key.
    pub public_key: String,
}

/// `lbwitness.gap`: something the agent lost or could not see.
#[derive(Clone, Debug, Serialize)]
pub struct Gap {
    /// Hex chain hash of the record before `first_sequence` (spool losses,
    /// when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_hash: Option<String>,
    /// `loss` (data the agent never saw) or `malformed` (packets it could not
    /// parse), `restart` for a restart.
    pub class: &'static str,
    /// How many were lost.
    pub count: u64,
    /// First sequence that may be missing (unclean restart, spool loss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_sequence: Option<u64>,
    /// Hex chain hash of `last_sequence` (spool losses, when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_hash: Option<String>,
    /// Last sequence that may be missing (unclean restart, spool loss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<u64>,
    /// The previous run (restart only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_run: Option<PreviousRun>,
    /// The counter's name, or `restart`.
    pub reason: &'static str,
    /// `kernel` or `agent`.
    pub source: &'static str,
}

/// `lbwitness.gap.previous_run`.
#[derive(Clone, Debug, Serialize)]
pub struct PreviousRun {
    /// Whether it stopped cleanly (drained, flushed, final checkpoint).
    pub clean: bool,
    /// The last sequence it knows reached its output.
    pub durable_sequence: u64,
    /// Hex chain hash of `last_sequence`.
    pub last_hash: String,
    /// The last sequence it assigned.
    pub last_sequence: u64,
}

/// `lbwitness.hook`.
#[derive(Clone, Debug, Serialize)]
pub struct Hook {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub interface: String,
    /// `xdp`.
    pub kind: &'static str,
    /// `native` or `generic`.
    pub mode: &'static str,
}

/// `lbwitness.config`.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigReload {
    /// Settings applied without a restart.
    pub applied: Vec<&'static str>,
    /// Why the new config was refused (then nothing was applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The config file.
    pub path: String,
    /// Hex SHA-256 of the config before the reload.
    pub previous_sha256: String,
    /// Settings that changed but take effect only after a restart.
    pub restart_required: Vec<&'static str>,
    /// Hex SHA-256 of the config file now.
    pub sha256: String,
}

/// `lbwitness.key`.
#[derive(Clone, Debug, Serialize)]
pub struct KeyRotation {
    /// The key that signs from now on.
    pub key_id: String,
    /// The key it replaces.
    pub previous_key_id: String,
}

/// `lbwitness.start`.
#[derive(Clone, Debug, Serialize)]
pub struct Start {
    /// Each interface captured on, with the XDP mode that measures it.
    pub capture: Vec<CaptureInterface>,
    /// Hex SHA-256 of the effective configuration (canonical JSON of it).
    pub config_sha256: String,
    /// Hooks attached, e.g. `xdp/veth0/native`.
    pub hooks: Vec<String>,
    /// Interfaces captured on.
    pub interfaces: Vec<String>,
    /// The checkpoint signing key.
    pub key_id: String,
    /// The chain this one replaced (`--new-chain`), in the new chain's
    /// first `agent-start`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_chain: Option<PreviousChain>,
    /// With `[privacy] pseudonymise_clients`: what this run pseudonymises.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudonyms: Option<StartPseudonyms>,
    /// The agent's version.
    pub version: &'static str,
    /// Watched paths that are not watched, not attributed or not readable,
    /// and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch_problems: Vec<WatchProblem>,
    /// Watched files and their content now.
    pub watched_files: Vec<WatchedFile>,
}

/// `lbwitness.start.pseudonyms`: this run shows client pseudonyms; every
/// address but these is pseudonymised.
#[derive(Clone, Debug, Serialize)]
pub struct StartPseudonyms {
    /// `privacy.keep_networks`.
    pub keep_networks: Vec<String>,
    /// The pseudonym key's id, as pseudonymised records carry it.
    pub key_id: String,
    /// This host's addresses, read at start.
    pub local_addresses: Vec<String>,
}

/// One interface in `lbwitness.start.capture`.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureInterface {
    /// Why native XDP was refused, when `auto` fell back to generic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Interface name.
    pub interface: String,
    /// `native` or `generic`: what the interface's packet counts mean
    /// (generic counts GRO super-packets as one).
    pub xdp_mode: &'static str,
}

/// `lbwitness.start.previous_chain`: the chain a new chain replaced.
#[derive(Clone, Debug, Serialize)]
pub struct PreviousChain {
    /// The old chain's agent id.
    pub agent_id: String,
    /// Why it was replaced: `head-lost` (the state directory kept the id
    /// but not its head) or `id-lost` (it kept the head but not
    /// `agent.id`). Either way the old chain's end is not carried over: its
    /// own records and final checkpoint prove it.
    pub reason: &'static str,
}

/// One watched file in `lbwitness.start`.
#[derive(Clone, Debug, Serialize)]
pub struct WatchedFile {
    /// The path.
    pub path: String,
    /// Hex SHA-256, when the file exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size in bytes, when the file exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A watched path the agent cannot fully watch.
#[derive(Clone, Debug, Serialize)]
pub struct WatchProblem {
    /// The path.
    pub path: String,
    /// What is wrong, e.g. `not watched: ...`.
    pub problem: String,
}

/// `lbwitness.watch`: file watching stopped while the agent runs.
#[derive(Clone, Debug, Serialize)]
pub struct WatchStopped {
    /// Why.
    pub error: String,
    /// The paths whose changes are no longer recorded.
    pub paths: Vec<String>,
}

/// `lbwitness.stop`.
#[derive(Clone, Debug, Serialize)]
pub struct Stop {
    /// Records this run numbered, this record and the final checkpoint
    /// included.
    pub records: u64,
    /// `SIGTERM` or `SIGINT`.
    pub signal: &'static str,
}

/// ECS `file.*`.
#[derive(Clone, Debug, Serialize)]
pub struct File {
    /// Directory part of `path`.
    pub directory: String,
    /// `file.hash`, absent when the file was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<FileHash>,
    /// Last modification time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
    /// File name.
    pub name: String,
    /// Full path.
    pub path: String,
    /// Size in bytes, absent when deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// ECS `file.hash`.
#[derive(Clone, Debug, Serialize)]
pub struct FileHash {
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// `lbwitness.file`: what a watched file was before the change.
#[derive(Clone, Debug, Serialize)]
pub struct FileExtra {
    /// How `process.*` was tied to the change: `path` (the kernel reported
    /// that process writing the path) or `directory` (it wrote another file
    /// in the same directory just before; an inference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution: Option<&'static str>,
    /// `created`, `modified`, `deleted`, `unreadable` or
    /// `changed-while-stopped`.
    pub change: &'static str,
    /// Hex SHA-256 before, absent when the file did not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
    /// Size before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_size: Option<u64>,
    /// Why the content now at the path cannot be hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// ECS `process.*`.
#[derive(Clone, Debug, Serialize)]
pub struct Process {
    /// `/proc/<pid>/exe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// `/proc/<pid>/comm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Process id.
    pub pid: u32,
    /// The thread, for request records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<super::http::Thread>,
}

/// ECS `user.*`.
#[derive(Clone, Debug, Serialize)]
pub struct User {
    /// Numeric id, as a string (ECS keyword).
    pub id: String,
    /// Login name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
