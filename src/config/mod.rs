//! Configuration: one TOML file, parsed into [`raw`] and validated into [`Config`]
//! before any port is bound. Every error names the file, the key and what was
//! expected; `main` turns it into exit code 64 (`EX_USAGE`, as linkerd does).
//!
//! Data flow: `load(path)` → read → [`raw::RawConfig`] (serde: key names, enum
//! spellings, durations) → [`validate`] (defaults from [`defaults`], ranges, rules
//! across fields, TLS files) → `Config`. `forward` builds a `RawConfig` and takes
//! the same path.
//!
//! The model is comparable item by item (`PartialEq`): a backend, pool or listener
//! is identified by its name, and references between them ([`Members`],
//! [`PoolRef`]) compare by name too, so two configs can be diffed by name although
//! the indexes (`BackendId`, `PoolId`) the runtime uses may differ between them.

mod check;
mod cidr;
mod cluster;
pub mod defaults;
mod dns;
mod forward;
mod listener;
mod log;
mod pool;
pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use crate::tls::{BackendTls, ServerFiles};

pub use check::{
    CheckConfig, Fraction, HttpProbeConfig, MongoProbeConfig, MysqlProbeConfig, ProbeConfig, RedisProbeConfig, Secret,
};
pub use cidr::Cidr;
pub use cluster::{ClusterConfig, OnStoreLost, StoreTls};
pub use dns::{member_name, DnsConfig, Resolve, ResolveMode, Resolved};
pub use forward::forward;
pub use listener::{AcceptProxy, ListenerConfig, ListenerMode, ListenerTlsConfig, LoginLimits, PoolRef, TcpOptions};
pub use log::{AccessLog, LogConfig, LogFormat};
pub use pool::{
    LeavePolicy, Members, Policy, PoolConfig, PoolRole, SentinelConfig, SwitchoverConfig, TwoWriters, MAX_HOLD,
};
pub use validate::validate;

/// Index of a backend in [`Config::backends`]; at run time, a backend's slot
/// (`Backend::id`), equal to its index at start and new for what a reload adds.
pub type BackendId = usize;
/// Index of a pool in [`Config::pools`]; at run time, a pool's slot (`Pool::id`).
pub type PoolId = usize;

/// A configuration mistake, with where it is and what was expected.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {reason}")]
    Read {
        /// The config file, as named in messages.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// Not TOML, or a table serde could not take as a whole (an unknown key).
    #[error("{file}: {reason}")]
    Parse {
        /// The config file, as named in messages.
        file: String,
        /// toml's message, which shows the line.
        reason: String,
    },
    /// A value of the wrong type or spelling (`policy = "random"`, `interval = "5"`).
    #[error("{file}: {key}: {reason} (line {line})")]
    Value {
        /// The config file, as named in messages.
        file: String,
        /// The dotted key of the value (e.g. `pools.web.policy`).
        key: String,
        /// The value's line in the file, from 1.
        line: usize,
        /// serde's message: what was wrong and what was expected.
        reason: String,
    },
    /// A value serde took but a range or a rule across fields refuses (`rise = 0`, an unknown
    /// pool name).
    #[error("{file}: {key}: expected {expected}")]
    Invalid {
        /// The config file, as named in messages.
        file: String,
        /// The dotted key at fault.
        key: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A certificate, key or CA file that cannot be used.
    #[error("{file}: {key}: \"{path}\": {reason}")]
    TlsFile {
        /// The config file, as named in messages.
        file: String,
        /// The dotted key that names the file (under its `tls` table).
        key: String,
        /// The path, as configured.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::TlsFile { key, .. } | ConfigError::Value { key, .. } => {
                Some(key)
            }
            _ => None,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Where a new process of a hot upgrade takes over from this one; `None`: no hot
    /// upgrade.
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// Sorted by name; a backend's index is its [`BackendId`].
    pub backends: Vec<BackendConfig>,
    /// Sorted by name; a pool's index is its [`PoolId`].
    pub pools: Vec<PoolConfig>,
    /// Sorted by name.
    pub listeners: Vec<ListenerConfig>,
    /// The fleet this proxy shares verdicts and checks with; `None`: it judges alone.
    pub cluster: Option<ClusterConfig>,
    /// The resolver for backends named by host names.
    pub dns: DnsConfig,
    /// `[log]`: format, filter and the access log.
    pub log: LogConfig,
    /// The text it was parsed from, so that a moved host name can be applied by
    /// parsing it again with the new addresses ([`Config::parse_resolved`]).
    pub text: Text,
}

/// A config's source text; its `Debug` shows only its length (it may hold secrets),
/// and two texts are always equal (the model compares item by item).
#[derive(Clone, Default)]
pub struct Text(pub std::sync::Arc<str>);

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Text({} bytes)", self.0.len())
    }
}

