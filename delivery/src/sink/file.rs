//! The file sink: NDJSON appended to one file, fsynced before a batch
//! counts as delivered, optionally rotated by size and age with a retention
//! count, reopened after SIGHUP (logrotate's rename); and standard output.
//!
//! Rotation renames the file to `<path>.<UTC time>` (e.g.
//! `records.ndjson.20261202T013000.123Z`, so names sort by age) and starts
//! a new one at `path`; every file holds whole records, so the current file
//! and the rotated ones verify together. New files are mode 0640: records
//! name hosts and clients, which is not for every local user.

use std::{
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::endpoint::{Batch, BoxFuture, Connection, Connector, Guarantee, SinkError};

/// A `file` endpoint as configured.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// The file to append to.
    pub path: PathBuf,
    /// When to start a new file; none: never (reopen on SIGHUP instead).
    pub rotation: Option<Rotation>,
}

/// `rotation` of a file endpoint, and `[output_rotation]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Rotate once the file holds this many bytes (checked before each
    /// batch, so a file may exceed it by one batch).
    pub max_bytes: Option<u64>,
    /// Rotate once the file is this old (checked before each batch; the
    /// agent writes one at least every checkpoint interval).
    pub max_age_secs: Option<u64>,
    /// Rotated files to keep; the oldest beyond this are deleted. None:
    /// keep them all (deleting audit records is the operator's choice).
    pub keep: Option<u32>,
}

impl Rotation {
    /// Checks the values: the key (below the rotation table) and what is
    /// wrong, for the config error.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_bytes.is_none() && self.max_age_secs.is_none() {
            return Err((
                "max_bytes",
                "and max_age_secs are both unset; set at least one, or drop the table".into(),
            ));
        }
        let ranges = [
            ("max_bytes", self.max_bytes, 4096, 1 << 50),
            ("max_age_secs", self.max_age_secs, 1, 366 * 86_400),
            ("keep", self.keep.map(u64::from), 1, 100_000),
        ];
        for (key, value, lo, hi) in ranges {
            if let Some(v) = value.filter(|v| !(lo..=hi).contains(v)) {
                return Err((key, format!("is {v}; allowed {lo} to {hi}")));
            }
        }
        Ok(())
    }

    /// Whether a file of `len` bytes, opened at `opened`, is due at `now`.
    fn due(&self, len: u64, opened: SystemTime, now: SystemTime) -> bool {
        let age = now.duration_since(opened).unwrap_or(Duration::ZERO);
        len > 0
            && (self.max_bytes.is_some_and(|m| len >= m)
                || self
                    .max_age_secs
                    .is_some_and(|s| age >= Duration::from_secs(s)))
    }
}

/// Bumped on SIGHUP; each file connection reopens its path before its
/// next write once it sees a new value (logrotate renames, then signals).
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every file output to reopen its path before its next write.
pub fn reopen_files() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// Makes file "connections": opening the file is the health check.
pub struct FileConnector {
    settings: FileSettings,
    name: String,
}

impl FileConnector {
    /// A connector for `settings`. Checks now that the file can be written,
    /// so an unwritable output fails at start, before anything is attached.
    pub fn try_new(settings: FileSettings) -> Result<Arc<dyn Connector>, OpenError> {
        drop(open_append(&settings.path).map_err(|source| OpenError {
            path: settings.path.clone(),
            source,
        })?);
        let name = format!("file://{}", settings.path.display());
        Ok(Arc::new(Self { settings, name }))
    }
}

/// Why a file endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot write records to {path}: {source}; choose another --output or fix its permissions")]
pub struct OpenError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Cuts a partial last line left by a crash, so the next record starts on a
/// line of its own. Returns the file's length afterwards.
fn cut_partial_line(file: &mut std::fs::File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Lines are records of at most a few KiB; look back far enough.
    let window = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.by_ref().take(window).read_to_end(&mut tail)?;
    let keep = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => len - window + i as u64 + 1,
        None if window == len => 0,
        None => return Ok(len),
    };
    if keep < len {
        tracing::warn!(
            bytes = len - keep,
            "cut a partial last line left by a crash"
        );
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(keep)
}

