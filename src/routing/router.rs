//! The router: the only writer of the routing table. It receives every
//! [`Observation`], logs each flip once, asks [`decide`] for every pool's members,
//! publishes a new table when they changed, fences the sessions of members that left,
//! raises the two-writers alarm, and records failovers on the [`Timeline`].

use std::sync::Arc;

use metrics::{Counter, Gauge};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::membership::{decide, BackendState, Decision};
use super::{Routing, RoutingTable};
use crate::backend::{AdminMode, Backend, LastCheck};
use crate::config::{BackendId, LeavePolicy, PoolRole};
use crate::health::{Layer, Observation, Role, Status};
use crate::metrics as m;
use crate::pool::{Eviction, Pool};
use crate::timeline::{now_ms, EventKind, Millis, Timeline};

mod record;

/// An operator's request to drain, disable or enable a backend. `done` receives the
/// routing generation that includes the change.
#[derive(Debug)]
pub struct AdminCommand {
    /// The backend to change.
    pub backend: BackendId,
    /// The mode to set.
    pub mode: AdminMode,
    /// Receives the routing generation that includes the change.
    pub done: oneshot::Sender<u64>,
}

struct CheckMetrics {
    checks: Counter,
    failures: [Counter; 4],
    flips: Counter,
    up: Gauge,
}

