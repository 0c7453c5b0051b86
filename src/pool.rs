//! The runtime side of a configured pool: its members (a backend as seen by one
//! pool), the round-robin cursor that must survive table swaps, and the fencing
//! signal of each member.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::config::{BackendId, Config, PoolConfig, PoolId};
use crate::metrics as m;
use crate::stats::{Recorder, SessionStats};

/// One pool.
#[derive(Debug)]
pub struct Pool {
    /// Its index among the configured pools.
    pub id: PoolId,
    /// Its configuration: role, policy, members, timeouts.
    pub config: PoolConfig,
    /// In priority order, as configured.
    pub members: Vec<Arc<Member>>,
    /// Round-robin position; lives here, not in the table, so a swap keeps it.
    pub cursor: AtomicUsize,
    /// Records `HOLDS` for this pool.
    pub holds: Counter,
    /// Records `HOLD_TIMEOUTS` for this pool.
    pub hold_timeouts: Counter,
    /// Records `SESSIONS_HELD` for this pool.
    pub held_now: Gauge,
    /// Records `SESSIONS_ACTIVE` for this pool.
    pub sessions_active: Gauge,
    /// Records `ROUTABLE_BACKENDS` for this pool (set by the router).
    pub routable_gauge: Gauge,
    alarm_count: Counter,
    alarm_gauge: Gauge,
    alarm: Mutex<Option<String>>,
    /// What the fleet (`[cluster]`) says of this pool, for `/status`.
    fleet: Mutex<FleetView>,
    /// What its Sentinels say (`[pools.NAME.sentinel]`), for `/status`.
    sentinel: Mutex<SentinelView>,
    /// Until when an operator holds it (Unix ms), for `/status`.
    held_until: Mutex<Option<u64>>,
    /// The members the router's decision names, held or not (a switchover waits for
    /// its target here while the published table routes nothing).
    decided: Mutex<Vec<BackendId>>,
    /// Set when a new primary was routed, until a session reaches it.
    awaiting_first_session: AtomicBool,
    /// Since when the published table routes nothing to this pool (`None` while it
    /// routes to a member); readiness allows such a pool `hold_timeout`.
    unroutable_since: Mutex<Option<Instant>>,
    /// Time held waiting for a routable backend, µs (held sessions only).
    pub hold: Recorder,
    /// Records `HOLD_SECONDS` for this pool (held sessions only).
    pub hold_seconds: Histogram,
}

/// A primary pool's fleet state, as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FleetView {
    /// The current verdict's epoch (its etcd revision).
    pub epoch: Option<i64>,
    /// The backend the verdict names.
    pub primary: Option<String>,
    /// Who wrote it.
    pub by: Option<String>,
    /// Set while the pool holds sessions for want of etcd, or for a verdict this
    /// proxy cannot follow.
    pub alarm: Option<String>,
}

/// What a primary Redis pool's Sentinels say, as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SentinelView {
    /// The master they name (`host:port`), when they name one.
    pub master: Option<String>,
    /// A failover started and no replica is promoted yet.
    pub failing_over: bool,
}

/// Whether a member's live sessions may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The member is in its pool (or left under the `keep` policy).
    Active,
    /// Drained by an operator: no new session may start on it (one that connected
    /// from an older table is turned away), while its live sessions go on.
    Draining,
    /// The member left its pool: its sessions close at this instant (now for
    /// `close`, now + deadline for `drain`).
    CloseAt(Instant),
    /// An operator's drain at idle points (a hold with `drain`): `mysql`-mode
    /// sessions close at their next idle point, every session by this instant; no
    /// new session may start on it.
    AtIdle(Instant),
}

