//! One client session: pick → (hold) → connect → copy.
//!
//! 1. Load the routing table (lock-free), order the pool's routable members by the
//!    pool's policy, and try them in turn with the connect timeout. Nothing has been
//!    read from the client yet, so trying the next one is always safe; every failure
//!    nudges that backend's checker.
//! 2. If nothing is routable or every connect failed, hold: wait for the next table
//!    generation, up to `hold_timeout`, then close cleanly.
//! 3. Copy both ways with [`pipe::bidirectional`] (a FIN in one direction is forwarded
//!    as a FIN and the other direction goes on; a buffer only while bytes are in
//!    flight), until both sides close, the session is idle too long, the member is
//!    fenced, or shutdown's grace runs out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info_span, warn, Instrument, Span};

use crate::config::TcpOptions;
use crate::pipe::{self, Traffic};
use crate::pool::{Eviction, Member, Pool};
use crate::routing::{select, Routing};
use crate::tcp;
use crate::timeline::Timeline;

/// What a session needs from its listener.
#[derive(Debug)]
pub struct SessionContext {
    pub pool: Arc<Pool>,
    pub routing: Arc<Routing>,
    pub tcp: TcpOptions,
    /// Cancelled when shutdown's grace period is over.
    pub kill: CancellationToken,
    pub timeline: Arc<Timeline>,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides closed (or one failed) normally.
    Closed,
    Idle,
    /// Its member left the pool under the `close` or `drain` policy.
    Fenced,
    Shutdown,
    /// No backend within `hold_timeout`.
    NoBackend,
}

/// Serves one accepted client connection to its end.
pub async fn serve(ctx: Arc<SessionContext>, client: TcpStream, peer: std::net::SocketAddr) {
    let span = info_span!("session", pool = %ctx.pool.name(), client = %peer, backend = field::Empty);
    async move {
        ctx.pool.sessions_active.increment(1.0);
        let ended = session(&ctx, client).await;
        ctx.pool.sessions_active.decrement(1.0);
        debug!(?ended, "session ended");
    }
    .instrument(span)
    .await
}

async fn session(ctx: &SessionContext, client: TcpStream) -> Ended {
    if let Err(e) = tcp::tune(&client, &ctx.tcp) {
        warn!(error = %e, "cannot set keepalive/TCP_USER_TIMEOUT on the client socket; half-open sessions may linger");
    }
    let Some((member, upstream)) = connect_routed(ctx).await else {
        return Ended::NoBackend;
    };
    Span::current().record("backend", member.backend.name.as_str());
    if let Err(e) = tcp::tune(&upstream, &ctx.tcp) {
        warn!(error = %e, "cannot set keepalive/TCP_USER_TIMEOUT on the backend socket; half-open sessions may linger");
    }
    let counted = member.enter();
    if ctx.pool.awaits_first_session() && ctx.timeline.first_session(ctx.pool.id, &member.backend.name) {
        ctx.pool.first_session_seen();
    }
    let started = Instant::now();
    let (ended, bytes) = pipe(client, upstream, &member, ctx).await;
    drop(counted);
    let duration = started.elapsed();
    member.stats.duration.record_duration(duration);
    member.session_seconds.record(duration.as_secs_f64());
    member.stats.bytes.record(bytes);
    member.session_bytes.record(bytes as f64);
    if ended == Ended::Fenced {
        member.fenced.increment(1);
    }
    if member.is_evicted() && member.active() == 0 {
        ctx.timeline.old_sessions_closed(ctx.pool.id, &member.backend.name);
    }
    ended
}

