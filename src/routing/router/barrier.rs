//! Galera writer moves: the new writer takes no session until the old writer's
//! sessions are gone (fenced when it left), at most [`BARRIER`] after the move. A
//! transaction still running on the old node would otherwise commit beside the new
//! writer's and one of them fail certification (a deadlock error) — the conflict a
//! single writer is there to avoid. Sessions wait meanwhile as while a pool has no
//! primary.
//!
//! When the old writer vanished (down: killed, frozen; or out of the Primary
//! component), its last write sets
//! may still be on their way to the others until the cluster installs a view without
//! it, and a transaction begun on the new writer before that can lose to one of them.
//! Commits on the survivors wait for that view anyway, so the new writer is routed
//! once its checks report a newer view (`wsrep_cluster_conf_id`) than the last one the
//! old writer reported in a Primary component (a node that resumes after a freeze
//! reports its stale view for a second: it is not routed in it), at most half the pool's `hold_timeout` after the move (held sessions must
//! not time out for it); its checker is nudged meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Router;
use crate::config::{BackendId, PoolId, PoolRole};
use crate::health::Status;
use crate::pool::Pool;
use crate::routing::membership::Decision;

/// The longest a new writer waits for the old writer's sessions to close.
pub(super) const BARRIER: Duration = Duration::from_millis(500);
/// How often a waiting pool looks at the old writer's sessions.
const POLL: Duration = Duration::from_millis(5);

/// The Galera primary pools whose new writer waits.
#[derive(Debug, Default)]
pub(super) struct Barriers {
    waiting: HashMap<PoolId, Wait>,
    /// Per Galera node, the newest view (`wsrep_cluster_conf_id`) it reported while in
    /// a Primary component.
    primary_views: HashMap<BackendId, u64>,
}

/// What one pool's next writer waits for, from the moment the old writer left (the
/// pool may route no writer for a while first).
#[derive(Debug, Clone, Copy)]
struct Wait {
    /// The writer that left, whose sessions must be gone.
    old: BackendId,
    /// When it vanished: the last view it reported in a Primary component, which the
    /// next writer's must be newer than (`None` inside: it reported none).
    old_view: Option<Option<u64>>,
    /// When a next writer was first chosen: the bounds run from there.
    chosen: Option<Instant>,
}

impl Barriers {
    /// Takes note of a Galera node's view while it is in a Primary component.
    pub(super) fn note(&mut self, backend: BackendId, report: &crate::health::Report) {
        let Some(galera) = report.galera.as_ref().filter(|g| g.cluster_status == "Primary") else {
            return;
        };
        if let Some(view) = galera.conf_id {
            self.primary_views.insert(backend, view);
        }
    }

    /// Resolves when a pool whose next writer waits should look again; never while
    /// none does (a pool without a candidate is decided again by the next report).
    pub(super) async fn next_poll(&self) {
        if !self.waiting.values().any(|w| w.chosen.is_some()) {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn sessions(pool: &Pool, backend: BackendId) -> usize {
    pool.members
        .iter()
        .find(|m| m.backend.id == backend)
        .map_or(0, |m| m.active())
}

impl Router {
    fn conf_id(&self, backend: BackendId) -> Option<u64> {
        self.states[backend].report.as_ref()?.galera.as_ref()?.conf_id
    }

    /// `decision` for `pool`, held back (no member) while the writer that left,
    /// `previous` now or earlier, still has sessions, or (when it vanished) while the
    /// next writer has not reported a newer view, within their bounds.
    pub(super) fn barred(&mut self, pool: &Pool, previous: Option<BackendId>, decision: Decision) -> Decision {
        if !pool.config.galera || pool.config.role != PoolRole::Primary {
            return decision;
        }
        let next = decision.members.first().copied();
        let now = Instant::now();
        if let Some(old) = previous.filter(|&old| next != Some(old)) {
            // Down, or out of the Primary component: its last write sets may still
            // reach the others.
            let out = self.states[old]
                .report
                .as_ref()
                .and_then(|r| r.galera.as_ref())
                .is_some_and(|g| g.cluster_status != "Primary");
            let vanished = self.states[old].status == Status::Down || out;
            let old_view = vanished.then(|| self.barriers.primary_views.get(&old).copied());
            if sessions(pool, old) > 0 || old_view.is_some() {
                let wait = Wait {
                    old,
                    old_view,
                    chosen: None,
                };
                self.barriers.waiting.insert(pool.id, wait);
            }
        }
        let Some(wait) = self.barriers.waiting.get_mut(&pool.id) else {
            return decision;
        };
        let Some(new) = next else {
            return decision; // no writer yet: the wait stands for the next one
        };
        if new == wait.old {
            self.barriers.waiting.remove(&pool.id);
            return decision;
        }
        let chosen = *wait.chosen.get_or_insert(now);
        let wait = *wait;
        let sessions_hold = sessions(pool, wait.old) > 0 && now < chosen + BARRIER;
        let view_holds = wait.old_view.is_some_and(|old_view| {
            let newer = self.conf_id(new).zip(old_view).is_some_and(|(view, old)| view > old);
            now < chosen + pool.config.hold_timeout / 2 && !newer
        });
        if !sessions_hold && !view_holds {
            self.barriers.waiting.remove(&pool.id);
            return decision;
        }
        if view_holds {
            if let Some(backend) = self.backend(new) {
                backend.nudge();
            }
        }
        Decision {
            members: Vec::new(),
            ..decision
        }
    }
}
