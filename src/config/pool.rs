//! Pools: which role they serve, how they pick, and what happens to the sessions of a
//! member that leaves.

use std::ops::Deref;
use std::time::Duration;

use serde::Deserialize;

use super::{BackendId, Secret};

/// Which role a pool serves. `Any` accepts every healthy backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolRole {
    /// Every healthy backend, whatever its role.
    Any,
    /// At most one backend: the writable primary (see `routing::membership` for the
    /// single-writer rule).
    Primary,
    /// Replicas that replicate and lag at most `max_replication_lag`.
    #[serde(alias = "secondary")]
    Replica,
}

/// What a primary pool does when more than one member reports itself writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TwoWriters {
    /// Keep the current primary while it stays writable; with no current primary,
    /// route nowhere. Either way, raise the alarm.
    KeepCurrent,
    /// Route nowhere while two members are writable, even the current primary.
    FailClosed,
}

/// How a pool orders its routable members for a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The first routable member in the pool's `backends` order (failover order).
    First,
    /// Each new session starts one member further along the `backends` order.
    RoundRobin,
    /// The member with the fewest active sessions first (ties spread round-robin).
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

/// A pool: the backends a listener routes to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Its identity, in this config and across reloads.
    pub name: String,
    /// The role it serves.
    pub role: PoolRole,
    /// How a new session orders the routable members.
    pub policy: Policy,
    /// In priority order.
    pub members: Members,
    /// Whether a backend not yet checked may take traffic.
    pub initially_up: bool,
    /// What happens to live sessions of a member that leaves the pool.
    pub on_leave: LeavePolicy,
    /// How long a new session waits for a routable member before it is closed.
    pub hold_timeout: Duration,
    /// Per connect attempt to a backend; on failure the next member is tried.
    pub connect_timeout: Duration,
    /// A session with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Replica pools: members lagging more than this leave the pool.
    pub max_replication_lag: Duration,
    /// Replica pools of Redis members: the most a replica's offset may trail its
    /// master's, bytes.
    pub max_replication_lag_bytes: u64,
    /// Replica pools: route to the primary when no replica qualifies.
    pub fallback_to_primary: bool,
    /// Primary pools: the rule when two members are writable.
    pub two_writers: TwoWriters,
    /// MongoDB pools: only members reporting this replica-set name are eligible.
    pub set_name: Option<String>,
    /// Readiness (`/health/ready`) needs this pool to route, or at least reach one of
    /// its members.
    pub required: bool,
    /// Primary pools of a `[cluster]`: what to do while etcd is out of reach.
    pub on_store_lost: super::OnStoreLost,
    /// Primary MySQL pools: an orchestrated switchover, when configured.
    pub switchover: Option<SwitchoverConfig>,
    /// Primary Redis pools: the Sentinels whose word a master needs.
    pub sentinel: Option<SentinelConfig>,
    /// Every member has a `kind = "galera"` check: the pool follows the Galera rules
    /// (`routing::membership`).
    pub galera: bool,
    /// Galera pools: a `Donor/Desynced` node may take traffic.
    pub donor_ok: bool,
}

/// `[pools.NAME.sentinel]`: the Sentinels a primary Redis pool asks which node is the
/// master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// `host:port` of each Sentinel, as written.
    pub sentinels: Vec<String>,
    /// The name they monitor the master by.
    pub master_name: String,
    /// The ACL user for `AUTH`, with `password`.
    pub user: Option<String>,
    /// The password for `AUTH`; `None`: no `AUTH`.
    pub password: Option<Secret>,
    /// Each connect and query.
    pub timeout: Duration,
    /// Between two queries of one Sentinel when no event arrives.
    pub interval: Duration,
}

/// The longest an operator's hold, or a switchover's, may hold a pool.
pub const MAX_HOLD: Duration = Duration::from_secs(600);

/// `[pools.NAME.switchover]`: the accounts and bounds of an orchestrated switchover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchoverConfig {
    /// The account that demotes, promotes and repoints.
    pub user: String,
    /// Its password; `None` for a passwordless account.
    pub password: Option<Secret>,
    /// The account replicas replicate as (the old primary rejoins with it).
    pub replication_user: String,
    /// Its password.
    pub replication_password: Option<Secret>,
    /// How long the old primary's sessions have to reach an idle point.
    pub drain: Duration,
    /// How long the target may take to apply the old primary's last transaction.
    pub catch_up_timeout: Duration,
    /// How long the checks may take to see the target as the primary.
    pub route_timeout: Duration,
    /// Each login and statement.
    pub statement_timeout: Duration,
}

impl SwitchoverConfig {
    /// The longest a switchover holds the pool: every bounded step, and a margin.
    pub fn hold(&self) -> Duration {
        self.drain + self.catch_up_timeout + self.route_timeout + 8 * self.statement_timeout
    }
}

/// A pool's members in priority order: their indexes in this config (which the
/// runtime uses, through `Deref`) and their names (which identify them: two
/// `Members` are equal when they name the same backends in the same order).
#[derive(Debug, Clone, Default)]
pub struct Members {
    ids: Vec<BackendId>,
    names: Vec<String>,
}

impl Members {
    /// From `(name, id)` pairs in priority order.
    pub fn new(members: impl IntoIterator<Item = (String, BackendId)>) -> Self {
        let (names, ids) = members.into_iter().unzip();
        Members { ids, names }
    }

    /// The members' backend names, in priority order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Deref for Members {
    type Target = [BackendId];

    fn deref(&self) -> &[BackendId] {
        &self.ids
    }
}

impl PartialEq for Members {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names
    }
}

impl Eq for Members {}
