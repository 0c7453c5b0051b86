//! Every default of the config, in one place: what a key means when the file leaves
//! it out. `validate` reads them; `config/example.toml` and the README document them.

use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::raw::{CheckKind, InitialState, OnLeave, MIN_INTERVAL};
use super::{ListenerMode, Policy, PoolRole, TwoWriters};

/// `shutdown.grace`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// `runtime.workers`: 0 means one data-plane thread per core.
pub const WORKERS: u16 = 0;
/// `log.level` (the access log is on at INFO).
pub const LOG_LEVEL: &str = "info";

/// `check.kind`.
pub const CHECK_KIND: CheckKind = CheckKind::Tcp;
/// `check.interval`. With [`CHECK_TIMEOUT`], [`FALL`] and the fast interval
/// (100 ms), a refused or reset backend is out within about 0.36 s and a hung one
/// within about 1.4 s of the fault, with no traffic to nudge the checks (measured by
/// `switchyard-drill detect`; figures and cost in the README).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// `check.timeout`.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// `check.rise`.
pub const RISE: NonZeroU32 = NonZeroU32::new(2).expect("2 is not zero");
/// `check.fall`.
pub const FALL: NonZeroU32 = NonZeroU32::new(2).expect("2 is not zero");
/// `check.jitter`.
pub const JITTER: f64 = 0.1;

/// `check.fast_interval`: a quarter of the interval, but not below the minimum.
pub fn fast_interval(interval: Duration) -> Duration {
    (interval / 4).max(MIN_INTERVAL)
}

/// `check.down_interval`: the interval.
pub fn down_interval(interval: Duration) -> Duration {
    interval
}

/// HTTP checks: `method`.
pub const HTTP_METHOD: &str = "GET";
/// HTTP checks: `path`.
pub const HTTP_PATH: &str = "/";
/// HTTP checks: `expect_status`, any 2xx or 3xx.
pub const HTTP_EXPECT_STATUS: RangeInclusive<u16> = 200..=399;
/// MongoDB checks: `auth_source`.
pub const MONGO_AUTH_SOURCE: &str = "admin";

/// `pools.*.role`.
pub const ROLE: PoolRole = PoolRole::Any;
/// `pools.*.policy`.
pub const POLICY: Policy = Policy::First;
/// `pools.*.two_writers`.
pub const TWO_WRITERS: TwoWriters = TwoWriters::KeepCurrent;
/// `pools.*.drain_deadline` (with `on_leave = "drain"`).
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// `pools.*.hold_timeout`.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(5);
/// `pools.*.switchover.drain`.
pub const SWITCHOVER_DRAIN: Duration = Duration::from_secs(5);
/// `pools.*.switchover.catch_up_timeout`.
pub const SWITCHOVER_CATCH_UP: Duration = Duration::from_secs(10);
/// `pools.*.switchover.route_timeout`.
pub const SWITCHOVER_ROUTE: Duration = Duration::from_secs(10);
/// `pools.*.switchover.statement_timeout`.
pub const SWITCHOVER_STATEMENT: Duration = Duration::from_secs(5);
/// `pools.*.sentinel.timeout`.
pub const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
/// `pools.*.sentinel.interval`.
pub const SENTINEL_INTERVAL: Duration = Duration::from_secs(1);
/// `pools.*.connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// `pools.*.idle_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// `pools.*.fallback_to_primary` (replica pools).
pub const FALLBACK_TO_PRIMARY: bool = false;
/// `backends.*.tls.insecure`.
pub const TLS_INSECURE: bool = false;

/// `backends.*.tls.server_name`: the host part of the backend's `address` (`host:port`,
/// `[v6]:port` or `v4:port`).
pub fn tls_server_name(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

/// `pools.*.required`.
pub const REQUIRED: bool = false;
/// `pools.*.max_replication_lag_bytes` (Redis replica pools): 1 MiB.
pub const MAX_REPLICATION_LAG_BYTES: u64 = 1 << 20;
/// `pools.*.max_replication_lag` (replica pools).
pub const MAX_REPLICATION_LAG: Duration = Duration::from_secs(10);

/// `pools.*.initial_state`: a primary pool waits for a check (routing writes to an
/// unchecked node could reach a replica); other pools start up.
pub fn initial_state(role: PoolRole) -> InitialState {
    match role {
        PoolRole::Primary => InitialState::Down,
        PoolRole::Any | PoolRole::Replica => InitialState::Up,
    }
}

/// `pools.*.on_leave`: a primary pool fences the sessions of a demoted primary;
/// other pools leave them alone.
pub fn on_leave(role: PoolRole) -> OnLeave {
    match role {
        PoolRole::Primary => OnLeave::Close,
        PoolRole::Any | PoolRole::Replica => OnLeave::Keep,
    }
}

/// `listeners.*.max_connections`.
pub const MAX_CONNECTIONS: usize = 10_000;
/// `listeners.*.login_timeout` (`mysql` mode): greeting to OK.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// `listeners.*.max_logins` (`mysql` mode): connection phases at once.
pub const MAX_LOGINS: usize = 64;
/// `listeners.*.proxy_timeout`: the longest a PROXY protocol header may take to arrive.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(3);
/// `listeners.*.keepalive`.
pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// `listeners.*.user_timeout`.
pub const USER_TIMEOUT: Duration = Duration::from_secs(30);
/// `listeners.*.mode`.
pub const MODE: ListenerMode = ListenerMode::Tcp;
/// `listeners.*.tls.handshake_timeout`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// `listeners.*.tls.require_tls` (`mysql` mode only).
pub const REQUIRE_TLS: bool = true;

/// `cluster.prefix`.
pub const CLUSTER_PREFIX: &str = "/switchyard";
/// `cluster.lease_ttl`: a dead proxy's checks move to another within this time.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// `cluster.timeout`: one etcd request.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(1);
/// `cluster.shared_checks`.
pub const SHARED_CHECKS: bool = true;
/// `cluster.light_interval`.
pub const LIGHT_INTERVAL: Duration = Duration::from_secs(2);
/// `pools.*.on_store_lost`.
pub const ON_STORE_LOST: super::OnStoreLost = super::OnStoreLost::Hold;

/// `dns.timeout`: one lookup, all attempts included.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// `backends.*.resolve_min`: a record with a shorter TTL (dnsmasq serves 0) is looked
/// up again after this.
pub const RESOLVE_MIN: Duration = Duration::from_secs(1);
/// `backends.*.resolve_max`: a record with a longer TTL is looked up again after this.
pub const RESOLVE_MAX: Duration = Duration::from_secs(60);
