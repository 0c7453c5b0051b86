//! The event record: every health flip, role change, alarm, admin action and
//! failover as an [`Event`] (the last [`EVENTS`], on `/events` and `/status`), and one
//! [`FailoverEvent`] per change of a primary pool's primary, with the moments an
//! operator asks about afterwards — when the fault was first observed, when routing
//! stopped sending to the old primary, when it started sending to the new one, when
//! the first session reached it, and when the old primary's last session was closed.
//! The last [`CAPACITY`] events are kept for `/status`; each is logged once, when it
//! completes. [`Timeline::wait_for`] awaits a change instead of polling.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;
use tracing::info;

use crate::config::PoolId;

/// Failover events kept.
pub const CAPACITY: usize = 64;
/// Plain events kept.
pub const EVENTS: usize = 256;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A backend flipped up or down.
    Health,
    /// A backend reported another role.
    Role,
    /// A primary pool's primary changed.
    Failover,
    /// An alarm was raised or cleared.
    Alarm,
    /// An operator drained, disabled or enabled a backend.
    Admin,
    /// The config was reloaded (what changed), or a reload was rejected (why).
    Reload,
    /// The fleet's verdict for a primary pool changed: a new epoch (`[cluster]`).
    Epoch,
    /// A step of an orchestrated switchover (`POST /pools/NAME/switchover`).
    Switchover,
    /// The Sentinels of a primary Redis pool named another master.
    Sentinel,
    /// A backend's host name resolved to other addresses; its members follow.
    Dns,
}

/// One thing that happened, with when and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// Its number: one more than the previous event's.
    pub id: u64,
    /// When it happened.
    pub at_ms: Millis,
    /// What kind of event it is.
    pub kind: EventKind,
    /// The pool it concerns, if any.
    pub pool: Option<String>,
    /// The backend it concerns, if any.
    pub backend: Option<String>,
    /// What happened, in a few words.
    pub detail: String,
}

/// Unix time in milliseconds.
pub type Millis = u64;

/// The current wall-clock time as [`Millis`].
pub fn now_ms() -> Millis {
    millis(SystemTime::now())
}

