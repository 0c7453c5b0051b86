//! The serde tree as written in the TOML file. Spellings are checked here, by serde:
//! enums for every closed set of words and the types of `raw::value` for values with a
//! rule of their own (durations, minimums, ranges), so a typo fails
//! with the key (from `serde_path_to_error`) and the allowed values. Ranges, defaults
//! and rules across fields are [`super::validate`]'s. `deny_unknown_fields`
//! everywhere: a misspelt key is an error, not a silently ignored default.
//!
//! Every field is optional where a default exists; the defaults themselves live in
//! [`super::defaults`], nowhere else. `Default` on each struct lets code (the
//! `forward` command, tests) build a tree without TOML.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ListenerMode, Policy, PoolRole, TwoWriters};

mod sentinel;
mod switchover;
mod value;

pub use sentinel::RawSentinel;
pub use switchover::RawSwitchover;
pub use value::*;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[admin]`: the admin HTTP listener; without the section none runs.
    pub admin: Option<RawAdmin>,
    /// `[shutdown]`: what happens after SIGTERM/SIGINT.
    pub shutdown: Option<RawShutdown>,
    /// `[runtime]`: the data-plane threads.
    pub runtime: Option<RawRuntime>,
    /// Defaults for every backend's `check` table.
    pub check: Option<RawCheck>,
    /// `[backends.NAME]`: the servers pools route to, by name.
    #[serde(default)]
    pub backends: BTreeMap<String, RawBackend>,
    /// `[pools.NAME]`: the backends each listener routes to, and how, by name.
    #[serde(default)]
    pub pools: BTreeMap<String, RawPool>,
    /// `[listeners.NAME]`: the addresses that accept clients, by name; at least one.
    #[serde(default)]
    pub listeners: BTreeMap<String, RawListener>,
    /// `[cluster]`: the fleet this proxy shares its primary verdicts and checks with,
    /// through etcd; without the section the proxy judges alone.
    pub cluster: Option<RawCluster>,
    /// `[dns]`: the resolver for backends named by host names.
    pub dns: Option<RawDns>,
    /// `[log]`: the log's format, filter and access log.
    pub log: Option<RawLog>,
}

/// `[log]`: how the log is written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `log.format`: `"text"` (default) or `"json"`.
    pub format: Option<super::LogFormat>,
    /// `log.level`: a filter in `RUST_LOG`'s syntax (default `defaults::LOG_LEVEL`).
    pub level: Option<LogLevel>,
    /// `log.access`: the session access log (default on).
    pub access: Option<bool>,
    /// `log.access_sample`: a fraction of normally ended sessions (default 1.0).
    pub access_sample: Option<Sample>,
}

/// `[dns]`: where host names are resolved.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// `dns.servers`: name servers as `ip:port` (default: the system's resolver
    /// configuration and hosts file).
    #[serde(default)]
    pub servers: Vec<String>,
    /// `dns.timeout`: each lookup, all attempts included; above zero (default
    /// `defaults::DNS_TIMEOUT`).
    pub timeout: Option<Timeout>,
}

/// `[cluster]`: the fleet, through etcd.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `cluster.name`: this proxy's name in the fleet, unique per proxy (required).
    pub name: String,
    /// `cluster.etcd`: etcd client endpoints, `host:port` or `http(s)://host:port`
    /// (required, at least one).
    #[serde(default)]
    pub etcd: Vec<String>,
    /// `cluster.prefix`: every key of the fleet lives under it (default `defaults::CLUSTER_PREFIX`).
    pub prefix: Option<String>,
    /// `cluster.lease_ttl`: how soon another proxy takes this one's checks over when it
    /// dies or is cut off; 2s to 60s (default `defaults::LEASE_TTL`).
    pub lease_ttl: Option<ConfigDuration>,
    /// `cluster.timeout`: the longest one etcd request may take; above zero and at most
    /// a third of `lease_ttl` (default `defaults::STORE_TIMEOUT`).
    pub timeout: Option<Timeout>,
    /// `cluster.shared_checks`: one proxy per backend runs its check and publishes it
    /// (default `defaults::SHARED_CHECKS`).
    pub shared_checks: Option<bool>,
    /// `cluster.light_interval`: between the TCP reachability checks of a backend another
    /// proxy checks (default `defaults::LIGHT_INTERVAL`).
    pub light_interval: Option<Interval>,
    /// `cluster.user`: the etcd user, when etcd has authentication on; needs a password.
    pub user: Option<String>,
    /// `cluster.password`: that user's password, inline; at most one of `password`,
    /// `password_env`, `password_file`.
    pub password: Option<String>,
    /// `cluster.password_env`: the password from this environment variable.
    pub password_env: Option<String>,
    /// `cluster.password_file`: the password from this file (a trailing newline is dropped).
    pub password_file: Option<String>,
    /// `cluster.tls`: TLS to etcd (`https://` endpoints).
    pub tls: Option<RawBackendTls>,
}

