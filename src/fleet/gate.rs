//! The fleet's gate on a primary pool's local decision (pure): route only to the
//! backend the current epoch names, only while the local decision agrees, and say
//! which backend to propose when it does not.
//!
//! | epoch known         | etcd      | routes                                   | proposes           |
//! |---------------------|-----------|------------------------------------------|--------------------|
//! | not read yet        | any       | nothing (a restarted proxy adopts first)  | nothing            |
//! | no verdict yet      | reachable | nothing                                  | the local primary  |
//! | names B             | reachable | B if the local decision routes B, or B is one of two writers under `keep-current` | the local primary, when it is not B and B was checked here since the verdict arrived |
//! | names B             | lost      | B if the local decision routes B and no second writer shows | nothing (alarm if a local primary differs) |
//! | any                 | lost, pool `on_store_lost = "local"` | the local decision | nothing |

use crate::config::{BackendId, OnStoreLost, PoolConfig, PoolRole, TwoWriters};
use crate::routing::membership::Decision;

use super::verdict::Epoch;

/// What a proxy knows of one pool's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Known {
    /// Not read from etcd yet.
    #[default]
    Unloaded,
    /// Read: the pool has no verdict yet.
    Absent,
    /// The verdict at `epoch` names `name` (`backend`: its slot here, `None` when this
    /// proxy's config has no such member).
    Present {
        /// The key's revision.
        epoch: Epoch,
        /// The named backend's slot, if it is a member here.
        backend: Option<BackendId>,
        /// The named backend.
        name: String,
    },
}

impl Known {
    /// The epoch, when a verdict is known.
    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            Known::Present { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }
}

/// One pool's fleet state in the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFleet {
    /// Its verdict, as last read or watched.
    pub known: Known,
    /// Whether etcd answers.
    pub store_up: bool,
    /// Whether this proxy checked the verdict's backend after the verdict arrived: only
    /// then may it propose another (a view older than the verdict never overrides it).
    pub checked_since: bool,
}