/// A backend as a member of one pool.
#[derive(Debug)]
pub struct Member {
    /// The backend, shared with every pool it is a member of.
    pub backend: Arc<Backend>,
    /// The pool it is a member of.
    pub pool: PoolId,
    active: AtomicUsize,
    eviction: watch::Sender<Eviction>,
    /// Until when (Unix ms) no new session starts here: see [`Member::suspect`].
    suspect_until_ms: AtomicU64,
    /// Records `SESSIONS` for this member (counted in [`Member::enter`]).
    pub sessions: Counter,
    /// Records `BYTES_UPSTREAM` for this member.
    pub bytes_upstream: Counter,
    /// Records `BYTES_DOWNSTREAM` for this member.
    pub bytes_downstream: Counter,
    /// Records `BYTES_SPLICED` for this member.
    pub bytes_spliced: Counter,
    /// Records `CONNECT_FAILURES` for this member, with `layer` L4.
    pub connect_failures: Counter,
    /// Records `FENCED_SESSIONS` for this member.
    pub fenced: Counter,
    /// Records `SESSIONS_CLOSED_IDLE` for this member.
    pub closed_idle: Counter,
    /// Connect latency, session duration and bytes per session, for the percentiles on
    /// `/status`.
    pub stats: SessionStats,
    /// Records `CONNECT_SECONDS` for this member.
    pub connect_seconds: Histogram,
    /// Records `SESSION_SECONDS` for this member.
    pub session_seconds: Histogram,
    /// Records `SESSION_BYTES` for this member.
    pub session_bytes: Histogram,
    /// 1 while this member is its primary pool's primary.
    pub primary_gauge: Gauge,
}

impl Pool {
    /// One pool per entry of `config.pools` over `backends` (from [`Backend::all`]),
    /// each with its index as its id.
    pub fn all(config: &Config, backends: &[Arc<Backend>]) -> Vec<Arc<Pool>> {
        config
            .pools
            .iter()
            .enumerate()
            .map(|(id, p)| Arc::new(Pool::new(id, p, backends)))
            .collect()
    }

    /// Builds pool `id` from its config: one [`Member`] per configured member (taken from
    /// `backends`, indexed by id) and the pool's metrics handles.
    pub fn new(id: PoolId, config: &PoolConfig, backends: &[Arc<Backend>]) -> Self {
        let members = config
            .members
            .iter()
            .map(|&b| Arc::new(Member::new(id, &config.name, backends[b].clone())))
            .collect();
        Pool::with_members(id, config.clone(), members)
    }

    /// Pool `id` of `config`, whose member ids are the `members`' backend ids (slots),
    /// in the same order.
    pub fn with_members(id: PoolId, config: PoolConfig, members: Vec<Arc<Member>>) -> Self {
        let pool = config.name.clone();
        // Present from the start (a reload's `carry_over` sets an operator's hold again).
        metrics::gauge!(m::POOL_HELD, "pool" => pool.clone()).set(0.0);
        Pool {
            id,
            config,
            members,
            cursor: AtomicUsize::new(0),
            holds: metrics::counter!(m::HOLDS, "pool" => pool.clone()),
            hold_timeouts: metrics::counter!(m::HOLD_TIMEOUTS, "pool" => pool.clone()),
            held_now: metrics::gauge!(m::SESSIONS_HELD, "pool" => pool.clone()),
            sessions_active: metrics::gauge!(m::SESSIONS_ACTIVE, "pool" => pool.clone()),
            routable_gauge: metrics::gauge!(m::ROUTABLE_BACKENDS, "pool" => pool.clone()),
            alarm_count: metrics::counter!(m::ALARMS, "pool" => pool.clone()),
            alarm_gauge: metrics::gauge!(m::ALARM_ACTIVE, "pool" => pool.clone()),
            alarm: Mutex::new(None),
            fleet: Mutex::new(FleetView::default()),
            sentinel: Mutex::new(SentinelView::default()),
            held_until: Mutex::new(None),
            decided: Mutex::new(Vec::new()),
            awaiting_first_session: AtomicBool::new(false),
            unroutable_since: Mutex::new(Some(Instant::now())),
            hold: Recorder::default(),
            hold_seconds: metrics::histogram!(m::HOLD_SECONDS, "pool" => pool),
        }
    }

