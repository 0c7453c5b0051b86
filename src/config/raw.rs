//! The serde tree as written in the TOML file. Spellings are checked here, by serde:
//! enums for every closed set of words and [`Span`] for durations, so a typo fails
//! with the key (from `serde_path_to_error`) and the allowed values. Ranges, defaults
//! and rules across fields are [`super::validate`]'s. `deny_unknown_fields`
//! everywhere: a misspelt key is an error, not a silently ignored default.
//!
//! Every field is optional where a default exists; the defaults themselves live in
//! [`super::defaults`], nowhere else. `Default` on each struct lets code (the
//! `forward` command, tests) build a tree without TOML.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{ListenerMode, Policy, PoolRole, TwoWriters};
use crate::duration;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub admin: Option<RawAdmin>,
    pub shutdown: Option<RawShutdown>,
    pub runtime: Option<RawRuntime>,
    /// Defaults for every backend's `check` table.
    pub check: Option<RawCheck>,
    #[serde(default)]
    pub backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    pub pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    pub listeners: BTreeMap<String, RawListener>,
}

/// A duration in the config's syntax (`250ms`, `2s`, `5m`, `1h`; see [`duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        duration::parse(&text)
            .map(Span)
            .map_err(|e| serde::de::Error::custom(format_args!("expected {e}")))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub workers: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub grace: Option<Span>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: String,
    pub check: Option<RawCheck>,
    pub tls: Option<RawBackendTls>,
}

/// TLS to a backend (data path and probes).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub insecure: Option<bool>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// The probe a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    #[default]
    Tcp,
    Http,
    Mysql,
    Mongo,
}

/// Every field optional so that `[check]` defaults and a backend's own `check` table
/// merge field by field.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub kind: Option<CheckKind>,
    pub interval: Option<Span>,
    pub fast_interval: Option<Span>,
    pub down_interval: Option<Span>,
    pub timeout: Option<Span>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub jitter: Option<f64>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<String>,
    pub body_contains: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub auth_source: Option<String>,
}

impl RawCheck {
    /// Fields set here win; the rest come from `defaults`.
    pub fn over(self, defaults: &RawCheck) -> RawCheck {
        let d = defaults.clone();
        RawCheck {
            kind: self.kind.or(d.kind),
            interval: self.interval.or(d.interval),
            fast_interval: self.fast_interval.or(d.fast_interval),
            down_interval: self.down_interval.or(d.down_interval),
            timeout: self.timeout.or(d.timeout),
            rise: self.rise.or(d.rise),
            fall: self.fall.or(d.fall),
            jitter: self.jitter.or(d.jitter),
            method: self.method.or(d.method),
            path: self.path.or(d.path),
            host: self.host.or(d.host),
            expect_status: self.expect_status.or(d.expect_status),
            body_contains: self.body_contains.or(d.body_contains),
            user: self.user.or(d.user),
            password: self.password.or(d.password),
            password_env: self.password_env.or(d.password_env),
            password_file: self.password_file.or(d.password_file),
            auth_source: self.auth_source.or(d.auth_source),
        }
    }
}

/// Whether a pool's members may take traffic before their first check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialState {
    Up,
    Down,
}

/// What happens to the sessions of a member that leaves its pool, as written
/// (`drain` takes its deadline from `drain_deadline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLeave {
    Close,
    Drain,
    Keep,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub backends: Vec<String>,
    pub policy: Option<Policy>,
    pub role: Option<PoolRole>,
    pub initial_state: Option<InitialState>,
    pub on_leave: Option<OnLeave>,
    pub drain_deadline: Option<Span>,
    pub hold_timeout: Option<Span>,
    pub connect_timeout: Option<Span>,
    pub idle_timeout: Option<Span>,
    pub max_replication_lag: Option<Span>,
    pub fallback_to_primary: Option<bool>,
    pub two_writers: Option<TwoWriters>,
    pub set_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub listen: String,
    pub pool: String,
    pub max_connections: Option<i64>,
    pub keepalive: Option<Span>,
    pub user_timeout: Option<Span>,
    pub mode: Option<ListenerMode>,
    pub tls: Option<RawListenerTls>,
}

/// TLS termination on a listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub client_ca: Option<String>,
    pub handshake_timeout: Option<Span>,
    pub require_tls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}