/// Connects to the first member that answers, holding while there is none.
///
/// Every connect attempt ends by `connect_timeout`, and after the first round by
/// `hold_timeout` too, so a session waits at most the larger of the two. A connect
/// that completes to a member fenced meanwhile (the routing table changed while it
/// was in flight) is dropped and the next candidate tried: no new session starts on
/// a demoted primary.
async fn connect_routed(ctx: &SessionContext) -> Option<(Arc<Member>, TcpStream)> {
    let pool = &ctx.pool;
    let arrived = Instant::now();
    let hold_until = arrived + pool.config.hold_timeout;
    let attempts_until = hold_until.max(arrived + pool.config.connect_timeout);
    let mut generation = ctx.routing.subscribe();
    let mut held = false;
    let mut tried: Vec<String> = Vec::new();
    let mut last_error = String::from("no routable backend");
    let record_hold = |held: bool| {
        if held {
            let waited = arrived.elapsed();
            pool.hold.record_duration(waited);
            pool.hold_seconds.record(waited.as_secs_f64());
        }
    };
    loop {
        generation.borrow_and_update();
        let candidates = ctx.routing.pick(|table| {
            select::order(pool.config.policy, table.routable(pool.id), &pool.cursor, |n| {
                fastrand::usize(..n)
            })
        });
        for member in candidates {
            let attempt = Instant::now();
            let deadline = (attempt + pool.config.connect_timeout).min(attempts_until);
            let connected = tokio::select! {
                connected = timeout_at(deadline, TcpStream::connect(member.backend.address)) => connected,
                _ = ctx.kill.cancelled() => return None,
            };
            match connected {
                Ok(Ok(_)) if member.is_evicted() => {
                    debug!(backend = %member.backend.name, "connected to a member fenced meanwhile; trying the next");
                    continue;
                }
                Ok(Ok(stream)) => {
                    let latency = attempt.elapsed();
                    member.stats.connect.record_duration(latency);
                    member.connect_seconds.record(latency.as_secs_f64());
                    record_hold(held);
                    return Some((member, stream));
                }
                Ok(Err(e)) => last_error = format!("{}: {e}", member.backend.name),
                Err(_) => last_error = format!("{}: connect timed out", member.backend.name),
            }
            debug!(error = %last_error, "connect failed; trying the next");
            if !tried.contains(&member.backend.name) {
                tried.push(member.backend.name.clone());
            }
            member.connect_failures.increment(1);
            member.backend.nudge();
        }
        if !held {
            held = true;
            pool.holds.increment(1);
            debug!(cause = %last_error, "no backend answered; holding");
        }
        let changed = tokio::select! {
            changed = timeout_at(hold_until, generation.changed()) => changed,
            _ = ctx.kill.cancelled() => return None,
        };
        if let Ok(Ok(())) = changed {
            continue;
        }
        record_hold(held);
        pool.hold_timeouts.increment(1);
        warn!(tried = %tried.join(","), last_error = %last_error, hold_timeout = ?pool.config.hold_timeout, "no backend within the hold timeout; closing the client");
        return None;
    }
}

/// Copies both ways until the session ends for one of the reasons in [`Ended`];
/// returns the reason and the bytes moved (both directions).
async fn pipe(client: TcpStream, upstream: TcpStream, member: &Member, ctx: &SessionContext) -> (Ended, u64) {
    let traffic = Traffic::default();
    // Biased: once fenced or killed, not one more byte is copied.
    let ended = tokio::select! {
        biased;
        _ = ctx.kill.cancelled() => Ended::Shutdown,
        _ = evicted(member.eviction()) => Ended::Fenced,
        result = pipe::bidirectional(client, upstream, &traffic) => {
            if let Err(e) = result {
                debug!(error = %e, "session error");
            }
            Ended::Closed
        }
        _ = idle(&traffic.activity, ctx.pool.config.idle_timeout) => Ended::Idle,
    };
    let (up, down) = (
        traffic.upstream.load(Ordering::Relaxed),
        traffic.downstream.load(Ordering::Relaxed),
    );
    member.bytes_upstream.increment(up);
    member.bytes_downstream.increment(down);
    (ended, up + down)
}

/// Resolves once no byte moved either way for about `limit` (checked four times per
/// period, so it fires between `limit` and 1.25 × `limit`).
async fn idle(activity: &AtomicU64, limit: Duration) {
    let step = (limit / 4).max(Duration::from_millis(10));
    let mut seen = activity.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    loop {
        sleep(step).await;
        let now = activity.load(Ordering::Relaxed);
        quiet = if now == seen { quiet + step } else { Duration::ZERO };
        seen = now;
        if quiet >= limit {
            return;
        }
    }
}

/// Resolves when the member's fencing signal says this session must close.
async fn evicted(mut eviction: watch::Receiver<Eviction>) {
    loop {
        let current = *eviction.borrow_and_update();
        match current {
            Eviction::Active => {
                if eviction.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
            Eviction::CloseAt(at) => {
                tokio::select! {
                    _ = sleep_until(at) => return,
                    changed = eviction.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}
