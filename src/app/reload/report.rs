//! What a reload request carries and answers: the request, the error that left the
//! running config in place, and the report of what changed.

use std::net::SocketAddr;

use serde::Serialize;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::config::{Config, ConfigError};

/// How many names of each kind a reload's summary shows (the report has them all).
const SHOWN: usize = 8;

/// A request to reload; `config` is an already validated config (embedding, tests),
/// or `None` to re-read the file the process was started from.
pub struct ReloadRequest {
    /// The config to apply instead of the file's.
    pub config: Option<Config>,
    /// Receives the outcome.
    pub reply: oneshot::Sender<Result<ReloadReport, ReloadError>>,
}

/// Why a reload changed nothing.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The file does not validate: the same text `check-config` prints.
    #[error("{0}")]
    Invalid(ConfigError),
    /// A new listener's address cannot be bound.
    #[error("cannot bind listener {listener} on {address}: {source}")]
    Bind {
        /// The listener's name.
        listener: String,
        /// Its address.
        address: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The router has stopped (the process is failing).
    #[error("the router has stopped")]
    Router,
    /// The process is shutting down.
    #[error("the process is shutting down")]
    Stopping,
}

/// What a reload changed, by name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// The first routing generation built from the new config.
    pub generation: u64,
    /// Backends added, removed or changed.
    pub backends: Changes,
    /// Pools added, removed or changed.
    pub pools: Changes,
    /// Listeners added, removed or changed (a moved address is a change).
    pub listeners: Changes,
    /// The TLS files reloaded for every listener and backend with TLS.
    pub tls: Vec<serde_json::Value>,
    /// Changes that take a restart or a hot upgrade (the admin address, `workers`).
    pub not_applied: Vec<String>,
    /// Other sections whose changes were applied (`[log]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<String>,
    /// From the request to the new topology, milliseconds.
    pub took_ms: f64,
    /// [`ReloadReport::summary`].
    pub summary: String,
}

/// Names added, removed and changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Changes {
    /// New names.
    pub added: Vec<String>,
    /// Names gone.
    pub removed: Vec<String>,
    /// Names whose config changed.
    pub changed: Vec<String>,
}

impl Changes {
    fn summary(&self, what: &str) -> Option<String> {
        let parts: Vec<String> = [("+", &self.added), ("-", &self.removed), ("~", &self.changed)]
            .iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(sign, names)| {
                let shown: Vec<_> = names.iter().take(SHOWN).map(|n| format!("{sign}{n}")).collect();
                if names.len() > SHOWN {
                    format!("{} … ({} {sign} in all)", shown.join(" "), names.len())
                } else {
                    shown.join(" ")
                }
            })
            .collect();
        (!parts.is_empty()).then(|| format!("{what} {}", parts.join(" ")))
    }
}

impl ReloadReport {
    /// One line: what changed (`backends +c -a ~b; listeners ~web`), or `no change`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            self.backends.summary("backends"),
            self.pools.summary("pools"),
            self.listeners.summary("listeners"),
        ]
        .into_iter()
        .flatten()
        .chain(self.applied.iter().cloned())
        .chain(self.not_applied.iter().map(|n| format!("not applied: {n}")))
        .collect();
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join("; ")
        }
    }
}
