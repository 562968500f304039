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

/// The default longest line (`--max-line-bytes`): records are a few KiB,
/// so 1 MiB is far above any of them, and a run of NUL bytes a power loss
/// left, or a file that is not a trail, costs at most this much memory.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// How a line read by [`read_line`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// At a `\n`.
    Newline,
    /// At the end of the input.
    Eof,
    /// Over the limit, and the input is not to be read further.
    Cut,
}

/// A buffered input that may jump over holes: runs of zeros a sparse file
/// holds without disk blocks (what `truncate -s` or a power loss on some
/// filesystems leaves). Zeros hold no line end, so inside an over-long
/// line a hole is skipped instead of read: an 8 GiB hole costs two
/// syscalls instead of a minute of reading zeros.
trait Input: BufRead {
    /// Moves past a hole starting at the current position (with nothing
    /// buffered); returns how many bytes it skipped.
    fn skip_hole(&mut self) -> io::Result<u64> {
        Ok(0)
    }
}

/// Any reader, without holes.
struct Plain<R>(BufReader<R>);

impl<R: Read> Read for Plain<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> BufRead for Plain<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.0.consume(amount);
    }
}

impl<R: Read> Input for Plain<R> {}

/// Where lseek(2) has SEEK_DATA (Linux 3.1+, the BSDs, macOS, illumos), a
/// hole is skipped.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_vendor = "apple",
    target_os = "solaris",
    target_os = "illumos"
))]
impl Input for BufReader<File> {
    fn skip_hole(&mut self) -> io::Result<u64> {
        use std::io::Seek as _;

        use rustix::{fs::SeekFrom, io::Errno};
        if !self.buffer().is_empty() {
            return Ok(0);
        }
        let pos = self.stream_position()?;
        let next = match rustix::fs::seek(self.get_ref(), SeekFrom::Data(pos)) {
            Ok(data) => data,
            // No data after `pos`: a hole to the end.
            Err(Errno::NXIO) => self.get_ref().metadata()?.len().max(pos),
            // No SEEK_DATA on this filesystem (EINVAL): read the zeros.
            Err(_) => pos,
        };
        self.seek(io::SeekFrom::Start(next))?;
        Ok(next - pos)
    }
}

/// Elsewhere the zeros are read.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_vendor = "apple",
    target_os = "solaris",
    target_os = "illumos"
)))]
impl Input for BufReader<File> {}

/// Reads one line (without its `\n`) into `line`, keeping at most `max`
/// of its bytes; returns its full length and how it ended. With `stop`,
/// reading ends as soon as the line is over `max` ([`End::Cut`]).
fn read_line(
    reader: &mut impl Input,
    line: &mut Vec<u8>,
    max: usize,
    stop: bool,
) -> io::Result<(u64, End)> {
    let mut len = 0u64;
    loop {
        if len > max as u64 {
            len += reader.skip_hole()?;
        }
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((len, End::Eof));
        }
        let (chunk, found) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let room = max.saturating_sub(line.len()).min(chunk.len());
        line.extend_from_slice(&chunk[..room]);
        let taken = chunk.len();
        len += taken as u64;
        reader.consume(taken + usize::from(found));
        if found {
            return Ok((len, End::Newline));
        }
        if stop && len > max as u64 {
            return Ok((len, End::Cut));
        }
    }
}

/// What is wrong with an over-long line, for the report.
fn overlong(offset: u64, len: u64, end: End, max: usize, kept: &[u8]) -> String {
    let nul = if kept.iter().all(|b| *b == 0) {
        " of NUL bytes (as a power loss can leave)"
    } else {
        ""
    };
    let tail = match end {
        End::Cut => "; the input is not a regular file, so reading it stopped there".to_owned(),
        End::Newline | End::Eof => format!(", {len} bytes"),
    };
    format!(
        "a line{nul} longer than the {max}-byte limit at byte offset {offset}{tail}; \
         not a record (--max-line-bytes raises the limit)"
    )
}

/// Streams `reader` into `verifier` as the file `name`, one line at a time,
/// reusing one buffer, with lines up to [`DEFAULT_MAX_LINE`].
pub fn feed(verifier: &mut Verifier, name: &str, reader: impl Read) -> io::Result<()> {
    feed_bounded(verifier, name, reader, DEFAULT_MAX_LINE, false)
}

/// [`feed`] with lines up to `max_line` bytes: a longer line is reported
/// unparsable with its offset, and only its first `max_line` bytes are held,
/// so memory stays bounded whatever the input. With `stop_overlong`, the
/// first over-long line also ends the input: for a device or a pipe, which
/// no file size bounds (`/dev/zero` has no line end at all).
pub fn feed_bounded(
    verifier: &mut Verifier,
    name: &str,
    reader: impl Read,
    max_line: usize,
    stop_overlong: bool,
) -> io::Result<()> {
    let reader = Plain(BufReader::with_capacity(READ_BUFFER, reader));
    feed_input(verifier, name, reader, max_line, stop_overlong)
}

/// Bytes read at a time.
const READ_BUFFER: usize = 256 * 1024;

