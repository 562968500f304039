//! Watched files: detects changes to files such as the load balancer's
//! config and, where the kernel allows it, who made them.
//!
//! - Detection (`session`, `dirs`, `pending`, `hash`, `change`): inotify on each
//!   file's parent directory, so rename-over and delete-then-recreate are
//!   seen, filtered by name. A path is re-hashed once its events have
//!   settled, and a change is reported only when its SHA-256 or its
//!   existence changed: `touch` or a rewrite with the same bytes is not one.
//! - Symbolic links are followed, as the load balancer follows them when it
//!   opens its config: the identity is that of the content it would read. A
//!   link's final target's directory is watched too, and a watched
//!   directory whose path comes to resolve elsewhere (a re-pointed
//!   `current -> releases/N` link) is re-watched within seconds. A dangling
//!   link is an absent file; a directory, FIFO, socket or device in the
//!   file's place is reported as [`ChangeKind::Unreadable`], never opened.
//! - Attribution (`fanotify`, `session`, `procfs`, `attribution`): fanotify on
//!   the same directories reports the pid of each writer, which is resolved
//!   through /proc at once (the process may exit right after) and kept a few
//!   seconds, until inotify's change has settled and been hashed.
//! - Continuity (`state`): the last reported state of every path is kept in
//!   a state file, so the next run reports what changed while no agent was
//!   watching ([`ChangeKind::ChangedWhileStopped`]).
//!
//! ```text
//! inotify ──▶ dirs (which paths) ──▶ pending (settle) ──▶ hash ──▶ classify ──▶ FileChange
//! fanotify ──▶ writers ──▶ procfs ──▶ attribution (recent writers) ────────────┘
//! ```
//!
//! Limits: writes through a shared memory mapping raise no event until the
//! file is closed; an intermediate symbolic link other than the parent
//! directory's is not watched; writers are attributed only within the
//! agent's pid namespace, and a process that exits before its event is read
//! is known by pid (and, while a zombie, name and uid) only.

mod attribution;
mod change;
mod dirs;
mod fanotify;
mod hash;
mod inotify;
mod pending;
mod procfs;
mod session;
mod state;
mod watcher;

use std::{io, path::PathBuf, time::Duration};

use change::Observation;
pub use change::{ChangeKind, Evidence, FileChange, FileState, Writer};
pub use watcher::Watcher;

/// A failure the agent cannot watch files through.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No inotify instance.
    #[error(
        "cannot create an inotify instance: {0} (raise the sysctl fs.inotify.max_user_instances)"
    )]
    Inotify(#[source] io::Error),
    /// The state file's directory is missing or is not a directory.
    #[error(
        "the watch state file {path} cannot be kept: {source} (create its directory, or point the agent's state directory elsewhere)"
    )]
    StateDir {
        /// The state file.
        path: PathBuf,
        /// Why its directory is unusable.
        source: io::Error,
    },
    /// The state file could not be written when watching started.
    #[error(
        "cannot write the watch state file {path}: {source} (check that its directory is writable and not full)"
    )]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// Why it could not be written.
        source: io::Error,
    },
    /// The inotify descriptor could not be registered with the runtime.
    #[error(
        "cannot register the inotify descriptor with tokio: {0} (run the watcher inside a tokio runtime with I/O enabled)"
    )]
    Register(#[source] io::Error),
    /// Reading inotify events failed.
    #[error("reading inotify events failed: {0}")]
    Read(#[source] io::Error),
    /// The blocking task that hashes files panicked.
    #[error("the file-hashing task failed: {0}")]
    Hashing(String),
}

/// How writers are attributed (fanotify; needs CAP_SYS_ADMIN).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttributionMode {
    /// [`AttributionMode::Names`], or [`AttributionMode::Descriptors`] on
    /// kernels without it.
    #[default]
    Auto,
    /// Directory handle and entry name for writes, creations, deletions and
    /// renames (`FAN_REPORT_DFID_NAME`, Linux 5.9+): the process that renamed
    /// a file over the watched one, or deleted it, is known.
    Names,
    /// A descriptor of each written file (any fanotify kernel): writes only;
    /// a rename over the watched file is attributed to the latest writer of
    /// another file in the same directory ([`Evidence::Directory`]).
    Descriptors,
    /// No attribution.
    Off,
}

/// Tuning; the defaults suit config files.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Quiet time after a path's last event before it is hashed, so one
    /// change made of several events is reported once, with its final
    /// content. Default 100 ms.
    pub settle: Duration,
    /// Longest time from a path's first event to its hashing, for files
    /// written continuously. Default 1 s.
    pub max_delay: Duration,
    /// How writers are attributed.
    pub attribution: AttributionMode,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            settle: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            attribution: AttributionMode::Auto,
        }
    }
}

/// A path and a reason (a path not watched, or not attributed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathNote {
    /// The path as configured (made absolute when possible).
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// What [`Watcher::new`] found.
#[derive(Clone, Debug)]
pub struct Startup {
    /// Every watched path and its content identity now (`None`: absent or
    /// unreadable), in the order given, for the agent-start record.
    pub current: Vec<(PathBuf, Option<FileState>)>,
    /// Watched paths where something exists whose content cannot be hashed
    /// (a directory, a FIFO, a read error), and why.
    pub unreadable: Vec<PathNote>,
    /// Changes made while no watcher was running: paths whose identity
    /// differs from what the previous run last reported. Paths the previous
    /// run did not watch are not compared.
    pub changes: Vec<FileChange>,
    /// Paths that are not watched, and why (e.g. a missing parent directory).
    pub skipped: Vec<PathNote>,
    /// Watched paths whose writers will not be attributed, and why (e.g.
    /// fanotify refused for lack of CAP_SYS_ADMIN).
    pub unattributed: Vec<PathNote>,
    /// Set when a state file exists but could not be used: changes made
    /// while stopped could not be checked.
    pub state_problem: Option<String>,
    /// No state file existed: nothing to compare with.
    pub first_run: bool,
}
