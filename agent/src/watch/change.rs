//! What is at a watched path, and the pure decision of what changed.

use std::{path::PathBuf, time::SystemTime};

/// Content identity of a regular file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    /// SHA-256 of the content, 64 lowercase hex digits.
    pub sha256: String,
    /// Bytes hashed.
    pub size: u64,
    /// Last modification time as the filesystem reports it. Informational
    /// only: `touch` changes it without changing the content, and anyone
    /// can set it, so it takes no part in deciding whether a file changed.
    pub mtime: Option<SystemTime>,
}

/// What is at a watched path. Symbolic links are followed, as the load
/// balancer follows them when it opens its config: the identity is that of
/// the content it would read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Observation {
    /// Nothing: no entry, a dangling symbolic link, or a parent that is no
    /// longer a directory.
    Absent,
    /// A regular file and its content identity.
    Present(FileState),
    /// Something whose content cannot be hashed: a directory, FIFO, socket
    /// or device, a symbolic-link loop, or a file that could not be read.
    Unreadable {
        /// Why, e.g. "a directory" or "Permission denied (os error 13)".
        reason: String,
    },
}

impl Observation {
    /// The content identity, when there is a readable regular file.
    pub(crate) fn state(&self) -> Option<&FileState> {
        match self {
            Self::Present(state) => Some(state),
            Self::Absent | Self::Unreadable { .. } => None,
        }
    }

    /// Why the content could not be hashed, when it could not.
    pub(crate) fn unreadable_reason(&self) -> Option<&str> {
        match self {
            Self::Unreadable { reason } => Some(reason),
            Self::Absent | Self::Present(_) => None,
        }
    }

    /// Same identity: the same content (mtime aside), both absent, or both
    /// unreadable for the same reason.
    pub(crate) fn same_identity(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Absent, Self::Absent) => true,
            (Self::Present(a), Self::Present(b)) => a.sha256 == b.sha256,
            (Self::Unreadable { reason: a }, Self::Unreadable { reason: b }) => a == b,
            _ => false,
        }
    }
}

/// What happened to a watched path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A readable file appeared where there was none.
    Created,
    /// The content changed (or became readable again after being unreadable).
    Modified,
    /// The file, or the unreadable thing in its place, disappeared.
    Deleted,
    /// Something whose content cannot be hashed is now at the path (see
    /// [`FileChange::unreadable`]).
    Unreadable,
    /// Found at start: differs from what the previous run last reported.
    ChangedWhileStopped,
}

impl ChangeKind {
    /// The name used in the audit trail (`lbwitness.file.change`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Unreadable => "unreadable",
            Self::ChangedWhileStopped => "changed-while-stopped",
        }
    }
}

/// How a writer was tied to a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Evidence {
    /// The kernel reported this process writing, creating, renaming onto or
    /// deleting the watched path itself (in the descriptors mode: writing
    /// the file that is at the watched path when the report is read, which
    /// may be a temporary file renamed over it since).
    Path,
    /// The kernel reported this process writing another file in the same
    /// directory shortly before the change. Used only when it cannot report
    /// renames (the fallback fanotify mode): an editor or config-management
    /// tool that writes a temporary file and renames it over the watched one
    /// is the most likely author, but this is an inference, not a fact.
    Directory,
}

impl Evidence {
    /// The name used in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Directory => "directory",
        }
    }
}

/// Who wrote, when the kernel tells us (fanotify). Everything but `pid` is
/// read from /proc when the kernel reports the write, and is `None` when the
/// process had already exited or its entry could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    /// Process id (thread-group id) in the agent's pid namespace.
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub process_name: Option<String>,
    /// `/proc/<pid>/exe`.
    pub executable: Option<String>,
    /// Real user id, from `/proc/<pid>/status`.
    pub uid: Option<u32>,
    /// The user database's name for `uid`.
    pub user_name: Option<String>,
    /// How the process was tied to the change.
    pub evidence: Evidence,
}

