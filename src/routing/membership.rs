//! Which members of a pool may take new sessions: the whole routing decision, pure.
//!
//! Members an operator drained or disabled are never routable. Then:
//!
//! - `role = "any"`: members that are up (or unchecked, when the pool starts them up).
//! - `role = "primary"` — the **single-writer rule**: the candidates are the members
//!   that are up and report themselves writable. One candidate: it is the primary.
//!   Several (two writers): with `two_writers = "keep-current"` the current primary
//!   stays while it is still among them, and with no current primary the pool routes
//!   nowhere; with `"fail-closed"` the pool routes nowhere at all. Either way the
//!   decision carries an alarm. None: no primary; new sessions are held. A pool
//!   without a primary picks one only after every member was checked at least once,
//!   so the order in which the first checks return never chooses among two writers.
//! - MongoDB primary pools also apply the **stale-primary rule** of MongoDB's SDAM
//!   specification ([`crate::routing::election`]): a member claiming primary with an
//!   election older than the newest the pool has seen is not a candidate, so an old
//!   primary that comes back still claiming primary is ignored. A pool with a
//!   `set_name` only considers members reporting that replica-set name.
//! - Redis primary pools: a master another master's history continued is superseded
//!   (not a candidate), and with `[pools.NAME.sentinel]` only the master the
//!   Sentinels name is one ([`Named`], from `crate::sentinel`).
//! - Galera pools (members with `kind = "galera"` checks) follow their own rules:
//!   one pinned writer, readers beside it ([`galera`]).
//! - `role = "replica"` (or `"secondary"`): MongoDB secondaries that are not hidden
//!   and whose `lastWrite` trails the newest in the pool by at most
//!   `max_replication_lag`; MySQL replicas that are up, read-only, whose applier (SQL) thread
//!   runs, and whose receiver (IO) thread either runs with a known lag within
//!   `max_replication_lag` or is reconnecting to an unreachable source (then it has
//!   all it could get; a NULL lag otherwise means replication is broken). With
//!   `fallback_to_primary`, an empty replica pool routes to the one writable member.

use crate::backend::AdminMode;
use crate::config::{BackendId, PoolConfig, PoolRole, TwoWriters};
use crate::health::{Report, Role, Status};
use crate::routing::election::{Claim, Newest};

/// What the router knows of one backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendState {
    /// Up, down or not checked yet, from its checker's hysteresis.
    pub status: Status,
    /// The last successful check's report.
    pub report: Option<Report>,
    /// An operator's drain or disable takes the backend out of every pool.
    pub admin: AdminMode,
    /// It takes no traffic before its first check, even where a pool lets unchecked
    /// members in (a member a moved host name added).
    pub check_first: bool,
}

impl BackendState {
    /// The state a backend's view records: `Unknown` for a new one, or what a hot
    /// upgrade handed over.
    pub fn from_view(view: &crate::backend::BackendView) -> Self {
        BackendState {
            status: view.status,
            report: view.report.clone(),
            admin: view.admin,
            check_first: false,
        }
    }

    /// The state of `backend` as its view records it.
    pub fn of(backend: &crate::backend::Backend) -> Self {
        BackendState {
            check_first: backend.follows_dns,
            ..BackendState::from_view(&backend.view())
        }
    }

    /// The role its last successful check reported (`Unknown` before one).
    pub fn role(&self) -> Role {
        self.report.as_ref().map(|r| r.role).unwrap_or(Role::Unknown)
    }

    fn is_writable(&self) -> bool {
        self.status == Status::Up && self.role() == Role::Primary
    }

    /// What its MongoDB reply claims for the stale-primary rule (`None`: not MongoDB).
    fn claim(&self) -> Option<Claim> {
        Some(self.report.as_ref()?.mongo.as_ref()?.claim())
    }

    fn last_write_ms(&self) -> Option<i64> {
        self.report.as_ref()?.mongo.as_ref()?.last_write_ms
    }

    /// MongoDB members must report the pool's replica-set name when it sets one.
    fn in_set(&self, pool: &PoolConfig) -> bool {
        match &pool.set_name {
            None => true,
            Some(name) => {
                let reported = self
                    .report
                    .as_ref()
                    .and_then(|r| r.mongo.as_ref())
                    .and_then(|m| m.set_name.as_ref());
                reported == Some(name)
            }
        }
    }
}

