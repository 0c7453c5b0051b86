//! The router: the only writer of the routing table. It receives every
//! [`Observation`], logs each flip once, rebuilds the table when membership changes,
//! publishes it, and fences the sessions of members that left their pool.

use std::sync::Arc;

use metrics::{Counter, Gauge};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Routing, RoutingTable};
use crate::backend::{Backend, LastCheck};
use crate::config::{BackendId, LeavePolicy, PoolConfig};
use crate::health::{Layer, Observation, Role, Status};
use crate::metrics as m;
use crate::pool::{Eviction, Pool};

/// What the router knows of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendState {
    pub status: Status,
    pub role: Role,
}

/// The members of `pool` that may take new sessions, in priority order. Pure: the
/// whole routing decision is here.
pub fn membership(pool: &PoolConfig, states: &[BackendState]) -> Vec<BackendId> {
    pool.members
        .iter()
        .copied()
        .filter(|&b| match states[b].status {
            Status::Up => true,
            Status::Unknown => pool.initially_up,
            Status::Down => false,
        })
        .collect()
}

struct CheckMetrics {
    checks: Counter,
    failures: [Counter; 3],
    flips: Counter,
    up: Gauge,
}

impl CheckMetrics {
    fn new(backend: &str) -> Self {
        let failures = [Layer::L4, Layer::L6, Layer::L7].map(
            |layer| metrics::counter!(m::CHECK_FAILURES, "backend" => backend.to_string(), "layer" => layer.as_str()),
        );
        CheckMetrics {
            checks: metrics::counter!(m::CHECKS, "backend" => backend.to_string()),
            failures,
            flips: metrics::counter!(m::FLIPS, "backend" => backend.to_string()),
            up: metrics::gauge!(m::BACKEND_UP, "backend" => backend.to_string()),
        }
    }
}

/// The single writer of the routing table.
pub struct Router {
    routing: Arc<Routing>,
    backends: Vec<Arc<Backend>>,
    pools: Vec<Arc<Pool>>,
    states: Vec<BackendState>,
    /// Routable backends per pool in the published table.
    current: Vec<Vec<BackendId>>,
    metrics: Vec<CheckMetrics>,
    generation: Gauge,
    events: mpsc::Receiver<Observation>,
}

impl Router {
    /// Builds the first table from the pools' initial states and publishes it.
    pub fn new(backends: Vec<Arc<Backend>>, pools: Vec<Arc<Pool>>, events: mpsc::Receiver<Observation>) -> Self {
        let states = vec![
            BackendState {
                status: Status::Unknown,
                role: Role::Unknown
            };
            backends.len()
        ];
        let metrics = backends.iter().map(|b| CheckMetrics::new(&b.name)).collect();
        let mut router = Router {
            routing: Arc::new(Routing::new(RoutingTable::default())),
            backends,
            pools,
            states,
            current: Vec::new(),
            metrics,
            generation: metrics::gauge!(m::ROUTING_GENERATION),
            events,
        };
        router.current = router
            .pools
            .iter()
            .map(|p| membership(&p.config, &router.states))
            .collect();
        router.publish();
        router
    }

    /// The handle the data path loads from.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.clone()
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(observation) => self.apply(observation),
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn apply(&mut self, obs: Observation) {
        let backend = self.backends[obs.backend].clone();
        let metrics = &self.metrics[obs.backend];
        metrics.checks.increment(1);
        let role = obs.result.as_ref().map(|r| r.role).unwrap_or(Role::Unknown);
        let last = match &obs.result {
            Ok(_) => LastCheck::now(true, None, None, obs.latency),
            Err(e) => {
                metrics.failures[e.layer() as usize].increment(1);
                LastCheck::now(false, Some(e.to_string()), Some(e.layer()), obs.latency)
            }
        };
        backend.update_view(|view| {
            view.status = obs.status;
            view.role = role;
            view.last_check = Some(last);
        });
        if let Some(flip) = obs.flip {
            metrics.flips.increment(1);
            metrics.up.set(if flip.to == Status::Up { 1.0 } else { 0.0 });
            let pools = self.pools_of(obs.backend);
            match &obs.result {
                Err(e) => {
                    warn!(backend = %backend.name, pools = %pools, from = ?flip.from, to = ?flip.to, cause = %e, layer = ?e.layer(), "backend flipped")
                }
                Ok(_) => {
                    info!(backend = %backend.name, pools = %pools, from = ?flip.from, to = ?flip.to, "backend flipped")
                }
            }
        }
        let state = BackendState {
            status: obs.status,
            role,
        };
        if std::mem::replace(&mut self.states[obs.backend], state) != state {
            self.reroute();
        }
    }

