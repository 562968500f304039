//! One state directory is one agent, and one agent id is one chain.
//!
//! - The state directory is locked (`flock` on `<dir>/agent.lock`) for the
//!   life of the run. Two agents on one state directory share `agent.id`,
//!   `audit.head` and the signing key: each would number its own records
//!   under the same id, and their trails together are a fork. The spool's
//!   own lock does not catch this when each agent has its own spool.
//! - A state directory is created only when its parent exists: a mistyped
//!   `--state-dir` must be an error, not a new agent identity.
//! - An id whose head is lost is not continued. Its head is lost when
//!   `agent.id` exists but `audit.head` holds no head of that id and the
//!   spool holds no record: numbering again from 1 under the same id would
//!   fork its chain. The agent refuses to start, unless told `--new-chain`:
//!   then it makes a new id and the new chain's first `agent-start` names
//!   the old one. Likewise when `agent.id` is gone but `audit.head` names
//!   the id it belonged to.
//! - A new id is born with its head: the genesis head, naming the id, is
//!   written (fsynced) before `agent.id`, so an id without a head is always
//!   one that lost it, never one that has not numbered anything yet.
//!
//! [`decide`] is the pure decision; [`StateDir`] does the I/O around it.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use lbwitness_trail::{chain::Head, record::audit::PreviousChain};
use rustix::{fs::FlockOperation, io::Errno};

use super::state::{self, HeadFile, Persisted, StateError};

/// Why the chain's identity could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The state directory and its parent are missing.
    #[error(
        "state directory {dir} does not exist, nor does its parent {parent}: create {parent} \
         first, or correct --state-dir (a new state directory is a new agent identity)"
    )]
    NoParent {
        /// The state directory.
        dir: PathBuf,
        /// Its missing parent.
        parent: PathBuf,
    },
    /// Another process holds the state directory.
    #[error(
        "state directory {dir} is in use by another agent{holder}: one state directory is one \
         agent (its agent.id, audit.head and signing key make one chain). Give each agent its \
         own state directory (--state-dir), and its own spool"
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// ` (pid N)` when the holder wrote its pid.
        holder: String,
    },
    /// An I/O error on the state directory or its lock.
    #[error("state directory {path}: {error}; check the state directory (--state-dir)")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `agent.id` exists but nothing holds its chain's head.
    #[error(
        "the chain of agent {agent_id} cannot be continued: {dir}/agent.id names it, but neither \
         {dir}/audit.head nor the spool holds its head (deleted, or restored without them?). \
         Restore audit.head and the spool from the same backup as agent.id to continue the chain, \
         or start a new chain under a new agent id with `lbwitness run --new-chain` (its \
         agent-start record names {agent_id} as the previous chain)"
    )]
    HeadLost {
        /// The id found.
        agent_id: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// `agent.id` is missing but `audit.head` holds another id's head.
    #[error(
        "{dir}/agent.id is missing, but {dir}/audit.head holds the chain head of agent \
         {agent_id}: restore agent.id (it holds {agent_id}) to continue that chain, or start a \
         new chain under a new agent id with `lbwitness run --new-chain`"
    )]
    IdLost {
        /// The id the head file names.
        agent_id: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// A state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |error| IdentityError::Io {
        path: path.to_owned(),
        error,
    }
}

/// What the head file holds, as far as identity goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadFound {
    /// No valid head.
    None,
    /// A head written before heads named their id: taken as the id's.
    Untagged,
    /// A head of this agent id.
    Of(String),
}

/// What start-up found in the state directory and the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// `agent.id`, when it exists.
    pub agent_id: Option<String>,
    /// The head file's head.
    pub head: HeadFound,
    /// Whether the spool holds any record (intact or declared lost).
    pub spool_records: bool,
}

/// What to do with the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A fresh state directory: make the id (first start).
    First,
    /// Continue the chain of `agent.id`.
    Continue,
    /// Start a new chain under a new id; `previous` is the old id.
    NewChain {
        /// The id whose chain is given up.
        previous: String,
    },
    /// The head of this id is lost and no new chain was asked for.
    HeadLost(String),
    /// `agent.id` is lost but the head file names this id.
    IdLost(String),
}

