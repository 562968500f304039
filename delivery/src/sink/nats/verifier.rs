//! The rustls configuration async-nats is given when the `tls` table sets
//! `server_name`: async-nats checks a server's certificate against the
//! URL's host, but an endpoint with a fixed `server_name` (one certificate
//! for the whole cluster, servers reached by IP) must check that name for
//! every server, the configured and the advertised alike.

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

use crate::sink::{
    net::{TlsClient, TlsClientError},
    tls::TlsConfigError,
};

/// `client`'s configuration (trust anchors, client certificate), checking
/// `client.server_name` whatever name the connection asks for.
pub fn with_fixed_name(client: &TlsClient) -> Result<ClientConfig, TlsClientError> {
    let pem = |reason: String| {
        TlsClientError::Files(TlsConfigError::Pem {
            setting: "ca_file",
            what: "CA certificates",
            path: client.ca_file.clone(),
            reason,
        })
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&client.ca_file)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    roots.add_parsable_certificates(certs);
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| pem(e.to_string()))?;
    let mut config = (**client.connector.config()).clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(FixedName {
            inner,
            name: client.server_name.clone(),
        }));
    Ok(config)
}

/// WebPKI verification against one fixed name.
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
