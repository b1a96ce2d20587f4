//! rustls configurations: the server side offered to clients, the client side used toward
//! backends. Built from files on every (re)load, so replacing certificates on disk and
//! reloading the configuration (SIGHUP) rotates them without a restart.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::{BackendTls, FrontendTls};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot load {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("frontend_tls.client_ca: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

fn file_error(key: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no PEM certificate in file"));
    }
    Ok(certs)
}

fn load_roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|e| file_error(key, path, e))?;
    }
    Ok(roots)
}

/// The TLS configuration offered to clients: TLS 1.2 and 1.3 with rustls' default suites.
/// With a client CA, clients may present a certificate, which must then chain to it.
pub fn server_config(tls: &FrontendTls) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs("frontend_tls.cert", &tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| file_error("frontend_tls.key", &tls.key, e))?;
    let builder = ServerConfig::builder();
    let builder = match &tls.client_ca {
        Some(ca) => {
            let roots = load_roots("frontend_tls.client_ca", ca)?;
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}

/// The TLS configuration for backends. Certificates are verified against the configured CA
/// (or the system has none: then nothing verifies and connecting fails), unless verification
/// was explicitly switched off.
pub fn client_config(tls: &BackendTls) -> Result<Arc<ClientConfig>, TlsError> {
    if !tls.verify {
        tracing::warn!(
            "backend_tls.verify = false: backend certificates are NOT verified; \
             anyone on the path to a backend can impersonate it"
        );
        let config = ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification::new()))
            .with_no_client_auth();
        return Ok(Arc::new(config));
    }
    let roots = match &tls.ca {
        Some(ca) => load_roots("backend_tls.ca", ca)?,
        None => RootCertStore::empty(),
    };
    Ok(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Accepts any backend certificate but still checks handshake signatures, so the session
/// is at least bound to the key the backend presented. Only used when the operator said so.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl NoVerification {
    fn new() -> Self {
        NoVerification(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