/// `[admin]`: the admin HTTP listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `admin.listen`: the address it listens on (required).
    pub listen: String,
    /// `admin.token`: the bearer token that drain, disable and enable require, inline.
    /// At most one of `token`, `token_env`, `token_file`; with none, those calls are refused.
    pub token: Option<String>,
    /// `admin.token_env`: the token from this environment variable, read at load time.
    pub token_env: Option<String>,
    /// `admin.token_file`: the token from this file (a trailing newline is dropped).
    pub token_file: Option<String>,
}

/// `[runtime]`: the data-plane threads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// `runtime.workers`: data-plane threads, 0 to 256; 0 means one per core
    /// (default `defaults::WORKERS`).
    pub workers: Option<Workers>,
    /// `runtime.upgrade_socket`: the Unix socket a new process (`run --upgrade`) takes
    /// the listening sockets and the health state over from (no hot upgrade without it).
    pub upgrade_socket: Option<String>,
}

/// `[shutdown]`: what happens after SIGTERM/SIGINT.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// `shutdown.grace`: how long open sessions may finish before the rest are closed
    /// (default `defaults::SHUTDOWN_GRACE`).
    pub grace: Option<ConfigDuration>,
}

/// `[backends.NAME]`: one server, checked by one checker however many pools use it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// `backends.*.address`: `host:port` (required); a host name is resolved at load
    /// and followed as `resolve` says.
    pub address: String,
    /// `backends.*.resolve`: for a host name, `ttl` (looked up again when the record's
    /// TTL runs out; every address a member) or `once` (at load, the first address)
    /// (default `ttl`).
    pub resolve: Option<super::ResolveMode>,
    /// `backends.*.resolve_min`: the shortest wait between two lookups, also after a
    /// failed one; above zero (default `defaults::RESOLVE_MIN`).
    pub resolve_min: Option<Timeout>,
    /// `backends.*.resolve_max`: the longest wait between two lookups whatever the TTL;
    /// at least `resolve_min` (default `defaults::RESOLVE_MAX`).
    pub resolve_max: Option<Timeout>,
    /// `backends.*.check`: its own check settings, over `[check]`'s key by key.
    pub check: Option<RawCheck>,
    /// `backends.*.tls`: TLS to the backend, for its sessions and its checks alike.
    pub tls: Option<RawBackendTls>,
    /// `backends.*.source`: the local IP address its sessions and checks connect from
    /// (default: the kernel's choice).
    pub source: Option<String>,
    /// `backends.*.send_proxy`: a PROXY protocol header (`v1` or `v2`) before the
    /// first byte of every session and check.
    pub send_proxy: Option<ProxySend>,
}

