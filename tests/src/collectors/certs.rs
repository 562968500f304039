//! A test PKI made with the `openssl` command in a temporary directory
//! (removed on drop): a CA, certificates for 127.0.0.1/localhost (valid,
//! expired, for the wrong name), a client certificate, and a second CA that
//! signed none of them. ECDSA P-256 keys in PKCS#8 PEM, which rustls,
//! GnuTLS and OpenSSL all take.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;

use crate::{Scratch, run};

/// When [`Pki::expired`] expired, as rustls' error reports it.
pub const EXPIRED_NOT_AFTER: &str = "2020-02-01T00:00:00Z";

/// A certificate (PEM) and its private key (PEM).
#[derive(Clone, Debug)]
pub struct CertKey {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// The test PKI.
pub struct Pki {
    /// The CA certificate every other certificate here is signed by.
    pub ca: PathBuf,
    /// For `localhost` and `127.0.0.1`, valid for 30 days.
    pub server: CertKey,
    /// For `localhost` and `127.0.0.1`, valid only in January 2020
    /// ([`EXPIRED_NOT_AFTER`]).
    pub expired: CertKey,
    /// Valid, but only for `wrong.example`.
    pub wrong_name: CertKey,
    /// A client certificate (`CN=lbwitness-agent`, clientAuth).
    pub client: CertKey,
    /// Another CA, which signed nothing here: trusting only it makes the
    /// server's certificate one of an unknown issuer.
    pub other_ca: PathBuf,
    dir: Scratch,
}

impl Pki {
    /// Makes the PKI.
    pub fn new() -> anyhow::Result<Self> {
        let dir = Scratch::path("pki");
        std::fs::create_dir(&dir.0).with_context(|| format!("create {}", dir.as_str()))?;
        let d = dir.0.clone();
        let ca = make_ca(&d, "ca", "lbwitness test CA")?;
        let other_ca = make_ca(&d, "other-ca", "lbwitness other CA")?;
        let server_ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
                          extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n";
        let server = make_leaf(&d, "server", "localhost", server_ext, "30")?;
        let expired = make_expired(&d, "expired", "localhost", server_ext)?;
        let wrong_name = make_leaf(
            &d,
            "wrong-name",
            "wrong.example",
            "subjectAltName=DNS:wrong.example\nextendedKeyUsage=serverAuth\n\
             basicConstraints=CA:FALSE\n",
            "30",
        )?;
        let client = make_leaf(
            &d,
            "client",
            "lbwitness-agent",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            "30",
        )?;
        Ok(Self {
            ca: ca.cert,
            server,
            expired,
            wrong_name,
            client,
            other_ca: other_ca.cert,
            dir,
        })
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

fn openssl() -> Command {
    Command::new("openssl")
}

/// A fresh P-256 key and a request (or self-signed certificate) for `cn`.
fn new_key_args(dir: &Path, name: &str, cn: &str) -> Vec<String> {
    let path = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &path("key"),
        "-subj",
        &format!("/CN={cn}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn make_ca(dir: &Path, name: &str, cn: &str) -> anyhow::Result<CertKey> {
    let cert = dir.join(format!("{name}.pem"));
    run(openssl()
        .args(new_key_args(dir, name, cn))
        .args(["-x509", "-days", "30", "-out"])
        .arg(&cert)
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))?;
    Ok(CertKey {
        cert,
        key: dir.join(format!("{name}.key")),
    })
}

/// A leaf signed by `ca` with the extensions `ext` (an `-extfile`), valid
/// for `days` days from now.
fn make_leaf(dir: &Path, name: &str, cn: &str, ext: &str, days: &str) -> anyhow::Result<CertKey> {
    let Request {
        csr,
        ext_file,
        cert,
        key,
    } = request(dir, name, cn, ext)?;
    run(openssl()
        .args(["x509", "-req", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .args(["-CAcreateserial", "-days", days, "-extfile"])
        .arg(&ext_file)
        .arg("-out")
        .arg(&cert))?;
    Ok(CertKey { cert, key })
}

/// The files of one leaf: its key and certificate request (made here),
/// its extensions file (written here) and where its certificate goes.
struct Request {
    csr: PathBuf,
    ext_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes `name`'s key and a request for `cn`, and writes `ext`.
fn request(dir: &Path, name: &str, cn: &str, ext: &str) -> anyhow::Result<Request> {
    let r = Request {
        csr: dir.join(format!("{name}.csr")),
        ext_file: dir.join(format!("{name}.ext")),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&r.ext_file, ext)?;
    run(openssl()
        .args(new_key_args(dir, name, cn))
        .arg("-out")
        .arg(&r.csr))?;
    Ok(r)
}

/// Like [`make_leaf`], valid from 2020-01-01 to [`EXPIRED_NOT_AFTER`]:
/// `openssl x509` (3.0) cannot backdate, `openssl ca` can, given a minimal
/// CA database.
fn make_expired(dir: &Path, name: &str, cn: &str, ext: &str) -> anyhow::Result<CertKey> {
    let Request {
        csr,
        ext_file,
        cert,
        key,
    } = request(dir, name, cn, ext)?;
    let db = dir.join("ca-db");
    std::fs::create_dir_all(&db)?;
    std::fs::write(db.join("index.txt"), "")?;
    std::fs::write(db.join("serial"), "1000\n")?;
    let conf = dir.join("ca.cnf");
    std::fs::write(
        &conf,
        format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\n\
             serial = {db}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
             [any]\ncommonName = supplied\n",
            db = db.display()
        ),
    )?;
    run(openssl()
        .args(["ca", "-batch", "-notext", "-config"])
        .arg(&conf)
        .arg("-cert")
        .arg(dir.join("ca.pem"))
        .arg("-keyfile")
        .arg(dir.join("ca.key"))
        .args([
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
            "-extfile",
        ])
        .arg(&ext_file)
        .arg("-in")
        .arg(&csr)
        .arg("-out")
        .arg(&cert))?;
    Ok(CertKey { cert, key })
}
