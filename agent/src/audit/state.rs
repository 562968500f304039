//! What the chain carries across restarts: the agent id, and the head of the
//! chain written ahead of every batch, so that a run killed at any point is
//! continued without reusing a sequence number.
//!
//! The head file holds two fixed-size slots written alternately, each with a
//! checksum, so a write torn by a crash leaves the other slot intact. It is
//! written (to the page cache) before each batch leaves the audit stage —
//! enough for process death, SIGKILL included — and fsynced at every
//! checkpoint and at a clean stop.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use lbwitness_trail::{
    chain::{Hash, Head},
    record::is_agent_id,
};
use sha2::{Digest as _, Sha256};
use uuid::{Builder, Uuid};

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O error on a state file.
    #[error("state file {path}: {error}; check the state directory (--state-dir)")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The output file could not be read back to continue the chain.
    #[error("cannot read back the output {path} to continue the chain: {error}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `agent.id` holds something that is not an id.
    #[error(
        "{path} does not hold an agent id ({found:?}); restore it from backup — replacing it starts a new chain under a new id"
    )]
    BadId {
        /// The file.
        path: PathBuf,
        /// What it holds.
        found: String,
    },
    /// No randomness for a new id.
    #[error("cannot get random bytes from the kernel: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |error| StateError::Io {
        path: path.to_owned(),
        error,
    }
}

fn output(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |error| StateError::Output {
        path: path.to_owned(),
        error,
    }
}

/// Reads `<dir>/agent.id`, creating it with a new random UUID (v4) on first
/// run.
pub fn agent_id(dir: &Path) -> Result<String, StateError> {
    match read_agent_id(dir)? {
        Some(id) => Ok(id),
        None => {
            let id = new_agent_id()?;
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            write_agent_id(dir, &id)?;
            Ok(id)
        }
    }
}

