//! The watchdog of a live session: the one timer that ends it for any reason other
//! than both sides closing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::Ended;
use crate::pipe::Traffic;
use crate::pool::Eviction;
use crate::tcp;

/// How long a fenced `mongo`-mode session may finish the operation under way.
const FENCE_GRACE: Duration = Duration::from_secs(1);
/// How often a session draining at idle points is woken to look at its stillness.
const DRAIN_TICK: Duration = Duration::from_millis(50);

/// Resolves with the reason a session must end, other than both sides closing:
/// shutdown's grace ran out, its member was fenced (now, or at the drain deadline;
/// while it drains at idle points, the copy is told to end at the next one),
/// or no byte moved either way for about `idle_limit` (checked four times per period,
/// so it fires between `idle_limit` and 1.25 × `idle_limit`). On the way, it tells
/// the copy when the backend socket is due its keepalive options
/// ([`tcp::LIVENESS_AFTER`]).
///
/// One future with one timer for all of these, because an idle session is mostly
/// this state: three separate futures cost about 300 bytes more per session.
pub(super) async fn watchdog(
    traffic: &Traffic,
    idle_limit: Duration,
    mut eviction: watch::Receiver<Eviction>,
    kill: &CancellationToken,
    gentle: bool,
) -> Ended {
    // Bytes moved either way; unchanged over `idle_limit` means idle.
    let activity = || traffic.upstream.load(Ordering::Relaxed) + traffic.downstream.load(Ordering::Relaxed);
    let step = (idle_limit / 4).max(Duration::from_millis(10));
    let (mut seen, mut quiet) = (activity(), Duration::ZERO);
    let started = Instant::now();
    let mut next_idle_check = started + step;
    let mut liveness_at = Some(started + tcp::LIVENESS_AFTER);
    let mut eviction_open = true;
    let timer = sleep_until(next_idle_check);
    tokio::pin!(timer);
    loop {
        let (close_at, at_idle) = deadline(*eviction.borrow_and_update(), gentle, Instant::now());
        // The copy, polled right after this in every wake-up, ends at an idle point.
        traffic.close_when_idle.store(at_idle, Ordering::Relaxed);
        // While draining at idle points, a tick lets the copy see how long it sat still.
        let tick = at_idle.then(|| Instant::now() + DRAIN_TICK);
        let wake = [close_at, liveness_at, tick]
            .into_iter()
            .flatten()
            .fold(next_idle_check, Instant::min);
        timer.as_mut().reset(wake);
        tokio::select! {
            biased;
            _ = kill.cancelled() => return Ended::Shutdown,
            changed = eviction.changed(), if eviction_open => eviction_open = changed.is_ok(),
            _ = &mut timer => {
                let now = Instant::now();
                if deadline(*eviction.borrow(), gentle, now).0.is_some_and(|at| now >= at) {
                    return Ended::Fenced;
                }
                if liveness_at.is_some_and(|at| now >= at) {
                    // The copy, polled right after this in the same wake-up, applies them.
                    traffic.liveness_due.store(true, Ordering::Relaxed);
                    liveness_at = None;
                }
                if now >= next_idle_check {
                    let moved = activity();
                    quiet = if moved == seen { quiet + step } else { Duration::ZERO };
                    seen = moved;
                    if quiet >= idle_limit {
                        return Ended::Idle;
                    }
                    next_idle_check = now + step;
                }
            }
        }
    }
}

/// When the session must end for its eviction, and whether it should end at its next
/// idle point before that. A `gentle` session (one whose copy knows its idle points:
/// `mongo` mode) that is fenced gets [`FENCE_GRACE`] to finish the operation under way.
fn deadline(eviction: Eviction, gentle: bool, now: Instant) -> (Option<Instant>, bool) {
    match eviction {
        Eviction::Active | Eviction::Draining => (None, false),
        Eviction::CloseAt(at) if gentle && now >= at => (Some(at + FENCE_GRACE), true),
        Eviction::CloseAt(at) => (Some(at), false),
        Eviction::AtIdle(at) => (Some(at), true),
    }
}

#[cfg(test)]
#[path = "watchdog_tests.rs"]
mod tests;
