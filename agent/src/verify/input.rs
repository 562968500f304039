//! Reading the trail: files and directories, streamed line by line.

use std::{
    fs::{self, File},
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::index::Verifier;

/// An input that could not be read (exit code 1).
#[derive(Debug, Error)]
#[error("cannot read {path}: {source}")]
pub struct InputError {
    /// The file or directory.
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> InputError + '_ {
    move |source| InputError {
        path: path.to_owned(),
        source,
    }
}

/// Every regular file named by `paths`: files as given, directories
/// walked recursively (sorted by name; symbolic links to directories are
/// not followed inside a walk, so a loop cannot recurse forever).
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).map_err(at(path))?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(at(dir))?
        .collect::<Result<_, _>>()
        .map_err(at(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(at(&path))?;
        if kind.is_dir() {
            walk(&path, files)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            files.push(path);
        }
    }
    Ok(())
}

/// Streams `reader` into `verifier` as the file `name`, one line at a time,
/// reusing one buffer.
pub fn feed(verifier: &mut Verifier, name: &str, reader: impl Read) -> io::Result<()> {
    let file = verifier.add_file(name);
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut line = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
        let terminated = line.last() == Some(&b'\n');
        if terminated {
            line.pop();
        }
        verifier.push_line(file, number, &line, terminated);
    }
}

/// [`feed`] from the file at `path`.
pub fn feed_file(verifier: &mut Verifier, path: &Path) -> Result<(), InputError> {
    let file = File::open(path).map_err(at(path))?;
    feed(verifier, &path.display().to_string(), file).map_err(at(path))
}