/// Reads `<dir>/agent.id` (`None`: there is none yet).
pub fn read_agent_id(dir: &Path) -> Result<Option<String>, StateError> {
    let path = dir.join("agent.id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if is_uuid(id) {
                Ok(Some(id.to_owned()))
            } else {
                Err(StateError::BadId {
                    path,
                    found: id.chars().take(64).collect(),
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// A new random agent id (UUID v4), not yet written anywhere.
pub fn new_agent_id() -> Result<String, StateError> {
    // The kernel's randomness, asked for here so that its failure is an
    // error rather than `Uuid::new_v4`'s panic.
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| StateError::Random(e.to_string()))?;
    Ok(id_text(Builder::from_random_bytes(b).as_uuid().as_bytes()))
}

/// Writes `<dir>/agent.id` (atomically).
pub fn write_agent_id(dir: &Path, id: &str) -> Result<(), StateError> {
    write_atomically(&dir.join("agent.id"), format!("{id}\n").as_bytes())
}

/// An agent id's 16 bytes (`None`: not an id).
pub fn id_bytes(id: &str) -> Option<[u8; 16]> {
    parse_id(id).map(Uuid::into_bytes)
}

/// The text form of an agent id's 16 bytes: lowercase, hyphenated.
pub fn id_text(b: &[u8; 16]) -> String {
    Uuid::from_bytes(*b).hyphenated().to_string()
}

/// Whether `s` is an agent id: the trail's one form, hyphenated and
/// lowercase ([`is_agent_id`]).
pub fn is_uuid(s: &str) -> bool {
    is_agent_id(s)
}

/// `s` as a UUID when it is in the one form agent ids take
/// (`Uuid::try_parse` alone also takes uppercase, braces, URNs and the
/// plain 32 digits).
fn parse_id(s: &str) -> Option<Uuid> {
    is_agent_id(s).then(|| Uuid::try_parse(s).ok()).flatten()
}

/// Writes `path` via a temporary file, fsync and rename.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all_at(data, 0).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The chain head as last written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persisted {
    /// The last sequence handed on by the audit stage, and its hash.
    pub head: Head,
    /// The last sequence the sink reported durable.
    pub durable: u64,
    /// The sequence of the last checkpoint (0: none yet).
    pub checkpointed: u64,
    /// Written at a clean stop, after the final flush.
    pub clean: bool,
}

const SLOT: u64 = 128;
const MAGIC: &[u8; 8] = b"LBWHEAD1";
/// Where a slot names the agent id whose head it is (16 bytes; zeros in
/// files written before heads were tagged: then it is taken as the id's).
const OWNER: std::ops::Range<usize> = 80..96;

impl Persisted {
    fn encode(&self, generation: u64, owner: Option<[u8; 16]>) -> [u8; SLOT as usize] {
        let mut b = [0u8; SLOT as usize];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.head.sequence.to_le_bytes());
        b[24..56].copy_from_slice(&self.head.hash);
        b[56..64].copy_from_slice(&self.durable.to_le_bytes());
        b[64..72].copy_from_slice(&self.checkpointed.to_le_bytes());
        b[72] = u8::from(self.clean);
        b[OWNER].copy_from_slice(&owner.unwrap_or_default());
        let sum = Sha256::digest(&b[..96]);
        b[96..128].copy_from_slice(&sum);
        b
    }

    fn decode(b: &[u8]) -> Option<(u64, Option<[u8; 16]>, Self)> {
        if b.len() < SLOT as usize || &b[..8] != MAGIC || Sha256::digest(&b[..96])[..] != b[96..128]
        {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let mut hash: Hash = [0; 32];
        hash.copy_from_slice(&b[24..56]);
        let mut owner = [0u8; 16];
        owner.copy_from_slice(&b[OWNER]);
        Some((
            u64_at(8),
            (owner != [0; 16]).then_some(owner),
            Self {
                head: Head {
                    sequence: u64_at(16),
                    hash,
                },
                durable: u64_at(56),
                checkpointed: u64_at(64),
                clean: b[72] == 1,
            },
        ))
    }
}

/// `<state_dir>/audit.head`. Each slot names the agent id whose head it
/// is, so a head is never taken for another id's (a state directory pieced
/// together from two agents' files).
#[derive(Debug)]
pub struct HeadFile {
    path: PathBuf,
    file: File,
    generation: u64,
    /// The id in the slot read at open.
    found_owner: Option<[u8; 16]>,
    /// The id written into every slot from now on.
    owner: Option<[u8; 16]>,
}

impl HeadFile {
    /// Opens (creating) the head file and returns what the previous run left
    /// in it, if anything valid.
    pub fn open(dir: &Path) -> Result<(Self, Option<Persisted>), StateError> {
        let path = dir.join("audit.head");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        let mut buf = vec![0u8; 2 * SLOT as usize];
        let n = read_at_exact(&file, &mut buf, 0).map_err(io(&path))?;
        let best = buf[..n]
            .chunks(SLOT as usize)
            .filter_map(Persisted::decode)
            .max_by_key(|(generation, _, _)| *generation);
        let generation = best.map_or(0, |(g, _, _)| g);
        let found_owner = best.and_then(|(_, owner, _)| owner);
        Ok((
            Self {
                path,
                file,
                generation,
                found_owner,
                owner: found_owner,
            },
            best.map(|(_, _, p)| p),
        ))
    }

    /// The agent id the head read at open belongs to (`None`: no head, or
    /// one written before heads named their id).
    pub fn found_owner(&self) -> Option<String> {
        self.found_owner.as_ref().map(id_text)
    }

    /// Names `agent_id` in every slot written from now on.
    pub fn stamp(&mut self, agent_id: &str) {
        self.owner = id_bytes(agent_id);
    }

    /// Writes `state` into the older slot; with `sync`, makes it durable.
    pub fn write(&mut self, state: &Persisted, sync: bool) -> Result<(), StateError> {
        self.generation += 1;
        let slot = (self.generation % 2) * SLOT;
        self.file
            .write_all_at(&state.encode(self.generation, self.owner), slot)
            .map_err(io(&self.path))?;
        if sync {
            self.file.sync_data().map_err(io(&self.path))?;
        }
        Ok(())
    }
}

/// The last complete record of this agent found in its output file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// The record's head.
    pub head: Head,
    /// The latest checkpoint found near the end, if any.
    pub checkpointed: Option<u64>,
}

/// How far back from the end of the output the tail scan looks for the
/// latest checkpoint. A checkpoint is written at least every
/// `checkpoint_records` records; beyond this the head file's value is used.
const TAIL_SCAN: u64 = 16 << 20;

impl Tail {
    /// An output with no record of this agent.
    pub const EMPTY: Self = Self {
        head: Head::GENESIS,
        checkpointed: None,
    };
}

/// Reads the end of the output file: cuts off a partial last line (a write
/// torn by a crash; it was never a record) and finds the last complete record
/// of `agent_id` ([`Tail::EMPTY`] when there is none, or no file). Returns the
/// tail and how many bytes were cut.
pub fn recover_output(path: &Path, agent_id: &str) -> Result<(Tail, u64), StateError> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Tail::EMPTY, 0)),
        Err(e) => return Err(output(path)(e)),
    };
    let len = file.metadata().map_err(output(path))?.len();
    let start = len.saturating_sub(TAIL_SCAN);
    let mut buf = vec![0u8; (len - start) as usize];
    let n = read_at_exact(&file, &mut buf, start).map_err(output(path))?;
    buf.truncate(n);
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let cut = buf.len() - complete;
    if cut > 0 {
        file.set_len(start + complete as u64)
            .map_err(output(path))?;
        file.sync_all().map_err(output(path))?;
    }
    let mut tail: Option<Tail> = None;
    for line in buf[..complete].rsplit(|b| *b == b'\n') {
        let Some((seq, hash, is_checkpoint)) = parse_tail_line(line, agent_id) else {
            continue;
        };
        match &mut tail {
            None => {
                tail = Some(Tail {
                    head: Head {
                        sequence: seq,
                        hash,
                    },
                    checkpointed: is_checkpoint.then_some(seq),
                });
            }
            Some(t) if is_checkpoint => {
                t.checkpointed = Some(seq);
            }
            Some(_) => {}
        }
        if tail.is_some_and(|t| t.checkpointed.is_some()) {
            break;
        }
    }
    Ok((tail.unwrap_or(Tail::EMPTY), cut as u64))
}