    /// Takes over what `old` (this pool before a reload) knows at run time: the
    /// round-robin position, the alarm, the fleet's view, an operator's hold and since
    /// when it routes nothing.
    pub fn carry_over(&self, old: &Pool) {
        self.cursor.store(old.cursor.load(Ordering::Relaxed), Ordering::Relaxed);
        *self.alarm.lock().unwrap_or_else(|e| e.into_inner()) = old.alarm();
        self.set_fleet(old.fleet());
        self.set_held(old.held_until());
        self.awaiting_first_session
            .store(old.awaits_first_session(), Ordering::Relaxed);
        *self.unroutable_since.lock().unwrap_or_else(|e| e.into_inner()) =
            *old.unroutable_since.lock().unwrap_or_else(|e| e.into_inner());
    }

    /// The pool's configured name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The pool's active alarm (two writable backends), for `/status`.
    pub fn alarm(&self) -> Option<String> {
        self.alarm.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Raises (counted once per raise) or clears the alarm; the router's call.
    pub fn set_alarm(&self, alarm: Option<String>) {
        if alarm.is_some() {
            self.alarm_count.increment(1);
        }
        let active = alarm.is_some() || self.fleet().alarm.is_some();
        self.alarm_gauge.set(if active { 1.0 } else { 0.0 });
        *self.alarm.lock().unwrap_or_else(|e| e.into_inner()) = alarm;
    }

    /// Until when (Unix ms) an operator holds this pool's new sessions.
    pub fn held_until(&self) -> Option<u64> {
        *self.held_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the operator's hold (the router's call).
    pub fn set_held(&self, until: Option<u64>) {
        metrics::gauge!(m::POOL_HELD, "pool" => self.config.name.clone()).set(if until.is_some() { 1.0 } else { 0.0 });
        *self.held_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    /// The backends (slots) the router's decision names now, held or not.
    pub fn decided(&self) -> Vec<BackendId> {
        self.decided.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the router's decision (the router's call, at every publish).
    pub fn set_decided(&self, members: &[BackendId]) {
        let mut decided = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        if decided.as_slice() != members {
            *decided = members.to_vec();
        }
    }

    /// Waits until the members draining at idle points have no session left, or until
    /// `by` (and a moment for the last ones to close); the sessions left on each.
    pub async fn drained(&self, by: Instant) -> Vec<(String, usize)> {
        const POLL: std::time::Duration = std::time::Duration::from_millis(20);
        let draining = || {
            self.members
                .iter()
                .filter(|m| matches!(m.eviction_now(), Eviction::AtIdle(_)))
        };
        let limit = by + std::time::Duration::from_secs(1);
        while draining().any(|m| m.active() > 0) && Instant::now() < limit {
            tokio::time::sleep(POLL).await;
        }
        draining().map(|m| (m.backend.name.clone(), m.active())).collect()
    }

    /// What the Sentinels say of this pool (nothing before a first word).
    pub fn sentinel(&self) -> SentinelView {
        self.sentinel.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the Sentinels' word (the router's call).
    pub fn set_sentinel(&self, view: SentinelView) {
        *self.sentinel.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// What the fleet says of this pool.
    pub fn fleet(&self) -> FleetView {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the fleet's verdict and alarm (the router's call); a newly raised
    /// alarm is counted like the two-writers alarm.
    pub fn set_fleet(&self, view: FleetView) {
        let mut fleet = self.fleet.lock().unwrap_or_else(|e| e.into_inner());
        if view.alarm.is_some() && fleet.alarm.is_none() {
            self.alarm_count.increment(1);
        }
        let active = view.alarm.is_some() || self.alarm().is_some();
        self.alarm_gauge.set(if active { 1.0 } else { 0.0 });
        if let Some(epoch) = view.epoch {
            metrics::gauge!(m::POOL_EPOCH, "pool" => self.config.name.clone()).set(epoch as f64);
        }
        *fleet = view;
    }

    /// The router routed a new primary: the next session through it is the first.
    pub fn expect_first_session(&self) {
        self.awaiting_first_session.store(true, Ordering::Relaxed);
    }

    /// Whether a new primary was routed and no session reached it yet (a relaxed
    /// load: the common case stays a read).
    pub fn awaits_first_session(&self) -> bool {
        self.awaiting_first_session.load(Ordering::Relaxed)
    }

    /// The first session reached the new primary.
    pub fn first_session_seen(&self) {
        self.awaiting_first_session.store(false, Ordering::Relaxed);
    }

    /// The router's note, at every publication, of whether the pool routes to
    /// anything.
    pub fn note_routable(&self, routable: bool) {
        let mut since = self.unroutable_since.lock().unwrap_or_else(|e| e.into_inner());
        match (routable, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(Instant::now()),
            (false, Some(_)) => {}
        }
    }

    /// How long the pool has routed nothing (`None` while it routes to a member).
    pub fn unroutable_for(&self) -> Option<std::time::Duration> {
        let since = *self.unroutable_since.lock().unwrap_or_else(|e| e.into_inner());
        since.map(|at| at.elapsed())
    }
}

impl Member {
    /// `backend` as a member of pool `pool_id`, named `pool`.
    pub fn new(pool_id: PoolId, pool: &str, backend: Arc<Backend>) -> Self {
        let labels = [("pool", pool.to_string()), ("backend", backend.name.clone())];
        let l4 = [
            ("pool", pool.to_string()),
            ("backend", backend.name.clone()),
            ("layer", "L4".to_string()),
        ];
        Member {
            pool: pool_id,
            active: AtomicUsize::new(0),
            eviction: watch::Sender::new(Eviction::Active),
            suspect_until_ms: AtomicU64::new(0),
            sessions: metrics::counter!(m::SESSIONS, &labels),
            bytes_upstream: metrics::counter!(m::BYTES_UPSTREAM, &labels),
            bytes_downstream: metrics::counter!(m::BYTES_DOWNSTREAM, &labels),
            bytes_spliced: metrics::counter!(m::BYTES_SPLICED, &labels),
            connect_failures: metrics::counter!(m::CONNECT_FAILURES, &l4),
            fenced: metrics::counter!(m::FENCED_SESSIONS, &labels),
            closed_idle: metrics::counter!(m::SESSIONS_CLOSED_IDLE, &labels),
            stats: SessionStats::default(),
            connect_seconds: metrics::histogram!(m::CONNECT_SECONDS, &labels),
            session_seconds: metrics::histogram!(m::SESSION_SECONDS, &labels),
            session_bytes: metrics::histogram!(m::SESSION_BYTES, &labels),
            primary_gauge: metrics::gauge!(m::PRIMARY, &labels),
            backend,
        }
    }

    /// Sessions open through this member now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a session for as long as the guard lives.
    pub fn enter(self: &Arc<Self>) -> SessionGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.sessions.increment(1);
        SessionGuard(self.clone())
    }

    /// The fencing signal sessions watch.
    pub fn eviction(&self) -> watch::Receiver<Eviction> {
        self.eviction.subscribe()
    }

    /// Keeps new sessions off this member for `span` (a reply said it is no longer the
    /// primary; its checker is nudged meanwhile).
    pub fn suspect(&self, span: std::time::Duration) {
        let until = crate::timeline::now_ms() + span.as_millis() as u64;
        self.suspect_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether [`Member::suspect`] keeps new sessions off this member now.
    pub fn is_suspect(&self) -> bool {
        crate::timeline::now_ms() < self.suspect_until_ms.load(Ordering::Relaxed)
    }

    /// The member's fencing state now, without subscribing.
    pub fn eviction_now(&self) -> Eviction {
        *self.eviction.borrow()
    }

    /// Whether no new session may start on the member: it left its pool under a
    /// fencing policy, or was drained.
    pub fn is_evicted(&self) -> bool {
        *self.eviction.borrow() != Eviction::Active
    }

    /// Set by the router when the member leaves or rejoins its pool.
    pub fn set_eviction(&self, eviction: Eviction) {
        self.eviction.send_replace(eviction);
    }
}

/// Decrements the member's session count on drop.
#[derive(Debug)]
pub struct SessionGuard(Arc<Member>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
