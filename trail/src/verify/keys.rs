//! Trusted public keys: what `lbwitness verify --key` accepts.

use std::{fs, io, path::Path};

use ed25519_dalek::{VerifyingKey, pkcs8::DecodePublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Why a `--key` could not be used.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The argument is neither a file nor 64 hex digits.
    #[error("--key {0}: no such file, and not 64 hex digits of a raw Ed25519 public key")]
    NotFound(String),
    /// The file or argument holds something else.
    #[error("--key {what}: {problem}")]
    Invalid {
        /// The path or argument.
        what: String,
        /// What is wrong with it.
        problem: KeyProblem,
    },
}

/// What is wrong with a key's text.
#[derive(Debug, Error)]
pub enum KeyProblem {
    /// A private key where the public one was expected.
    #[error("this is a private key; give its public half (`openssl pkey -in KEY -pubout`)")]
    Private,
    /// A PEM block that is not an Ed25519 SubjectPublicKeyInfo.
    #[error("not an Ed25519 public key in PEM ({0})")]
    Pem(String),
    /// Neither PEM nor 64 hex digits.
    #[error(
        "expected a `-----BEGIN PUBLIC KEY-----` PEM file or 64 hex digits of a raw Ed25519 public key"
    )]
    Format,
    /// 32 bytes that are not a valid Ed25519 point.
    #[error("the 32 bytes are not a valid Ed25519 public key")]
    Point,
}

/// Reads a `--key` argument: a path to a PEM SubjectPublicKeyInfo file
/// (what `openssl pkey -pubout` and ed25519-dalek's `to_public_key_pem`
/// write) or to a file holding 64 hex digits, or the 64 hex digits
/// themselves.
pub fn read_trusted_key(arg: &str) -> Result<VerifyingKey, KeyError> {
    let path = Path::new(arg);
    let (text, what) = if path.exists() {
        let text = fs::read(path).map_err(|source| KeyError::Read {
            path: arg.to_owned(),
            source,
        })?;
        (text, arg.to_owned())
    } else if arg.len() == 64 && arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        (arg.as_bytes().to_vec(), "argument".to_owned())
    } else {
        return Err(KeyError::NotFound(arg.to_owned()));
    };
    parse_key(&text).map_err(|problem| KeyError::Invalid { what, problem })
}

/// Parses a key's text: PEM SubjectPublicKeyInfo or 64 hex digits
/// (surrounding whitespace allowed).
pub fn parse_key(text: &[u8]) -> Result<VerifyingKey, KeyProblem> {
    let text = std::str::from_utf8(text)
        .map_err(|_| KeyProblem::Format)?
        .trim();
    if text.contains("PRIVATE KEY-----") {
        return Err(KeyProblem::Private);
    }
    if let Some(start) = text.find("-----BEGIN PUBLIC KEY-----") {
        return VerifyingKey::from_public_key_pem(&text[start..])
            .map_err(|e| KeyProblem::Pem(e.to_string()));
    }
    let mut raw = [0u8; 32];
    hex::decode_to_slice(text, &mut raw).map_err(|_| KeyProblem::Format)?;
    VerifyingKey::from_bytes(&raw).map_err(|_| KeyProblem::Point)
}

pub use crate::keys::key_id;

/// Splits `AGENT_ID=PUBKEY` when the part before the first `=` is an agent
/// id (a lowercase UUID), so paths containing `=` still work as keys.
pub fn split_agent(arg: &str) -> Option<(&str, &str)> {
    arg.split_once('=')
        .filter(|(agent, _)| crate::record::is_agent_id(agent))
}

/// [`key_id`] as bytes.
pub(crate) fn key_id_bytes(key: &VerifyingKey) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{
        SigningKey,
        pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding},
    };

    use super::*;

    fn key() -> VerifyingKey {
        SigningKey::from_bytes(&[7; 32]).verifying_key()
    }

    #[test]
    fn pem_and_hex_give_the_same_key() {
        let pem = key().to_public_key_pem(LineEnding::LF).unwrap();
        assert_eq!(parse_key(pem.as_bytes()).unwrap(), key());
        let hex = hex::encode(key().as_bytes());
        assert_eq!(parse_key(hex.as_bytes()).unwrap(), key());
        assert_eq!(
            parse_key(format!("  {}\n", hex.to_uppercase()).as_bytes()).unwrap(),
            key()
        );
    }

    #[test]
    fn openssl_public_key_pem_is_accepted() {
        // `openssl genpkey -algorithm ed25519 | openssl pkey -pubout` output
        // for the RFC 8032 test 1 key.
        let pem = "-----BEGIN PUBLIC KEY-----\n\
                   MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
                   -----END PUBLIC KEY-----\n";
        let k = parse_key(pem.as_bytes()).unwrap();
        assert_eq!(
            hex::encode(k.as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn bad_keys_say_what_to_do() {
        let private = SigningKey::from_bytes(&[7; 32])
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap();
        assert!(matches!(
            parse_key(private.as_bytes()),
            Err(KeyProblem::Private)
        ));
        assert!(matches!(parse_key(b"abcd"), Err(KeyProblem::Format)));
        assert!(matches!(
            parse_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            Err(KeyProblem::Pem(_))
        ));
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(matches!(
            parse_key(hex::encode(off_curve).as_bytes()),
            Err(KeyProblem::Point)
        ));
        assert!(matches!(
            read_trusted_key("/nonexistent/key.pem"),
            Err(KeyError::NotFound(_))
        ));
    }

    #[test]
    fn key_id_is_sha256_of_the_raw_key() {
        let want = hex::encode(Sha256::digest(key().as_bytes()));
        assert_eq!(key_id(&key()), want);
        assert_eq!(key_id(&key()).len(), 64);
    }

    #[test]
    fn reads_files_and_arguments() {
        let dir = std::env::temp_dir().join(format!("lbw-keys-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("k.pem");
        fs::write(&pem, key().to_public_key_pem(LineEnding::LF).unwrap()).unwrap();
        let hex_file = dir.join("k.hex");
        fs::write(&hex_file, format!("{}\n", hex::encode(key().as_bytes()))).unwrap();
        assert_eq!(read_trusted_key(pem.to_str().unwrap()).unwrap(), key());
        assert_eq!(read_trusted_key(hex_file.to_str().unwrap()).unwrap(), key());
        assert_eq!(
            read_trusted_key(&hex::encode(key().as_bytes())).unwrap(),
            key()
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