impl Default for PoolFleet {
    fn default() -> Self {
        PoolFleet {
            known: Known::Unloaded,
            store_up: true,
            checked_since: true,
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gated {
    /// The members the pool routes to.
    pub members: Vec<BackendId>,
    /// A backend to write as the next verdict (compare-and-swap on the known epoch).
    pub propose: Option<BackendId>,
    /// Set while the pool holds sessions although this proxy sees a primary that the
    /// fleet's verdict does not name, and cannot propose it (etcd out of reach).
    pub alarm: Option<String>,
}

/// Gates `local` (the pool's own decision) by the fleet's verdict; see the module docs.
pub fn gate(pool: &PoolConfig, local: &Decision, fleet: &PoolFleet, name: impl Fn(BackendId) -> String) -> Gated {
    if pool.role != PoolRole::Primary || (!fleet.store_up && pool.on_store_lost == OnStoreLost::Local) {
        return Gated {
            members: local.members.clone(),
            ..Gated::default()
        };
    }
    let candidate = local.members.first().copied();
    let two_writers = !local.two_writers.is_empty();
    let lost = |why: &str| {
        candidate.map(|c| {
            format!(
                "etcd is out of reach: {} is writable here but {why}; new sessions are held",
                name(c)
            )
        })
    };
    match &fleet.known {
        Known::Unloaded => Gated {
            alarm: if fleet.store_up {
                None
            } else {
                lost("no epoch was read yet")
            },
            ..Gated::default()
        },
        Known::Absent => Gated {
            propose: candidate.filter(|_| fleet.store_up),
            alarm: if fleet.store_up {
                None
            } else {
                lost("the pool has no epoch yet")
            },
            ..Gated::default()
        },
        Known::Present {
            backend,
            epoch,
            name: named,
        } => {
            let agreed = backend.filter(|&b| {
                if fleet.store_up {
                    local.members.contains(&b)
                        || (pool.two_writers == TwoWriters::KeepCurrent && local.two_writers.contains(&b))
                } else {
                    !two_writers && local.members.contains(&b)
                }
            });
            match agreed {
                Some(b) => Gated {
                    members: vec![b],
                    ..Gated::default()
                },
                // A verdict naming a backend this proxy does not have: configs differ
                // across the fleet; never overwrite the others' verdict because of that.
                None if backend.is_none() => Gated {
                    alarm: Some(format!("epoch {epoch} names {named}, which is not a member here; new sessions are held")),
                    ..Gated::default()
                },
                None => Gated {
                    members: Vec::new(),
                    propose: candidate.filter(|&c| fleet.store_up && fleet.checked_since && Some(c) != *backend),
                    alarm: match (fleet.store_up, two_writers) {
                        (true, _) => None,
                        (false, true) => Some(format!(
                            "etcd is out of reach and more than one backend is writable here ({}); epoch {epoch} names {named}; new sessions are held",
                            local.two_writers.iter().map(|&b| name(b)).collect::<Vec<_>>().join(",")
                        )),
                        (false, false) => lost(&format!("epoch {epoch} names {named}")),
                    },
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LeavePolicy, Members, Policy};
    use std::time::Duration;

    fn pool(on_store_lost: OnStoreLost, two_writers: TwoWriters) -> PoolConfig {
        PoolConfig {
            name: "writer".into(),
            role: PoolRole::Primary,
            policy: Policy::First,
            members: Members::new([("db1".to_string(), 0), ("db2".to_string(), 1), ("db3".to_string(), 2)]),
            initially_up: false,
            on_leave: LeavePolicy::Close,
            hold_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_replication_lag: Duration::from_secs(10),
            max_replication_lag_bytes: 1 << 20,
            fallback_to_primary: false,
            two_writers,
            set_name: None,
            required: false,
            on_store_lost,
            switchover: None,
            sentinel: None,
            galera: false,
            donor_ok: false,
        }
    }

    fn local(members: &[BackendId], two: &[BackendId]) -> Decision {
        Decision {
            members: members.to_vec(),
            two_writers: two.to_vec(),
            newest_election: None,
        }
    }

    fn names(id: BackendId) -> String {
        format!("db{}", id + 1)
    }

    fn present(epoch: Epoch, backend: BackendId) -> Known {
        Known::Present {
            epoch,
            backend: Some(backend),
            name: names(backend),
        }
    }

    fn fleet(known: Known, store_up: bool) -> PoolFleet {
        PoolFleet {
            known,
            store_up,
            checked_since: true,
        }
    }

    /// (case, local members, local two writers, known, store up, routed, proposed, alarm?)
    type Case = (
        &'static str,
        &'static [BackendId],
        &'static [BackendId],
        Known,
        bool,
        &'static [BackendId],
        Option<BackendId>,
        bool,
    );

    #[test]
    fn routes_only_the_epochs_primary_and_only_with_the_local_checks() {
        let cases: Vec<Case> = vec![
            (
                "restarted proxy: adopt before routing",
                &[0],
                &[],
                Known::Unloaded,
                true,
                &[],
                None,
                false,
            ),
            (
                "first verdict of the fleet",
                &[0],
                &[],
                Known::Absent,
                true,
                &[],
                Some(0),
                false,
            ),
            ("epoch agrees", &[0], &[], present(7, 0), true, &[0], None, false),
            (
                "failover seen here first: propose, hold",
                &[1],
                &[],
                present(7, 0),
                true,
                &[],
                Some(1),
                false,
            ),
            (
                "epoch moved, local checks not there yet",
                &[0],
                &[],
                present(8, 1),
                true,
                &[],
                Some(0),
                false,
            ),
            (
                "epoch names a node this proxy sees down",
                &[],
                &[],
                present(8, 1),
                true,
                &[],
                None,
                false,
            ),
            (
                "old primary back writable: epoch decides",
                &[0],
                &[0, 1],
                present(8, 1),
                true,
                &[1],
                None,
                false,
            ),
            (
                "store lost, epoch's primary agrees",
                &[0],
                &[],
                present(7, 0),
                false,
                &[0],
                None,
                false,
            ),
            (
                "store lost, never move",
                &[1],
                &[],
                present(7, 0),
                false,
                &[],
                None,
                true,
            ),
            (
                "store lost, second writer shows",
                &[0],
                &[0, 1],
                present(7, 0),
                false,
                &[],
                None,
                true,
            ),
            (
                "store lost before the first read",
                &[0],
                &[],
                Known::Unloaded,
                false,
                &[],
                None,
                true,
            ),
            (
                "store lost, no verdict yet",
                &[0],
                &[],
                Known::Absent,
                false,
                &[],
                None,
                true,
            ),
        ];
        let pool = pool(OnStoreLost::Hold, TwoWriters::KeepCurrent);
        for (case, members, two, known, up, routed, proposed, alarm) in cases {
            let gated = gate(&pool, &local(members, two), &fleet(known, up), names);
            assert_eq!(gated.members, routed, "{case}: routed");
            assert_eq!(gated.propose, proposed, "{case}: proposed");
            assert_eq!(gated.alarm.is_some(), alarm, "{case}: alarm {:?}", gated.alarm);
        }
    }

    #[test]
    fn a_view_older_than_the_verdict_never_overrides_it() {
        let pool = pool(OnStoreLost::Hold, TwoWriters::KeepCurrent);
        let stale = PoolFleet {
            checked_since: false,
            ..fleet(present(8, 1), true)
        };
        let gated = gate(&pool, &local(&[0], &[]), &stale, names);
        assert_eq!(gated, Gated::default(), "holds until db2 was checked again");
    }

    #[test]
    fn fail_closed_pools_route_no_second_writer_even_the_epochs() {
        let pool = pool(OnStoreLost::Hold, TwoWriters::FailClosed);
        let gated = gate(&pool, &local(&[], &[0, 1]), &fleet(present(8, 1), true), names);
        assert_eq!(gated, Gated::default());
    }

    #[test]
    fn a_verdict_naming_a_backend_unknown_here_routes_nothing() {
        let pool = pool(OnStoreLost::Hold, TwoWriters::KeepCurrent);
        let known = Known::Present {
            epoch: 3,
            backend: None,
            name: "db9".into(),
        };
        let gated = gate(&pool, &local(&[0], &[]), &fleet(known, true), names);
        assert_eq!((gated.members, gated.propose), (vec![], None), "never overwrites it");
        assert!(gated.alarm.is_some_and(|a| a.contains("db9")));
    }

    #[test]
    fn local_pools_judge_alone_while_the_store_is_lost() {
        let pool = pool(OnStoreLost::Local, TwoWriters::KeepCurrent);
        let gated = gate(&pool, &local(&[1], &[]), &fleet(present(7, 0), false), names);
        assert_eq!(gated.members, vec![1]);
        let gated = gate(&pool, &local(&[1], &[]), &fleet(present(7, 0), true), names);
        assert_eq!(
            (gated.members, gated.propose),
            (vec![], Some(1)),
            "with etcd back, the epoch rules again"
        );
    }

    #[test]
    fn other_roles_pass_through() {
        let mut pool = pool(OnStoreLost::Hold, TwoWriters::KeepCurrent);
        pool.role = PoolRole::Replica;
        let gated = gate(&pool, &local(&[1, 2], &[]), &fleet(Known::Unloaded, false), names);
        assert_eq!(gated.members, vec![1, 2]);
    }
}
