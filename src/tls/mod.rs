//! rustls configurations: the server side offered to clients, the client side used toward
//! backends. Built from files on every (re)load, so replacing certificates on disk and
//! reloading the configuration (SIGHUP) rotates them without a restart.

mod server_stream;

pub use server_stream::ServerStream;

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
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
    #[error("frontend_tls.ciphers: {0}")]
    Ciphers(String),
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
    let provider = frontend_provider(tls.ciphers.as_deref())?;
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?;
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
    let mut config = builder.with_single_cert(certs, key)?;
    config.ignore_client_order = true;
    // Resumption by stateless tickets (keys rotated every few hours, held in memory only):
    // a returning client skips the key exchange and the signature, however many clients
    // there are — rustls' default keeps 256 sessions in a table instead. One ticket per
    // connection: an application connection resumes at most once per ticket anyway.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// The cryptography offered to clients: the configured suites in their order, or else
/// rustls' defaults with AES-128-GCM ahead of AES-256-GCM; the proxy's order, not the
/// client's, decides. Clients list AES-256 first; with it TLS 1.3 hashes its transcript
/// and derives its keys with SHA-384, which the CPU has no instructions for (SHA-256 has
/// them), and every record takes four more AES rounds. Both are TLS 1.3's standard suites;
/// AES-256 stays offered, and `ciphers` can put it first or leave AES-128 out.
fn frontend_provider(ciphers: Option<&[String]>) -> Result<CryptoProvider, TlsError> {
    use rustls::CipherSuite as S;
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(names) = ciphers else {
        provider.cipher_suites.sort_by_key(|suite| {
            let aes_128 = matches!(
                suite.suite(),
                S::TLS13_AES_128_GCM_SHA256
                    | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            );
            (suite.tls13().is_none(), !aes_128)
        });
        return Ok(provider);
    };
    let known = std::mem::take(&mut provider.cipher_suites);
    for name in names {
        let suite = known
            .iter()
            .find(|s| openssl_name(s.suite()) == *name)
            .ok_or_else(|| {
                let names: Vec<String> = known.iter().map(|s| openssl_name(s.suite())).collect();
                TlsError::Ciphers(format!(
                    "unknown cipher suite {name:?}; known: {}",
                    names.join(":")
                ))
            })?;
        if !provider.cipher_suites.contains(suite) {
            provider.cipher_suites.push(*suite);
        }
    }
    if provider.cipher_suites.is_empty() {
        return Err(TlsError::Ciphers("no cipher suite listed".into()));
    }
    Ok(provider)
}

/// What a client's `SHOW STATUS` says about the proxy's side of its TLS link — the
/// per-connection `Ssl_%` values the server would report for a link it terminated — fixed
/// for one configuration of `frontend_tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    /// `Ssl_cipher_list`: the suites offered, by their OpenSSL names, `:`-separated.
    pub cipher_list: String,
    /// `Ssl_server_not_before` / `_after`: the proxy certificate's validity, as OpenSSL
    /// prints it (`Dec  6 06:31:04 2026 GMT`).
    pub not_before: String,
    pub not_after: String,
    /// Whether a client certificate is asked for (and checked) — `Ssl_verify_mode` 5
    /// (OpenSSL's VERIFY_PEER | CLIENT_ONCE) and an unlimited `Ssl_verify_depth`.
    pub verifies_clients: bool,
}

/// The facts of a `frontend_tls` configuration whose rustls side is `config`.
pub fn link_facts(tls: &FrontendTls, config: &ServerConfig) -> Result<LinkFacts, TlsError> {
    let certs = load_certs("frontend_tls.cert", &tls.cert)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0])
        .map_err(|e| file_error("frontend_tls.cert", &tls.cert, e))?;
    let validity = leaf.validity();
    let cipher_list = config
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| openssl_name(s.suite()))
        .collect::<Vec<_>>()
        .join(":");
    Ok(LinkFacts {
        cipher_list,
        not_before: openssl_time(validity.not_before.timestamp()),
        not_after: openssl_time(validity.not_after.timestamp()),
        verifies_clients: tls.client_ca.is_some(),
    })
}

/// One certificate the proxy loaded, for `stats_tls_certificates` (ProxySQL 3.0's
/// columns) and the expiry metric an alert watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// `server` (presented to clients), `ca` (client certificates must chain to it) or
    /// `backend_ca` (backend certificates must chain to it).
    pub cert_type: &'static str,
    pub file_path: String,
    pub subject_cn: Option<String>,
    pub issuer_cn: Option<String>,
    pub serial_number: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex SHA-256 of the certificate's DER encoding.
    pub sha256_fingerprint: String,
    /// When it was loaded, in Unix seconds.
    pub loaded_at: i64,
}

