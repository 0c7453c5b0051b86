//! Step 1 and 2 of a session: pick from the routing table, connect, and hold while
//! nothing answers. The connect itself is a seam ([`Connect`]): [`TcpConnect`] in a
//! proxy, a scripted one in the paused-time tests.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn, Span};

use super::{Ended, SessionContext};
use crate::pool::Member;
use crate::routing::select;
use crate::tcp;

/// How a session reaches a backend's address.
pub trait Connect: Send + Sync + 'static {
    /// What a connect yields (a `TcpStream` in a proxy).
    type Stream: Send;
    /// Connects to `address` (from `source`, when set); the caller bounds it with the
    /// connect timeout.
    fn connect(
        &self,
        address: SocketAddr,
        source: Option<IpAddr>,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The proxy's connect: [`tcp::connect`] (TCP_NODELAY set; keepalive and
/// TCP_USER_TIMEOUT follow once the session has lived a moment).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnect;

impl Connect for TcpConnect {
    type Stream = TcpStream;

    fn connect(
        &self,
        address: SocketAddr,
        source: Option<IpAddr>,
    ) -> impl Future<Output = io::Result<TcpStream>> + Send {
        tcp::connect(address, source)
    }
}

/// Any `Fn(SocketAddr) -> impl Future<Output = io::Result<S>>` connects too (tests;
/// the source address is not theirs to use).
impl<F, Fut, S> Connect for F
where
    F: Fn(SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send,
    S: Send,
{
    type Stream = S;

    fn connect(&self, address: SocketAddr, _: Option<IpAddr>) -> impl Future<Output = io::Result<S>> + Send {
        self(address)
    }
}

/// How often a session held for want of a member that is not suspect looks again.
const SUSPECT_RETRY: Duration = Duration::from_millis(20);

/// What the attempts so far found, for the log line of a session that gives up.
struct Attempts {
    tried: Vec<String>,
    /// The last round tried a connect (it had a member that was not suspect).
    tried_last_round: bool,
    /// The last round stopped at a shortage of the proxy's own (a local error).
    local_shortage: bool,
    last_error: String,
    /// A routable member was passed over for saying it is no longer the primary.
    suspect: bool,
}

/// Connects to the first member that answers, holding while there is none.
///
/// Every connect attempt ends by `connect_timeout`, and after the first round by
/// `hold_timeout` too, so a session waits at most the larger of the two. A connect
/// that completes to a member fenced meanwhile (the routing table changed while it
/// was in flight) is dropped and the next candidate tried: no new session starts on
/// a demoted primary. When the hold timed out: [`Ended::NoBackend`] if nothing was
/// routable, [`Ended::ConnectFailed`] if every connect failed; [`Ended::Shutdown`]
/// when shutdown's grace ran out.
pub(super) async fn connect_routed<C: Connect>(ctx: &SessionContext<C>) -> Result<Connected<C::Stream>, Ended> {
    let pool = &ctx.pool;
    let arrived = Instant::now();
    let hold_until = arrived + pool.config.hold_timeout;
    let attempts_until = hold_until.max(arrived + pool.config.connect_timeout);
    let mut generation = ctx.routing.subscribe();
    // Held from the first round that found nobody: counted in `switchyard_sessions_held`
    // until this function returns (or its future is dropped).
    let mut holding: Option<Holding<'_>> = None;
    let mut attempts = Attempts {
        tried: Vec::new(),
        tried_last_round: false,
        local_shortage: false,
        last_error: String::from("no routable backend"),
        suspect: false,
    };
    let record_hold = |held: bool| {
        let waited = arrived.elapsed();
        if held {
            pool.hold.record_duration(waited);
            pool.hold_seconds.record(waited.as_secs_f64());
        }
        waited
    };
    loop {
        generation.borrow_and_update();
        match one_round(ctx, attempts_until, &mut attempts).await {
            Round::Connected(member, stream, connect) => {
                let held = holding.is_some();
                let waited = record_hold(held);
                return Ok(Connected {
                    member,
                    stream,
                    held: waited.saturating_sub(connect),
                    connect,
                });
            }
            Round::Killed => return Err(Ended::Shutdown),
            Round::NoneAnswered => {}
        }
        if holding.is_none() {
            holding = Some(Holding::new(&pool.held_now));
            pool.holds.increment(1);
            debug!(cause = %attempts.last_error, "no backend answered; holding");
        }
        // Passed over a suspect member: look again soon (its suspicion may end with
        // no new table).
        let wake = if std::mem::take(&mut attempts.suspect) {
            hold_until.min(Instant::now() + SUSPECT_RETRY)
        } else {
            hold_until
        };
        let changed = tokio::select! {
            changed = timeout_at(wake, generation.changed()) => changed,
            _ = ctx.kill.cancelled() => return Err(Ended::Shutdown),
        };
        if matches!(changed, Ok(Ok(()))) || Instant::now() < hold_until {
            continue;
        }
        record_hold(true);
        pool.hold_timeouts.increment(1);
        if crate::logs::kinds::HOLD_TIMEOUTS.allow() {
            warn!(tried = %attempts.tried.join(","), last_error = %attempts.last_error, hold_timeout = ?pool.config.hold_timeout, "no backend within the hold timeout; closing the client");
        }
        return Err(if attempts.local_shortage {
            Ended::LocalShortage
        } else if attempts.tried_last_round {
            Ended::ConnectFailed
        } else {
            Ended::NoBackend
        });
    }
}

/// One session counted as held while this lives.
struct Holding<'a>(&'a metrics::Gauge);

impl<'a> Holding<'a> {
    fn new(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Holding(gauge)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A session's backend connection, and what it took.
#[derive(Debug)]
pub(super) struct Connected<S> {
    pub(super) member: Arc<Member>,
    pub(super) stream: S,
    /// From arrival to the start of the connect that succeeded: failed attempts and
    /// waiting for a routable member (zero when the first connect answered).
    pub(super) held: Duration,
    /// The connect that succeeded.
    pub(super) connect: Duration,
}

enum Round<S> {
    /// With the successful connect's time.
    Connected(Arc<Member>, S, Duration),
    NoneAnswered,
    Killed,
}

/// Tries the pool's routable members once, in the pool's order. Every failure is
/// counted and nudges that backend's checker.
async fn one_round<C: Connect>(
    ctx: &SessionContext<C>,
    attempts_until: Instant,
    attempts: &mut Attempts,
) -> Round<C::Stream> {
    let pool = &ctx.pool;
    // One member at a time from the current table: no allocation per session, and a
    // fallback after a failed connect comes from the newest table.
    let (mut walk, mut first) = ctx.routing.pick(|table| {
        let (walk, first) = select::Walk::first(pool.config.policy, table.routable(pool.id), &pool.cursor, |n| {
            fastrand::usize(..n)
        });
        (walk, first.cloned())
    });
    (attempts.tried_last_round, attempts.local_shortage) = (false, false);
    loop {
        let next = match first.take() {
            Some(member) => Some(member),
            None => ctx.routing.pick(|table| walk.next(table.routable(pool.id)).cloned()),
        };
        let Some(member) = next else { break };
        if member.is_suspect() {
            // It just said it is no longer the primary: not even a connect.
            attempts.suspect = true;
            continue;
        }
        attempts.tried_last_round = true;
        let attempt = Instant::now();
        let deadline = (attempt + pool.config.connect_timeout).min(attempts_until);
        let connected = tokio::select! {
            connected = timeout_at(deadline, ctx.connect.connect(member.backend.address, member.backend.source)) => connected,
            _ = ctx.kill.cancelled() => return Round::Killed,
        };
        match connected {
            Ok(Ok(_)) if member.is_suspect() => {
                debug!(backend = %member.backend.name, "connected to a member that just said it is no longer the primary; trying the next");
                attempts.suspect = true;
                continue;
            }
            Ok(Ok(_)) if member.is_evicted() => {
                debug!(backend = %member.backend.name, "connected to a member fenced meanwhile; trying the next");
                continue;
            }
            Ok(Ok(stream)) => {
                let latency = attempt.elapsed();
                member.stats.connect.record_duration(latency);
                member.connect_seconds.record(latency.as_secs_f64());
                Span::current().record("backend", tracing::field::display(&member.backend.name));
                return Round::Connected(member, stream, latency);
            }
            Ok(Err(e)) => {
                attempts.last_error = format!("{}: {e}", member.backend.name);
                if let Some(resource) = crate::local::classify(&e) {
                    // Our own shortage: no other backend would do better, and this
                    // one is not to blame.
                    crate::local::report(resource, "connect", &member.backend.name, &e.to_string());
                    attempts.local_shortage = true;
                    return Round::NoneAnswered;
                }
            }
            Err(_) => attempts.last_error = format!("{}: connect timed out", member.backend.name),
        }
        debug!(error = %attempts.last_error, "connect failed; trying the next");
        if !attempts.tried.contains(&member.backend.name) {
            attempts.tried.push(member.backend.name.clone());
        }
        member.connect_failures.increment(1);
        member.backend.nudge();
    }
    Round::NoneAnswered
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