/// An open output file.
struct Opened {
    file: std::fs::File,
    len: u64,
    /// When the file was made (its birth time; now when unknown): the
    /// start of its age for rotation.
    born: SystemTime,
}

fn open_append(path: &Path) -> std::io::Result<Opened> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    let len = cut_partial_line(&mut file)?;
    let born = file
        .metadata()
        .and_then(|m| m.created())
        .unwrap_or_else(|_| SystemTime::now());
    Ok(Opened { file, len, born })
}

/// The directory holding `path`, for fsyncing a rename.
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `records.ndjson.20261202T013000.123Z` for `records.ndjson` at `now`:
/// names sort by time.
fn rotated_name(path: &Path, now: SystemTime) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_millis(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(stamp);
    PathBuf::from(name)
}

/// Whether `name` is a rotated file of `base` (`base.YYYYMMDDTHHMMSS...`),
/// whatever a later step appended (`.gz`).
fn is_rotated(base: &str, name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() >= 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
}

/// Renames the file at `path` aside, opens a new one there and deletes the
/// oldest rotated files beyond `keep`. The caller has synced the old file.
fn rotate(path: &Path, keep: Option<u32>) -> std::io::Result<Opened> {
    let now = SystemTime::now();
    let mut target = rotated_name(path, now);
    let mut n = 0;
    while target.exists() {
        n += 1;
        target = rotated_name(path, now);
        target.as_mut_os_string().push(format!("-{n}"));
    }
    std::fs::rename(path, &target)?;
    let opened = open_append(path)?;
    let dir = parent(path);
    if let (Some(keep), Some(base)) = (keep, path.file_name().and_then(|n| n.to_str())) {
        let mut rotated: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_rotated(base, n))
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(keep as usize);
        for old in &rotated[..excess] {
            let old = dir.join(old);
            // Retention failing must not fail the write: the next rotation
            // tries again.
            match std::fs::remove_file(&old) {
                Ok(()) => {
                    tracing::info!(file = %old.display(), keep, "deleted the oldest rotated output file")
                }
                Err(error) => {
                    tracing::warn!(file = %old.display(), %error, "cannot delete a rotated output file; retention tries again at the next rotation")
                }
            }
        }
    }
    // The rename, the new file and the deletions must survive a crash.
    std::fs::File::open(dir)?.sync_all()?;
    tracing::info!(path = %path.display(), rotated = %target.display(), "rotated the output file");
    Ok(opened)
}

impl Connector for FileConnector {
    fn endpoint(&self) -> &str {
        &self.name
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::Acknowledged
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SinkError>> {
        Box::pin(async move {
            let generation = REOPEN.load(Ordering::Relaxed);
            let path = self.settings.path.clone();
            let opened = tokio::task::spawn_blocking(move || open_append(&path))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|source| SinkError::Io {
                    endpoint: self.name.clone(),
                    source,
                })?;
            Ok(Box::new(FileConnection {
                name: self.name.clone(),
                settings: self.settings.clone(),
                file: tokio::fs::File::from_std(opened.file),
                len: opened.len,
                born: opened.born,
                generation,
                buf: Vec::new(),
            }) as Box<dyn Connection>)
        })
    }
}

struct FileConnection {
    name: String,
    settings: FileSettings,
    file: tokio::fs::File,
    len: u64,
    born: SystemTime,
    /// The [`REOPEN`] value the open file belongs to.
    generation: u64,
    buf: Vec<u8>,
}

