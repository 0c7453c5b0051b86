//! Reading PEM files into rustls configurations, with every mistake a [`FileError`]
//! that names the file: missing or unreadable, no certificate in it (an empty chain),
//! no key, a key that does not match the certificate, a certificate outside its
//! validity period. Used at config load and again on every reload.
//!
//! PEM goes through `rustls::pki_types::pem::PemObject` (rustls-pemfile is
//! unmaintained, RUSTSEC-2025-0134, and only wraps it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;

use super::der;

/// One certificate chain and its key, and the SNI names it answers for.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFiles {
    /// The PEM certificate chain, end-entity certificate first.
    pub cert: PathBuf,
    /// The PEM private key of the end-entity certificate.
    pub key: PathBuf,
    /// Exact names (lower case); empty for a certificate that is only the default.
    pub server_names: Vec<String>,
}

/// What a TLS listener is built from; kept so that a reload reads the same files.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFiles {
    /// The first is the default: for clients without SNI or with an unknown name.
    pub certificates: Vec<CertFiles>,
    /// Client certificates are required and verified against this bundle (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{field}: \"{path}\": {reason}")]
pub struct FileError {
    /// The config field the path came from, relative to its TLS table
    /// (`certificates[0].cert`, `client_ca`, `ca`).
    pub field: String,
    /// The file's path.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

fn file_error(field: &str, path: &Path, reason: impl Into<String>) -> FileError {
    FileError {
        field: field.to_string(),
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The one crypto provider in the tree.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2; nothing older.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| file_error(field, path, format!("cannot read: {e}")))
}

/// Every certificate in a PEM file, in order; at least one.
fn read_certificates(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let bytes = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(field, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(field, path, "no CERTIFICATE block in it (an empty chain)"));
    }
    Ok(certs)
}

/// A chain whose every certificate is within its validity period now; returns the
/// chain and the end-entity certificate's expiry (Unix seconds).
pub fn read_chain(field: &str, path: &Path) -> Result<(Vec<CertificateDer<'static>>, i64), FileError> {
    let chain = read_certificates(field, path)?;
    let now = now();
    let mut expiry = i64::MAX;
    for (i, cert) in chain.iter().enumerate() {
        let which = if i == 0 {
            "the certificate".to_string()
        } else {
            format!("certificate {} of the chain", i + 1)
        };
        let validity = der::validity(cert)
            .ok_or_else(|| file_error(field, path, format!("{which} is not a valid X.509 certificate")))?;
        if now < validity.not_before {
            return Err(file_error(
                field,
                path,
                format!("{which} is not valid before {}", der::format(validity.not_before)),
            ));
        }
        if now > validity.not_after {
            return Err(file_error(
                field,
                path,
                format!("{which} expired on {}", der::format(validity.not_after)),
            ));
        }
        if i == 0 {
            expiry = validity.not_after;
        }
    }
    Ok((chain, expiry))
}

pub(crate) fn read_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let bytes = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| file_error(field, path, format!("no usable private key: {e}")))
}

/// `prefix.name`, or `name` at the top of a TLS table.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A chain and its key, checked to belong together; also the key's DER.
fn certified_key(field: &str, files: &CertFiles) -> Result<(CertifiedKey, PrivateKeyDer<'static>, i64), FileError> {
    let cert_field = join(field, "cert");
    let key_field = join(field, "key");
    let (chain, expiry) = read_chain(&cert_field, &files.cert)?;
    let key = read_key(&key_field, &files.key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| file_error(&key_field, &files.key, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok((certified, key, expiry))
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(file_error(
            &key_field,
            &files.key,
            format!("does not match the certificate in \"{}\"", files.cert.display()),
        )),
        Err(e) => Err(file_error(&cert_field, &files.cert, e.to_string())),
    }
}

fn root_store(field: &str, path: &Path) -> Result<RootCertStore, FileError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(field, path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(field, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A loaded listener configuration, and what was learned loading it.
#[derive(Debug, Clone)]
pub struct LoadedServer {
    /// The rustls configuration built from the files.
    pub config: Arc<ServerConfig>,
    /// (certificate label, expiry in Unix seconds), in file order.
    pub expiries: Vec<(String, i64)>,
}

/// Builds a listener's rustls configuration from its files.
pub fn server_config(files: &ServerFiles) -> Result<LoadedServer, FileError> {
    let mut resolver = SniResolver::default();
    let mut expiries = Vec::new();
    for (i, files) in files.certificates.iter().enumerate() {
        let field = format!("certificates[{i}]");
        let (key, _, expiry) = certified_key(&field, files)?;
        let key = Arc::new(key);
        let label = files.server_names.first().cloned().unwrap_or_else(|| "default".into());
        expiries.push((label, expiry));
        let mut check = ResolvesServerCertUsingSni::new();
        for name in &files.server_names {
            // The same check rustls' own SNI resolver makes: the certificate must be
            // valid for the name it is meant to answer for.
            check.add(name, (*key).clone()).map_err(|e| {
                file_error(
                    &format!("{field}.server_names"),
                    &files.cert,
                    format!("not valid for \"{name}\": {e}"),
                )
            })?;
            resolver.by_name.entry(name.clone()).or_insert_with(|| key.clone());
        }
        resolver.default.get_or_insert(key);
    }
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| file_error("certificates", Path::new(""), e.to_string()))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let roots = root_store("client_ca", path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| file_error("client_ca", path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = true;
    Ok(LoadedServer {
        config: Arc::new(config),
        expiries,
    })
}

/// Exact SNI names first, then the default certificate.
#[derive(Debug, Default)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()))
            .or(self.default.as_ref())
            .cloned()
    }
}

/// How a backend leg verifies the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Verify {
    /// Against this CA bundle.
    Ca(PathBuf),
    /// Not at all (labs only; logged loudly).
    Insecure,
}

/// Builds a backend leg's client configuration.
pub fn client_config(verify: &Verify, identity: Option<&CertFiles>) -> Result<Arc<ClientConfig>, FileError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| file_error("ca", Path::new(""), e.to_string()))?;
    let builder = match verify {
        Verify::Ca(path) => builder.with_root_certificates(root_store("ca", path)?),
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider.signature_verification_algorithms))),
    };
    let config = match identity {
        Some(files) => {
            let (certified, key, _) = certified_key("", files)?;
            builder
                .with_client_auth_cert(certified.cert, key)
                .map_err(|e| file_error("key", &files.key, e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `insecure = true`: accepts any server certificate (signatures are still checked,
/// so the handshake itself is sound; only the identity is not).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
