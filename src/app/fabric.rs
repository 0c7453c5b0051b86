//! What building a backend's checker or a listener's accept loops needs, the same at
//! start and at every reload: the channels, trackers and stop signals of the process.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::supervise::supervised;
use crate::backend::Backend;
use crate::config::{CheckConfig, ListenerConfig, ProbeConfig};
use crate::fleet::shared::SharedProbe;
use crate::health::probe::Probe;
use crate::health::{Checker, Observation};
use crate::listener::{Listener, Serving};
use crate::pool::Pool;
use crate::proxy::{SessionContext, TcpConnect};
use crate::routing::Routing;
use crate::spread::Threads;
use crate::timeline::Timeline;
use crate::tls::ServerTls;

/// The process-wide parts every checker and listener is built from.
pub(super) struct Fabric {
    pub(super) background: TaskTracker,
    /// Stops the checkers (each has a child token, so a reload can stop one).
    pub(super) stop_background: CancellationToken,
    /// Stops the accept loops (each listener has a child token).
    pub(super) stop_accepting: CancellationToken,
    /// Closes the sessions (each listener has a child token).
    pub(super) kill_sessions: CancellationToken,
    pub(super) events: mpsc::Sender<Observation>,
    pub(super) timeline: Arc<Timeline>,
    pub(super) routing: Arc<Routing>,
    pub(super) budget: Arc<Semaphore>,
    pub(super) threads: Arc<Threads>,
    /// The fleet, when the config has a `[cluster]`: checks are shared through it.
    pub(super) fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// A listener that is accepting, as the reloader keeps it.
pub(super) struct Live {
    pub(super) config: ListenerConfig,
    pub(super) address: SocketAddr,
    /// Its listening sockets (duplicates of the accept loops' descriptors), for socket
    /// options a reload changes and for a hot upgrade's hand-over.
    pub(super) sockets: Vec<std::net::TcpListener>,
    pub(super) serving: Arc<ArcSwap<Serving>>,
    pub(super) tls: Option<Arc<ServerTls>>,
    /// Stops its accept loops.
    pub(super) stop: CancellationToken,
    /// Closes its sessions (after `shutdown.grace` when a reload removed it).
    pub(super) kill: CancellationToken,
}

impl Fabric {
    /// Starts `backend`'s checker (restarted if it dies, resuming the status it had);
    /// cancelling the returned token stops it.
    pub(super) fn spawn_checker(&self, backend: &Arc<Backend>, check: &CheckConfig) -> CancellationToken {
        let stop = self.stop_background.child_token();
        let (backend, check, events, shutdown) = (backend.clone(), check.clone(), self.events.clone(), stop.clone());
        let name = backend.name.clone();
        let shared = self.fleet.as_ref().filter(|f| f.config().shared_checks).map(|fleet| {
            let shared = fleet.share(&backend.name, backend.attention.clone());
            (fleet.clone(), shared)
        });
        // Made afresh (a new probe, no kept connection) each time it must restart.
        let checker = move || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            let probe = Probe::new(&check.probe, backend.tls.as_ref(), backend.source).announcing(backend.send_proxy);
            let status = backend.view().status;
            let (id, address, attention) = (backend.id, backend.address, backend.attention.clone());
            match &shared {
                None => {
                    let checker = Checker::new(id, &backend.name, address, attention, probe, &check, events.clone());
                    Box::pin(checker.resuming(status).run(shutdown.clone()))
                }
                Some((fleet, shared)) => {
                    let cluster = fleet.config();
                    let light = Probe::new(&ProbeConfig::Tcp, None, backend.source).announcing(backend.send_proxy);
                    let probe = SharedProbe::new(
                        probe,
                        light,
                        shared.clone(),
                        &cluster.name,
                        cluster.light_interval,
                        cluster.lease_ttl * 10,
                        fleet.publisher(),
                    );
                    let checker = Checker::new(id, &backend.name, address, attention, probe, &check, events.clone());
                    Box::pin(checker.resuming(status).run(shutdown.clone()))
                }
            }
        };
        supervised(&self.background, name, self.timeline.clone(), stop.clone(), checker);
        stop
    }

