//! The serde tree exactly as written in the TOML file. Everything is a string or a
//! plain number here; [`super::validate`] turns it into typed values and names the
//! key of every mistake. `deny_unknown_fields` everywhere: a typo is an error, not a
//! silently ignored default.

use std::collections::BTreeMap;

use serde::Deserialize;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub workers: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: String,
    pub check: Option<RawCheck>,
    pub tls: Option<RawBackendTls>,
}

/// TLS to a backend (data path and probes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub insecure: Option<bool>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// Every field optional so that `[check]` defaults and a backend's own `check` table
/// merge field by field.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub kind: Option<String>,
    pub interval: Option<String>,
    pub fast_interval: Option<String>,
    pub down_interval: Option<String>,
    pub timeout: Option<String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub backends: Vec<String>,
    pub policy: Option<String>,
    pub role: Option<String>,
    pub initial_state: Option<String>,
    pub on_leave: Option<String>,
    pub drain_deadline: Option<String>,
    pub hold_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_replication_lag: Option<String>,
    pub fallback_to_primary: Option<bool>,
    pub two_writers: Option<String>,
    pub set_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub listen: String,
    pub pool: String,
    pub max_connections: Option<i64>,
    pub keepalive: Option<String>,
    pub user_timeout: Option<String>,
    pub mode: Option<String>,
    pub tls: Option<RawListenerTls>,
}

/// TLS termination on a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub client_ca: Option<String>,
    pub handshake_timeout: Option<String>,
    pub require_tls: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}
