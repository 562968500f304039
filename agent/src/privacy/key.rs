//! The pseudonym key: 32 random bytes in `<state_dir>/pseudonym.key`, mode
//! 0600, made on the first start with pseudonyms on and kept across
//! restarts, so a client keeps its pseudonym. Deleting the file rotates
//! it: the next start makes a new key, and from then on every client has
//! a new pseudonym (and records carry the new `lbwitness.privacy.key_id`).

use std::{
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// The key file's name in the state directory.
pub const FILE_NAME: &str = "pseudonym.key";

/// The key's length in bytes.
pub const KEY_BYTES: usize = 32;

/// Why the key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error(
        "pseudonym key {path}: {error}; the agent needs to read it (or, when it is missing, to create it) with pseudonymise_clients on"
    )]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Group or other users may read or write it.
    #[error(
        "{path}: the pseudonym key is accessible to other users (mode {mode:o}); with it anyone can tell which client a pseudonym stands for. Run `chmod 600 {path}`, and delete the file instead if it may have been read (every client then gets a new pseudonym)"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not 32 bytes.
    #[error(
        "{path}: is {len} bytes, not a pseudonym key (exactly {KEY_BYTES} random bytes); restore the right file, or delete it to make a new key (every client then gets a new pseudonym)"
    )]
    Length {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Not a regular file.
    #[error("{0}: is not a regular file; the pseudonym key must be one")]
    NotAFile(PathBuf),
    /// No randomness.
    #[error("cannot get random bytes from the kernel for the pseudonym key: {0}")]
    Random(String),
}

/// Reads the key in `state_dir`, making one first when there is none.
/// Returns the key and whether it was made.
pub fn load_or_create(state_dir: &Path) -> Result<([u8; KEY_BYTES], bool), KeyError> {
    let path = state_dir.join(FILE_NAME);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((create(&path)?, true)),
        Err(error) => Err(KeyError::Io { path, error }),
        Ok(_) => Ok((load(&path)?, false)),
    }
}

/// Reads the key at `path`, refusing one others can read or write.
pub fn load(path: &Path) -> Result<[u8; KEY_BYTES], KeyError> {
    let io = |error| KeyError::Io {
        path: path.to_owned(),
        error,
    };
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile(path.to_owned()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() != KEY_BYTES as u64 {
        return Err(KeyError::Length {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let mut key = [0u8; KEY_BYTES];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(io)?;
    Ok(key)
}

/// Makes a new key at `path`: written to a private temporary file, synced
/// and renamed, so the key is never readable by others, not even for an
/// instant, and never half-written.
fn create(path: &Path) -> Result<[u8; KEY_BYTES], KeyError> {
    let io = |error| KeyError::Io {
        path: path.to_owned(),
        error,
    };
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
    // Durable, directory included, before any pseudonym made with the key
    // is: a power loss must not bring back no key (a new one would change
    // every client's pseudonym without anyone deleting the file).
    lbwitness_trail::keys::write_private(path, &key).map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lbw-pkey-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn made_once_private_and_kept() {
        let d = dir("made");
        let (key, made) = load_or_create(&d).unwrap();
        assert!(made);
        let path = d.join(FILE_NAME);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let (again, made) = load_or_create(&d).unwrap();
        assert!(!made);
        assert_eq!(again, key);
        assert_ne!(key, [0; 32]);
        // Rotation: delete the file, get a new key.
        std::fs::remove_file(&path).unwrap();
        let (rotated, made) = load_or_create(&d).unwrap();
        assert!(made);
        assert_ne!(rotated, key);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files_are_refused_with_what_to_do() {
        let d = dir("bad");
        let path = d.join(FILE_NAME);
        std::fs::write(&path, [1u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&d).unwrap_err();
        assert!(
            matches!(err, KeyError::Exposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create(&d).unwrap_err();
        assert!(matches!(err, KeyError::Length { len: 5, .. }), "{err}");
        assert!(err.to_string().contains("delete it"));
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            load_or_create(&d).unwrap_err(),
            KeyError::NotAFile(_)
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