impl FileConnection {
    /// Reopens after SIGHUP, or rotates when due, before a write.
    async fn turn(&mut self) -> std::io::Result<()> {
        let generation = REOPEN.load(Ordering::Relaxed);
        let reopen = generation != self.generation;
        let rotation = self
            .settings
            .rotation
            .filter(|r| r.due(self.len, self.born, SystemTime::now()));
        if !reopen && rotation.is_none() {
            return Ok(());
        }
        // Everything written so far is on disk before the file is let go.
        self.file.sync_all().await?;
        let path = self.settings.path.clone();
        let opened = tokio::task::spawn_blocking(move || match rotation {
            Some(r) if !reopen => rotate(&path, r.keep),
            _ => open_append(&path),
        })
        .await
        .map_err(std::io::Error::other)??;
        if reopen {
            tracing::info!(path = %self.settings.path.display(), "reopened the output file (SIGHUP)");
        }
        self.generation = generation;
        self.file = tokio::fs::File::from_std(opened.file);
        self.len = opened.len;
        self.born = opened.born;
        Ok(())
    }

    async fn write(&mut self, batch: &Batch) -> std::io::Result<()> {
        self.turn().await?;
        self.buf.clear();
        for e in &batch.entries {
            self.buf.extend_from_slice(&e.line);
            self.buf.push(b'\n');
        }
        self.file.write_all(&self.buf).await?;
        self.file.flush().await?;
        // Delivered means on disk.
        self.file.sync_data().await?;
        self.len += self.buf.len() as u64;
        Ok(())
    }
}

impl Connection for FileConnection {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.write(batch).await.map_err(|source| SinkError::Io {
                endpoint: self.name.clone(),
                source,
            })
        })
    }
}

/// Standard output: written and flushed, never acknowledged.
///
/// A pipe whose reader has exited never takes data again, so the first
/// EPIPE ends this output for the rest of the run: the send fails with
/// [`SinkError::Closed`] and so does every later connect, so the group
/// neither retries nor probes it, and what it did not take stays in the
/// spool for the next run.
#[derive(Default)]
pub struct StdoutConnector {
    closed: Arc<AtomicBool>,
}

fn stdout_closed() -> SinkError {
    SinkError::Closed {
        endpoint: "stdout".into(),
        detail: "standard output was closed (its reader exited); this output has ended for \
                 this run. Records not written stay in the spool and go out when the agent \
                 next starts with a reader on its standard output"
            .into(),
    }
}