/// Decides from what was found; `new_chain` is `--new-chain`. The flag
/// only acts on a lost head or id: with an intact chain it is ignored, so a
/// flag left in a unit file never gives up a chain that could continue.
pub fn decide(found: &Found, new_chain: bool) -> Decision {
    let lost = match (&found.agent_id, &found.head) {
        (Some(id), HeadFound::Of(owner)) if owner == id => return Decision::Continue,
        (Some(_), HeadFound::Untagged) => return Decision::Continue,
        // The spool's last record was checked to be this id's.
        (Some(_), _) if found.spool_records => return Decision::Continue,
        (Some(id), _) => Decision::HeadLost(id.clone()),
        (None, HeadFound::Of(owner)) => Decision::IdLost(owner.clone()),
        (None, _) => return Decision::First,
    };
    match lost {
        Decision::HeadLost(previous) | Decision::IdLost(previous) if new_chain => {
            Decision::NewChain { previous }
        }
        lost => lost,
    }
}

/// The state directory, locked for the life of the run.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
    found_id: Option<String>,
    agent_id: String,
}

/// The identity start-up settled on.
#[derive(Debug)]
pub struct Settled {
    /// The chain's agent id.
    pub agent_id: String,
    /// The head to resume from (`None`: start the chain afresh).
    pub persisted: Option<Persisted>,
    /// The chain this one replaced, for the first `agent-start`.
    pub previous_chain: Option<PreviousChain>,
}

const LOCK: &str = "agent.lock";
/// Keeps the replaced id until the new chain's first `agent-start` is out:
/// written before the new `agent.id`, read while the chain is at genesis.
const PREVIOUS: &str = "previous.id";

impl StateDir {
    /// Creates the directory if its parent exists, locks it, and reads
    /// `agent.id` (a fresh id is made, not yet written, when there is none).
    pub fn open(path: &Path) -> Result<Self, IdentityError> {
        create(path)?;
        let lock = lock(path)?;
        let found_id = state::read_agent_id(path)?;
        let agent_id = match &found_id {
            Some(id) => id.clone(),
            None => state::new_agent_id()?,
        };
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
            found_id,
            agent_id,
        })
    }

    /// The id the spool is opened for: `agent.id`, or the one a first start
    /// will write.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Settles the identity once the spool (`spool_records`: whether it
    /// holds any record of this id) and the head file are open: continues,
    /// makes the first id, starts a new chain, or refuses.
    pub fn settle(
        &self,
        head_file: &mut HeadFile,
        persisted: Option<Persisted>,
        spool_records: bool,
        new_chain: bool,
    ) -> Result<Settled, IdentityError> {
        let head = match (persisted, head_file.found_owner()) {
            (None, _) => HeadFound::None,
            (Some(_), None) => HeadFound::Untagged,
            (Some(_), Some(owner)) => HeadFound::Of(owner),
        };
        let found = Found {
            agent_id: self.found_id.clone(),
            head,
            spool_records,
        };
        let decision = decide(&found, new_chain);
        if new_chain && matches!(decision, Decision::First | Decision::Continue) {
            tracing::warn!(
                "--new-chain ignored: no chain head is lost, so there is no chain to replace"
            );
        }
        let genesis = Persisted {
            head: Head::GENESIS,
            durable: 0,
            checkpointed: 0,
            clean: true,
        };
        match decision {
            Decision::Continue => {
                head_file.stamp(&self.agent_id);
                // A head of another id is not ours: the spool decides.
                let persisted = persisted.filter(
                    |_| !matches!(&found.head, HeadFound::Of(owner) if *owner != self.agent_id),
                );
                let previous_chain = self.read_previous()?;
                Ok(Settled {
                    agent_id: self.agent_id.clone(),
                    persisted,
                    previous_chain,
                })
            }
            Decision::First => {
                remove(&self.path.join(PREVIOUS))?;
                head_file.stamp(&self.agent_id);
                if persisted.is_none() {
                    head_file.write(&genesis, true)?;
                }
                state::write_agent_id(&self.path, &self.agent_id)?;
                Ok(Settled {
                    agent_id: self.agent_id.clone(),
                    persisted,
                    previous_chain: None,
                })
            }
            Decision::NewChain { previous } => {
                let reason = if self.found_id.is_some() {
                    "head-lost"
                } else {
                    "id-lost"
                };
                // In this order, a crash anywhere leaves either the old id
                // with no head of its own (refused again) or the new id with
                // its genesis head and the link to the old one.
                let agent_id = state::new_agent_id()?;
                state::write_atomically(
                    &self.path.join(PREVIOUS),
                    format!("{previous} {reason}\n").as_bytes(),
                )?;
                head_file.stamp(&agent_id);
                head_file.write(&genesis, true)?;
                state::write_agent_id(&self.path, &agent_id)?;
                tracing::warn!(
                    previous_agent_id = %previous,
                    agent_id = %agent_id,
                    "--new-chain: the previous chain's head is lost; a new chain starts under a new agent id"
                );
                Ok(Settled {
                    agent_id,
                    persisted: None,
                    previous_chain: Some(PreviousChain {
                        agent_id: previous,
                        reason,
                    }),
                })
            }
            Decision::HeadLost(agent_id) => Err(IdentityError::HeadLost {
                agent_id,
                dir: self.path.clone(),
            }),
            Decision::IdLost(agent_id) => Err(IdentityError::IdLost {
                agent_id,
                dir: self.path.clone(),
            }),
        }
    }

    fn read_previous(&self) -> Result<Option<PreviousChain>, IdentityError> {
        let path = self.path.join(PREVIOUS);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut words = text.split_whitespace();
        let id = words.next().filter(|id| state::is_uuid(id));
        let reason = match words.next() {
            Some("id-lost") => "id-lost",
            _ => "head-lost",
        };
        Ok(id.map(|id| PreviousChain {
            agent_id: id.to_owned(),
            reason,
        }))
    }
}