impl CheckMetrics {
    fn new(backend: &str) -> Self {
        let failures = [Layer::L4, Layer::L6, Layer::L7, Layer::Local].map(
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

/// Per-backend bookkeeping beyond its state.
#[derive(Default)]
struct CheckHistory {
    /// When checks first disagreed with this backend being a healthy primary.
    suspect_since: Option<Millis>,
    last_error: Option<String>,
}

/// The single writer of the routing table.
pub struct Router {
    routing: Arc<Routing>,
    backends: Vec<Arc<Backend>>,
    pools: Vec<Arc<Pool>>,
    states: Vec<BackendState>,
    histories: Vec<CheckHistory>,
    /// Per pool, the decision in the published table.
    current: Vec<Decision>,
    timeline: Arc<Timeline>,
    metrics: Vec<CheckMetrics>,
    generation: Gauge,
    /// From the end of a check to the table its observation changed (`SWAP_SECONDS`).
    swap_seconds: metrics::Histogram,
    events: mpsc::Receiver<Observation>,
    commands: mpsc::Receiver<AdminCommand>,
}

impl Router {
    /// Builds the first table from the pools' initial states and publishes it.
    pub fn new(
        backends: Vec<Arc<Backend>>,
        pools: Vec<Arc<Pool>>,
        timeline: Arc<Timeline>,
        events: mpsc::Receiver<Observation>,
        commands: mpsc::Receiver<AdminCommand>,
    ) -> Self {
        let mut router = Router {
            routing: Arc::new(Routing::new(RoutingTable::default())),
            states: vec![BackendState::default(); backends.len()],
            histories: backends.iter().map(|_| CheckHistory::default()).collect(),
            metrics: backends.iter().map(|b| CheckMetrics::new(&b.name)).collect(),
            backends,
            pools,
            current: Vec::new(),
            timeline,
            generation: metrics::gauge!(m::ROUTING_GENERATION),
            swap_seconds: metrics::histogram!(m::SWAP_SECONDS),
            events,
            commands,
        };
        router.current = router
            .pools
            .iter()
            .map(|p| decide(&p.config, &router.states, None, None))
            .collect();
        router.publish();
        router
    }

    /// The handle the data path loads from.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.clone()
    }

    /// Applies observations and admin commands until `shutdown` is cancelled or the
    /// observation channel closes.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(observation) => self.apply(observation),
                    None => return,
                },
                Some(command) = self.commands.recv() => self.command(command),
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn command(&mut self, command: AdminCommand) {
        let backend = self.backends[command.backend].clone();
        let before = std::mem::replace(&mut self.states[command.backend].admin, command.mode);
        backend.update_view(|view| view.admin = command.mode);
        if before != command.mode {
            info!(backend = %backend.name, from = ?before, to = ?command.mode, "admin: backend mode changed");
            let detail = format!("{before:?} -> {:?}", command.mode).to_lowercase();
            self.timeline.push(EventKind::Admin, None, Some(&backend.name), detail);
            self.reroute();
            if before == AdminMode::Draining && command.mode == AdminMode::Disabled {
                // It left its pools when drained, without fencing; disabling fences now.
                for pool in self
                    .pools
                    .clone()
                    .iter()
                    .filter(|p| p.config.members.contains(&command.backend))
                {
                    self.fence(pool, &[command.backend]);
                }
            }
        }
        let _ = command.done.send(self.routing.load().generation);
    }

    fn apply(&mut self, obs: Observation) {
        let id = obs.backend;
        let backend = self.backends[id].clone();
        backend.check.record_duration(obs.latency);
        backend.check_seconds.record(obs.latency.as_secs_f64());
        let metrics = &self.metrics[id];
        metrics.checks.increment(1);
        let last = match &obs.result {
            Ok(_) => LastCheck::now(true, None, None, obs.latency),
            Err(e) => {
                metrics.failures[e.layer() as usize].increment(1);
                LastCheck::now(false, Some(e.to_string()), Some(e.layer()), obs.latency)
            }
        };
        if obs.result.as_ref().is_err_and(|e| e.layer() == Layer::Local) {
            // The proxy's own shortage: shown, never held against the backend.
            backend.update_view(|view| view.last_check = Some(last));
            return;
        }
        // Routing depends only on the states: an observation that changed nothing
        // (the common case for TCP and HTTP checks) needs no new decision.
        let before = self.states[id].clone();
        let state = &mut self.states[id];
        let role_before = state.role();
        state.status = obs.status;
        if let Ok(report) = &obs.result {
            state.report = Some(report.clone());
        }
        let role_after = state.role();
        if role_after != role_before && role_before != Role::Unknown {
            info!(backend = %backend.name, from = ?role_before, to = ?role_after, "backend reports another role");
            let detail = format!("role {role_before:?} -> {role_after:?}").to_lowercase();
            self.timeline.push(EventKind::Role, None, Some(&backend.name), detail);
        }
        let history = &mut self.histories[id];
        let healthy_primary = matches!(&obs.result, Ok(r) if r.role == Role::Primary);
        match (&obs.result, healthy_primary) {
            (_, true) => history.suspect_since = None,
            (result, false) => {
                history.suspect_since.get_or_insert_with(now_ms);
                history.last_error = Some(match result {
                    Err(e) => format!("{} {e}", e.layer().as_str()),
                    Ok(report) => format!("reports role {:?}", report.role).to_lowercase(),
                });
            }
        }
        let report = state.report.clone();
        backend.update_view(|view| {
            view.status = obs.status;
            view.role = report.as_ref().map(|r| r.role).unwrap_or_default();
            view.report = report;
            view.last_check = Some(last);
        });
        if let Some(flip) = obs.flip {
            metrics.flips.increment(1);
            metrics.up.set(if flip.to == Status::Up { 1.0 } else { 0.0 });
            let pools = self.pools_of(id);
            let cause = match &obs.result {
                Err(e) => {
                    // The cause may quote the backend's own words.
                    let cause = crate::logs::peer(&e.to_string());
                    warn!(backend = %backend.name, pools = %pools, from = ?flip.from, to = ?flip.to, %cause, layer = ?e.layer(), "backend flipped");
                    format!(": {} {e}", e.layer().as_str())
                }
                Ok(_) => {
                    info!(backend = %backend.name, pools = %pools, from = ?flip.from, to = ?flip.to, "backend flipped");
                    String::new()
                }
            };
            let detail = format!("{:?} -> {:?}{cause}", flip.from, flip.to).to_lowercase();
            self.timeline
                .push(EventKind::Health, Some(&pools), Some(&backend.name), detail);
        }
        if self.states[id] != before && self.reroute() {
            self.swap_seconds.record(obs.at.elapsed().as_secs_f64());
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

    /// Decides every pool again; publishes, fences and records if anything changed
    /// (and then returns true).
    fn reroute(&mut self) -> bool {
        let next: Vec<_> = self
            .pools
            .iter()
            .zip(&self.current)
            .map(|(pool, current)| {
                decide(
                    &pool.config,
                    &self.states,
                    current.members.first().copied(),
                    current.newest_election.as_ref(),
                )
            })
            .collect();
        if next == self.current {
            return false;
        }
        let previous = std::mem::replace(&mut self.current, next);
        // Rejoining members are re-admitted before the table that routes to them is
        // published, so no new session sees a stale eviction.
        for (pool, old) in self.pools.iter().zip(&previous) {
            for member in &pool.members {
                let id = member.backend.id;
                if !old.members.contains(&id) && self.current[pool.id].members.contains(&id) {
                    member.set_eviction(Eviction::Active);
                }
            }
        }
        // The failover event opens (and the pool starts watching for its first
        // session) before the table that routes to the new primary is published:
        // sessions run on other threads and may start on it at once.
        for (pool, old) in self.pools.clone().iter().zip(&previous) {
            if pool.config.role == PoolRole::Primary {
                self.record_failover(pool, old.members.first().copied());
            }
        }
        // Members that left are evicted before the table without them is published:
        // a session that connects to one from the old table sees the eviction.
        for (pool, old) in self.pools.clone().iter().zip(&previous) {
            self.fence(pool, &old.members);
        }
        self.publish();
        for (pool, old) in self.pools.clone().iter().zip(&previous) {
            self.alarm(pool, old);
        }
        true
    }

    fn names(&self, ids: &[BackendId]) -> String {
        ids.iter()
            .map(|&id| self.backends[id].name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Fences the sessions of the members that left `pool` since `old`.
    fn fence(&self, pool: &Pool, old: &[BackendId]) {
        let new = &self.current[pool.id].members;
        for member in &pool.members {
            let id = member.backend.id;
            if !old.contains(&id) || new.contains(&id) {
                continue;
            }
            // A drained backend keeps its sessions (that is what draining means), but
            // takes no new one.
            if self.states[id].admin == AdminMode::Draining {
                member.set_eviction(Eviction::Draining);
                continue;
            }
            let close_at = match pool.config.on_leave {
                LeavePolicy::Close => Instant::now(),
                LeavePolicy::Drain(deadline) => Instant::now() + deadline,
                LeavePolicy::Keep => continue,
            };
            let cause = match self.states[id].admin {
                AdminMode::Enabled => self.histories[id]
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "left the pool".into()),
                mode => format!("admin: {mode:?}").to_lowercase(),
            };
            info!(pool = %pool.name(), backend = %member.backend.name, sessions = member.active(), policy = ?pool.config.on_leave, cause = %cause, "member left its pool; fencing its sessions");
            member.set_eviction(Eviction::CloseAt(close_at));
            if member.active() == 0 {
                self.timeline.old_sessions_closed(pool.id, &member.backend.name);
            }
        }
        if new.is_empty() && !old.is_empty() {
            let why: Vec<String> = pool
                .config
                .members
                .iter()
                .map(|&b| {
                    let state = &self.states[b];
                    let last = self.histories[b].last_error.as_deref().unwrap_or("-");
                    format!(
                        "{} ({:?}, {:?}, {:?}, last: {last})",
                        self.backends[b].name,
                        state.status,
                        state.role(),
                        state.admin
                    )
                })
                .collect();
            warn!(pool = %pool.name(), members = %why.join("; "), "pool has no routable backend; new sessions are held");
        }
    }

    fn publish(&mut self) {
        let generation = self.routing.load().generation + 1;
        let pools = self
            .pools
            .iter()
            .zip(&self.current)
            .map(|(pool, decision)| {
                let members = &decision.members;
                pool.members
                    .iter()
                    .filter(|m| members.contains(&m.backend.id))
                    .cloned()
                    .collect()
            })
            .collect();
        self.routing.publish(RoutingTable::new(generation, pools));
        self.generation.set(generation as f64);
        for (pool, decision) in self.pools.iter().zip(&self.current) {
            pool.routable_gauge.set(decision.members.len() as f64);
            pool.note_routable(!decision.members.is_empty());
            if pool.config.role == PoolRole::Primary {
                for member in &pool.members {
                    let primary = decision.members.first() == Some(&member.backend.id);
                    member.primary_gauge.set(if primary { 1.0 } else { 0.0 });
                }
            }
        }
        // A pool with nothing routable wants its candidates checked at the fast interval.
        for backend in &self.backends {
            let starving = self
                .pools
                .iter()
                .zip(&self.current)
                .any(|(p, d)| d.members.is_empty() && p.config.members.contains(&backend.id));
            backend.set_urgent(starving);
        }
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
