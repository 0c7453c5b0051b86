//! `[pools.NAME.sentinel]` as written: the Redis Sentinels whose word a primary pool of
//! Redis members needs before it routes to a master (see `crate::sentinel`).

use serde::Deserialize;

use super::{Interval, Timeout};

/// `[pools.NAME.sentinel]`: where the Sentinels are and which master they watch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    /// `sentinel.sentinels`: the Sentinels' `host:port` addresses (required, at least one;
    /// every Sentinel of the deployment, so that the newest word is heard).
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// `sentinel.master_name`: the name the Sentinels monitor the master by (required).
    pub master_name: Option<String>,
    /// `sentinel.user`: the ACL user of the Sentinels (`AUTH user password`); needs a password.
    pub user: Option<String>,
    /// `sentinel.password`: the Sentinels' password, inline; at most one of `password`,
    /// `password_env`, `password_file`.
    pub password: Option<String>,
    /// `sentinel.password_env`: the password from this environment variable.
    pub password_env: Option<String>,
    /// `sentinel.password_file`: the password from this file (a trailing newline is dropped).
    pub password_file: Option<String>,
    /// `sentinel.timeout`: each connect and each query of a Sentinel (default
    /// `defaults::SENTINEL_TIMEOUT`).
    pub timeout: Option<Timeout>,
    /// `sentinel.interval`: between two queries of a Sentinel when no event arrives
    /// (default `defaults::SENTINEL_INTERVAL`).
    pub interval: Option<Interval>,
}
