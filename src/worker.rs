//! One data-plane thread: its own single-threaded runtime running the accept loop of
//! each of its listener sockets, its inbox of connections handed over by busier
//! threads ([`spread`](crate::spread)), the sessions they start, and a timer floor.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::Listener;
use crate::spread::{self, Arrival};

/// What one data-plane thread runs, and the signals it obeys.
pub struct Worker {
    /// One accept loop per listener: this thread's socket of each.
    pub accept_loops: Vec<Listener>,
    /// Accept loops a reload added, each to run on this thread.
    pub added: mpsc::UnboundedReceiver<Listener>,
    /// Connections other data-plane threads hand to this one ([`spread`](crate::spread)).
    pub inbox: mpsc::UnboundedReceiver<Arrival>,
    /// Stops the inbox (shutdown, before the grace period; each accept loop has its
    /// own token, a child of this one).
    pub stop_accepting: CancellationToken,
    /// Where the sessions are tracked (shutdown waits for them).
    pub sessions: TaskTracker,
    /// Where the accept loops and the inbox are tracked.
    pub accepting: TaskTracker,
    /// Ends the thread, once shutdown has waited for its sessions.
    pub stop: CancellationToken,
}

impl Worker {
    /// Starts the thread; the receiver says whether its runtime could be built.
    pub fn spawn(self, index: usize) -> io::Result<(JoinHandle<()>, oneshot::Receiver<io::Result<()>>)> {
        let (ready, is_ready) = oneshot::channel();
        // The runtime is built on its own thread: a runtime must not be dropped inside
        // an async context, which a failed start would otherwise do.
        let thread = std::thread::Builder::new()
            .name(format!("switchyard-io-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                runtime.block_on(self.run());
            })?;
        Ok((thread, is_ready))
    }

    async fn run(self) {
        let Worker {
            accept_loops,
            mut added,
            inbox,
            stop_accepting,
            sessions,
            accepting,
            stop,
        } = self;
        for accept in accept_loops {
            accepting.spawn(accept.run(sessions.clone()));
        }
        accepting.spawn(spread::inbox(inbox, stop_accepting, sessions.clone()));
        tokio::spawn(timer_floor(stop.clone()));
        // Sessions run on this runtime until shutdown has waited for them.
        loop {
            tokio::select! {
                Some(accept) = added.recv() => {
                    accepting.spawn(accept.run(sessions.clone()));
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// How far ahead [`timer_floor`] keeps a timer armed: at most the shortest timer a
/// session sets with default settings (the watchdog's first tick,
/// [`LIVENESS_AFTER`](crate::tcp::LIVENESS_AFTER) = 1 s; the connect timeout, 2 s).
const TIMER_FLOOR: Duration = Duration::from_millis(250);

/// Keeps a timer armed on this thread's runtime, at most [`TIMER_FLOOR`] ahead.
///
/// tokio (its issue #5207) wakes its own driver (an eventfd write, then an
/// `epoll_wait` that returns at once) whenever a timer is set earlier than the
/// earliest it knew of, or when it knew of none. Every session sets a timer or two; with
/// this one always the earliest, theirs never are. Figures: `docs/performance.md`.
async fn timer_floor(stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TIMER_FLOOR) => {}
        }
    }
}
