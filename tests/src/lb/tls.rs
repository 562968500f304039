//! The TLS frontend's certificate: a throwaway CA and a leaf for the
//! frontend's IP address, made with the `openssl` command, plus the PEM
//! bundle HAProxy's `crt` takes (leaf then key) and a rustls client
//! configuration that trusts the CA. (rustls refuses a self-signed CA
//! certificate as a server's own, so the leaf is signed by a CA.)

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;
use rustls::ClientConfig;

use crate::collectors::nats::tls_config;
use crate::{Scratch, run};

/// The frontend's certificate files, removed on drop.
pub struct FrontendCert {
    /// The CA certificate (PEM) to trust.
    pub ca: PathBuf,
    /// Certificate and key in one PEM file, for HAProxy's `crt`.
    pub bundle: PathBuf,
    dir: Scratch,
}

impl FrontendCert {
    /// A certificate for `ip`, valid for a day.
    pub fn new(ip: IpAddr) -> anyhow::Result<Self> {
        let dir = Scratch::path("lb-tls");
        std::fs::create_dir(&dir.0).with_context(|| format!("create {}", dir.as_str()))?;
        let d = &dir.0;
        let file = |name: &str| d.join(name);
        run(openssl_req(d, "ca", "lbw lab CA")
            .args(["-x509", "-days", "1", "-out"])
            .arg(file("ca.pem"))
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]))?;
        run(openssl_req(d, "leaf", &ip.to_string())
            .arg("-out")
            .arg(file("leaf.csr")))?;
        std::fs::write(
            file("leaf.ext"),
            format!(
                "subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            ),
        )?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-in"])
            .arg(file("leaf.csr"))
            .arg("-CA")
            .arg(file("ca.pem"))
            .arg("-CAkey")
            .arg(file("ca.key"))
            .args(["-CAcreateserial", "-extfile"])
            .arg(file("leaf.ext"))
            .arg("-out")
            .arg(file("leaf.pem")))?;
        let bundle = file("bundle.pem");
        let leaf = std::fs::read_to_string(file("leaf.pem"))?;
        let key = std::fs::read_to_string(file("leaf.key"))?;
        std::fs::write(&bundle, leaf + &key)?;
        Ok(Self {
            ca: file("ca.pem"),
            bundle,
            dir,
        })
    }

    /// A rustls client configuration trusting this CA.
    pub fn client_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        tls_config(&self.ca, None)
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

/// `openssl req` making `name.key` (P-256) and a request or certificate
/// for `cn`.
fn openssl_req(dir: &Path, name: &str, cn: &str) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ])
    .arg("-keyout")
    .arg(dir.join(format!("{name}.key")))
    .args(["-subj", &format!("/CN={cn}")]);
    cmd
}
