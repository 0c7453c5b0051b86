//! The Galera rules of [`decide_with`](super::decide_with), for pools whose members
//! have `kind = "galera"` checks. Every synced node of a Galera cluster takes writes,
//! and writes to two nodes at once conflict at certification (deadlock errors under
//! load), so:
//!
//! - a node takes traffic only while it is up and its last report says it may
//!   ([`GaleraState::unusable`](crate::health::probe::GaleraState::unusable)): in a
//!   Primary component, connected, ready, not rejecting queries, `Synced` (or
//!   `Donor/Desynced` with `donor_ok`), whatever the pool's role;
//! - `role = "primary"` pins one writer: the current one while it stays usable, else
//!   the first usable writable member in the pool's order. A node that recovers never
//!   takes the writer's place back: a move is a failover, with fencing;
//! - `role = "replica"` spreads reads over the usable nodes other than the writers
//!   the primary pools picked (with `fallback_to_primary`, the writer when no other
//!   node is usable); `role = "any"` takes every usable node.

use super::{BackendState, Decision};
use crate::config::{BackendId, PoolConfig};
use crate::health::{Role, Status};

impl BackendState {
    /// Why a Galera node must take no traffic from `pool`, by its last report (`None`:
    /// it may, or it is no Galera node).
    pub fn galera_unusable(&self, pool: &PoolConfig) -> Option<String> {
        self.report.as_ref()?.galera.as_ref()?.unusable(pool.donor_ok)
    }
}

/// Whether `b` is up and its wsrep state lets it take traffic.
pub(super) fn usable(pool: &PoolConfig, state: &BackendState) -> bool {
    let reported = state.report.as_ref().is_some_and(|r| r.galera.is_some());
    state.status == Status::Up && reported && state.galera_unusable(pool).is_none()
}

/// The pinned writer among `members` (already usable).
pub(super) fn writer(states: &[BackendState], members: Vec<BackendId>, current: Option<BackendId>) -> Decision {
    let writable: Vec<BackendId> = members
        .into_iter()
        .filter(|&b| states[b].role() == Role::Primary)
        .collect();
    let pick = current
        .filter(|c| writable.contains(c))
        .or_else(|| writable.first().copied());
    Decision {
        members: pick.into_iter().collect(),
        ..Decision::default()
    }
}

/// The readers among `members` (already usable): all but `writers`, or, when none is
/// left and the pool falls back, the writer.
pub(super) fn readers(pool: &PoolConfig, members: Vec<BackendId>, writers: &[BackendId]) -> Decision {
    let (busy, others): (Vec<BackendId>, Vec<BackendId>) = members.into_iter().partition(|b| writers.contains(b));
    let members = if others.is_empty() && pool.fallback_to_primary {
        busy.into_iter().take(1).collect()
    } else {
        others
    };
    Decision {
        members,
        ..Decision::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decide, decide_with, Inputs};
    use super::*;
    use crate::config::PoolRole;
    use crate::health::probe::GaleraState;
    use crate::health::Report;

    fn pool(role: PoolRole) -> PoolConfig {
        let mut pool = crate::routing::membership::tests::pool(role);
        pool.galera = true;
        pool
    }

    fn node(state: u32, comment: &str, cluster: &str) -> BackendState {
        BackendState {
            status: Status::Up,
            report: Some(Report {
                role: Role::Primary,
                galera: Some(GaleraState {
                    local_state: Some(state),
                    state_comment: comment.into(),
                    cluster_status: cluster.into(),
                    ready: cluster == "Primary",
                    connected: true,
                    reject_queries: "NONE".into(),
                    ..GaleraState::default()
                }),
                ..Report::default()
            }),
            ..BackendState::default()
        }
    }

    fn synced() -> BackendState {
        node(4, "Synced", "Primary")
    }

    #[test]
    fn the_writer_is_the_first_synced_node_and_stays_when_an_earlier_one_recovers() {
        let primary = pool(PoolRole::Primary);
        let all = [synced(), synced(), synced()];
        // Every node writable: one writer, no two-writers alarm.
        let d = decide(&primary, &all, None, None);
        assert_eq!((d.members, d.two_writers), (vec![0], vec![]));
        // The writer falls out of the Primary component: the next node takes over.
        let cut = [node(0, "Initialized", "non-Primary"), synced(), synced()];
        assert_eq!(decide(&primary, &cut, Some(0), None).members, [1]);
        // It comes back Synced: the writer stays where it is.
        assert_eq!(decide(&primary, &all, Some(1), None).members, [1]);
    }

    #[test]
    fn donors_desynced_joining_and_down_nodes_take_nothing() {
        let primary = pool(PoolRole::Primary);
        let mut down = synced();
        down.status = Status::Down;
        let states = [
            node(2, "Donor/Desynced", "Primary"),
            node(1, "Joining", "Primary"),
            down,
        ];
        assert!(decide(&primary, &states, Some(0), None).members.is_empty());
        let mut tolerant = pool(PoolRole::Primary);
        tolerant.donor_ok = true;
        assert_eq!(decide(&tolerant, &states, Some(0), None).members, [0]);
        let any = pool(PoolRole::Any);
        assert!(decide(&any, &states, None, None).members.is_empty());
    }

    #[test]
    fn a_read_only_node_is_no_writer_but_serves_reads() {
        let mut read_only = synced();
        read_only.report.as_mut().unwrap().role = Role::Replica;
        let states = [read_only, synced(), synced()];
        assert_eq!(decide(&pool(PoolRole::Primary), &states, None, None).members, [1]);
        assert_eq!(decide(&pool(PoolRole::Any), &states, None, None).members, [0, 1, 2]);
    }

    #[test]
    fn readers_leave_out_the_writer_and_fall_back_to_it_only_when_asked() {
        let replica = pool(PoolRole::Replica);
        let states = [synced(), synced(), node(0, "Initialized", "non-Primary")];
        let reading = |pool: &PoolConfig, writers: &[BackendId]| {
            let inputs = Inputs {
                writers,
                ..Inputs::default()
            };
            decide_with(pool, &states, inputs).members
        };
        assert_eq!(reading(&replica, &[0]), [1]);
        assert_eq!(reading(&replica, &[]), [0, 1]);
        let only_writer = [synced(), node(2, "Donor/Desynced", "Primary"), synced()];
        let inputs = Inputs {
            writers: &[0, 2],
            ..Inputs::default()
        };
        assert!(decide_with(&replica, &only_writer, inputs).members.is_empty());
        let mut falling_back = pool(PoolRole::Replica);
        falling_back.fallback_to_primary = true;
        assert_eq!(decide_with(&falling_back, &only_writer, inputs).members, [0]);
    }
}
