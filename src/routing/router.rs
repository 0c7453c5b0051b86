//! The router: the only writer of the routing table. It receives every
//! [`Observation`] (and admin commands, reloads, the fleet's verdicts and the Redis
//! Sentinels' word), logs each flip once, asks [`decide_with`] for every pool's members,
//! publishes a new table when they changed, fences the sessions of members that left,
//! raises the two-writers alarm, and records failovers on the [`Timeline`]. Primary
//! pools are decided first: Galera replica pools leave their writers out, and a new
//! Galera writer waits behind the old one's sessions (`barrier`).

use std::sync::Arc;

use metrics::Gauge;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::membership::{decide_with, BackendState, Decision, Inputs};
use super::{Routing, RoutingTable};
use crate::backend::{AdminMode, Backend, LastCheck};
use crate::config::{BackendId, LeavePolicy, PoolRole};
use crate::health::{Layer, Observation, Role, Status};
use crate::metrics as m;
use crate::pool::{Eviction, Pool};
use crate::timeline::{EventKind, Timeline};

mod barrier;
mod fleet;
mod hold;
mod record;
mod sentinel;
mod slots;

pub use fleet::FleetLink;
pub use hold::{AdminAction, AdminCommand};
pub use slots::Reconfigure;
use slots::{CheckHistory, Slot};

/// The single writer of the routing table.
///
/// Backends and pools are indexed by their slot (`Backend::id`, `Pool::id`): a slot is
/// given once, at start or by a reload, and never to anything else, so an
/// observation from a checker a reload stopped can never land on another backend.
pub struct Router {
    routing: Arc<Routing>,
    /// By backend slot; `None` once a reload removed it.
    backends: Vec<Option<Slot>>,
    /// The live pools, sorted by name.
    pools: Vec<Arc<Pool>>,
    /// By backend slot (the default for a removed one).
    states: Vec<BackendState>,
    histories: Vec<CheckHistory>,
    /// By pool slot, the decision in the published table.
    current: Vec<Decision>,
    timeline: Arc<Timeline>,
    generation: Gauge,
    /// From the end of a check to the table its observation changed (`SWAP_SECONDS`).
    swap_seconds: metrics::Histogram,
    events: mpsc::Receiver<Observation>,
    commands: mpsc::Receiver<AdminCommand>,
    reconfigure: Option<mpsc::Receiver<Reconfigure>>,
    /// The fleet's verdicts and where proposals go (`[cluster]` only).
    fleet: Option<FleetLink>,
    /// Pools an operator holds: their tables route nothing until release or expiry.
    holds: hold::Holds,
    /// The watchers of the pools that have Redis Sentinels, and their word.
    sentinels: sentinel::Sentinels,
    /// Galera pools whose new writer waits for the old writer's sessions to close.
    barriers: barrier::Barriers,
}

impl Router {
    /// Builds the first table from the pools' initial states (each backend's view:
    /// `Unknown`, or what a hot upgrade handed over) and publishes it. `backends[i]`
    /// must have id `i`, and so must `pools[i]`.
    pub fn new(
        backends: Vec<Arc<Backend>>,
        pools: Vec<Arc<Pool>>,
        timeline: Arc<Timeline>,
        events: mpsc::Receiver<Observation>,
        commands: mpsc::Receiver<AdminCommand>,
    ) -> Self {
        let mut router = Router {
            routing: Arc::new(Routing::new(RoutingTable::default())),
            states: backends.iter().map(|b| BackendState::of(b)).collect(),
            histories: backends.iter().map(|_| CheckHistory::default()).collect(),
            backends: backends.into_iter().map(|b| Some(Slot::new(b))).collect(),
            pools,
            current: Vec::new(),
            timeline,
            generation: metrics::gauge!(m::ROUTING_GENERATION),
            swap_seconds: metrics::histogram!(m::SWAP_SECONDS),
            events,
            commands,
            reconfigure: None,
            fleet: None,
            holds: hold::Holds::default(),
            sentinels: sentinel::Sentinels::default(),
            barriers: barrier::Barriers::default(),
        };
        router.sentinels.sync(&router.pools);
        let none = vec![Decision::default(); router.pools.len()];
        router.current = router.decide_all(&none);
        router.publish();
        router
    }