/// A pool's routable members, in priority order, and what went wrong.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// The routable members, in priority order.
    pub members: Vec<BackendId>,
    /// Set when more than one member is writable.
    pub two_writers: Vec<BackendId>,
    /// The newest MongoDB `(electionId, setVersion)` seen so far in this pool.
    pub newest_election: Option<Newest>,
}

/// What a primary pool's Sentinels say (`[pools.NAME.sentinel]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Named {
    /// The pool has no Sentinels.
    #[default]
    Unused,
    /// They name this member.
    Member(BackendId),
    /// They named no member yet, or an address that is none.
    Nobody,
}

impl Named {
    fn allows(self, b: BackendId) -> bool {
        match self {
            Named::Unused => true,
            Named::Member(named) => named == b,
            Named::Nobody => false,
        }
    }
}

/// What a decision takes besides the pool and its members' states.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// The pool's current primary (primary pools only).
    pub current: Option<BackendId>,
    /// The newest MongoDB election the pool has seen.
    pub seen: Option<&'a Newest>,
    /// The word of the pool's Sentinels: a master they do not name is no candidate.
    pub named: Named,
    /// The writers the primary pools picked: Galera replica pools leave them out.
    pub writers: &'a [BackendId],
}

/// Decides `pool`'s routable members. `current` is the pool's current primary
/// (primary pools only).
pub fn decide(
    pool: &PoolConfig,
    states: &[BackendState],
    current: Option<BackendId>,
    seen: Option<&Newest>,
) -> Decision {
    decide_with(
        pool,
        states,
        Inputs {
            current,
            seen,
            ..Inputs::default()
        },
    )
}

/// [`decide`] with all of [`Inputs`].
pub fn decide_with(pool: &PoolConfig, states: &[BackendState], inputs: Inputs<'_>) -> Decision {
    let Inputs {
        current,
        seen,
        named,
        writers,
    } = inputs;
    let members = pool.members.iter().copied().filter(|&b| {
        states[b].admin == AdminMode::Enabled
            && states[b].in_set(pool)
            && (!pool.galera || galera::usable(pool, &states[b]))
    });
    match pool.role {
        PoolRole::Any => Decision {
            members: members
                .filter(|&b| match states[b].status {
                    Status::Up => true,
                    Status::Unknown => pool.initially_up && !states[b].check_first,
                    Status::Down => false,
                })
                .collect(),
            ..Decision::default()
        },
        PoolRole::Primary => {
            // Pick a first primary only once every member has answered (or failed)
            // once, so that the order of the first checks never picks among writers.
            if current.is_none() && pool.members.iter().any(|&b| states[b].status == Status::Unknown) {
                return Decision {
                    newest_election: seen.cloned(),
                    ..Decision::default()
                };
            }
            if pool.galera {
                return galera::writer(states, members.collect(), current);
            }
            let (masters, newest_election) = current_writers(pool, states, members, seen);
            // Redis: a master whose history another master continued is superseded, and
            // with Sentinels only the master they name is one.
            let writable: Vec<BackendId> = masters
                .iter()
                .copied()
                .filter(|&b| !superseded(pool, states, b) && named.allows(b))
                .collect();
            if writable.len() == 1 && masters.len() > 1 {
                return Decision {
                    members: writable,
                    two_writers: masters,
                    newest_election,
                };
            }
            match writable.len() {
                0 | 1 => Decision {
                    members: writable,
                    two_writers: Vec::new(),
                    newest_election,
                },
                _ => {
                    let keep = current.filter(|c| pool.two_writers == TwoWriters::KeepCurrent && writable.contains(c));
                    Decision {
                        members: keep.into_iter().collect(),
                        two_writers: writable,
                        newest_election,
                    }
                }
            }
        }
        PoolRole::Replica if pool.galera => galera::readers(pool, members.collect(), writers),
        PoolRole::Replica => {
            // MongoDB lag: behind the newest lastWrite any member of the pool reports.
            let newest_write = pool.members.iter().filter_map(|&b| states[b].last_write_ms()).max();
            let replicas: Vec<_> = members
                .clone()
                .filter(|&b| replica_ok(&states[b], pool, newest_write))
                .filter(|&b| redis_lag_ok(pool, states, b))
                .collect();
            if !replicas.is_empty() || !pool.fallback_to_primary {
                return Decision {
                    members: replicas,
                    ..Decision::default()
                };
            }
            let (writable, _) = current_writers(pool, states, members, seen);
            let members = if writable.len() == 1 { writable } else { Vec::new() };
            Decision {
                members,
                ..Decision::default()
            }
        }
    }
}