/// The first certificate of every file the TLS settings name, read as a (re)load reads
/// them.
pub fn certificates(
    frontend: Option<&FrontendTls>,
    backend: Option<&BackendTls>,
) -> Result<Vec<CertificateInfo>, TlsError> {
    let mut files: Vec<(&'static str, &'static str, &Path)> = Vec::new();
    if let Some(f) = frontend {
        files.push(("server", "frontend_tls.cert", &f.cert));
        if let Some(ca) = &f.client_ca {
            files.push(("ca", "frontend_tls.client_ca", ca));
        }
    }
    if let Some(ca) = backend.and_then(|b| b.ca.as_deref()) {
        files.push(("backend_ca", "backend_tls.ca", ca));
    }
    let loaded_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    files
        .into_iter()
        .map(|(cert_type, key, path)| {
            let der = load_certs(key, path)?.swap_remove(0);
            let (_, cert) =
                x509_parser::parse_x509_certificate(&der).map_err(|e| file_error(key, path, e))?;
            let common_name = |name: &x509_parser::x509::X509Name<'_>| {
                name.iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .map(str::to_owned)
            };
            let fingerprint = ring::digest::digest(&ring::digest::SHA256, &der);
            Ok(CertificateInfo {
                cert_type,
                file_path: path.display().to_string(),
                subject_cn: common_name(cert.subject()),
                issuer_cn: common_name(cert.issuer()),
                serial_number: cert.raw_serial_as_string(),
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
                sha256_fingerprint: fingerprint
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect(),
                loaded_at,
            })
        })
        .collect()
}

/// A cipher suite by the name OpenSSL (and so MariaDB's `Ssl_cipher`) gives it; rustls'
/// own name for a suite OpenSSL does not name differently.
pub fn openssl_name(suite: rustls::CipherSuite) -> String {
    use rustls::CipherSuite as S;
    let name = match suite {
        S::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        S::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        S::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => {
            return other
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{other:?}"))
        }
    };
    name.to_string()
}

/// Seconds since the epoch as OpenSSL's `ASN1_TIME_print` writes them, in GMT.
fn openssl_time(timestamp: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, seconds) = (timestamp.div_euclid(86_400), timestamp.rem_euclid(86_400));
    let (year, month, day) = civil_date(days);
    format!(
        "{} {day:>2} {:02}:{:02}:{:02} {year} GMT",
        MONTHS[(month - 1) as usize],
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// The (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's
/// days-to-civil).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn times_print_as_openssl_prints_them() {
        assert_eq!(openssl_time(0), "Jan  1 00:00:00 1970 GMT");
        // 2026-12-06 06:31:04 and 2036-12-03 06:31:04 UTC
        assert_eq!(openssl_time(1_796_538_664), "Dec  6 06:31:04 2026 GMT");
        assert_eq!(openssl_time(2_111_898_664), "Dec  3 06:31:04 2036 GMT");
        assert_eq!(openssl_time(951_782_400), "Feb 29 00:00:00 2000 GMT");
    }

    #[test]
    fn clients_are_offered_tls13_first_and_aes_128_first_within_each_version() {
        use rustls::CipherSuite as S;
        let order: Vec<S> = frontend_provider(None)
            .expect("the defaults")
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(order[0], S::TLS13_AES_128_GCM_SHA256);
        let first_tls12 = order
            .iter()
            .position(|s| !s.as_str().unwrap_or("").starts_with("TLS13"));
        let first_tls12 = first_tls12.expect("TLS 1.2 suites are offered too");
        assert!(order[first_tls12..]
            .iter()
            .all(|s| !s.as_str().unwrap_or("").starts_with("TLS13")));
        assert!(order[first_tls12].as_str().unwrap().contains("AES_128"));
        assert!(
            order.contains(&S::TLS13_AES_256_GCM_SHA384),
            "AES-256 stays offered"
        );
        assert_eq!(
            order.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }

    #[test]
    fn configured_ciphers_are_offered_alone_in_their_order_and_unknown_ones_refused() {
        use rustls::CipherSuite as S;
        let names = ["TLS_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"].map(String::from);
        let order: Vec<S> = frontend_provider(Some(&names))
            .expect("known names")
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            order,
            [
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            ]
        );
        let unknown = ["TLS_AES_256_GCM_SHA384", "AES256-SHA"].map(String::from);
        let err = frontend_provider(Some(&unknown))
            .expect_err("refused")
            .to_string();
        assert!(
            err.starts_with("frontend_tls.ciphers: unknown cipher suite \"AES256-SHA\""),
            "{err}"
        );
        assert!(frontend_provider(Some(&[])).is_err(), "an empty list");
    }

    #[test]
    fn suites_take_their_openssl_names() {
        assert_eq!(
            openssl_name(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            openssl_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
    }
}