/// TLS to a backend (data path and probes).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    /// `tls.ca`: the CA bundle to verify the backend with; required unless `insecure = true`.
    pub ca: Option<String>,
    /// `tls.server_name`: the name its certificate must carry, also sent as SNI
    /// (default: the host part of `address`).
    pub server_name: Option<String>,
    /// `tls.insecure`: no verification at all, instead of `ca` (default false; labs only).
    pub insecure: Option<bool>,
    /// `tls.cert`: an optional client certificate, for backends that require one; needs `key`.
    pub cert: Option<String>,
    /// `tls.key`: the client certificate's private key; needs `cert`.
    pub key: Option<String>,
}

/// The probe a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// `tcp`: a TCP connect.
    #[default]
    Tcp,
    /// `http`: one HTTP/1.1 request.
    Http,
    /// `mysql`: a MySQL/MariaDB login as a monitor user, reading role and replication state.
    Mysql,
    /// `galera`: the `mysql` login on a MariaDB Galera node, reading its wsrep state too.
    Galera,
    /// `mongo`: a MongoDB `hello`, after a SCRAM-SHA-256 login when credentials are set.
    Mongo,
    /// `redis`: Redis `INFO replication`, after `AUTH` when a password is set.
    Redis,
}

/// Every field optional so that `[check]` defaults and a backend's own `check` table
/// merge field by field.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    /// `check.kind`: the probe (default `defaults::CHECK_KIND`).
    pub kind: Option<CheckKind>,
    /// `check.interval`: between checks while the backend is up and the last check passed
    /// (default `defaults::CHECK_INTERVAL`; at least `defaults::MIN_INTERVAL`).
    pub interval: Option<Interval>,
    /// `check.fast_interval`: between checks after a failure, until `fall` failures mark the
    /// backend down (default `defaults::fast_interval`; at least `defaults::MIN_INTERVAL`).
    pub fast_interval: Option<Interval>,
    /// `check.down_interval`: between checks while the backend is down
    /// (default `defaults::down_interval`: the interval).
    pub down_interval: Option<Interval>,
    /// `check.timeout`: covers every phase of one check; above zero (default `defaults::CHECK_TIMEOUT`).
    pub timeout: Option<Timeout>,
    /// `check.rise`: consecutive passes that bring a down backend up; at least 1 (default `defaults::RISE`).
    pub rise: Option<Count>,
    /// `check.fall`: consecutive failures that take an up backend down; at least 1 (default `defaults::FALL`).
    pub fall: Option<Count>,
    /// `check.jitter`: each wait is scaled by a random factor in `1 ± jitter`; 0.0 to 0.5
    /// (default `defaults::JITTER`).
    pub jitter: Option<Jitter>,
    /// `check.method`: the HTTP method; `http` checks only (default `defaults::HTTP_METHOD`).
    pub method: Option<HttpMethod>,
    /// `check.path`: the HTTP request path, starting with `/`; `http` checks only (default `defaults::HTTP_PATH`).
    pub path: Option<HttpPath>,
    /// `check.host`: the HTTP `Host` header; `http` checks only (default: the backend address).
    pub host: Option<HostHeader>,
    /// `check.expect_status`: the passing status (`"200"`) or range (`"200-399"`); `http` checks only
    /// (default `defaults::HTTP_EXPECT_STATUS`).
    pub expect_status: Option<StatusRange>,
    /// `check.body_contains`: a substring the first 64 KiB of the body must contain; `http` checks only.
    pub body_contains: Option<String>,
    /// `check.user`: the user a `mysql` check (required) or `mongo` check (optional) logs in as.
    pub user: Option<String>,
    /// `check.password`: that user's password, inline; at most one of `password`, `password_env`,
    /// `password_file`.
    pub password: Option<String>,
    /// `check.password_env`: the password from this environment variable, read at load time.
    pub password_env: Option<String>,
    /// `check.password_file`: the password from this file (a trailing newline is dropped).
    pub password_file: Option<String>,
    /// `check.server_public_key`: a PEM file with the MySQL server's RSA public key, used for
    /// `caching_sha2_password`/`sha256_password` full authentication without TLS; `mysql` checks only.
    pub server_public_key: Option<String>,
    /// `check.auth_source`: the database the MongoDB user is defined in; `mongo` checks only
    /// (default `defaults::MONGO_AUTH_SOURCE`).
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
            server_public_key: self.server_public_key.or(d.server_public_key),
            auth_source: self.auth_source.or(d.auth_source),
        }
    }
}