impl PartialEq for Text {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Text {}

/// The admin HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where it listens (loopback unless an operator chose otherwise).
    pub listen: SocketAddr,
    /// The bearer token the state-changing admin calls require; without one they
    /// are refused.
    pub token: Option<Secret>,
}

/// One server that pools route to, and how it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Its identity, in this config and across reloads.
    pub name: String,
    /// Its address: as written, or one the host name resolved to.
    pub address: SocketAddr,
    /// Set when the address was written as a host name.
    pub resolve: Option<Resolve>,
    /// How it is checked: its own `check` table over `[check]`'s.
    pub check: CheckConfig,
    /// TLS to this backend, for sessions and probes alike. For MySQL backends the TLS
    /// starts inside the MySQL protocol; for every other kind with the first byte.
    pub tls: Option<BackendTls>,
    /// The local address its sessions and checks connect from; `None`: the kernel's
    /// choice.
    pub source: Option<std::net::IpAddr>,
    /// A PROXY protocol header before every connection's first byte: the client's
    /// addresses on sessions, LOCAL (v2) or UNKNOWN (v1) on checks.
    pub send_proxy: Option<crate::protocol::proxy_header::Version>,
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

    /// Parses and validates TOML text; `file` only names it in errors. Host names
    /// are resolved here (see [`ResolveMode`]).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse_resolved(text, file, &Resolved::new())
    }

    /// [`Config::parse`], with the host-named backends in `resolved` taking those
    /// addresses instead of a lookup.
    pub fn parse_resolved(text: &str, file: &str, resolved: &Resolved) -> Result<Config, ConfigError> {
        let mut config = validate(parse_raw(text, file)?, file, resolved)?;
        config.text = Text(text.into());
        Ok(config)
    }

    /// The addresses of every host-named backend, by its name in the file.
    pub fn resolved(&self) -> Resolved {
        let mut resolved = Resolved::new();
        for backend in &self.backends {
            if let Some(r) = &backend.resolve {
                resolved.entry(r.configured.clone()).or_default().push(backend.address);
            }
        }
        for addresses in resolved.values_mut() {
            addresses.sort();
        }
        resolved
    }

    /// The pool a listener routes to.
    pub fn pool_of(&self, listener: &ListenerConfig) -> &PoolConfig {
        &self.pools[listener.pool.id]
    }

    /// The backend of that name.
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The pool of that name.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The listener of that name.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// TOML text → the raw tree. A value serde refuses becomes [`ConfigError::Value`]
/// with its dotted key and line; other errors keep toml's own message (which shows
/// the line). Neither ever shows a secret: see [`SECRET_KEYS`].
fn parse_raw(text: &str, file: &str) -> Result<raw::RawConfig, ConfigError> {
    let line_of = |offset: usize| {
        1 + text.as_bytes()[..offset.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    };
    let parse_error = |e: toml::de::Error| {
        let reason = match e.span() {
            // toml's message quotes the line: not when the line holds a secret.
            Some(span) if holds_secret(text.lines().nth(line_of(span.start) - 1).unwrap_or("")) => format!(
                "line {}: {} (the line sets a secret, so it is not shown)",
                line_of(span.start),
                e.message().trim_end()
            ),
            _ => e.to_string().trim_end().to_string(),
        };
        ConfigError::Parse {
            file: file.to_string(),
            reason,
        }
    };
    let deserializer = toml::Deserializer::parse(text).map_err(parse_error)?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        match inner.span() {
            Some(span) if key != "." && !inner.message().starts_with("unknown field") => {
                let secret = key.rsplit('.').next().is_some_and(|last| SECRET_KEYS.contains(&last));
                ConfigError::Value {
                    file: file.to_string(),
                    line: line_of(span.start),
                    reason: if secret {
                        "expected a string (the value is a secret, so it is not shown)".to_string()
                    } else {
                        inner.message().to_string()
                    },
                    key,
                }
            }
            _ => parse_error(inner),
        }
    })
}

/// Keys whose values are secrets: no error message repeats them.
pub const SECRET_KEYS: [&str; 2] = ["password", "token"];

/// Whether a line of TOML sets one of [`SECRET_KEYS`] (`password = …`, also in an
/// inline table).
fn holds_secret(line: &str) -> bool {
    SECRET_KEYS.iter().any(|key| {
        line.match_indices(key).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + key.len()..].trim_start();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.starts_with('=')
        })
    })
}

#[cfg(test)]
mod tests;
