//! The router's side of the fleet (`[cluster]`): the verdicts it hears from the
//! agent, the gate they put on every primary pool's decision ([`gate`]), the
//! proposals it sends back, and what it records: an `epoch` timeline event per new
//! verdict, the fleet alarm, and how long a verdict took from its writing to the
//! routing table here.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Router;
use crate::config::BackendId;
use crate::fleet::gate::{gate, Known, PoolFleet};
use crate::fleet::verdict::{Epoch, Evidence, Verdict};
use crate::fleet::{News, Proposal};
use crate::metrics as m;
use crate::pool::{FleetView, Pool};
use crate::routing::membership::Decision;
use crate::timeline::{now_ms, EventKind};

/// What the router keeps of the fleet.
pub struct FleetLink {
    pub(super) news: mpsc::Receiver<News>,
    proposals: mpsc::Sender<Proposal>,
    store_up: bool,
    /// Whether the first read of the verdicts arrived.
    loaded: bool,
    /// By pool name; `None`: the pool has no verdict.
    verdicts: HashMap<String, Option<(Epoch, Verdict)>>,
    /// By pool name: the last proposal sent, so that one is not sent twice.
    proposed: HashMap<String, (BackendId, Option<Epoch>)>,
    /// By pool name: when the current verdict arrived.
    adopted: HashMap<String, tokio::time::Instant>,
    /// By pool name: verdicts not routed here yet (their writing time).
    unsettled: HashMap<String, (String, u64)>,
    propagation: metrics::Histogram,
}

impl FleetLink {
    /// A link that hears `news` and sends proposals to `proposals`.
    pub fn new(news: mpsc::Receiver<News>, proposals: mpsc::Sender<Proposal>) -> Self {
        FleetLink {
            news,
            proposals,
            // Until the agent says otherwise: a proxy starting holds its primary pools
            // silently until the first read (milliseconds), and alarms only when etcd
            // turns out to be out of reach.
            store_up: true,
            loaded: false,
            verdicts: HashMap::new(),
            proposed: HashMap::new(),
            adopted: HashMap::new(),
            unsettled: HashMap::new(),
            propagation: metrics::histogram!(m::FLEET_PROPAGATION_SECONDS),
        }
    }

    fn state(&self, pool: &Pool, observed_at: impl Fn(BackendId) -> Option<tokio::time::Instant>) -> PoolFleet {
        let known = match self.verdicts.get(pool.name()) {
            _ if !self.loaded => Known::Unloaded,
            Some(Some((epoch, verdict))) => Known::Present {
                epoch: *epoch,
                backend: pool
                    .members
                    .iter()
                    .find(|m| m.backend.name == verdict.backend)
                    .map(|m| m.backend.id),
                name: verdict.backend.clone(),
            },
            _ => Known::Absent,
        };
        let checked_since = match (&known, self.adopted.get(pool.name())) {
            (Known::Present { backend: Some(b), .. }, Some(adopted)) => observed_at(*b).is_some_and(|at| at > *adopted),
            _ => true,
        };
        PoolFleet {
            known,
            store_up: self.store_up,
            checked_since,
        }
    }
}

impl Router {
    /// Gates primary pools by the fleet's verdicts (see [`crate::fleet`]).
    pub fn with_fleet(mut self, link: FleetLink) -> Self {
        self.fleet = Some(link);
        self.reroute_from(self.current.clone(), true);
        self
    }

    /// Applies news from the agent, then decides again.
    pub(super) fn fleet_news(&mut self, news: News) {
        let Some(fleet) = self.fleet.as_mut() else { return };
        let mut changed: Vec<(String, Option<(Epoch, Verdict)>)> = Vec::new();
        match news {
            News::Loaded(verdicts) => {
                fleet.loaded = true;
                let pools: Vec<String> = self.pools.iter().map(|p| p.name().to_string()).collect();
                for pool in pools.into_iter().chain(verdicts.keys().cloned()) {
                    let verdict = verdicts.get(&pool).cloned();
                    if fleet.verdicts.get(&pool) != Some(&verdict) {
                        changed.push((pool.clone(), verdict.clone()));
                    }
                    fleet.verdicts.insert(pool, verdict);
                }
            }
            News::Verdict { pool, verdict } => {
                if fleet.verdicts.get(&pool) != Some(&verdict) {
                    changed.push((pool.clone(), verdict.clone()));
                }
                fleet.verdicts.insert(pool, verdict);
            }
            News::Store { up } => {
                fleet.store_up = up;
                // The agent dropped what was queued while etcd was out of reach.
                fleet.proposed.clear();
            }
        }
        for (pool, verdict) in changed {
            let Some((epoch, verdict)) = verdict else { continue };
            if !self.pools.iter().any(|p| p.name() == pool) {
                continue;
            }
            // Names from etcd are another proxy's words: escaped for the log and timeline.
            let (primary, by) = (crate::logs::peer(&verdict.backend), crate::logs::peer(&verdict.by));
            info!(pool = %pool, epoch, %primary, %by, "fleet: new epoch");
            let detail = format!("epoch {epoch}: primary {primary} (written by {by})");
            self.timeline
                .push(EventKind::Epoch, Some(&pool), Some(&verdict.backend), detail);
            // Its backend is checked again at once: until then, this proxy's view of
            // it is older than the verdict and proposes nothing against it.
            if let Some(member) = self
                .pools
                .iter()
                .find(|p| p.name() == pool)
                .and_then(|p| p.members.iter().find(|m| m.backend.name == verdict.backend))
            {
                member.backend.attention.nudge();
            }
            if let Some(fleet) = self.fleet.as_mut() {
                fleet.adopted.insert(pool.clone(), tokio::time::Instant::now());
                fleet.unsettled.insert(pool, (verdict.backend.clone(), verdict.at_ms));
            }
        }
        self.reroute_from(self.current.clone(), false);
    }

