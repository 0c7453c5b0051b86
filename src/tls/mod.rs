//! TLS on both legs of a session, with rustls (ring only) through tokio-rustls.
//!
//! - [`load`]: PEM files → rustls configurations, each mistake naming its file; run at
//!   config load and on every reload.
//! - [`ServerTls`]: a listener's termination. The configuration sits behind an
//!   `ArcSwap`: a handshake takes the current one, a reload (SIGHUP or the admin call)
//!   swaps in a new one. Live sessions keep the keys they negotiated, so nothing is
//!   dropped; a broken new file keeps the old configuration and says why.
//! - [`BackendTls`] (settings, valid by construction) and [`ClientTls`] (their
//!   reloadable rustls configuration): origination to a backend (data path and
//!   probes), verifying the server against a CA bundle and a configured name, or —
//!   labs only, logged loudly — not at all.
//!
//! TLS 1.2 and 1.3 only. Every handshake runs under a timeout.

mod backend;
pub mod der;
pub mod load;
mod pinned;

use std::io;

use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::Gauge;

use rustls::{ProtocolVersion, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{server, TlsAcceptor};
use tracing::{info, warn};

pub use backend::{BackendTls, BackendTlsError, ClientTls};
pub use load::{CertFiles, FileError, ServerFiles, Verify};
pub use pinned::PinnedKey;

use crate::metrics as m;

/// A listener's TLS termination.
#[derive(Debug)]
pub struct ServerTls {
    listener: String,
    files: ServerFiles,
    current: ArcSwap<ServerConfig>,
    handshake_timeout: Duration,
    /// Lower-case SNI names with a certificate of their own (the metrics label).
    names: ArcSwap<Vec<String>>,
    expiry: Vec<Gauge>,
}

/// A completed handshake.
pub struct Accepted {
    /// The TLS stream, handshake done.
    pub stream: server::TlsStream<TcpStream>,
    /// "TLSv1.3" or "TLSv1.2".
    pub version: &'static str,
    /// The name the client asked for, if any.
    pub sni: Option<String>,
}

/// Why a client's handshake failed; `reason` is the metrics label.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The handshake did not finish within the listener's handshake timeout.
    Timeout,
    /// The client closed the connection (or reset it) mid-handshake.
    Closed(io::Error),
    /// The bytes were not an acceptable TLS handshake: plaintext, garbage, an
    /// unsupported version, a missing or untrusted client certificate.
    Rejected(io::Error),
}

impl HandshakeFailure {
    /// The `reason` metrics label: `timeout`, `closed` or `rejected`.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed(_) => "closed",
            HandshakeFailure::Rejected(_) => "rejected",
        }
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Timeout => f.write_str("handshake timed out"),
            HandshakeFailure::Closed(e) => write!(f, "client went away mid-handshake: {e}"),
            HandshakeFailure::Rejected(e) => write!(f, "handshake rejected: {e}"),
        }
    }
}

fn version_label(version: Option<ProtocolVersion>) -> &'static str {
    match version {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    }
}

impl ServerTls {
    /// Termination for `listener` from its files and the configuration already loaded from
    /// them; sets its `TLS_CERT_EXPIRY` gauges.
    pub fn new(listener: &str, files: ServerFiles, loaded: load::LoadedServer, handshake_timeout: Duration) -> Self {
        let names = files
            .certificates
            .iter()
            .flat_map(|c| c.server_names.iter().cloned())
            .collect();
        let expiry = loaded
            .expiries
            .iter()
            .map(|(label, _)| {
                metrics::gauge!(m::TLS_CERT_EXPIRY, "listener" => listener.to_string(), "certificate" => label.clone())
            })
            .collect();
        let tls = ServerTls {
            listener: listener.to_string(),
            files,
            current: ArcSwap::new(loaded.config.clone()),
            handshake_timeout,
            names: ArcSwap::from_pointee(names),
            expiry,
        };
        tls.publish_expiry(&loaded);
        tls
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    fn publish_expiry(&self, loaded: &load::LoadedServer) {
        for (gauge, (label, expiry)) in self.expiry.iter().zip(&loaded.expiries) {
            gauge.set(*expiry as f64);
            let left = expiry - load::now();
            if left < 14 * 86_400 {
                warn!(listener = %self.listener, certificate = %label, expires = %der::format(*expiry), "TLS certificate expires within 14 days");
            }
        }
    }

    /// Runs the server side of a handshake on `tcp` under the handshake timeout.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Accepted, HandshakeFailure> {
        let acceptor = TlsAcceptor::from(self.current.load_full());
        let stream = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await {
            Err(_) => return Err(self.failed(HandshakeFailure::Timeout)),
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(self.failed(HandshakeFailure::Rejected(e)))
            }
            Ok(Err(e)) => return Err(self.failed(HandshakeFailure::Closed(e))),
            Ok(Ok(stream)) => stream,
        };
        let (_, connection) = stream.get_ref();
        let version = version_label(connection.protocol_version());
        let sni = connection.server_name().map(str::to_ascii_lowercase);
        let certificate = match &sni {
            Some(name) if self.names.load().contains(name) => name.clone(),
            _ => "default".to_string(),
        };
        metrics::counter!(m::TLS_HANDSHAKES, "listener" => self.listener.clone(), "version" => version, "certificate" => certificate)
            .increment(1);
        Ok(Accepted { stream, version, sni })
    }

    fn failed(&self, failure: HandshakeFailure) -> HandshakeFailure {
        metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "listener" => self.listener.clone(), "reason" => failure.reason())
            .increment(1);
        failure
    }

    /// Whether a rejected handshake may be logged now (a scan must not flood the log:
    /// see [`crate::logs::Limited`]).
    pub(crate) fn log_rejection(&self) -> bool {
        crate::logs::kinds::TLS_FAILURES.allow()
    }

    /// Re-reads the certificate, key and CA files. On success new handshakes use
    /// them; on failure the old configuration stays and the error says which file.
    pub fn reload(&self) -> Result<(), FileError> {
        match load::server_config(&self.files) {
            Ok(loaded) => {
                self.current.store(loaded.config.clone());
                self.publish_expiry(&loaded);
                info!(listener = %self.listener, "TLS certificates reloaded");
                metrics::counter!(m::TLS_RELOADS, "listener" => self.listener.clone(), "outcome" => "ok").increment(1);
                Ok(())
            }
            Err(e) => {
                warn!(listener = %self.listener, error = %e, "TLS reload failed; keeping the previous certificates");
                metrics::counter!(m::TLS_RELOADS, "listener" => self.listener.clone(), "outcome" => "failed")
                    .increment(1);
                Err(e)
            }
        }
    }
}