/// Creates `dir` when its parent exists.
fn create(dir: &Path) -> Result<(), IdentityError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(io(dir)(Errno::NOTDIR.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir)(e)),
    }
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    if !parent.is_dir() {
        return Err(IdentityError::NoParent {
            dir: dir.to_owned(),
            parent: parent.to_owned(),
        });
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(dir)(e)),
        _ => Ok(()),
    }
}

/// Takes an exclusive lock on `<dir>/agent.lock` and writes our pid into it.
fn lock(dir: &Path) -> Result<File, IdentityError> {
    let path = dir.join(LOCK);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    if let Err(e) = rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
        if e != Errno::WOULDBLOCK {
            return Err(io(&path)(e.into()));
        }
        let holder = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .map_or_else(String::new, |pid| format!(" (pid {pid})"));
        return Err(IdentityError::Locked {
            dir: dir.to_owned(),
            holder,
        });
    }
    // The pid is only for the message a second agent gets.
    f.set_len(0).map_err(io(&path))?;
    write!(f, "{}", std::process::id()).map_err(io(&path))?;
    Ok(f)
}

fn remove(path: &Path) -> Result<(), IdentityError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0c988380-51f7-4f0b-9894-7275e8fd63f0";
    const B: &str = "1d988380-51f7-4f0b-9894-7275e8fd63f1";

    fn found(id: Option<&str>, head: HeadFound, spool_records: bool) -> Found {
        Found {
            agent_id: id.map(str::to_owned),
            head,
            spool_records,
        }
    }

    #[test]
    fn decisions() {
        use Decision::*;
        let of = |id: &str| HeadFound::Of(id.to_owned());
        // Fresh directory.
        assert_eq!(decide(&found(None, HeadFound::None, false), false), First);
        assert_eq!(decide(&found(None, HeadFound::None, false), true), First);
        assert_eq!(
            decide(&found(None, HeadFound::Untagged, false), false),
            First
        );
        // Intact chains continue, with or without the flag.
        for new_chain in [false, true] {
            assert_eq!(decide(&found(Some(A), of(A), false), new_chain), Continue);
            assert_eq!(
                decide(&found(Some(A), HeadFound::Untagged, false), new_chain),
                Continue
            );
            assert_eq!(
                decide(&found(Some(A), HeadFound::None, true), new_chain),
                Continue
            );
            assert_eq!(decide(&found(Some(A), of(B), true), new_chain), Continue);
        }
        // Head lost: refused, or a new chain when asked.
        assert_eq!(
            decide(&found(Some(A), HeadFound::None, false), false),
            HeadLost(A.into())
        );
        assert_eq!(
            decide(&found(Some(A), of(B), false), false),
            HeadLost(A.into())
        );
        assert_eq!(
            decide(&found(Some(A), HeadFound::None, false), true),
            NewChain { previous: A.into() }
        );
        // The id lost but its head kept.
        assert_eq!(decide(&found(None, of(B), false), false), IdLost(B.into()));
        assert_eq!(
            decide(&found(None, of(B), false), true),
            NewChain { previous: B.into() }
        );
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lbw-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_missing_parent_is_refused_and_a_locked_dir_too() {
        let d = dir("parent");
        let deep = d.join("missing").join("state");
        let e = StateDir::open(&deep).unwrap_err();
        assert!(matches!(e, IdentityError::NoParent { .. }), "{e}");
        assert!(!d.exists(), "nothing was created");
        std::fs::create_dir(&d).unwrap();
        let s = d.join("state");
        let held = StateDir::open(&s).unwrap();
        let e = StateDir::open(&s).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("one state directory is one agent"), "{text}");
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        drop(held);
        StateDir::open(&s).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn lifecycle_first_lost_and_new_chain() {
        let d = dir("life");
        // First start: the id is written, with its genesis head.
        let s = StateDir::open(&d).unwrap();
        let (mut head, persisted) = HeadFile::open(&d).unwrap();
        let first = s.settle(&mut head, persisted, false, false).unwrap();
        assert_eq!(first.agent_id, s.agent_id());
        drop((s, head));
        let (head, persisted) = HeadFile::open(&d).unwrap();
        assert_eq!(persisted.map(|p| p.head), Some(Head::GENESIS));
        assert_eq!(head.found_owner().as_deref(), Some(first.agent_id.as_str()));
        drop(head);
        // A start that numbered nothing is not a lost head.
        let s = StateDir::open(&d).unwrap();
        let (mut head, persisted) = HeadFile::open(&d).unwrap();
        let again = s.settle(&mut head, persisted, false, false).unwrap();
        assert_eq!(again.agent_id, first.agent_id);
        drop((s, head));
        // The head wiped, the id kept: refused, then a new chain on request.
        std::fs::remove_file(d.join("audit.head")).unwrap();
        let s = StateDir::open(&d).unwrap();
        let (mut head, persisted) = HeadFile::open(&d).unwrap();
        let e = s.settle(&mut head, persisted, false, false).unwrap_err();
        assert!(e.to_string().contains("--new-chain"), "{e}");
        let new = s.settle(&mut head, persisted, false, true).unwrap();
        assert_ne!(new.agent_id, first.agent_id);
        let previous = new.previous_chain.as_ref().unwrap();
        assert_eq!(
            (previous.agent_id.as_str(), previous.reason),
            (first.agent_id.as_str(), "head-lost")
        );
        drop((s, head));
        assert_eq!(
            state::read_agent_id(&d).unwrap().as_deref(),
            Some(new.agent_id.as_str())
        );
        // The next start continues the new chain, still naming the old one
        // while it is at genesis.
        let s = StateDir::open(&d).unwrap();
        let (mut head, persisted) = HeadFile::open(&d).unwrap();
        let next = s.settle(&mut head, persisted, false, false).unwrap();
        assert_eq!(next.agent_id, new.agent_id);
        let linked = next.previous_chain.unwrap();
        assert_eq!(
            (linked.agent_id.as_str(), linked.reason),
            (first.agent_id.as_str(), "head-lost")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