    fn pools_of(&self, backend: BackendId) -> String {
        let names: Vec<_> = self
            .pools
            .iter()
            .filter(|p| p.config.members.contains(&backend))
            .map(|p| p.name())
            .collect();
        names.join(",")
    }

    /// Recomputes every pool's membership; publishes and fences if any changed.
    fn reroute(&mut self) {
        let next: Vec<_> = self.pools.iter().map(|p| membership(&p.config, &self.states)).collect();
        if next == self.current {
            return;
        }
        let previous = std::mem::replace(&mut self.current, next);
        self.publish();
        for (pool, old) in self.pools.iter().zip(&previous) {
            self.fence(pool, old);
        }
    }

    /// Signals the members that left or rejoined `pool` since `old`.
    fn fence(&self, pool: &Pool, old: &[BackendId]) {
        let new = &self.current[pool.id];
        for member in &pool.members {
            let id = member.backend.id;
            match (old.contains(&id), new.contains(&id)) {
                (true, false) => {
                    let close_at = match pool.config.on_leave {
                        LeavePolicy::Close => Instant::now(),
                        LeavePolicy::Drain(deadline) => Instant::now() + deadline,
                        LeavePolicy::Keep => continue,
                    };
                    info!(pool = %pool.name(), backend = %member.backend.name, sessions = member.active(), policy = ?pool.config.on_leave, "member left its pool; fencing its sessions");
                    member.set_eviction(Eviction::CloseAt(close_at));
                }
                (false, true) => member.set_eviction(Eviction::Active),
                _ => {}
            }
        }
        if new.is_empty() && !old.is_empty() {
            warn!(pool = %pool.name(), "pool has no routable backend; new sessions are held");
        }
    }

    fn publish(&mut self) {
        let generation = self.routing.load().generation + 1;
        let pools = self
            .pools
            .iter()
            .zip(&self.current)
            .map(|(pool, ids)| {
                pool.members
                    .iter()
                    .filter(|m| ids.contains(&m.backend.id))
                    .cloned()
                    .collect()
            })
            .collect();
        self.routing.publish(RoutingTable::new(generation, pools));
        self.generation.set(generation as f64);
        for (pool, ids) in self.pools.iter().zip(&self.current) {
            pool.routable_gauge.set(ids.len() as f64);
        }
        // A pool with nothing routable wants its candidates checked at the fast interval.
        for backend in &self.backends {
            let starving = self
                .pools
                .iter()
                .zip(&self.current)
                .any(|(p, ids)| ids.is_empty() && p.config.members.contains(&backend.id));
            backend.set_urgent(starving);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Policy, PoolRole};

    fn pool(initially_up: bool) -> PoolConfig {
        PoolConfig {
            name: "p".into(),
            role: PoolRole::Any,
            policy: Policy::First,
            members: vec![2, 0, 1],
            initially_up,
            on_leave: LeavePolicy::Close,
            hold_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }

    fn states(statuses: [Status; 3]) -> Vec<BackendState> {
        statuses
            .into_iter()
            .map(|status| BackendState {
                status,
                role: Role::Unknown,
            })
            .collect()
    }

    #[test]
    fn membership_keeps_priority_order_and_drops_down_members() {
        use Status::*;
        assert_eq!(membership(&pool(true), &states([Up, Down, Up])), [2, 0]);
    }

    #[test]
    fn unchecked_members_follow_the_initial_state() {
        use Status::*;
        assert_eq!(membership(&pool(true), &states([Unknown, Unknown, Up])), [2, 0, 1]);
        assert_eq!(membership(&pool(false), &states([Unknown, Unknown, Up])), [2]);
    }
}