    /// Takes reloads from `reconfigure` too (see [`Reconfigure`]).
    pub fn reconfigured_by(mut self, reconfigure: mpsc::Receiver<Reconfigure>) -> Self {
        self.reconfigure = Some(reconfigure);
        self
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
                Some(change) = slots::next(&mut self.reconfigure) => self.reconfigure(change),
                Some(news) = fleet::next_news(&mut self.fleet) => self.fleet_news(news),
                Some(news) = self.sentinels.next() => self.sentinel_news(news),
                _ = self.holds.next_expiry() => self.expire_holds(),
                _ = self.barriers.next_poll() => {
                    self.reroute();
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn command(&mut self, command: AdminCommand) {
        let (backend, mode) = match command.action {
            AdminAction::Backend { backend, mode } => (backend, mode),
            action => return self.hold_command(action, command.done),
        };
        let command = hold::BackendCommand {
            backend,
            mode,
            done: command.done,
        };
        let Some(backend) = self.backend(command.backend).cloned() else {
            let _ = command.done.send(self.routing.load().generation);
            return;
        };
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
        // The last observation of a checker a reload stopped.
        let Some(Some(slot)) = self.backends.get(id) else {
            return;
        };
        let (backend, metrics) = (slot.backend.clone(), slot.metrics.clone());
        backend.check.record_duration(obs.latency);
        backend.check_seconds.record(obs.latency.as_secs_f64());
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
            self.barriers.note(id, report);
        }
        let role_after = state.role();
        if role_after != role_before && role_before != Role::Unknown {
            info!(backend = %backend.name, from = ?role_before, to = ?role_after, "backend reports another role");
            let detail = format!("role {role_before:?} -> {role_after:?}").to_lowercase();
            self.timeline.push(EventKind::Role, None, Some(&backend.name), detail);
        }
        self.histories[id].remember(&obs);
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
        self.reroute_from(self.current.clone(), false)
    }

    /// [`Router::reroute`] from `previous` (by pool slot); `always` publishes even an
    /// unchanged decision (a reload changed the pools).
    fn reroute_from(&mut self, previous: Vec<Decision>, always: bool) -> bool {
        let next = self.decide_all(&previous);
        if next == previous && !always {
            return false;
        }
        self.current = next;
        // Rejoining members are re-admitted before the table that routes to them is
        // published, so no new session sees a stale eviction.
        for pool in &self.pools {
            let old = &previous[pool.id];
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
        for pool in self.pools.clone().iter() {
            if pool.config.role == PoolRole::Primary {
                self.record_failover(pool, previous[pool.id].members.first().copied());
            }
        }
        // Members that left are evicted before the table without them is published:
        // a session that connects to one from the old table sees the eviction.
        for pool in self.pools.clone().iter() {
            self.fence(pool, &previous[pool.id].members);
        }
        self.publish();
        for pool in self.pools.clone().iter() {
            self.alarm(pool, &previous[pool.id]);
        }
        self.settle();
        true
    }

    /// Every pool's decision from `previous` (by pool slot): the primary pools first,
    /// so that Galera replica pools know the writers they picked.
    fn decide_all(&mut self, previous: &[Decision]) -> Vec<Decision> {
        let mut next = previous.to_vec();
        let (primaries, others): (Vec<Arc<Pool>>, Vec<Arc<Pool>>) = self
            .pools
            .iter()
            .cloned()
            .partition(|p| p.config.role == PoolRole::Primary);
        let mut writers = Vec::new();
        for pool in primaries.into_iter().chain(others) {
            let current = &previous[pool.id];
            let inputs = Inputs {
                current: current.members.first().copied(),
                seen: current.newest_election.as_ref(),
                named: self.named(&pool),
                writers: &writers,
            };
            let previous_writer = inputs.current;
            let decision = decide_with(&pool.config, &self.states, inputs);
            let decision = self.gated(&pool, decision);
            let decision = self.barred(&pool, previous_writer, decision);
            if pool.config.role == PoolRole::Primary && pool.config.galera {
                writers.extend(decision.members.iter().copied());
            }
            next[pool.id] = decision;
        }
        next
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
                AdminMode::Enabled => self.states[id]
                    .galera_unusable(&pool.config)
                    .or_else(|| self.histories[id].last_error.clone())
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
                        self.name_of(b),
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
        let mut pools = vec![Vec::new(); self.current.len()];
        for pool in self.pools.iter().filter(|p| !self.holds.holds(p.id)) {
            let members = &self.current[pool.id].members;
            pools[pool.id] = pool
                .members
                .iter()
                .filter(|m| members.contains(&m.backend.id))
                .cloned()
                .collect();
        }
        self.routing.publish(RoutingTable::new(generation, pools));
        self.generation.set(generation as f64);
        for pool in &self.pools {
            let decision = &self.current[pool.id];
            pool.set_decided(&decision.members);
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
        for backend in self.backends.iter().flatten().map(|slot| &slot.backend) {
            let starving = self
                .pools
                .iter()
                .any(|p| self.current[p.id].members.is_empty() && p.config.members.contains(&backend.id));
            backend.set_urgent(starving);
        }
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
