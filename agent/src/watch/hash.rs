//! Observing a path: what is there and, for a regular file, its SHA-256.
//!
//! Symbolic links are followed (see [`Observation`]). The content is read in
//! fixed-size chunks, so memory stays bounded whatever the file's size; the
//! caller runs this on a blocking thread.

use std::{
    fs::{self, File, FileType},
    io::{self, Read as _},
    os::unix::fs::FileTypeExt as _,
    path::Path,
};

use sha2::{Digest as _, Sha256};

use super::{FileState, Observation};

/// Read size: large enough to hash at disk speed, small enough to keep
/// memory bounded (64 KiB).
const CHUNK: usize = 64 * 1024;

/// What is at `path` now. Never fails: what cannot be hashed is reported as
/// [`Observation::Unreadable`] with the reason.
pub(crate) fn observe(path: &Path) -> Observation {
    // stat first, so a FIFO is never opened (opening one for reading can
    // block until a writer appears).
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return not_regular(meta.file_type()),
        Ok(_) => {}
        Err(e) => return from_error(&e),
    }
    let file = match open(path) {
        Ok(file) => file,
        Err(e) => return from_error(&e),
    };
    // The path may have been replaced between the stat and the open.
    let meta = match file.metadata() {
        Ok(meta) if !meta.is_file() => return not_regular(meta.file_type()),
        Ok(meta) => meta,
        Err(e) => return from_error(&e),
    };
    match hash(file) {
        Ok((sha256, size)) => Observation::Present(FileState {
            sha256,
            size,
            mtime: meta.modified().ok(),
        }),
        Err(e) => from_error(&e),
    }
}

/// Opens read-only without updating the access time (so the agent leaves no
/// trace a forensic look at atime would mistake for the load balancer's
/// read), and non-blocking in case the path became a FIFO since the stat.
fn open(path: &Path) -> io::Result<File> {
    use rustix::{
        fs::{Mode, OFlags},
        io::Errno,
    };
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags | OFlags::NOATIME, Mode::empty()) {
        // O_NOATIME needs ownership or CAP_FOWNER.
        Err(Errno::PERM) => rustix::fs::open(path, flags, Mode::empty()),
        other => other,
    }?;
    Ok(File::from(fd))
}

/// Streams the file through SHA-256: lowercase hex digest and bytes read.
fn hash(mut file: File) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn from_error(e: &io::Error) -> Observation {
    match e.raw_os_error() {
        // ENOTDIR: a parent component is no longer a directory.
        Some(libc::ENOENT | libc::ENOTDIR) => Observation::Absent,
        _ => Observation::Unreadable {
            reason: e.to_string(),
        },
    }
}

fn not_regular(t: FileType) -> Observation {
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    };
    Observation::Unreadable {
        reason: what.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("lbwitness-hash-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn hashes_content_across_chunks() {
        let dir = Scratch::new("chunks");
        let f = dir.0.join("f");
        // Three chunks and a bit, so chunk boundaries are exercised.
        let content: Vec<u8> = (0..CHUNK * 3 + 7).map(|i| (i % 251) as u8).collect();
        fs::write(&f, &content).unwrap();
        let Observation::Present(state) = observe(&f) else {
            panic!("not present")
        };
        assert_eq!(state.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(state.size, content.len() as u64);
        assert!(state.mtime.is_some());
    }

    #[test]
    fn empty_file_has_the_empty_hash() {
        let dir = Scratch::new("empty");
        let f = dir.0.join("f");
        fs::write(&f, b"").unwrap();
        assert_eq!(
            observe(&f).state().unwrap().sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn follows_symlinks_and_treats_dangling_ones_as_absent() {
        let dir = Scratch::new("links");
        let target = dir.0.join("target");
        let link = dir.0.join("link");
        fs::write(&target, b"x\n").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(observe(&link), observe(&target));
        fs::remove_file(&target).unwrap();
        assert_eq!(observe(&link), Observation::Absent);
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&link, &link).unwrap();
        assert!(matches!(observe(&link), Observation::Unreadable { .. }));
    }

    #[test]
    fn reports_what_is_not_a_file() {
        let dir = Scratch::new("odd");
        assert_eq!(
            observe(&dir.0),
            Observation::Unreadable {
                reason: "a directory".into()
            }
        );
        let fifo = dir.0.join("fifo");
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        assert_eq!(observe(&fifo).unreadable_reason(), Some("a FIFO"));
        assert_eq!(observe(&dir.0.join("none")), Observation::Absent);
        // A parent that is a file, not a directory.
        fs::write(dir.0.join("file"), b"").unwrap();
        assert_eq!(observe(&dir.0.join("file/x")), Observation::Absent);
    }
}
