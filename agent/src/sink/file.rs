//! The file sink: NDJSON appended to one file, or to numbered segments in a
//! directory that rotate by size, fsynced before a batch counts as
//! delivered; and standard output.

use std::{
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::endpoint::{Batch, BoxFuture, Connection, Connector, Guarantee, SinkError};

/// A `file` endpoint as configured.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// A file to append to; with `rotate_bytes`, a directory of segments.
    pub path: PathBuf,
    /// Start a new segment once the current one holds this many bytes.
    pub rotate_bytes: Option<u64>,
}

/// Makes file "connections": opening the file is the health check.
pub struct FileConnector {
    settings: FileSettings,
    name: String,
}

impl FileConnector {
    /// A connector for `settings`. Checks now that the file (or segment
    /// directory) can be written, so an unwritable output fails at start,
    /// before anything is attached.
    pub fn try_new(settings: FileSettings) -> Result<Arc<dyn Connector>, OpenError> {
        let err = |source| OpenError {
            path: settings.path.clone(),
            source,
        };
        match settings.rotate_bytes {
            None => drop(open_append(&settings.path).map_err(err)?),
            Some(_) => drop(newest_segment(&settings.path).map_err(err)?),
        }
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

fn open_append(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = cut_partial_line(&mut file)?;
    Ok((file, len))
}

/// The segment in `dir` starting at `first` sequence.
fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("lbwitness-{first:020}.ndjson"))
}

/// The newest segment in `dir`, if any.
fn newest_segment(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut newest: Option<PathBuf> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_segment = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("lbwitness-") && n.ends_with(".ndjson"));
        if is_segment && newest.as_ref().is_none_or(|n| path > *n) {
            newest = Some(path);
        }
    }
    Ok(newest)
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
            let settings = self.settings.clone();
            let io = |source| SinkError::Io {
                endpoint: self.name.clone(),
                source,
            };
            let opened = tokio::task::spawn_blocking(move || match settings.rotate_bytes {
                None => open_append(&settings.path).map(Some),
                Some(_) => match newest_segment(&settings.path)? {
                    Some(p) => open_append(&p).map(Some),
                    None => Ok(None),
                },
            })
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
            let (file, len) = match opened {
                Some((f, len)) => (Some(tokio::fs::File::from_std(f)), len),
                None => (None, 0),
            };
            Ok(Box::new(FileConnection {
                name: self.name.clone(),
                settings: self.settings.clone(),
                file,
                len,
                buf: Vec::new(),
            }) as Box<dyn Connection>)
        })
    }
}

struct FileConnection {
    name: String,
    settings: FileSettings,
    /// None until the first segment of an empty directory is made.
    file: Option<tokio::fs::File>,
    len: u64,
    buf: Vec<u8>,
}

impl FileConnection {
    async fn write(&mut self, batch: &Batch) -> std::io::Result<()> {
        if let Some(limit) = self.settings.rotate_bytes
            && (self.file.is_none() || self.len >= limit)
        {
            if let Some(old) = self.file.take() {
                old.sync_all().await?;
            }
            let path = segment_path(&self.settings.path, batch.first_sequence());
            let (f, len) = tokio::task::spawn_blocking(move || open_append(&path))
                .await
                .map_err(std::io::Error::other)??;
            // The new name must survive a crash too.
            std::fs::File::open(&self.settings.path)?.sync_all()?;
            self.file = Some(tokio::fs::File::from_std(f));
            self.len = len;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("no file open"));
        };
        self.buf.clear();
        for e in &batch.entries {
            self.buf.extend_from_slice(&e.line);
            self.buf.push(b'\n');
        }
        file.write_all(&self.buf).await?;
        file.flush().await?;
        // Delivered means on disk.
        file.sync_data().await?;
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

    #[tokio::test]
    async fn appends_after_cutting_a_torn_line() {
        let d = dir("torn");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("out.ndjson");
        std::fs::write(&path, "{\"seq\":1}\n{\"seq\":2").unwrap();
        let c = FileConnector::try_new(FileSettings {
            path: path.clone(),
            rotate_bytes: None,
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
    async fn rotates_segments_by_size() {
        let d = dir("rotate");
        let c = FileConnector::try_new(FileSettings {
            path: d.clone(),
            rotate_bytes: Some(25),
        })
        .unwrap();
        let mut conn = c.connect().await.unwrap();
        for first in [1u64, 3, 5] {
            conn.send(&batch(first..=first + 1)).await.unwrap();
        }
        drop(conn);
        // A new connection continues the newest segment.
        let mut conn = c.connect().await.unwrap();
        conn.send(&batch(7..=7)).await.unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "lbwitness-00000000000000000001.ndjson",
                "lbwitness-00000000000000000005.ndjson"
            ]
        );
        let all: String = names
            .iter()
            .map(|n| std::fs::read_to_string(d.join(n)).unwrap())
            .collect();
        assert_eq!(all.lines().count(), 7);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