impl Connector for StdoutConnector {
    fn endpoint(&self) -> &str {
        "stdout"
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::Written
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, SinkError>> {
        Box::pin(async {
            if self.closed.load(Ordering::Relaxed) {
                return Err(stdout_closed());
            }
            Ok(Box::new(StdoutConnection {
                out: tokio::io::stdout(),
                buf: Vec::new(),
                closed: self.closed.clone(),
            }) as Box<dyn Connection>)
        })
    }
}

struct StdoutConnection {
    out: tokio::io::Stdout,
    buf: Vec<u8>,
    closed: Arc<AtomicBool>,
}

impl Connection for StdoutConnection {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.buf.clear();
            for e in &batch.entries {
                self.buf.extend_from_slice(&e.line);
                self.buf.push(b'\n');
            }
            let written = async {
                self.out.write_all(&self.buf).await?;
                self.out.flush().await
            };
            match written.await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    self.closed.store(true, Ordering::Relaxed);
                    Err(stdout_closed())
                }
                Err(source) => Err(SinkError::Io {
                    endpoint: "stdout".into(),
                    source,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sink::endpoint::Entry;

    fn batch(seqs: std::ops::RangeInclusive<u64>) -> Batch {
        Batch {
            agent_id: "a".into(),
            entries: seqs
                .map(|s| Entry {
                    sequence: s,
                    line: Bytes::from(format!("{{\"seq\":{s}}}")),
                })
                .collect(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lbw-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn appends_after_cutting_a_torn_line() {
        let d = dir("torn");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("out.ndjson");
        std::fs::write(&path, "{\"seq\":1}\n{\"seq\":2").unwrap();
        let c = FileConnector::try_new(FileSettings {
            path: path.clone(),
            rotation: None,
        })
        .unwrap();
        let mut conn = c.connect().await.unwrap();
        conn.send(&batch(2..=3)).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}\n"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_at_most_keep_files() {
        let d = dir("rotate");
        let path = d.join("out.ndjson");
        let rotation = Rotation {
            max_bytes: Some(25),
            max_age_secs: None,
            keep: Some(2),
        };
        rotation.check().unwrap_err(); // 25 < 4096: the config refuses it
        let c = FileConnector::try_new(FileSettings {
            path: path.clone(),
            rotation: Some(rotation),
        })
        .unwrap();
        let mut conn = c.connect().await.unwrap();
        // 20 bytes a batch: every second batch starts a new file, so ten
        // batches make five files, of which the newest three stay.
        for first in (1u64..=20).step_by(2) {
            conn.send(&batch(first..=first + 1)).await.unwrap();
            // Rotated names have millisecond stamps.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let names = names(&d);
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "out.ndjson");
        assert!(
            names[1..].iter().all(|n| is_rotated("out.ndjson", n)),
            "{names:?}"
        );
        // The newest records, in order: 9..=20 (1..=8 were deleted).
        let all: String = names[1..]
            .iter()
            .chain(&names[..1])
            .map(|n| std::fs::read_to_string(d.join(n)).unwrap())
            .collect();
        let seqs: Vec<String> = all.lines().map(str::to_owned).collect();
        assert_eq!(seqs.first().map(String::as_str), Some("{\"seq\":9}"));
        assert_eq!(seqs.len(), 12, "{seqs:?}");
        use std::os::unix::fs::PermissionsExt as _;
        for n in &names {
            let mode = std::fs::metadata(d.join(n)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640 & !umask(), "{n}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn umask() -> u32 {
        use rustix::{fs::Mode, process::umask};
        // umask can only be read by swapping it: set it straight back.
        let m = umask(Mode::from_raw_mode(0o022));
        umask(m);
        m.as_raw_mode()
    }

    #[test]
    fn rotation_is_due_by_size_or_age_and_never_when_empty() {
        let r = Rotation {
            max_bytes: Some(100),
            max_age_secs: Some(60),
            keep: None,
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!r.due(99, t, t));
        assert!(r.due(100, t, t));
        assert!(!r.due(1, t, t + Duration::from_secs(59)));
        assert!(r.due(1, t, t + Duration::from_secs(60)));
        assert!(
            !r.due(0, t, t + Duration::from_secs(600)),
            "an empty file stays"
        );
        // A clock stepped back does not rotate.
        assert!(!r.due(1, t, t - Duration::from_secs(600)));
    }

    #[test]
    fn rotated_names_sort_by_time_and_are_recognised() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_175_000_123);
        let name = rotated_name(Path::new("/x/records.ndjson"), t);
        assert_eq!(name, Path::new("/x/records.ndjson.20261202T013000.123Z"));
        let later = rotated_name(Path::new("/x/records.ndjson"), t + Duration::from_secs(1));
        assert!(later > name);
        assert!(is_rotated(
            "records.ndjson",
            "records.ndjson.20261202T013000.123Z"
        ));
        assert!(is_rotated(
            "records.ndjson",
            "records.ndjson.20261202T013000.123Z.gz"
        ));
        assert!(!is_rotated("records.ndjson", "records.ndjson.1"));
        assert!(!is_rotated("records.ndjson", "records.ndjson"));
        assert!(!is_rotated(
            "records.ndjson",
            "other.ndjson.20261202T013000.123Z"
        ));
    }

    #[test]
    fn rotation_settings_are_checked() {
        let r = |max_bytes, max_age_secs, keep| Rotation {
            max_bytes,
            max_age_secs,
            keep,
        };
        assert!(r(Some(1 << 20), None, Some(5)).check().is_ok());
        assert!(r(None, Some(3600), None).check().is_ok());
        assert_eq!(r(None, None, Some(5)).check().unwrap_err().0, "max_bytes");
        assert_eq!(r(Some(100), None, None).check().unwrap_err().0, "max_bytes");
        assert_eq!(
            r(None, Some(0), None).check().unwrap_err().0,
            "max_age_secs"
        );
        assert_eq!(r(None, Some(60), Some(0)).check().unwrap_err().0, "keep");
    }
}
