//! The state file: the observation last reported for every watched path, so
//! that the next run can tell what changed while no agent was watching.
//!
//! ```json
//! {"version":1,"files":[
//!   {"path":"/etc/haproxy/haproxy.cfg","state":"present","sha256":"…","size":1234,
//!    "mtime":{"secs":1700000000,"nanos":0}},
//!   {"path":"/etc/haproxy/extra.cfg","state":"absent"},
//!   {"path":"/etc/haproxy/odd.cfg","state":"unreadable","reason":"a directory"}]}
//! ```

use std::{
    collections::HashMap,
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{FileState, Observation};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    files: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    path: String,
    #[serde(flatten)]
    observation: Stored,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
enum Stored {
    Absent,
    Present {
        sha256: String,
        size: u64,
        mtime: Option<Mtime>,
    },
    Unreadable {
        reason: String,
    },
}

/// Seconds and nanoseconds since the Unix epoch; `secs` is negative (and
/// `nanos` counts forward from it) for times before 1970.
#[derive(Serialize, Deserialize)]
struct Mtime {
    secs: i64,
    nanos: u32,
}

impl Mtime {
    fn from_time(t: SystemTime) -> Option<Self> {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => Some(Self {
                secs: i64::try_from(d.as_secs()).ok()?,
                nanos: d.subsec_nanos(),
            }),
            Err(e) => {
                let before = e.duration();
                let whole = before.as_secs() + u64::from(before.subsec_nanos() > 0);
                let secs = -i64::try_from(whole).ok()?;
                let nanos = (1_000_000_000 - before.subsec_nanos()) % 1_000_000_000;
                Some(Self { secs, nanos })
            }
        }
    }

    fn to_time(&self) -> Option<SystemTime> {
        let nanos = Duration::from_nanos(u64::from(self.nanos));
        if self.secs >= 0 {
            SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(self.secs.unsigned_abs()) + nanos)
        } else {
            SystemTime::UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.secs.unsigned_abs()))?
                .checked_add(nanos)
        }
    }
}

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("not a watch state file: {0}")]
    Json(#[from] serde_json::Error),
    #[error("state file version {0} is not supported (this agent writes version {VERSION})")]
    Version(u32),
    #[error("the entry for {path} has an invalid sha256 {sha256:?}")]
    Hash { path: String, sha256: String },
    #[error("{0} is listed twice")]
    Duplicate(String),
}

/// Serialises the observations (paths must be valid UTF-8; the watcher
/// refuses others).
pub(crate) fn encode<'a>(files: impl IntoIterator<Item = (&'a Path, &'a Observation)>) -> Vec<u8> {
    let files = files
        .into_iter()
        .map(|(path, observation)| Entry {
            path: path.to_string_lossy().into_owned(),
            observation: match observation {
                Observation::Absent => Stored::Absent,
                Observation::Present(s) => Stored::Present {
                    sha256: s.sha256.clone(),
                    size: s.size,
                    mtime: s.mtime.and_then(Mtime::from_time),
                },
                Observation::Unreadable { reason } => Stored::Unreadable {
                    reason: reason.clone(),
                },
            },
        })
        .collect();
    let mut bytes = serde_json::to_vec(&Document {
        version: VERSION,
        files,
    })
    .expect("the state document contains only strings and integers");
    bytes.push(b'\n');
    bytes
}

/// Parses a state file.
pub(crate) fn decode(bytes: &[u8]) -> Result<HashMap<PathBuf, Observation>, FormatError> {
    let doc: Document = serde_json::from_slice(bytes)?;
    if doc.version != VERSION {
        return Err(FormatError::Version(doc.version));
    }
    let mut out = HashMap::with_capacity(doc.files.len());
    for entry in doc.files {
        let observation = match entry.observation {
            Stored::Absent => Observation::Absent,
            Stored::Present {
                sha256,
                size,
                mtime,
            } => {
                if !is_sha256_hex(&sha256) {
                    return Err(FormatError::Hash {
                        path: entry.path,
                        sha256,
                    });
                }
                Observation::Present(FileState {
                    sha256,
                    size,
                    mtime: mtime.as_ref().and_then(Mtime::to_time),
                })
            }
            Stored::Unreadable { reason } => Observation::Unreadable { reason },
        };
        if out
            .insert(PathBuf::from(&entry.path), observation)
            .is_some()
        {
            return Err(FormatError::Duplicate(entry.path));
        }
    }
    Ok(out)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the previous run left.
pub(crate) enum Previous {
    /// No state file: nothing to compare with.
    None,
    /// The previous run's observations.
    Loaded(HashMap<PathBuf, Observation>),
    /// A state file that could not be read or parsed, and why.
    Unusable(String),
}

/// Reads the state file.
pub(crate) fn load(path: &Path) -> Previous {
    match fs::read(path) {
        Ok(bytes) => match decode(&bytes) {
            Ok(map) => Previous::Loaded(map),
            Err(e) => Previous::Unusable(format!("{}: {e}", path.display())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Previous::None,
        Err(e) => Previous::Unusable(format!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces the state file atomically: writes `<path>.tmp`, syncs it, renames
/// it over `path` and syncs the directory, so a crash leaves the old or the
/// new file, never a torn one.
pub(crate) fn save(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(PathBuf, Observation)> {
        vec![
            (
                "/etc/haproxy/haproxy.cfg".into(),
                Observation::Present(FileState {
                    sha256: "ab".repeat(32),
                    size: 12,
                    mtime: Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
                }),
            ),
            ("/etc/haproxy/extra.cfg".into(), Observation::Absent),
            (
                "/etc/haproxy/odd.cfg".into(),
                Observation::Unreadable {
                    reason: "a directory".into(),
                },
            ),
        ]
    }

    #[test]
    fn round_trips() {
        let files = sample();
        let bytes = encode(files.iter().map(|(p, o)| (p.as_path(), o)));
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        for (path, observation) in &files {
            assert_eq!(&back[path], observation);
        }
    }

    #[test]
    fn the_format_is_the_documented_one() {
        let text = String::from_utf8(encode([(
            Path::new("/x"),
            &Observation::Unreadable {
                reason: "a FIFO".into(),
            },
        )]))
        .unwrap();
        assert_eq!(
            text,
            "{\"version\":1,\"files\":[{\"path\":\"/x\",\"state\":\"unreadable\",\"reason\":\"a FIFO\"}]}\n"
        );
    }

    #[test]
    fn times_before_the_epoch_survive() {
        for t in [
            SystemTime::UNIX_EPOCH - Duration::new(10, 250),
            SystemTime::UNIX_EPOCH - Duration::from_secs(3),
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::new(1, 999_999_999),
        ] {
            let m = Mtime::from_time(t).unwrap();
            assert!(m.nanos < 1_000_000_000);
            assert_eq!(m.to_time(), Some(t), "{t:?}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_trust() {
        for (bytes, needle) in [
            (&b"not json"[..], "not a watch state file"),
            (br#"{"version":2,"files":[]}"#, "version 2"),
            (
                br#"{"version":1,"files":[{"path":"/x","state":"present","sha256":"ABC","size":1,"mtime":null}]}"#,
                "invalid sha256",
            ),
            (
                br#"{"version":1,"files":[{"path":"/x","state":"absent"},{"path":"/x","state":"absent"}]}"#,
                "listed twice",
            ),
            (
                br#"{"version":1,"files":[{"path":"/x","state":"gone"}]}"#,
                "not a watch state file",
            ),
        ] {
            let err = decode(bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
