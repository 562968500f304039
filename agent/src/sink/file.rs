//! The NDJSON file sink (and standard output).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::Sink;

/// Why the output could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot write records to {path}: {source}; choose another --output or fix its permissions")]
pub struct OpenError {
    /// The output path.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Appends NDJSON to a file or standard output.
pub enum FileSink {
    /// Standard output.
    Stdout(tokio::io::Stdout),
    /// An append-only file, fsynced on every flush.
    File(tokio::fs::File),
}

impl FileSink {
    /// Standard output.
    pub fn stdout() -> Self {
        Self::Stdout(tokio::io::stdout())
    }

    /// Opens `path` for appending, creating it and its directory. Checked at
    /// start-up so an unwritable output fails before anything is attached.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let err = |source| OpenError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(Self::File(tokio::fs::File::from_std(file)))
    }
}

impl Sink for FileSink {
    async fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Stdout(out) => out.write_all(lines).await,
            Self::File(file) => file.write_all(lines).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Stdout(out) => out.flush().await,
            Self::File(file) => {
                file.flush().await?;
                // Records reach the disk before the agent calls them written.
                file.sync_data().await
            }
        }
    }
}
