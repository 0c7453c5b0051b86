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
//! - `role = "replica"`: members that are up, read-only, whose applier (SQL) thread
//!   runs, and whose receiver (IO) thread either runs with a known lag within
//!   `max_replication_lag` or is reconnecting to an unreachable source (then it has
//!   all it could get; a NULL lag otherwise means replication is broken). With
//!   `fallback_to_primary`, an empty replica pool routes to the one writable member.

use crate::backend::AdminMode;
use crate::config::{BackendId, PoolConfig, PoolRole, TwoWriters};
use crate::health::{Report, Role, Status};

/// What the router knows of one backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendState {
    pub status: Status,
    /// The last successful check's report.
    pub report: Option<Report>,
    /// An operator's drain or disable takes the backend out of every pool.
    pub admin: AdminMode,
}

impl BackendState {
    pub fn role(&self) -> Role {
        self.report.as_ref().map(|r| r.role).unwrap_or(Role::Unknown)
    }

    fn is_writable(&self) -> bool {
        self.status == Status::Up && self.role() == Role::Primary
    }
}

/// A pool's routable members, in priority order, and what went wrong.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub members: Vec<BackendId>,
    /// Set when more than one member is writable.
    pub two_writers: Vec<BackendId>,
}

/// Decides `pool`'s routable members. `current` is the pool's current primary
/// (primary pools only).
pub fn decide(pool: &PoolConfig, states: &[BackendState], current: Option<BackendId>) -> Decision {
    let members = pool
        .members
        .iter()
        .copied()
        .filter(|&b| states[b].admin == AdminMode::Enabled);
    match pool.role {
        PoolRole::Any => Decision {
            members: members
                .filter(|&b| match states[b].status {
                    Status::Up => true,
                    Status::Unknown => pool.initially_up,
                    Status::Down => false,
                })
                .collect(),
            two_writers: Vec::new(),
        },
        PoolRole::Primary => {
            // Pick a first primary only once every member has answered (or failed)
            // once, so that the order of the first checks never picks among writers.
            if current.is_none() && pool.members.iter().any(|&b| states[b].status == Status::Unknown) {
                return Decision::default();
            }
            let writable: Vec<_> = members.filter(|&b| states[b].is_writable()).collect();
            match writable.len() {
                0 | 1 => Decision {
                    members: writable,
                    two_writers: Vec::new(),
                },
                _ => {
                    let keep = current.filter(|c| pool.two_writers == TwoWriters::KeepCurrent && writable.contains(c));
                    Decision {
                        members: keep.into_iter().collect(),
                        two_writers: writable,
                    }
                }
            }
        }
        PoolRole::Replica => {
            let replicas: Vec<_> = members.clone().filter(|&b| replica_ok(&states[b], pool)).collect();
            if !replicas.is_empty() || !pool.fallback_to_primary {
                return Decision {
                    members: replicas,
                    two_writers: Vec::new(),
                };
            }
            let writable: Vec<_> = members.filter(|&b| states[b].is_writable()).collect();
            let members = if writable.len() == 1 { writable } else { Vec::new() };
            Decision {
                members,
                two_writers: Vec::new(),
            }
        }
    }
}

fn replica_ok(state: &BackendState, pool: &PoolConfig) -> bool {
    if state.status != Status::Up || state.role() != Role::Replica {
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

#[cfg(test)]
mod tests;