/// `at` as [`Millis`] (0 for a time before the Unix epoch).
pub fn millis(at: SystemTime) -> Millis {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One change of primary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailoverEvent {
    /// Its number: one more than the previous failover event's.
    pub id: u64,
    /// The pool's name.
    pub pool: String,
    /// The pool's id (not serialized).
    #[serde(skip)]
    pub pool_id: PoolId,
    /// The primary before (none when the pool had none).
    pub from: Option<String>,
    /// The primary after (none while the pool has none).
    pub to: Option<String>,
    /// Why the primary changed, in a few words (e.g. `two writable backends`, or what
    /// the old primary's last check said).
    pub cause: String,
    /// When checks first disagreed with the old primary being a healthy primary (else
    /// when it left); `None` when there was no old primary.
    pub fault_observed_ms: Option<Millis>,
    /// Routing stopped sending new sessions to `from`.
    pub old_removed_ms: Option<Millis>,
    /// Routing started sending new sessions to `to`.
    pub new_routed_ms: Option<Millis>,
    /// When the first session reached `to`.
    pub first_session_ms: Option<Millis>,
    /// The last session on `from` through this pool ended (fencing).
    pub old_sessions_closed_ms: Option<Millis>,
    /// A fleet's pool (`[cluster]`): the epoch whose verdict `to` was routed under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

impl FailoverEvent {
    fn complete(&self) -> bool {
        let old_done = self.from.is_none() || self.old_sessions_closed_ms.is_some();
        let new_done = self.to.is_some() && self.first_session_ms.is_some();
        old_done && new_done
    }

    fn log_if_complete(&self) {
        if !self.complete() {
            return;
        }
        let since = |t: Option<Millis>| match (self.fault_observed_ms.or(self.old_removed_ms), t) {
            (Some(start), Some(t)) => t.saturating_sub(start) as i64,
            _ => -1,
        };
        info!(
            pool = %self.pool,
            from = self.from.as_deref().unwrap_or("-"),
            to = self.to.as_deref().unwrap_or("-"),
            cause = %self.cause,
            new_routed_after_ms = since(self.new_routed_ms),
            first_session_after_ms = since(self.first_session_ms),
            old_closed_after_ms = since(self.old_sessions_closed_ms),
            "failover complete"
        );
    }
}

/// The ring buffers of events.
#[derive(Debug, Default)]
pub struct Timeline {
    events: Mutex<VecDeque<FailoverEvent>>,
    log: Mutex<VecDeque<Event>>,
    /// Bumped after every change of either record.
    changes: watch::Sender<u64>,
}

impl Timeline {
    /// The failover events, oldest first.
    pub fn failovers(&self) -> Vec<FailoverEvent> {
        self.lock().iter().cloned().collect()
    }

    /// The plain events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Waits until `find` returns something for the current failover events (oldest
    /// first), checking again after every change of the timeline.
    pub async fn wait_for<T>(&self, mut find: impl FnMut(&[FailoverEvent]) -> Option<T>) -> T {
        self.wait(|| find(&self.failovers())).await
    }

    /// Waits until `find` returns something for the current plain events.
    pub async fn wait_for_event<T>(&self, mut find: impl FnMut(&[Event]) -> Option<T>) -> T {
        self.wait(|| find(&self.events())).await
    }

    async fn wait<T>(&self, mut look: impl FnMut() -> Option<T>) -> T {
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            if let Some(found) = look() {
                return found;
            }
            // The sender lives as long as `self`: `changed` cannot fail while we borrow it.
            let _ = changes.changed().await;
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Records an event. The caller logs it (once, where it happens).
    pub fn push(&self, kind: EventKind, pool: Option<&str>, backend: Option<&str>, detail: impl Into<String>) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let id = log.back().map_or(1, |e| e.id + 1);
        if log.len() == EVENTS {
            log.pop_front();
        }
        log.push_back(Event {
            id,
            at_ms: now_ms(),
            kind,
            pool: pool.map(str::to_string),
            backend: backend.map(str::to_string),
            detail: detail.into(),
        });
        drop(log);
        self.changed();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<FailoverEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new event (the router's call).
    pub fn open(&self, mut event: FailoverEvent) {
        metrics::counter!(crate::metrics::FAILOVERS, "pool" => event.pool.clone()).increment(1);
        let mut events = self.lock();
        event.id = events.back().map_or(1, |e| e.id + 1);
        event.log_if_complete();
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
        drop(events);
        self.changed();
    }

    /// Updates the newest event of `pool` that matches; returns whether there was one.
    pub fn update(
        &self,
        pool: PoolId,
        matches: impl Fn(&FailoverEvent) -> bool,
        change: impl FnOnce(&mut FailoverEvent),
    ) -> bool {
        let mut events = self.lock();
        // The newest matching event of the pool (not just the newest one: A's sessions
        // may still be draining after a second failover B -> C).
        let Some(event) = events.iter_mut().rev().find(|e| e.pool_id == pool && matches(e)) else {
            return false;
        };
        let was_complete = event.complete();
        change(event);
        if !was_complete {
            event.log_if_complete();
        }
        drop(events);
        self.changed();
        true
    }

    /// The data path's call when a session reached `backend` in `pool`; true when
    /// it was the first session on that pool's new primary.
    pub fn first_session(&self, pool: PoolId, backend: &str) -> bool {
        let at = now_ms();
        self.update(
            pool,
            |e| e.to.as_deref() == Some(backend) && e.first_session_ms.is_none(),
            |e| e.first_session_ms = Some(at),
        )
    }

    /// The last fenced session on `backend` in `pool` ended.
    pub fn old_sessions_closed(&self, pool: PoolId, backend: &str) {
        let at = now_ms();
        self.update(
            pool,
            |e| e.from.as_deref() == Some(backend) && e.old_sessions_closed_ms.is_none(),
            |e| e.old_sessions_closed_ms = Some(at),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(from: Option<&str>, to: Option<&str>) -> FailoverEvent {
        FailoverEvent {
            id: 0,
            pool: "db".into(),
            pool_id: 0,
            from: from.map(Into::into),
            to: to.map(Into::into),
            cause: "test".into(),
            fault_observed_ms: Some(1),
            old_removed_ms: Some(2),
            new_routed_ms: None,
            first_session_ms: None,
            old_sessions_closed_ms: None,
            epoch: None,
        }
    }

    #[test]
    fn stages_fill_in_on_the_newest_matching_event() {
        let timeline = Timeline::default();
        timeline.open(event(Some("a"), None));
        timeline.update(0, |e| e.to.is_none(), |e| e.to = Some("b".into()));
        timeline.first_session(0, "a"); // not the new primary: ignored
        timeline.first_session(0, "b");
        timeline.old_sessions_closed(0, "a");
        let events = timeline.failovers();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].to.as_deref(), Some("b"));
        assert!(events[0].first_session_ms.is_some());
        assert!(events[0].old_sessions_closed_ms.is_some());
        assert!(events[0].complete());
    }

    #[test]
    fn plain_events_are_numbered_and_bounded() {
        let timeline = Timeline::default();
        for i in 0..EVENTS + 3 {
            timeline.push(EventKind::Health, None, Some("b"), format!("flip {i}"));
        }
        let events = timeline.events();
        assert_eq!(events.len(), EVENTS);
        assert_eq!(events.last().unwrap().id, (EVENTS + 3) as u64);
        assert_eq!(events.last().unwrap().detail, format!("flip {}", EVENTS + 2));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_wakes_on_the_change_it_waits_for() {
        let timeline = Timeline::default();
        timeline.open(event(Some("a"), None));
        let waiting = timeline.wait_for(|events| events.iter().find(|e| e.first_session_ms.is_some()).map(|e| e.id));
        let changes = async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            timeline.update(0, |e| e.to.is_none(), |e| e.to = Some("b".into()));
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            timeline.first_session(0, "b");
        };
        let started = tokio::time::Instant::now();
        let (id, ()) = tokio::join!(waiting, changes);
        assert_eq!(id, 1);
        assert_eq!(
            started.elapsed(),
            std::time::Duration::from_secs(2),
            "not before the first session"
        );
    }

    #[test]
    fn keeps_only_the_newest_events() {
        let timeline = Timeline::default();
        for _ in 0..CAPACITY + 5 {
            timeline.open(event(Some("a"), Some("b")));
        }
        let events = timeline.failovers();
        assert_eq!(events.len(), CAPACITY);
        assert_eq!(events.last().unwrap().id, (CAPACITY + 5) as u64);
    }
}