fn feed_input(
    verifier: &mut Verifier,
    name: &str,
    mut reader: impl Input,
    max_line: usize,
    stop_overlong: bool,
) -> io::Result<()> {
    let file = verifier.add_file(name);
    let mut line = Vec::with_capacity(4096);
    let mut number = 0u64;
    let mut offset = 0u64;
    loop {
        line.clear();
        let (len, end) = read_line(&mut reader, &mut line, max_line, stop_overlong)?;
        if len == 0 && end == End::Eof {
            return Ok(());
        }
        number += 1;
        if len > max_line as u64 {
            let error = overlong(offset, len, end, max_line, &line);
            verifier.push_overlong(file, number, offset, error);
        } else {
            verifier.push_line(file, number, &line, end == End::Newline);
        }
        if end != End::Newline {
            return Ok(());
        }
        offset += len + 1;
    }
}

/// [`feed`] from the file at `path`.
pub fn feed_file(verifier: &mut Verifier, path: &Path) -> Result<(), InputError> {
    feed_path(verifier, path, DEFAULT_MAX_LINE)
}

/// [`feed_bounded`] from `path`: a regular file is read to its end (its
/// size bounds the work), anything else stops at an over-long line.
pub fn feed_path(verifier: &mut Verifier, path: &Path, max_line: usize) -> Result<(), InputError> {
    let file = File::open(path).map_err(at(path))?;
    let name = path.display().to_string();
    if file.metadata().map_err(at(path))?.is_file() {
        let reader = BufReader::with_capacity(READ_BUFFER, file);
        feed_input(verifier, &name, reader, max_line, false)
    } else {
        feed_bounded(verifier, &name, file, max_line, true)
    }
    .map_err(at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `read_line` sees in `input` with limit `max`: (kept, full
    /// length, end).
    fn lines(input: &[u8], max: usize, stop: bool) -> Vec<(Vec<u8>, u64, End)> {
        // A tiny buffer, so lines cross many refills.
        let mut r = Plain(BufReader::with_capacity(3, input));
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let (len, end) = read_line(&mut r, &mut line, max, stop).unwrap();
            if len == 0 && end == End::Eof {
                return out;
            }
            out.push((line, len, end));
            if end != End::Newline {
                return out;
            }
        }
    }

    #[test]
    fn lines_are_kept_up_to_the_limit_and_measured_in_full() {
        let got = lines(b"abc\nabcdefghij\n\nxy", 5, false);
        assert_eq!(
            got,
            [
                (b"abc".to_vec(), 3, End::Newline),
                (b"abcde".to_vec(), 10, End::Newline),
                (Vec::new(), 0, End::Newline),
                (b"xy".to_vec(), 2, End::Eof),
            ]
        );
    }

    #[test]
    fn stop_cuts_an_endless_line() {
        let zeros = std::io::repeat(0).take(1 << 30);
        let mut r = Plain(BufReader::with_capacity(4096, zeros));
        let mut line = Vec::new();
        let (len, end) = read_line(&mut r, &mut line, 100, true).unwrap();
        assert_eq!(end, End::Cut);
        assert!(len > 100 && len < 10_000, "{len}");
        assert_eq!(line.len(), 100);
    }

    #[test]
    fn an_overlong_line_is_unparsable_with_its_offset_and_the_rest_is_read() {
        let mut v = Verifier::new(&[], false);
        let mut input = b"{}\n".to_vec();
        input.extend(std::iter::repeat_n(0u8, 5000));
        input.extend_from_slice(b"\n{}\n");
        feed_bounded(&mut v, "f", &input[..], 4096, false).unwrap();
        let r = v.finish();
        assert_eq!(r.lines, 3);
        assert_eq!(r.unparsable.count, 3, "{:?}", r.unparsable);
        let long = &r.unparsable.items[1];
        assert_eq!((long.line, long.offset), (2, Some(3)));
        assert!(
            long.error.contains("NUL") && long.error.contains("5000 bytes"),
            "{}",
            long.error
        );
    }

    #[test]
    fn holes_in_a_sparse_file_are_skipped_and_counted() {
        let path = std::env::temp_dir().join(format!("lbw-input-sparse-{}", std::process::id()));
        let mut f = File::create(&path).unwrap();
        std::io::Write::write_all(&mut f, b"{}\n").unwrap();
        // 64 GiB of hole, then a line end and one more line.
        f.set_len(3 + (64 << 30)).unwrap();
        std::io::Seek::seek(&mut f, io::SeekFrom::End(0)).unwrap();
        std::io::Write::write_all(&mut f, b"x\n{}\n").unwrap();
        drop(f);
        let mut v = Verifier::new(&[], false);
        let started = std::time::Instant::now();
        feed_path(&mut v, &path, 4096).unwrap();
        let r = v.finish();
        std::fs::remove_file(&path).unwrap();
        // Reading 64 GiB of zeros would take minutes.
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
        assert_eq!(r.lines, 3);
        let long = &r.unparsable.items[1];
        assert_eq!((long.line, long.offset), (2, Some(3)));
        assert!(
            long.error.contains(&format!("{} bytes", (64u64 << 30) + 1)),
            "{}",
            long.error
        );
    }
}
