//! How a backend is checked: the validated form of a `check` table.

use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::tls::PinnedKey;

/// How and how often a backend is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// What one check does.
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
    pub jitter: Fraction,
}

/// A fraction from 0.0 to 1.0, finite: comparable with `Eq`, unlike a bare `f64`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Fraction(f64);

impl Fraction {
    /// `None` outside 0.0..=1.0 (NaN included).
    pub fn new(value: f64) -> Option<Fraction> {
        // `+ 0.0` turns -0.0 into 0.0, so equal values have equal bits.
        (0.0..=1.0).contains(&value).then_some(Fraction(value + 0.0))
    }

    /// The value, from 0.0 to 1.0.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Eq for Fraction {}

/// The closed set of probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeConfig {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 request.
    Http(HttpProbeConfig),
    /// A MySQL/MariaDB login and one round trip reading role and replication state.
    Mysql(MysqlProbeConfig),
    /// The MySQL probe on a MariaDB Galera node: the same login, and the node's wsrep
    /// state in the same round trip.
    Galera(MysqlProbeConfig),
    /// A MongoDB `hello` on a kept connection (after SCRAM-SHA-256 when credentials
    /// are set).
    Mongo(MongoProbeConfig),
    /// Redis `INFO replication` on a kept connection (after `AUTH` when a password is
    /// set).
    Redis(RedisProbeConfig),
}

impl ProbeConfig {
    /// The probe's kind as the config spells it: `tcp`, `http`, `mysql`, `galera`, `mongo`,
    /// `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeConfig::Tcp => "tcp",
            ProbeConfig::Http(_) => "http",
            ProbeConfig::Mysql(_) => "mysql",
            ProbeConfig::Galera(_) => "galera",
            ProbeConfig::Mongo(_) => "mongo",
            ProbeConfig::Redis(_) => "redis",
        }
    }

    /// Whether the probe speaks the MySQL protocol (`mysql`, `galera`), whose TLS
    /// starts inside it.
    pub fn speaks_mysql(&self) -> bool {
        matches!(self, ProbeConfig::Mysql(_) | ProbeConfig::Galera(_))
    }

    /// The MySQL login settings of a `mysql` or `galera` check.
    pub fn mysql(&self) -> Option<&MysqlProbeConfig> {
        match self {
            ProbeConfig::Mysql(mysql) | ProbeConfig::Galera(mysql) => Some(mysql),
            _ => None,
        }
    }

    /// Whether the probe reports roles (primary/replica), which role pools need.
    pub fn knows_roles(&self) -> bool {
        matches!(
            self,
            ProbeConfig::Mysql(_) | ProbeConfig::Galera(_) | ProbeConfig::Mongo(_) | ProbeConfig::Redis(_)
        )
    }
}

/// A Redis check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisProbeConfig {
    /// The ACL user (`AUTH user password`); without it, `AUTH password` (the default user).
    pub user: Option<String>,
    /// The password; without it, no `AUTH`.
    pub password: Option<Secret>,
}

/// A MongoDB check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MongoProbeConfig {
    /// Optional SCRAM-SHA-256 credentials: the check then logs in before `hello`.
    pub user: Option<String>,
    /// The password for `user`: set exactly when `user` is.
    pub password: Option<Secret>,
    /// The database the user is defined in.
    pub auth_source: String,
}

/// A MySQL/MariaDB check: the monitor user it logs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlProbeConfig {
    /// The monitor user's name; never empty.
    pub user: String,
    /// Its password; `None` for a passwordless account.
    pub password: Option<Secret>,
    /// The server's RSA public key, for a password exchange that would otherwise send
    /// the password to whatever key the server offers (caching_sha2's full
    /// authentication, sha256_password) when the check has no TLS.
    pub server_public_key: Option<PinnedKey>,
}

/// A password or token, read at load time (inline in the config, from an environment
/// variable, or from a file) and never printed: its `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from the config.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the code that sends it to the server or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An HTTP check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbeConfig {
    /// The request method, e.g. `GET`.
    pub method: String,
    /// The request path; starts with `/`.
    pub path: String,
    /// The `Host` header; the backend address when unset.
    pub host: Option<String>,
    /// The response statuses that pass the check.
    pub expect_status: RangeInclusive<u16>,
    /// When set, a substring the first 64 KiB of the body must contain.
    pub body_contains: Option<String>,
}
