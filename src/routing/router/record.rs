//! What the router records when a pool's decision changes: the failover event of a
//! primary pool (on the timeline, opened before the new table is published) and the
//! two-writers alarm.

use tracing::{info, warn};

use super::Router;
use crate::config::{BackendId, LeavePolicy};
use crate::pool::Pool;
use crate::routing::membership::Decision;
use crate::timeline::{now_ms, EventKind, FailoverEvent};

impl Router {
    /// Raises or clears the two-writers alarm of a primary pool.
    pub(super) fn alarm(&self, pool: &Pool, old: &Decision) {
        let new = &self.current[pool.id];
        if new.two_writers == old.two_writers {
            return;
        }
        if new.two_writers.is_empty() {
            info!(pool = %pool.name(), "two-writers alarm cleared");
            // The pool's state first: whoever the event wakes sees it.
            pool.set_alarm(None);
            self.timeline
                .push(EventKind::Alarm, Some(pool.name()), None, "two-writers alarm cleared");
        } else {
            let writers = self.names(&new.two_writers);
            let kept = self.names(&new.members);
            warn!(pool = %pool.name(), writers = %writers, routed = %kept, rule = ?pool.config.two_writers, "ALARM: more than one writable backend");
            let alarm = format!("two writable backends: {writers}; routing to: [{kept}]");
            pool.set_alarm(Some(alarm.clone()));
            self.timeline.push(EventKind::Alarm, Some(pool.name()), None, alarm);
        }
    }

    /// Opens or completes the failover event of a primary pool whose primary changed.
    pub(super) fn record_failover(&self, pool: &Pool, old: Option<BackendId>) {
        let new = self.current[pool.id].members.first().copied();
        if new == old {
            return;
        }
        let now = now_ms();
        let name = |id: BackendId| self.name_of(id).to_string();
        if new.is_some() {
            pool.expect_first_session();
        }
        let detail = format!(
            "primary {} -> {}",
            old.map(name).as_deref().unwrap_or("none"),
            new.map(name).as_deref().unwrap_or("none")
        );
        self.timeline.push(EventKind::Failover, Some(pool.name()), None, detail);
        match old {
            Some(old) => {
                let history = &self.histories[old];
                let cause = if self.current[pool.id].two_writers.len() > 1 {
                    "two writable backends".to_string()
                } else {
                    history.last_error.clone().unwrap_or_else(|| "left the pool".into())
                };
                warn!(pool = %pool.name(), from = %name(old), to = new.map(name).as_deref().unwrap_or("-"), cause = %cause, "primary changed");
                let closed = (pool.config.on_leave != LeavePolicy::Keep
                    && pool.members.iter().any(|m| m.backend.id == old && m.active() == 0))
                .then_some(now);
                self.timeline.open(FailoverEvent {
                    id: 0,
                    pool: pool.name().to_string(),
                    pool_id: pool.id,
                    from: Some(name(old)),
                    to: new.map(name),
                    cause,
                    fault_observed_ms: history.suspect_since.or(Some(now)),
                    old_removed_ms: Some(now),
                    new_routed_ms: new.map(|_| now),
                    first_session_ms: None,
                    old_sessions_closed_ms: closed,
                    epoch: new.and(pool.fleet().epoch),
                });
            }
            None => {
                let new = new.expect("changed from none, so some");
                info!(pool = %pool.name(), to = %name(new), "primary routed");
                let mut completed = false;
                self.timeline.update(
                    pool.id,
                    |e| e.to.is_none(),
                    |e| {
                        e.to = Some(name(new));
                        e.new_routed_ms = Some(now);
                        e.epoch = pool.fleet().epoch;
                        completed = true;
                    },
                );
                if !completed {
                    self.timeline.open(FailoverEvent {
                        id: 0,
                        pool: pool.name().to_string(),
                        pool_id: pool.id,
                        from: None,
                        to: Some(name(new)),
                        cause: "first writable backend".into(),
                        fault_observed_ms: None,
                        old_removed_ms: None,
                        new_routed_ms: Some(now),
                        first_session_ms: None,
                        old_sessions_closed_ms: None,
                        epoch: pool.fleet().epoch,
                    });
                }
            }
        }
    }
}