    /// `decision` (the pool's own), gated by the fleet; queues the proposal and records
    /// the pool's fleet view.
    pub(super) fn gated(&mut self, pool: &Pool, decision: Decision) -> Decision {
        let Some(fleet) = self.fleet.as_ref() else {
            return decision;
        };
        let state = fleet.state(pool, |b| self.histories[b].observed_at);
        let gated = gate(&pool.config, &decision, &state, |id| self.name_of(id).to_string());
        let verdict = fleet.verdicts.get(pool.name()).cloned().flatten();
        let view = FleetView {
            epoch: state.known.epoch(),
            primary: verdict.as_ref().map(|(_, v)| v.backend.clone()),
            by: verdict.as_ref().map(|(_, v)| v.by.clone()),
            alarm: gated.alarm.clone(),
        };
        let before = pool.fleet();
        if before != view {
            match (&before.alarm, &view.alarm) {
                (None, Some(alarm)) => {
                    warn!(pool = %pool.name(), %alarm, "ALARM: fleet");
                    self.timeline
                        .push(EventKind::Alarm, Some(pool.name()), None, alarm.clone());
                }
                (Some(_), None) => {
                    info!(pool = %pool.name(), "fleet alarm cleared");
                    self.timeline
                        .push(EventKind::Alarm, Some(pool.name()), None, "fleet alarm cleared");
                }
                _ => {}
            }
            pool.set_fleet(view);
        }
        if let Some(backend) = gated.propose {
            self.propose(pool, backend, state.known.epoch());
        }
        Decision {
            members: gated.members,
            ..decision
        }
    }

    fn propose(&mut self, pool: &Pool, backend: BackendId, expected: Option<Epoch>) {
        let evidence = Evidence::of(self.states[backend].report.as_ref());
        let name = self.name_of(backend).to_string();
        let Some(fleet) = self.fleet.as_mut() else { return };
        if fleet.proposed.get(pool.name()) == Some(&(backend, expected)) {
            return;
        }
        let proposal = Proposal {
            pool: pool.name().to_string(),
            backend: name,
            evidence,
            expected,
        };
        info!(pool = %pool.name(), primary = %proposal.backend, after = ?expected, "fleet: proposing a new epoch");
        if fleet.proposals.try_send(proposal).is_ok() {
            fleet.proposed.insert(pool.name().to_string(), (backend, expected));
        }
    }

    /// Records the propagation of every verdict whose primary this proxy now routes.
    pub(super) fn settle(&mut self) {
        let Some(fleet) = self.fleet.as_ref() else { return };
        let mut settled = Vec::new();
        for pool in &self.pools {
            let Some((backend, at_ms)) = fleet.unsettled.get(pool.name()) else {
                continue;
            };
            let routed = self.current[pool.id].members.first().map(|&id| self.name_of(id));
            if routed == Some(backend.as_str()) {
                let seconds = now_ms().saturating_sub(*at_ms) as f64 / 1000.0;
                fleet.propagation.record(seconds);
                settled.push(pool.name().to_string());
            }
        }
        if let Some(fleet) = self.fleet.as_mut() {
            for pool in settled {
                fleet.unsettled.remove(&pool);
            }
        }
    }
}

/// The next news from the fleet; never, without one.
pub(super) async fn next_news(fleet: &mut Option<FleetLink>) -> Option<crate::fleet::News> {
    match fleet {
        Some(link) => match link.news.recv().await {
            Some(news) => Some(news),
            None => std::future::pending().await, // the agent ended (shutdown)
        },
        None => std::future::pending().await,
    }
}
