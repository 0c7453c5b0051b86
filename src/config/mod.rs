//! Configuration: one TOML file, parsed into [`raw`] and validated into [`Config`]
//! before any port is bound. Every error names the file, the key and what was
//! expected; `main` turns it into exit code 64 (`EX_USAGE`, as linkerd does).
//!
//! Data flow: `load(path)` → read → `toml::from_str::<RawConfig>` → [`validate`] →
//! `Config` (indexes instead of names: a pool lists `BackendId`s, a listener a
//! `PoolId`).

mod forward;
pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::tls::load::LoadedServer;
use crate::tls::{CertFiles, ServerFiles, Verify};

pub use forward::forward;
pub use validate::validate;

/// Index of a backend in [`Config::backends`].
pub type BackendId = usize;
/// Index of a pool in [`Config::pools`].
pub type PoolId = usize;

/// A configuration mistake, with where it is and what was expected.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("{file}: {key}: expected {expected}")]
    Invalid {
        file: String,
        key: String,
        expected: String,
    },
    /// A certificate, key or CA file that cannot be used.
    #[error("{file}: {key}: \"{path}\": {reason}")]
    TlsFile {
        file: String,
        key: String,
        path: String,
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::TlsFile { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for messages.
    pub source: String,
    /// The admin HTTP listener; `None` runs without one.
    pub admin: Option<AdminConfig>,
    /// How long in-flight sessions may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Data-plane threads, each with its own single-threaded runtime and its own
    /// `SO_REUSEPORT` socket per listener.
    pub workers: usize,
    pub backends: Vec<BackendConfig>,
    pub pools: Vec<PoolConfig>,
    pub listeners: Vec<ListenerConfig>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer token the state-changing admin calls require; without one they
    /// are refused.
    pub token: Option<Secret>,
}

/// One server that pools route to, and how it is checked.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub address: SocketAddr,
    pub check: CheckConfig,
    /// TLS to this backend, for sessions and probes alike.
    pub tls: Option<BackendTlsConfig>,
}

/// TLS origination to a backend. For MySQL backends the TLS starts inside the MySQL
/// protocol (after the greeting, on an SSLRequest); for every other kind it starts
/// with the first byte.
#[derive(Debug, Clone)]
pub struct BackendTlsConfig {
    pub verify: Verify,
    /// The name the backend's certificate must be valid for (SNI too).
    pub server_name: String,
    /// A client certificate, for backends that require one.
    pub identity: Option<CertFiles>,
    /// Built from the above at load time.
    pub client: Arc<rustls::ClientConfig>,
}

/// How and how often a backend is probed.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    pub probe: ProbeConfig,
    /// Between checks while the backend is up and the last check passed.
    pub interval: Duration,
    /// Between checks after a failure, until the backend is marked down.
    pub fast_interval: Duration,
    /// Between checks while the backend is down.
    pub down_interval: Duration,
    /// Covers every phase of one check (connect, handshake, request, response).
    pub timeout: Duration,
    /// Consecutive passes that bring a down backend up.
    pub rise: NonZeroU32,
    /// Consecutive failures that take an up backend down.
    pub fall: NonZeroU32,
    /// Each wait is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
}

/// The closed set of probes.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeConfig {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 request.
    Http(HttpProbeConfig),
    /// A MySQL/MariaDB login and one round trip reading role and replication state.
    Mysql(MysqlProbeConfig),
    /// A MongoDB `hello` on a kept connection (after SCRAM-SHA-256 when credentials
    /// are set).
    Mongo(MongoProbeConfig),
}

impl ProbeConfig {
    /// Whether the probe reports roles (primary/replica), which role pools need.
    pub fn knows_roles(&self) -> bool {
        matches!(self, ProbeConfig::Mysql(_) | ProbeConfig::Mongo(_))
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MongoProbeConfig {
    /// Optional SCRAM-SHA-256 credentials: the check then logs in before `hello`.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The database the user is defined in.
    pub auth_source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MysqlProbeConfig {
    pub user: String,
    pub password: Option<Secret>,
}

/// A password: read at load time (from the file, an environment variable or a
/// file), never printed.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpProbeConfig {
    pub method: String,
    pub path: String,
    /// The `Host` header; the backend address when unset.
    pub host: Option<String>,
    pub expect_status: RangeInclusive<u16>,
    pub body_contains: Option<String>,
}

/// Which role a pool serves. `Any` accepts every healthy backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolRole {
    Any,
    /// At most one backend: the writable primary (see `routing::membership` for the
    /// single-writer rule).
    Primary,
    /// Replicas that replicate and lag at most `max_replication_lag`.
    Replica,
}

/// What a primary pool does when more than one member reports itself writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TwoWriters {
    /// Keep the current primary while it stays writable; with no current primary,
    /// route nowhere. Either way, raise the alarm.
    KeepCurrent,
    /// Route nowhere while two members are writable, even the current primary.
    FailClosed,
}

/// How a pool orders its routable members for a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The first routable member in the pool's `backends` order (failover order).
    First,
    RoundRobin,
    LeastConnections,
    /// Two random members, the less loaded first (power of two choices).
    PowerOfTwo,
}

/// What happens to live sessions of a member that leaves its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeavePolicy {
    /// Close them at once.
    Close,
    /// Let them run until the deadline, then close them.
    Drain(Duration),
    /// Leave them alone.
    Keep,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub role: PoolRole,
    pub policy: Policy,
    /// In priority order.
    pub members: Vec<BackendId>,
    /// Whether a backend not yet checked may take traffic.
    pub initially_up: bool,
    pub on_leave: LeavePolicy,
    /// How long a new session waits for a routable member before it is closed.
    pub hold_timeout: Duration,
    pub connect_timeout: Duration,
    /// A session with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Replica pools: members lagging more than this leave the pool.
    pub max_replication_lag: Duration,
    /// Replica pools: route to the primary when no replica qualifies.
    pub fallback_to_primary: bool,
    /// Primary pools: the rule when two members are writable.
    pub two_writers: TwoWriters,
    /// MongoDB pools: only members reporting this replica-set name are eligible.
    pub set_name: Option<String>,
}

/// Socket options for both legs of a session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TcpOptions {
    /// Idle time before the first keepalive probe (also the probe interval / 3).
    pub keepalive: Duration,
    /// `TCP_USER_TIMEOUT`: unacknowledged data for this long kills the connection.
    pub user_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub pool: PoolId,
    pub max_connections: usize,
    pub tcp: TcpOptions,
    pub mode: ListenerMode,
    /// TLS termination.
    pub tls: Option<ListenerTlsConfig>,
}

/// What a listener understands of the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// Nothing: TLS (if any) from the first byte, then a byte pipe.
    Tcp,
    /// The MySQL connection phase, to terminate and originate TLS inside the
    /// protocol (see `proxy::mysql`); a byte pipe after the login.
    Mysql,
}

#[derive(Debug, Clone)]
pub struct ListenerTlsConfig {
    pub files: ServerFiles,
    /// Built from `files` at load time.
    pub loaded: LoadedServer,
    pub handshake_timeout: Duration,
    /// `mysql` mode: refuse clients that do not ask for TLS (else they pass in clear).
    pub require_tls: bool,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, &file)
    }

    /// Parses and validates TOML text; `file` only names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        validate(raw, file)
    }

    /// The pool a listener routes to.
    pub fn pool_of(&self, listener: &ListenerConfig) -> &PoolConfig {
        &self.pools[listener.pool]
    }
}

#[cfg(test)]
mod tests;
