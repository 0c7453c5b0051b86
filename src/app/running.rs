//! A started process: its addresses, its state for tests and tools, and the drain
//! sequence of [`Running::shutdown`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::{ReloadError, ReloadReport, Stops};
use crate::admin::{self, AdminState};
use crate::backend::Backend;
use crate::routing::Routing;
use crate::spread::Threads;
use crate::timeline::Timeline;

/// A started process.
pub struct Running {
    pub(super) failed: CancellationToken,
    pub(super) admin: Option<SocketAddr>,
    pub(super) routing: Arc<Routing>,
    pub(super) state: Arc<AdminState>,
    /// What stops each part (cancelled all together when dropped).
    pub(super) stops: Stops,
    pub(super) sessions: TaskTracker,
    pub(super) background: TaskTracker,
    /// The accept loops, which shutdown waits for before it waits for sessions (so
    /// no session starts after that wait).
    pub(super) accepting: TaskTracker,
    /// The data-plane threads (accept loops and sessions).
    pub(super) workers: Vec<std::thread::JoinHandle<()>>,
    pub(super) threads: Arc<Threads>,
    /// Gives the reloader the upgrade socket.
    pub(super) upgrades: tokio::sync::mpsc::Sender<(tokio::net::UnixListener, std::path::PathBuf)>,
    /// Cancelled once a hot upgrade's new process took over.
    pub(super) handed_over: CancellationToken,
}

/// A `Running` dropped without [`Running::shutdown`] (a panicking test, a dropped
/// runtime) must not leave its data-plane threads accepting on stale routing.
impl Drop for Running {
    fn drop(&mut self) {
        self.stops.cancel_all();
    }
}

impl Running {
    /// Resolves if a critical task (router, a checker) failed; the caller should
    /// shut down.
    pub async fn failed(&self) {
        self.failed.cancelled().await
    }

    /// The bound address of a listener (useful with port 0).
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        let topology = self.state.topology.load();
        topology.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// The bound address of the admin listener, if one is configured.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Sessions on each data-plane thread now.
    pub fn thread_sessions(&self) -> Vec<usize> {
        self.threads.sessions()
    }

    /// The routing table this process publishes.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// The failover events recorded so far.
    pub fn failovers(&self) -> Vec<crate::timeline::FailoverEvent> {
        self.state.timeline.failovers()
    }

    /// The event record (tests await an event with [`Timeline::wait_for`]).
    pub fn timeline(&self) -> &Timeline {
        &self.state.timeline
    }

    /// A pool's id by name.
    pub fn pool(&self, name: &str) -> Option<crate::config::PoolId> {
        self.state.topology.load().pool(name).map(|p| p.id)
    }

    /// A backend by name.
    pub fn backend(&self, name: &str) -> Option<Arc<Backend>> {
        self.state.topology.load().backend(name).cloned()
    }

    /// Re-reads the config file the process started from and applies it; see
    /// [`super::reload`].
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.state.reload(None).await
    }

    /// Binds the upgrade socket at `path` (mode 0600) and hands this process over to
    /// a new one that connects to it (`run --upgrade`).
    pub async fn listen_for_upgrades(&self, path: &std::path::Path) -> std::io::Result<()> {
        // A connect to see whether a live process holds the path can block.
        let owned = path.to_path_buf();
        let listener = tokio::task::spawn_blocking(move || crate::upgrade::bind(&owned))
            .await
            .map_err(std::io::Error::other)??;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        self.upgrades
            .send((listener, path.to_path_buf()))
            .await
            .map_err(|_| std::io::Error::other("the process is stopping"))?;
        info!(socket = %path.display(), "hot upgrades: listening");
        Ok(())
    }

    /// Resolves once a hot upgrade's new process took over: this one has stopped
    /// accepting and should [`Running::shutdown`] (which drains its sessions).
    pub async fn handed_over(&self) {
        self.handed_over.cancelled().await
    }

    /// Applies `config` as a reload would.
    pub async fn apply(&self, config: crate::config::Config) -> Result<ReloadReport, ReloadError> {
        self.state.reload(Some(config)).await
    }

    /// Re-reads every TLS listener's and backend's files; see
    /// [`AdminState::reload_tls`]. Reads files: call it off the async workers.
    pub fn reload_tls(&self) -> Vec<admin::Reloaded> {
        self.state.reload_tls()
    }

    /// Stops accepting, lets sessions finish within the grace period, closes the
    /// rest, then stops checkers, router and admin. `/health` answers 503 from the
    /// first moment.
    pub async fn shutdown(mut self) {
        self.state.draining.store(true, Ordering::Relaxed);
        self.stops.accepting.cancel();
        self.accepting.close();
        self.accepting.wait().await;
        self.sessions.close();
        let open = self.sessions.len();
        let grace = self.state.topology.load().config.shutdown_grace;
        info!(open_sessions = open, grace = ?grace, "draining");
        if tokio::time::timeout(grace, self.sessions.wait()).await.is_err() {
            warn!(
                open_sessions = self.sessions.len(),
                "grace period over; closing the remaining sessions"
            );
            self.stops.kill_sessions.cancel();
            self.sessions.wait().await;
        }
        self.stops.workers.cancel();
        let workers = std::mem::take(&mut self.workers);
        let joined = tokio::task::spawn_blocking(move || workers.into_iter().all(|w| w.join().is_ok())).await;
        if !matches!(joined, Ok(true)) {
            error!("a data-plane thread panicked");
        }
        self.stops.background.cancel();
        self.background.close();
        // The admin server waits for its clients; one that never finishes a request
        // must not hold the process.
        if tokio::time::timeout(Duration::from_secs(5), self.background.wait())
            .await
            .is_err()
        {
            warn!("background tasks did not stop within 5s; exiting anyway");
        }
        info!("stopped");
    }
}
