//! The checkpoint signing key: generation, storage with safe permissions,
//! loading. Private keys are PKCS#8 PEM, public keys SubjectPublicKeyInfo
//! PEM, the formats `openssl pkey` reads and writes for Ed25519.
//!
//! Making and loading a private key checks Unix permissions, so those
//! functions exist on Unix only (the agent's side); key ids build anywhere,
//! for the verifier.

use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::{
    fs::OpenOptions,
    io::Write as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
};

use ed25519_dalek::VerifyingKey;
#[cfg(unix)]
use ed25519_dalek::{
    SigningKey,
    pkcs8::{
        DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _,
        spki::der::pem::LineEnding,
    },
};
use sha2::{Digest as _, Sha256};

/// Why a key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("signing key {path}: {error}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Group or other users may read or write the private key.
    #[error(
        "{path}: the signing key is accessible to other users (mode {mode:o}); run `chmod 600 {path}` and make it owned by the agent's user"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a PKCS#8 Ed25519 private key.
    #[error(
        "{path}: not a PKCS#8 PEM Ed25519 private key ({reason}); make one with `lbwitness keygen`"
    )]
    Format {
        /// The key file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// `keygen` would overwrite a key.
    #[error(
        "{0} exists; pass --force to replace it (the old key's public half is still needed to verify old checkpoints)"
    )]
    Exists(PathBuf),
    /// No randomness.
    #[error("cannot get random bytes from the kernel: {0}")]
    Random(String),
}

/// Hex SHA-256 of the 32-byte public key: the `key_id` in checkpoints.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Writes `bytes` to `path` through a private (0600) temporary file that is
/// synced and renamed, then syncs the directory: a key is never readable
/// by others, not even for an instant, never half-written, and once this
/// returns a power loss cannot bring back the old key or none.
#[cfg(unix)]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Where the public half of `private` is written: `<private>.pub`.
pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

#[cfg(unix)]
/// Makes a new key pair at `path` (mode 0600) and `<path>.pub` (0644).
pub fn generate(path: &Path, force: bool) -> Result<SigningKey, KeyError> {
    let io = |error| KeyError::Io {
        path: path.to_owned(),
        error,
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() && !force {
        return Err(KeyError::Exists(path.to_owned()));
    }
    write_private(path, pem.as_bytes()).map_err(io)?;
    let pub_path = public_path(path);
    std::fs::write(&pub_path, public.as_bytes()).map_err(|error| KeyError::Io {
        path: pub_path,
        error,
    })?;
    Ok(key)
}

#[cfg(unix)]
/// Loads the private key at `path`, refusing it when group or other users
/// can read or write it.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |error| KeyError::Io {
        path: path.to_owned(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Format {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(unix)]
/// Loads the key at `path`, making one first when there is none (the way
/// sshd makes host keys). Returns whether it was made.
pub fn load_or_generate(path: &Path) -> Result<(SigningKey, bool), KeyError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((generate(path, false)?, true)),
        _ => Ok((load(path)?, false)),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use ed25519_dalek::pkcs8::DecodePublicKey as _;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lbw-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generate_load_and_refuse_exposed() {
        let d = dir("gen");
        let path = d.join("signing.key");
        let key = generate(&path, false).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&path).unwrap().to_bytes(), key.to_bytes());
        let public = std::fs::read_to_string(public_path(&path)).unwrap();
        assert_eq!(
            VerifyingKey::from_public_key_pem(&public).unwrap(),
            key.verifying_key()
        );
        assert!(matches!(generate(&path, false), Err(KeyError::Exists(_))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::Exposed { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn garbage_is_a_format_error() {
        let d = dir("bad");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("k");
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(&path), Err(KeyError::Format { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn key_id_of_rfc8032_test_1() {
        // RFC 8032 section 7.1, TEST 1; the id computed with
        // `xxd -r -p | sha256sum` over the public key.
        let mut secret = [0u8; 32];
        hex::decode_to_slice(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            &mut secret,
        )
        .unwrap();
        let public = SigningKey::from_bytes(&secret).verifying_key();
        assert_eq!(
            hex::encode(public.as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            key_id(&public),
            "21fe31dfa154a261626bf854046fd2271b7bed4b6abe45aa58877ef47f9721b9"
        );
    }
}