/// Whether a pool's members may take traffic before their first check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialState {
    /// `up`: members not checked yet take traffic.
    Up,
    /// `down`: members not checked yet take no traffic.
    Down,
}

/// What happens to the sessions of a member that leaves its pool, as written
/// (`drain` takes its deadline from `drain_deadline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLeave {
    /// `close`: close them at once.
    Close,
    /// `drain`: close them after `drain_deadline`.
    Drain,
    /// `keep`: leave them alone.
    Keep,
}

/// `[pools.NAME]`: the backends a listener routes to, and how.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// `pools.*.backends`: member backend names in priority order (required; at least one, each once).
    pub backends: Vec<String>,
    /// `pools.*.policy`: how a new session picks a member (default `defaults::POLICY`).
    pub policy: Option<Policy>,
    /// `pools.*.role`: the role served; `primary` and `replica` need role-aware checks
    /// (default `defaults::ROLE`).
    pub role: Option<PoolRole>,
    /// `pools.*.initial_state`: whether members not checked yet take traffic
    /// (default `defaults::initial_state`, by role).
    pub initial_state: Option<InitialState>,
    /// `pools.*.on_leave`: what happens to the sessions of a member that leaves the pool
    /// (default `defaults::on_leave`, by role).
    pub on_leave: Option<OnLeave>,
    /// `pools.*.drain_deadline`: how long `drain` lets those sessions run; only with
    /// `on_leave = "drain"` (default `defaults::DRAIN_DEADLINE`).
    pub drain_deadline: Option<ConfigDuration>,
    /// `pools.*.hold_timeout`: how long a new session waits for a routable member before it is
    /// closed (default `defaults::HOLD_TIMEOUT`).
    pub hold_timeout: Option<ConfigDuration>,
    /// `pools.*.connect_timeout`: per connect attempt to a backend; above zero
    /// (default `defaults::CONNECT_TIMEOUT`).
    pub connect_timeout: Option<Timeout>,
    /// `pools.*.idle_timeout`: a session with no bytes either way for this long is closed; above
    /// zero (default `defaults::IDLE_TIMEOUT`).
    pub idle_timeout: Option<Timeout>,
    /// `pools.*.max_replication_lag`: replica pools only: the most a member may lag
    /// (default `defaults::MAX_REPLICATION_LAG`).
    pub max_replication_lag: Option<ConfigDuration>,
    /// `pools.*.max_replication_lag_bytes`: replica pools of Redis members only: the most
    /// a replica's offset may trail its master's (default `defaults::MAX_REPLICATION_LAG_BYTES`).
    pub max_replication_lag_bytes: Option<u64>,
    /// `pools.*.fallback_to_primary`: replica pools only: route to the writable member when no
    /// replica qualifies (default false).
    pub fallback_to_primary: Option<bool>,
    /// `pools.*.two_writers`: primary pools only: the rule when two members are writable
    /// (default `defaults::TWO_WRITERS`).
    pub two_writers: Option<TwoWriters>,
    /// `pools.*.set_name`: MongoDB pools only: the replica-set name members must report (empty
    /// means none).
    pub set_name: Option<String>,
    /// `pools.*.required`: `/health/ready` answers 503 while this pool can reach none
    /// of its members (default false).
    pub required: Option<bool>,
    /// `pools.*.on_store_lost`: primary pools of a `[cluster]` only: `hold` (keep the
    /// epoch's primary, never move without etcd) or `local` (judge alone while etcd is
    /// out of reach) (default `defaults::ON_STORE_LOST`).
    pub on_store_lost: Option<super::OnStoreLost>,
    /// `[pools.*.switchover]`: primary pools with `kind = "mysql"` checks only: enables
    /// `POST /pools/NAME/switchover`.
    pub switchover: Option<RawSwitchover>,
    /// `[pools.*.sentinel]`: primary pools with `kind = "redis"` checks only: a master
    /// takes traffic only while the Sentinels name it.
    pub sentinel: Option<RawSentinel>,
    /// `pools.*.donor_ok`: pools of `kind = "galera"` members only: a node that is
    /// `Donor/Desynced` (donating a state transfer, or `wsrep_desync=ON`) still takes
    /// traffic (default false).
    pub donor_ok: Option<bool>,
}

