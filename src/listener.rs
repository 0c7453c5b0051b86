//! The accept loop of one listener socket: a connection cap (a semaphore permit per
//! session, shared by the listener's sockets on every data-plane thread), backoff on
//! accept errors (EMFILE must not spin a core), and one task per session on the
//! thread's own runtime (or, if this thread is clearly busier, on another: see
//! [`spread`](crate::spread)), tracked so shutdown can wait for them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error};

use crate::logs;
use crate::proxy::SessionContext;
use crate::spread::{SessionPermit, Threads};
use crate::tcp;

/// What a listener's sockets share, swapped whole by a reload: a session takes the
/// version current when it was accepted and keeps it.
pub struct Serving {
    /// What every session from this listener needs (its pool, routing, TLS, options).
    pub ctx: Arc<SessionContext>,
    /// The connection cap: one permit per session, shared by this listener's sockets on
    /// every data-plane thread.
    pub limit: Arc<Semaphore>,
}

/// One listener socket's accept loop on one data-plane thread, and what its sessions
/// share.
pub struct Listener {
    /// The configured listener name, for logs.
    pub name: String,
    /// Registered with the runtime that runs [`Listener::run`].
    pub tcp: std::net::TcpListener,
    /// Its context and cap, shared with its other sockets and swapped by reloads.
    pub serving: Arc<ArcSwap<Serving>>,
    /// The process-wide session budget, which keeps descriptors in reserve for checks
    /// and the admin port ([`crate::local::session_budget`]).
    pub budget: Arc<Semaphore>,
    /// Stops this loop (shutdown, a hand-over to a new process, or a reload that removed
    /// the listener); the socket closes when it ends and the reloader has let go of its
    /// copy.
    pub stop: CancellationToken,
    /// The data-plane thread this loop runs on, and all of them.
    pub thread: usize,
    /// Every data-plane thread's session count, for handing a connection to a less busy one.
    pub threads: Arc<Threads>,
}

impl Listener {
    /// Accepts until [`Listener::stop`] is cancelled; sessions run on in `sessions`.
    pub async fn run(self, sessions: TaskTracker) {
        let stop = self.stop.clone();
        // SAFETY: the descriptor belongs to the `TcpListener` that the `AsyncFd` owns
        // from here to its drop, so it stays open and the same for its whole life.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register_with_interest(self.tcp, Interest::READABLE) };
        let tcp = match registered {
            Ok(tcp) => tcp,
            Err(e) => {
                error!(listener = %self.name, error = %e, "cannot register the listening socket; not accepting on it");
                return;
            }
        };
        let mut backoff = Duration::from_millis(5);
        debug!(listener = %self.name, address = ?tcp.get_ref().local_addr().ok(), "accepting");
        loop {
            // Accept first, then take a permit: the permits are shared by this
            // listener's sockets on every data-plane thread, and a loop that held one
            // while waiting in `accept` could starve another thread's socket whose
            // client the kernel had already queued. At the cap, the accepted client
            // waits here for a session to end, as it would have in the backlog.
            let accepted = tokio::select! {
                accepted = accept(&tcp) => accepted,
                _ = stop.cancelled() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let serving = self.serving.load_full();
                    // Biased: a connection accepted as `stop` comes (a hand-over to a
                    // new process, shutdown) is served when a permit is free; it is
                    // dropped only if it would have to wait for one.
                    let permit = tokio::select! {
                        biased;
                        permit = permits(&serving.limit, &self.budget) => match permit {
                            Some(permit) => permit,
                            None => return,
                        },
                        _ = stop.cancelled() => return,
                    };
                    self.threads
                        .dispatch(self.thread, stream, peer, serving.ctx.clone(), permit, &sessions);
                }
                Err(e) => {
                    if let Some(resource) = crate::local::classify(&e) {
                        crate::local::report(resource, "accept", &self.name, &e.to_string());
                    } else if logs::kinds::ACCEPT_ERRORS.allow() {
                        error!(listener = %self.name, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// A session's permits: the listener's first, then the process budget's.
async fn permits(limit: &Arc<Semaphore>, budget: &Arc<Semaphore>) -> Option<SessionPermit> {
    let listener = limit.clone().acquire_owned().await.ok()?;
    let budget = budget.clone().acquire_owned().await.ok()?;
    Some(SessionPermit { listener, budget })
}

/// The next connection on `listener`, unregistered (see [`tcp::accept`]).
async fn accept(listener: &AsyncFd<std::net::TcpListener>) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(accepted) = ready.try_io(|listener| tcp::accept(listener.get_ref())) {
            return accepted;
        }
    }
}
