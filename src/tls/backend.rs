//! TLS origination to a backend: [`BackendTls`], the settings (checked when they are
//! made, so a value of this type can always be used), and [`ClientTls`], the
//! reloadable rustls configuration built from them that the data path and the
//! backend's probes share.

use std::io;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::{client, TlsConnector};
use tracing::{info, warn};

use super::load::{self, CertFiles, FileError, Verify};
use crate::metrics as m;

/// How to reach one backend over TLS. Made only by [`BackendTls::new`], which checks
/// the server name and reads every file.
#[derive(Debug, Clone)]
pub struct BackendTls {
    verify: Verify,
    server_name: ServerName<'static>,
    identity: Option<CertFiles>,
    /// Built from the above when the value was made.
    client: Arc<ClientConfig>,
}

/// Why [`BackendTls::new`] refused its settings.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum BackendTlsError {
    /// The server name is neither a DNS name nor an IP address.
    #[error("a DNS name or an IP address, got \"{0}\"")]
    ServerName(String),
    /// A CA bundle, client certificate or key file cannot be used.
    #[error(transparent)]
    File(#[from] FileError),
}

impl BackendTls {
    /// Checks `server_name` (the name the backend's certificate must be valid for, sent
    /// as SNI) and reads the CA bundle and client certificate.
    pub fn new(verify: Verify, server_name: &str, identity: Option<CertFiles>) -> Result<Self, BackendTlsError> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| BackendTlsError::ServerName(server_name.to_string()))?;
        let client = load::client_config(&verify, identity.as_ref())?;
        Ok(BackendTls {
            verify,
            server_name,
            identity,
            client,
        })
    }

    /// How the server's certificate is verified.
    pub fn verify(&self) -> &Verify {
        &self.verify
    }

    /// The name the server's certificate must be valid for.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    /// The client certificate, for backends that require one.
    pub fn identity(&self) -> Option<&CertFiles> {
        self.identity.as_ref()
    }
}

/// Two settings are equal when they name the same files and server; the rustls
/// configuration built from them is not compared, so a certificate renewed under the
/// same path compares equal (its contents are re-read by a TLS reload, not by a diff).
impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.verify, &self.server_name, &self.identity) == (&other.verify, &other.server_name, &other.identity)
    }
}

impl Eq for BackendTls {}

/// TLS origination to one backend. Clones share one configuration, so a reload
/// reaches the data path and the backend's checks at once.
#[derive(Debug, Clone)]
pub struct ClientTls(Arc<ClientInner>);

#[derive(Debug)]
struct ClientInner {
    backend: String,
    settings: BackendTls,
    current: ArcSwap<ClientConfig>,
}

impl ClientTls {
    /// TLS origination to `backend` (its name, for metrics and logs) with `settings`,
    /// starting from the configuration built when they were checked.
    pub fn new(backend: &str, settings: &BackendTls) -> Self {
        ClientTls(Arc::new(ClientInner {
            backend: backend.to_string(),
            current: ArcSwap::new(settings.client.clone()),
            settings: settings.clone(),
        }))
    }

    /// Whether the handshake verifies the server's certificate (not `insecure`): only
    /// then does the MySQL probe trust the leg with the password itself.
    pub fn verifies_server(&self) -> bool {
        self.0.settings.verify != Verify::Insecure
    }

    /// The client side of a handshake on `tcp`; the caller bounds it in time.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<client::TlsStream<TcpStream>> {
        TlsConnector::from(self.0.current.load_full())
            .connect(self.0.settings.server_name.clone(), tcp)
            .await
    }

    /// Re-reads the CA bundle and client certificate; on failure keeps the old ones.
    pub fn reload(&self) -> Result<(), FileError> {
        let settings = &self.0.settings;
        let outcome = load::client_config(&settings.verify, settings.identity.as_ref());
        let label = if outcome.is_ok() { "ok" } else { "failed" };
        metrics::counter!(m::BACKEND_TLS_RELOADS, "backend" => self.0.backend.clone(), "outcome" => label).increment(1);
        match outcome {
            Ok(config) => {
                self.0.current.store(config);
                info!(backend = %self.0.backend, "backend TLS files reloaded");
                Ok(())
            }
            Err(e) => {
                warn!(backend = %self.0.backend, error = %e, "backend TLS reload failed; keeping the previous files");
                Err(e)
            }
        }
    }
}
