//! Operator commands: a backend's drain, disable or enable, and a pool's hold and
//! release. A held pool's published table routes nothing, so new sessions wait as
//! while it has no member (each up to the pool's `hold_timeout`), while its decision,
//! its fencing and its sessions go on unchanged; the hold ends on release or at its
//! deadline. An external orchestrator wraps its own switchover in one.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use super::Router;
use crate::backend::AdminMode;
use crate::config::{BackendId, PoolId};
use crate::pool::{Eviction, Pool};
use crate::timeline::{now_ms, EventKind};

/// An operator's request; `done` receives the routing generation that includes it.
#[derive(Debug)]
pub struct AdminCommand {
    /// What to change.
    pub action: AdminAction,
    /// Receives the routing generation that includes the change.
    pub done: oneshot::Sender<u64>,
}

impl AdminCommand {
    /// Sends `action` to the router and waits (at most 5 s) for the routing generation
    /// that includes it.
    pub async fn send(
        router: &tokio::sync::mpsc::Sender<AdminCommand>,
        action: AdminAction,
    ) -> Result<u64, &'static str> {
        let (done, applied) = oneshot::channel();
        // One bound over both waits: a full queue too is a router that does not answer.
        let exchange = async {
            router
                .send(AdminCommand { action, done })
                .await
                .map_err(|_| "the router has stopped")?;
            applied.await.map_err(|_| "the router has stopped")
        };
        match tokio::time::timeout(Duration::from_secs(5), exchange).await {
            Ok(result) => result,
            Err(_) => Err("the router did not answer in 5s"),
        }
    }
}

/// What an operator changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// Drain, disable or enable a backend.
    Backend {
        /// The backend's slot.
        backend: BackendId,
        /// The mode to set.
        mode: AdminMode,
    },
    /// Hold a pool's new sessions for at most this long.
    Hold {
        /// The pool's slot.
        pool: PoolId,
        /// The hold's deadline, from now.
        deadline: Duration,
        /// Drain the pool's current members too: `mysql`-mode sessions close at their
        /// next idle point, every session by this deadline (from now).
        drain: Option<Duration>,
    },
    /// Release a held pool.
    Release {
        /// The pool's slot.
        pool: PoolId,
    },
}

/// A backend command, as the router applies it.
pub(super) struct BackendCommand {
    pub(super) backend: BackendId,
    pub(super) mode: AdminMode,
    pub(super) done: oneshot::Sender<u64>,
}

/// The pools held now, by slot, and until when.
#[derive(Debug, Default)]
pub(super) struct Holds {
    until: HashMap<PoolId, Instant>,
}

impl Holds {
    /// Whether pool `pool` is held.
    pub(super) fn holds(&self, pool: PoolId) -> bool {
        self.until.contains_key(&pool)
    }

    /// Resolves at the earliest deadline; never while nothing is held.
    pub(super) async fn next_expiry(&self) {
        match self.until.values().min() {
            Some(&at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

impl Router {
    /// Applies a hold or release.
    pub(super) fn hold_command(&mut self, action: AdminAction, done: oneshot::Sender<u64>) {
        match action {
            AdminAction::Hold { pool, deadline, drain } => {
                if let Some(held) = self.pools.iter().find(|p| p.id == pool).cloned() {
                    let at_ms = now_ms() + deadline.as_millis() as u64;
                    let renewed = self.holds.until.insert(pool, Instant::now() + deadline).is_some();
                    held.set_held(Some(at_ms));
                    info!(pool = %held.name(), ?deadline, ?drain, renewed, "admin: pool held; new sessions wait");
                    let mut detail = format!("held for {}", crate::duration::format(deadline));
                    if let Some(drain) = drain {
                        detail += &format!(", draining at idle points within {}", crate::duration::format(drain));
                    }
                    self.timeline.push(EventKind::Admin, Some(held.name()), None, detail);
                    // The table without the pool goes out first: no session starts on a
                    // member after its drain began.
                    self.publish();
                    if let Some(drain) = drain {
                        self.drain_at_idle(&held, Instant::now() + drain);
                    }
                }
            }
            AdminAction::Release { pool } => self.release(pool, "released"),
            AdminAction::Backend { .. } => {}
        }
        let _ = done.send(self.routing.load().generation);
    }

    /// Releases the holds whose deadline passed.
    pub(super) fn expire_holds(&mut self) {
        let now = Instant::now();
        let expired: Vec<PoolId> = self
            .holds
            .until
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&p, _)| p)
            .collect();
        for pool in expired {
            self.release(pool, "hold expired");
        }
    }

    /// Asks the sessions of `pool`'s current members to close at idle points, all by
    /// `by`.
    fn drain_at_idle(&self, pool: &Pool, by: Instant) {
        let current = &self.current[pool.id].members;
        for member in pool.members.iter().filter(|m| current.contains(&m.backend.id)) {
            info!(pool = %pool.name(), backend = %member.backend.name, sessions = member.active(), "admin: draining sessions at idle points");
            member.set_eviction(Eviction::AtIdle(by));
        }
    }

    fn release(&mut self, pool: PoolId, why: &str) {
        if self.holds.until.remove(&pool).is_none() {
            return;
        }
        if let Some(held) = self.pools.iter().find(|p| p.id == pool).cloned() {
            // Members still in the pool take sessions again once it is released.
            let current = &self.current[held.id].members;
            for member in held.members.iter().filter(|m| current.contains(&m.backend.id)) {
                if matches!(*member.eviction().borrow(), Eviction::AtIdle(_)) {
                    member.set_eviction(Eviction::Active);
                }
            }
            held.set_held(None);
            info!(pool = %held.name(), why, "admin: pool released");
            self.timeline.push(EventKind::Admin, Some(held.name()), None, why);
        }
        self.publish();
    }
}