/// One change of a watched path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// The watched path, as configured (made absolute).
    pub path: PathBuf,
    /// What happened.
    pub kind: ChangeKind,
    /// The identity last reported for the path; `None` when it was absent or
    /// unreadable.
    pub previous: Option<FileState>,
    /// The identity now; `None` when absent or unreadable.
    pub current: Option<FileState>,
    /// Why the content now at the path cannot be hashed, when it cannot.
    pub unreadable: Option<String>,
    /// When the agent saw the change (hashing time, not the write time).
    pub observed: SystemTime,
    /// Who made the change, when the kernel tells us.
    pub writer: Option<Writer>,
}

/// What changed between two observations of a path while watching, `None`
/// when the identity did not change.
///
/// | previous \ current | absent  | present            | unreadable |
/// |--------------------|---------|--------------------|------------|
/// | absent             | -       | created            | unreadable |
/// | present            | deleted | modified (if hash) | unreadable |
/// | unreadable         | deleted | modified           | unreadable (if reason) |
pub(crate) fn classify(previous: &Observation, current: &Observation) -> Option<ChangeKind> {
    if previous.same_identity(current) {
        return None;
    }
    Some(match (previous, current) {
        (_, Observation::Unreadable { .. }) => ChangeKind::Unreadable,
        (_, Observation::Absent) => ChangeKind::Deleted,
        (Observation::Absent, Observation::Present(_)) => ChangeKind::Created,
        (_, Observation::Present(_)) => ChangeKind::Modified,
    })
}

/// Builds the change record for a path whose identity went from `previous`
/// to `current`.
pub(crate) fn change(
    path: PathBuf,
    kind: ChangeKind,
    previous: &Observation,
    current: &Observation,
    observed: SystemTime,
    writer: Option<Writer>,
) -> FileChange {
    FileChange {
        path,
        kind,
        previous: previous.state().cloned(),
        current: current.state().cloned(),
        unreadable: current.unreadable_reason().map(str::to_owned),
        observed,
        writer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(sha: &str, mtime: u64) -> Observation {
        Observation::Present(FileState {
            sha256: sha.repeat(64),
            size: 1,
            mtime: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(mtime)),
        })
    }

    fn unreadable(reason: &str) -> Observation {
        Observation::Unreadable {
            reason: reason.into(),
        }
    }

    #[test]
    fn the_whole_table() {
        use ChangeKind::*;
        let absent = Observation::Absent;
        let cases = [
            (&absent, &absent, None),
            (&absent, &present("a", 1), Some(Created)),
            (&absent, &unreadable("a directory"), Some(Unreadable)),
            (&present("a", 1), &absent, Some(Deleted)),
            (&present("a", 1), &present("a", 1), None),
            (&present("a", 1), &present("b", 1), Some(Modified)),
            (&present("a", 1), &unreadable("a FIFO"), Some(Unreadable)),
            (&unreadable("a FIFO"), &absent, Some(Deleted)),
            (&unreadable("a FIFO"), &present("a", 1), Some(Modified)),
            (&unreadable("a FIFO"), &unreadable("a FIFO"), None),
            (
                &unreadable("a FIFO"),
                &unreadable("a socket"),
                Some(Unreadable),
            ),
        ];
        for (previous, current, expected) in cases {
            assert_eq!(
                classify(previous, current),
                expected,
                "{previous:?} -> {current:?}"
            );
        }
    }

    #[test]
    fn touching_is_not_a_change() {
        assert_eq!(classify(&present("a", 1), &present("a", 2)), None);
    }

    #[test]
    fn change_carries_both_states_and_the_reason() {
        let now = SystemTime::UNIX_EPOCH;
        let previous = present("a", 1);
        let current = unreadable("a directory");
        let kind = classify(&previous, &current).unwrap();
        let c = change("/f".into(), kind, &previous, &current, now, None);
        assert_eq!(c.kind, ChangeKind::Unreadable);
        assert_eq!(c.previous.as_ref(), previous.state());
        assert_eq!(c.current, None);
        assert_eq!(c.unreadable.as_deref(), Some("a directory"));
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(
            ChangeKind::ChangedWhileStopped.as_str(),
            "changed-while-stopped"
        );
        assert_eq!(ChangeKind::Created.as_str(), "created");
        assert_eq!(Evidence::Directory.as_str(), "directory");
    }
}
