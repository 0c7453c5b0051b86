//! What the router keeps per backend slot, and how a reload changes its backends and
//! pools in one generation ([`Reconfigure`]).

use std::sync::Arc;

use metrics::{Counter, Gauge};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::info;

use super::Router;
use crate::backend::Backend;
use crate::config::{BackendId, LeavePolicy};
use crate::health::{Layer, Observation, Role};
use crate::metrics as m;
use crate::pool::{Eviction, Pool};
use crate::routing::membership::{BackendState, Decision};
use crate::timeline::{now_ms, Millis};

/// A reload's new backends and pools, applied by the router in one generation.
///
/// A backend or pool that stays keeps its slot and its `Arc` (and so its state,
/// histograms and sessions); a new one comes with a slot never used before. A member
/// that is in no new pool any more, whether its backend, its pool or only its
/// membership went, has its sessions fenced as its old pool's `on_leave` says.
#[derive(Debug)]
pub struct Reconfigure {
    /// Every backend of the new config, each with its slot as its id.
    pub backends: Vec<Arc<Backend>>,
    /// Every pool of the new config, each with its slot as its id and its members'
    /// slots in its config.
    pub pools: Vec<Arc<Pool>>,
    /// Receives the generation of the first table built from them.
    pub done: oneshot::Sender<u64>,
}

/// One live backend slot.
pub(super) struct Slot {
    pub(super) backend: Arc<Backend>,
    pub(super) metrics: CheckMetrics,
}

impl Slot {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Slot {
            metrics: CheckMetrics::new(&backend.name),
            backend,
        }
    }
}

#[derive(Clone)]
pub(super) struct CheckMetrics {
    pub(super) checks: Counter,
    pub(super) failures: [Counter; 4],
    pub(super) flips: Counter,
    pub(super) up: Gauge,
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
pub(super) struct CheckHistory {
    /// When checks first disagreed with this backend being a healthy primary.
    pub(super) suspect_since: Option<Millis>,
    pub(super) last_error: Option<String>,
    /// When the check of its latest observation began.
    pub(super) observed_at: Option<tokio::time::Instant>,
}

impl CheckHistory {
    /// Takes note of an observation: since when the backend is suspect, why, and when
    /// its check began (one that began before a verdict arrived is older news).
    pub(super) fn remember(&mut self, obs: &Observation) {
        self.observed_at = Some(obs.at.checked_sub(obs.latency).unwrap_or(obs.at));
        let healthy_primary = matches!(&obs.result, Ok(r) if r.role == Role::Primary);
        match (&obs.result, healthy_primary) {
            (_, true) => self.suspect_since = None,
            (result, false) => {
                self.suspect_since.get_or_insert_with(now_ms);
                self.last_error = Some(match result {
                    Err(e) => format!("{} {e}", e.layer().as_str()),
                    Ok(report) => format!("reports role {:?}", report.role).to_lowercase(),
                });
            }
        }
    }
}

/// The next reload, or never when the router takes none.
pub(super) async fn next(reconfigure: &mut Option<mpsc::Receiver<Reconfigure>>) -> Option<Reconfigure> {
    match reconfigure {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

impl Router {
    pub(super) fn backend(&self, id: BackendId) -> Option<&Arc<Backend>> {
        self.backends.get(id).and_then(Option::as_ref).map(|slot| &slot.backend)
    }

    pub(super) fn name_of(&self, id: BackendId) -> &str {
        self.backend(id).map(|b| b.name.as_str()).unwrap_or("(removed)")
    }

    pub(super) fn names(&self, ids: &[BackendId]) -> String {
        ids.iter().map(|&id| self.name_of(id)).collect::<Vec<_>>().join(",")
    }

    /// Applies a reload: fences the members that leave, takes the new backends and
    /// pools, publishes one table (whether or not any decision changed: the pools
    /// did), then forgets the removed backends.
    pub(super) fn reconfigure(&mut self, change: Reconfigure) {
        let Reconfigure { backends, pools, done } = change;
        for old in &self.pools {
            let new = pools.iter().find(|p| p.id == old.id);
            fence_leaving(old, new.map(Arc::as_ref), &self.states);
        }
        let slots = backends.iter().map(|b| b.id).max().map_or(0, |max| max + 1);
        if self.backends.len() < slots {
            self.backends.resize_with(slots, || None);
            self.states.resize_with(slots, BackendState::default);
            self.histories.resize_with(slots, CheckHistory::default);
        }
        for backend in &backends {
            if self.backends[backend.id].is_none() {
                self.states[backend.id] = BackendState::of(backend);
                self.backends[backend.id] = Some(Slot::new(backend.clone()));
            }
        }
        let pool_slots = pools
            .iter()
            .map(|p| p.id + 1)
            .max()
            .unwrap_or(0)
            .max(self.current.len());
        let mut previous = std::mem::take(&mut self.current);
        previous.resize_with(pool_slots, Decision::default);
        let removed_pools: Vec<_> = self
            .pools
            .iter()
            .filter(|old| !pools.iter().any(|p| p.id == old.id))
            .cloned()
            .collect();
        self.pools = pools;
        self.sentinels.sync(&self.pools);
        self.reroute_from(previous, true);
        for pool in removed_pools {
            self.current[pool.id] = Decision::default();
            // Its series stay on /metrics: not as an alarm or a routable member.
            pool.set_alarm(None);
            pool.routable_gauge.set(0.0);
        }
        let live: std::collections::HashSet<BackendId> = backends.iter().map(|b| b.id).collect();
        for id in 0..self.backends.len() {
            if live.contains(&id) {
                continue;
            }
            if let Some(removed) = self.backends[id].take() {
                removed.metrics.up.set(0.0);
                self.states[id] = BackendState::default();
                self.histories[id] = CheckHistory::default();
            }
        }
        let generation = self.routing.load().generation;
        info!(
            generation,
            backends = backends.len(),
            pools = self.pools.len(),
            "reload: routing from the new configuration"
        );
        let _ = done.send(generation);
    }
}

/// Fences the members of `old` that are not in `new` (the same pool after the reload,
/// if it stays) as `old`'s `on_leave` says; a drained one keeps its sessions (that is
/// what an operator's drain means) and takes no new one.
fn fence_leaving(old: &Pool, new: Option<&Pool>, states: &[BackendState]) {
    for member in &old.members {
        if new.is_some_and(|new| new.members.iter().any(|m| Arc::ptr_eq(m, member))) {
            continue;
        }
        if states
            .get(member.backend.id)
            .is_some_and(|s| s.admin == crate::backend::AdminMode::Draining)
        {
            member.set_eviction(Eviction::Draining);
            continue;
        }
        let close_at = match old.config.on_leave {
            LeavePolicy::Close => Instant::now(),
            LeavePolicy::Drain(deadline) => Instant::now() + deadline,
            LeavePolicy::Keep => continue,
        };
        if member.active() > 0 {
            info!(pool = %old.name(), backend = %member.backend.name, sessions = member.active(), policy = ?old.config.on_leave, "reload: member removed from its pool; fencing its sessions");
        }
        member.set_eviction(Eviction::CloseAt(close_at));
    }
}