/// Whether Redis replica `b` trails its master by at most the pool's
/// `max_replication_lag_bytes`: the master (the member whose address is the replica's
/// source, by its last report) has `master_repl_offset`, the replica
/// `slave_repl_offset`. Not Redis, or no such master in the pool: true (the link
/// state decides, in [`replica_ok`]).
fn redis_lag_ok(pool: &PoolConfig, states: &[BackendState], b: BackendId) -> bool {
    let Some(report) = states[b].report.as_ref() else {
        return true;
    };
    let Some(info) = report.redis.as_ref().filter(|_| report.role == Role::Replica) else {
        return true;
    };
    let Some(mine) = info.replica_offset else {
        return true;
    };
    // The master this replica follows: a member reporting the same history as master.
    let master = pool.members.iter().filter(|&&m| m != b).find_map(|&m| {
        let r = states[m].report.as_ref()?;
        let theirs = r.redis.as_ref()?;
        (r.role == Role::Primary && theirs.replid == info.replid).then_some(theirs.offset)
    });
    match master {
        Some(offset) => u64::try_from(offset - mine).unwrap_or(0) <= pool.max_replication_lag_bytes,
        None => true,
    }
}

/// Whether `b` is a Redis master that another member's history continued: that
/// member (a master, reachable or not: its last report counts) has `b`'s replid as its
/// `master_replid2`, so `b` is an old master that has not learnt it was replaced (after
/// a planned failover, or a SIGSTOP and SIGCONT). Offsets would mislead: the old one may
/// report the higher offset.
fn superseded(pool: &PoolConfig, states: &[BackendState], b: BackendId) -> bool {
    let Some(mine) = states[b].report.as_ref().and_then(|r| r.redis.as_ref()) else {
        return false;
    };
    if mine.replid.is_empty() {
        return false;
    }
    pool.members.iter().any(|&other| {
        other != b
            && states[other].role() == Role::Primary
            && states[other]
                .report
                .as_ref()
                .and_then(|r| r.redis.as_ref())
                .is_some_and(|r| r.replid2 == mine.replid && r.replid != mine.replid)
    })
}

/// The writable members that are not stale primaries, and the newest election seen.
///
/// The stale-primary rule (MongoDB SDAM, see [`crate::routing::election`]): the newest
/// election is taken from every member's latest reply that claims primary — down,
/// drained or not — so a newly elected primary that is not routable yet still demotes
/// the old one. Members that are not MongoDB (MySQL) make no claims.
fn current_writers(
    pool: &PoolConfig,
    states: &[BackendState],
    members: impl Iterator<Item = BackendId>,
    seen: Option<&Newest>,
) -> (Vec<BackendId>, Option<Newest>) {
    let claims: Vec<Claim> = pool
        .members
        .iter()
        .filter(|&&b| states[b].in_set(pool) && states[b].role() == Role::Primary)
        .filter_map(|&b| states[b].claim())
        .collect();
    let newest = (!claims.is_empty() || seen.is_some()).then(|| Newest::after(seen, &claims));
    let writable = members
        .filter(|&b| states[b].is_writable())
        .filter(|&b| match (states[b].claim(), &newest) {
            (Some(claim), Some(newest)) => !newest.is_stale(&claim),
            _ => true,
        })
        .collect();
    (writable, newest)
}

fn replica_ok(state: &BackendState, pool: &PoolConfig, newest_write: Option<i64>) -> bool {
    if state.status != Status::Up {
        return false;
    }
    if state.role() == Role::Secondary {
        let hidden = state
            .report
            .as_ref()
            .and_then(|r| r.mongo.as_ref())
            .is_some_and(|m| m.hidden);
        let lag_ms = match (newest_write, state.last_write_ms()) {
            (Some(newest), Some(own)) => newest.saturating_sub(own),
            _ => 0, // no lastWrite reported: nothing to compare
        };
        return !hidden && u128::try_from(lag_ms).unwrap_or(0) <= pool.max_replication_lag.as_millis();
    }
    if state.role() != Role::Replica {
        return false;
    }
    let Some(replica) = state.report.as_ref().and_then(|r| r.replica.as_ref()) else {
        return false; // read-only but replicating from nobody: its data may be any age
    };
    if !replica.sql_running {
        return false;
    }
    match replica.lag {
        Some(lag) => replica.io_running && lag <= pool.max_replication_lag,
        None => replica.io_connecting,
    }
}

mod galera;
#[cfg(test)]
mod tests;