    /// What `listener`'s sessions share when it routes to `pool`. `old` is the same
    /// listener before a reload: its kill signal, TLS termination (when the TLS config
    /// is the same), login and connection limits (when theirs are) carry over.
    pub(super) fn serving(
        &self,
        listener: &ListenerConfig,
        pool: &Arc<Pool>,
        old: Option<&Live>,
    ) -> (Serving, Option<Arc<ServerTls>>, CancellationToken) {
        let tls = match old {
            Some(old) if old.config.tls == listener.tls => old.tls.clone(),
            _ => listener.tls.as_ref().map(|tls| {
                Arc::new(ServerTls::new(
                    &listener.name,
                    tls.files.clone(),
                    tls.loaded.clone(),
                    tls.handshake_timeout,
                ))
            }),
        };
        let kill = old.map_or_else(|| self.kill_sessions.child_token(), |old| old.kill.clone());
        let previous = old.map(|old| old.serving.load_full());
        let logins = match &previous {
            Some(p) if old.is_some_and(|o| o.config.login.concurrent == listener.login.concurrent) => {
                p.ctx.logins.clone()
            }
            _ => Arc::new(Semaphore::new(listener.login.concurrent)),
        };
        let limit = match &previous {
            Some(p) if old.is_some_and(|o| o.config.max_connections == listener.max_connections) => p.limit.clone(),
            _ => Arc::new(Semaphore::new(listener.max_connections)),
        };
        let ctx = Arc::new(SessionContext {
            listener: listener.name.clone(),
            mode: listener.mode,
            tls: tls.clone(),
            require_tls: listener.tls.as_ref().is_some_and(|tls| tls.require_tls),
            pool: pool.clone(),
            routing: self.routing.clone(),
            tcp: listener.tcp,
            kill: kill.clone(),
            timeline: self.timeline.clone(),
            sessions_moved: ::metrics::counter!(crate::metrics::SESSIONS_MOVED, "listener" => listener.name.clone()),
            connect: TcpConnect,
            login: listener.login,
            logins,
            accept_proxy: listener.accept_proxy.clone(),
            sends_proxy: pool.members.iter().any(|m| m.backend.send_proxy.is_some()),
        });
        (Serving { ctx, limit }, tls, kill)
    }

    /// A new listener on its bound sockets (`group`, one per data-plane thread):
    /// what the reloader keeps of it and, per thread, its accept loop.
    pub(super) fn listen(
        &self,
        listener: &ListenerConfig,
        pool: &Arc<Pool>,
        group: Vec<std::net::TcpListener>,
    ) -> (Live, Vec<Listener>) {
        let address = group[0].local_addr().expect("a bound socket has an address");
        info!(listener = %listener.name, %address, pool = %pool.name(), sockets = group.len(), "listening");
        let (serving, tls, kill) = self.serving(listener, pool, None);
        let serving = Arc::new(ArcSwap::from_pointee(serving));
        let stop = self.stop_accepting.child_token();
        let threads = self.threads.count();
        let copies: std::io::Result<Vec<_>> = group.iter().map(|socket| socket.try_clone()).collect();
        // Without copies the listener serves the same; only a hot upgrade (which is
        // then refused) and new socket options on reload need them.
        let sockets = copies.unwrap_or_else(|e| {
            tracing::warn!(listener = %listener.name, error = %e, "cannot copy the listening sockets: no hot upgrade or new socket options for this listener");
            Vec::new()
        });
        let loops = group
            .into_iter()
            .enumerate()
            .map(|(index, tcp)| Listener {
                name: listener.name.clone(),
                tcp,
                serving: serving.clone(),
                budget: self.budget.clone(),
                stop: stop.clone(),
                thread: index % threads,
                threads: self.threads.clone(),
            })
            .collect();
        let live = Live {
            config: listener.clone(),
            address,
            sockets,
            serving,
            tls,
            stop,
            kill,
        };
        (live, loops)
    }
}