fn read_at_exact(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The chain head a record line ends at (`None`: not a record of
/// `agent_id`).
pub fn tail_of_line(line: &[u8], agent_id: &str) -> Option<Tail> {
    let (sequence, hash, is_checkpoint) = parse_tail_line(line, agent_id)?;
    Some(Tail {
        head: Head { sequence, hash },
        checkpointed: is_checkpoint.then_some(sequence),
    })
}

fn parse_tail_line(line: &[u8], agent_id: &str) -> Option<(u64, Hash, bool)> {
    if line.is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    if v["agent"]["id"].as_str()? != agent_id {
        return None;
    }
    let seq = v["event"]["sequence"].as_u64()?;
    let mut hash: Hash = [0; 32];
    hex::decode_to_slice(v["event"]["hash"].as_str()?, &mut hash).ok()?;
    Some((seq, hash, v["event"]["action"] == "checkpoint"))
}

/// Where a run continues its chain, and what it declares about the previous
/// run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The chain head to continue after.
    pub head: Head,
    /// The last checkpoint's sequence.
    pub checkpointed: u64,
    /// The previous run, when there was one.
    pub previous: Option<PreviousRun>,
}

/// What the restart gap record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreviousRun {
    /// It stopped cleanly.
    pub clean: bool,
    /// The last sequence it knows reached its output.
    pub durable: u64,
    /// Sequences that may be missing: `(first, last)`.
    pub unconfirmed: Option<(u64, u64)>,
}