/// `[listeners.NAME]`: an address and the pool it routes to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `listeners.*.listen`: the address clients connect to (required).
    pub listen: String,
    /// `listeners.*.pool`: the name of the pool it routes to (required).
    pub pool: String,
    /// `listeners.*.max_connections`: sessions at once, 1 to 1000000; further clients wait in
    /// the kernel backlog (default `defaults::MAX_CONNECTIONS`).
    pub max_connections: Option<MaxConnections>,
    /// `listeners.*.keepalive`: idle time before TCP keepalive probes start, on both legs; at
    /// least 1s (default `defaults::KEEPALIVE`).
    pub keepalive: Option<Keepalive>,
    /// `listeners.*.user_timeout`: `TCP_USER_TIMEOUT` on both legs, so half-open sessions die
    /// (default `defaults::USER_TIMEOUT`).
    pub user_timeout: Option<ConfigDuration>,
    /// `listeners.*.mode`: what the listener understands of the bytes it carries
    /// (default `defaults::MODE`).
    pub mode: Option<ListenerMode>,
    /// `listeners.*.tls`: TLS termination; without it the listener does no TLS.
    pub tls: Option<RawListenerTls>,
    /// `listeners.*.login_timeout`: `mysql` mode only: the longest a client's connection
    /// phase may take, greeting to OK (default `defaults::LOGIN_TIMEOUT`).
    pub login_timeout: Option<Timeout>,
    /// `listeners.*.max_logins`: `mysql` mode only: connection phases under way at once;
    /// further clients wait (within their login timeout) before a backend connection is
    /// made for them (default `defaults::MAX_LOGINS`).
    pub max_logins: Option<MaxConnections>,
    /// `listeners.*.accept_proxy`: every client connection starts with a PROXY protocol
    /// header of this version (`v1`, `v2` or `any`); needs `trusted_sources`.
    pub accept_proxy: Option<ProxyAccept>,
    /// `listeners.*.trusted_sources`: the networks (CIDR) allowed to send the header; a
    /// connection from anywhere else is closed.
    pub trusted_sources: Option<Vec<String>>,
    /// `listeners.*.proxy_timeout`: the longest the header may take to arrive
    /// (default `defaults::PROXY_TIMEOUT`).
    pub proxy_timeout: Option<Timeout>,
}

/// `listeners.*.accept_proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyAccept {
    /// The text header only.
    V1,
    /// The binary header only.
    V2,
    /// Either.
    Any,
}

/// `backends.*.send_proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxySend {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// TLS termination on a listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// `tls.certificates`: at least one; the first is the default, every other needs
    /// `server_names`.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    /// `tls.client_ca`: require client certificates signed by this CA bundle (mTLS); optional.
    pub client_ca: Option<String>,
    /// `tls.handshake_timeout`: the longest a client's handshake may take
    /// (default `defaults::HANDSHAKE_TIMEOUT`).
    pub handshake_timeout: Option<Timeout>,
    /// `tls.require_tls`: `mysql` mode only: refuse clients that do not ask for TLS
    /// (default `defaults::REQUIRE_TLS`).
    pub require_tls: Option<bool>,
}

/// One entry of a listener's `tls.certificates`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// `cert`: the certificate chain file (PEM).
    pub cert: String,
    /// `key`: its private key file (PEM).
    pub key: String,
    /// `server_names`: the SNI names (exact, no wildcards) it is chosen for; empty only on the
    /// first certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
}
