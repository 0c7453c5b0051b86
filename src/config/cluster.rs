//! `[cluster]`: the fleet this proxy belongs to, through etcd (see [`crate::fleet`]).

use std::time::Duration;

use super::Secret;

/// The fleet: where its etcd is, who this proxy is in it, and how the proxies share
/// their checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This proxy's name in the fleet: unique per proxy, the value of the checker keys
    /// it holds and of the verdicts it writes.
    pub name: String,
    /// etcd client endpoints (`host:port`, or `http(s)://host:port`).
    pub etcd: Vec<String>,
    /// Every key of this fleet lives under `<prefix>/`.
    pub prefix: String,
    /// The lease this proxy's checker keys are bound to: when the proxy dies or is cut
    /// off, another takes its checks over within this time.
    pub lease_ttl: Duration,
    /// The longest one etcd request (and a connect) may take.
    pub timeout: Duration,
    /// One proxy per backend runs the full check and publishes it; the others only
    /// connect (TCP) every `light_interval`.
    pub shared_checks: bool,
    /// Between the reachability checks of a backend another proxy checks.
    pub light_interval: Duration,
    /// etcd user (with `password`), when etcd has authentication on.
    pub user: Option<String>,
    /// The etcd user's password.
    pub password: Option<Secret>,
    /// TLS to etcd.
    pub tls: Option<StoreTls>,
}

/// TLS to etcd: the CA to verify it with, the name its certificate carries, and an
/// optional client certificate (PEM contents, read at load time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTls {
    /// The CA bundle (PEM).
    pub ca: Vec<u8>,
    /// The name etcd's certificate must carry (default: the first endpoint's host).
    pub server_name: String,
    /// A client certificate chain and its key (PEM), when etcd requires one.
    pub identity: Option<(Vec<u8>, Secret)>,
}

impl ClusterConfig {
    /// The key under which a primary pool's verdict lives.
    pub fn verdict_key(&self, pool: &str) -> String {
        format!("{}/pools/{pool}/primary", self.prefix)
    }

    /// The key a backend's checker holds (bound to its lease).
    pub fn checker_key(&self, backend: &str) -> String {
        format!("{}/backends/{backend}/checker", self.prefix)
    }

    /// The key under which a backend's checker publishes what it sees.
    pub fn observation_key(&self, backend: &str) -> String {
        format!("{}/backends/{backend}/observation", self.prefix)
    }
}

/// What a primary pool does while etcd cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStoreLost {
    /// Keep routing to the current epoch's primary while this proxy's own checks agree;
    /// never move to another (new sessions are held, an alarm is raised).
    #[default]
    Hold,
    /// Judge alone, as a proxy without `[cluster]` does: it may move to a new primary
    /// that the rest of the fleet has not agreed on.
    Local,
}