/// Decides where to continue from the head file and the output's tail
/// (`None`: the output is not a file the agent can read back).
///
/// The output, when this agent owns it, is the truth: records past its last
/// complete line never reached anyone, so their numbers are given again and
/// nothing is missing. Without it (standard output), the run continues after
/// the last number the previous run handed on, and declares the ones it
/// cannot confirm. A tail that is older than what the sink had confirmed
/// durable means the output was truncated by someone else; numbers are then
/// never reused.
pub fn resume(state: Option<Persisted>, tail: Option<Tail>) -> Resume {
    match (state, tail) {
        (None, None) => Resume {
            head: Head::GENESIS,
            checkpointed: 0,
            previous: None,
        },
        (None, Some(t)) if t.head.sequence == 0 => Resume {
            head: Head::GENESIS,
            checkpointed: 0,
            previous: None,
        },
        (None, Some(t)) => Resume {
            head: t.head,
            checkpointed: t.checkpointed.unwrap_or(0),
            previous: Some(PreviousRun {
                clean: false,
                durable: t.head.sequence,
                unconfirmed: None,
            }),
        },
        // The head written when the id was made: the previous run numbered
        // nothing, so there is nothing to declare.
        (Some(s), t) if s.head.sequence == 0 && t.is_none_or(|t| t.head.sequence == 0) => Resume {
            head: Head::GENESIS,
            checkpointed: 0,
            previous: None,
        },
        (Some(s), Some(t)) if t.head.sequence >= s.durable => {
            // The latest checkpoint in the output is the truth. Without one
            // near the end, the head file's is right unless that checkpoint
            // never reached the output; then start coverage from the
            // beginning: an overlap is harmless, a hole is not.
            let checkpointed = t
                .checkpointed
                .unwrap_or(if s.checkpointed <= t.head.sequence {
                    s.checkpointed
                } else {
                    0
                });
            Resume {
                head: t.head,
                checkpointed,
                previous: Some(PreviousRun {
                    clean: s.clean && s.head == t.head,
                    durable: t.head.sequence,
                    unconfirmed: None,
                }),
            }
        }
        (Some(s), _) => Resume {
            head: s.head,
            checkpointed: s.checkpointed,
            previous: Some(PreviousRun {
                clean: s.clean,
                durable: s.durable,
                unconfirmed: (!s.clean && s.durable < s.head.sequence)
                    .then_some((s.durable + 1, s.head.sequence)),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(sequence: u64) -> Head {
        Head {
            sequence,
            hash: [sequence as u8; 32],
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lbw-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn agent_ids_are_lowercase_hyphenated_v4() {
        for _ in 0..64 {
            let id = new_agent_id().unwrap();
            assert!(is_uuid(&id), "{id}");
            let u = Uuid::try_parse(&id).unwrap();
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(is_uuid(id));
        for not in [
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0f8fad5bd9cb469fa16570867728950e",
            "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "",
        ] {
            assert!(!is_uuid(not), "{not}");
        }
    }

    #[test]
    fn agent_id_is_created_once() {
        let d = dir("id");
        let a = agent_id(&d).unwrap();
        assert!(is_uuid(&a), "{a}");
        assert_eq!(agent_id(&d).unwrap(), a);
        std::fs::write(d.join("agent.id"), "nope").unwrap();
        assert!(matches!(agent_id(&d), Err(StateError::BadId { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn head_file_survives_a_torn_slot() {
        let d = dir("head");
        let (mut f, none) = HeadFile::open(&d).unwrap();
        assert_eq!(none, None);
        let s = |n| Persisted {
            head: head(n),
            durable: n - 1,
            checkpointed: 1,
            clean: false,
        };
        f.write(&s(5), false).unwrap();
        f.write(&s(6), false).unwrap();
        drop(f);
        assert_eq!(HeadFile::open(&d).unwrap().1, Some(s(6)));
        // Tear the newer slot (generation 2 lives in slot 0).
        let raw = OpenOptions::new()
            .write(true)
            .open(d.join("audit.head"))
            .unwrap();
        raw.write_all_at(b"garbage", 20).unwrap();
        let (mut f, got) = HeadFile::open(&d).unwrap();
        assert_eq!(got, Some(s(5)));
        // The next write goes to the torn slot, not over the good one.
        f.write(&s(7), true).unwrap();
        assert_eq!(HeadFile::open(&d).unwrap().1, Some(s(7)));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn head_file_names_its_agent() {
        let d = dir("owner");
        let me = "0c988380-51f7-4f0b-9894-7275e8fd63f0";
        let (mut f, _) = HeadFile::open(&d).unwrap();
        assert_eq!(f.found_owner(), None);
        let p = Persisted {
            head: head(3),
            durable: 3,
            checkpointed: 0,
            clean: false,
        };
        f.write(&p, false).unwrap();
        let (mut f, got) = HeadFile::open(&d).unwrap();
        assert_eq!((f.found_owner(), got), (None, Some(p)), "untagged");
        f.stamp(me);
        f.write(&p, true).unwrap();
        let (f, got) = HeadFile::open(&d).unwrap();
        assert_eq!((f.found_owner().as_deref(), got), (Some(me), Some(p)));
        assert_eq!(id_bytes(me).map(|b| id_text(&b)).as_deref(), Some(me));
        assert_eq!(id_bytes("not-an-id"), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn resume_decisions() {
        let state = |s, d, clean| Persisted {
            head: head(s),
            durable: d,
            checkpointed: 3,
            clean,
        };
        let tail = |s, c| Tail {
            head: head(s),
            checkpointed: c,
        };
        // First run.
        assert_eq!(resume(None, None).head, Head::GENESIS);
        assert_eq!(resume(None, Some(Tail::EMPTY)).previous, None);
        // A run that stopped before numbering anything left only the head
        // written with the id: still nothing to declare.
        let genesis = Persisted {
            head: Head::GENESIS,
            durable: 0,
            checkpointed: 0,
            clean: true,
        };
        for tail in [None, Some(Tail::EMPTY)] {
            let r = resume(Some(genesis), tail);
            assert_eq!((r.head, r.previous), (Head::GENESIS, None));
        }
        // Killed before anything reached the output: nothing was durable, so
        // the numbers are given again, from 1.
        let r = resume(Some(state(4, 0, false)), Some(Tail::EMPTY));
        assert_eq!(r.head, Head::GENESIS);
        assert!(r.previous.is_some());
        // An output emptied after records were durable: never reuse.
        assert_eq!(
            resume(Some(state(4, 2, false)), Some(Tail::EMPTY)).head,
            head(4)
        );
        // Clean stop, output intact.
        let r = resume(Some(state(10, 10, true)), Some(tail(10, Some(10))));
        assert_eq!((r.head, r.checkpointed), (head(10), 10));
        assert_eq!(r.previous.unwrap().unconfirmed, None);
        assert!(r.previous.unwrap().clean);
        // Killed with records in flight: continue after the output's tail.
        let r = resume(Some(state(20, 12, false)), Some(tail(15, None)));
        assert_eq!((r.head, r.checkpointed), (head(15), 3));
        assert_eq!(
            r.previous.unwrap(),
            PreviousRun {
                clean: false,
                durable: 15,
                unconfirmed: None
            }
        );
        // A checkpoint assigned but never written is not counted.
        let r = resume(
            Some(Persisted {
                checkpointed: 19,
                ..state(20, 12, false)
            }),
            Some(tail(15, Some(11))),
        );
        assert_eq!(r.checkpointed, 11);
        let r = resume(
            Some(Persisted {
                checkpointed: 19,
                ..state(20, 12, false)
            }),
            Some(tail(15, None)),
        );
        assert_eq!(r.checkpointed, 0);
        // Standard output: declare what may be missing.
        let r = resume(Some(state(20, 12, false)), None);
        assert_eq!(r.head, head(20));
        assert_eq!(r.previous.unwrap().unconfirmed, Some((13, 20)));
        // Output truncated behind the durable mark: never reuse numbers.
        let r = resume(Some(state(20, 12, false)), Some(tail(8, None)));
        assert_eq!(r.head, head(20));
    }

    #[test]
    fn recover_output_cuts_a_torn_line() {
        let d = dir("tail");
        let out = d.join("records.ndjson");
        let line = |seq: u64, action: &str| {
            format!(
                "{{\"agent\":{{\"id\":\"me\"}},\"event\":{{\"action\":\"{action}\",\"hash\":\"{}\",\"sequence\":{seq}}}}}\n",
                hex::encode([seq as u8; 32])
            )
        };
        let text = line(1, "flow") + &line(2, "checkpoint") + &line(3, "flow") + "{\"agent\":{\"id";
        std::fs::write(&out, &text).unwrap();
        let (tail, cut) = recover_output(&out, "me").unwrap();
        assert_eq!(cut, "{\"agent\":{\"id".len() as u64);
        assert_eq!(
            tail,
            Tail {
                head: head(3),
                checkpointed: Some(2)
            }
        );
        assert!(
            std::fs::read_to_string(&out)
                .unwrap()
                .ends_with("\"sequence\":3}}\n")
        );
        assert_eq!(recover_output(&out, "someone-else").unwrap().0, Tail::EMPTY);
        assert_eq!(
            recover_output(&d.join("absent"), "me").unwrap(),
            (Tail::EMPTY, 0)
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
