//! One switchyard process: [`start`] binds every port (after validation, before any
//! task runs, so a bad address fails fast), spawns one checker per backend, the
//! router, the listeners and the admin server; [`Running::shutdown`] drains.
//!
//! Two planes. The control plane (checkers, router, admin) runs on the caller's
//! runtime. The data plane is `workers` threads, each with its own single-threaded
//! runtime and its own `SO_REUSEPORT` socket per listener: the kernel spreads new
//! connections across them, an accept loop hands a new connection to another thread
//! only if its own is clearly busier ([`spread`](crate::spread)), and a session lives and dies on
//! one thread with no work-stealing, cross-thread wake-up or shared accept queue.
//! They share only the routing table (`ArcSwap`), the per-listener connection cap,
//! the per-thread session counts and the counters. Why threads of their own rather
//! than one multi-threaded runtime: see `docs/performance.md`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::backend::Backend;
use crate::config::Config;
use crate::health::probe::Probe;
use crate::health::Checker;
use crate::listener::Listener;
use crate::pool::Pool;
use crate::proxy::{SessionContext, TcpConnect};
use crate::routing::{Router, Routing};
use crate::spread::Threads;
use crate::timeline::Timeline;
use crate::tls::{ServerTls, Verify};
use crate::worker::Worker;
use crate::{local, metrics, tcp};

mod running;
mod supervise;

use supervise::supervised;

pub use running::Running;

/// Why [`start`] failed.
#[derive(Debug, Error)]
pub enum StartError {
    /// A listener's or the admin socket could not be bound.
    #[error("cannot bind {what} on {address}: {source}")]
    Bind {
        /// Which socket: `listener <name>` or `admin`.
        what: String,
        /// The address it was to be bound to.
        address: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// A data-plane thread or its runtime could not be started.
    #[error("cannot start a data-plane runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs a task whose panic would leave the proxy routing blind (router, checkers):
/// if it panics, `failed` is cancelled so the process stops instead of serving on
/// stale routing.
fn critical(
    tracker: &TaskTracker,
    failed: &CancellationToken,
    name: String,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let failed = failed.clone();
    tracker.spawn(async move {
        if let Err(e) = tokio::spawn(task).await {
            error!(task = %name, error = %e, "a critical task failed; stopping the proxy");
            failed.cancel();
        }
    });
}

/// The cancellation signals of one process, each stopping one part.
#[derive(Default)]
struct Stops {
    accepting: CancellationToken,
    kill_sessions: CancellationToken,
    background: CancellationToken,
    workers: CancellationToken,
}

impl Stops {
    fn cancel_all(&self) {
        self.accepting.cancel();
        self.kill_sessions.cancel();
        self.workers.cancel();
        self.background.cancel();
    }
}

/// Cancels every part already started if `start` returns early with an error.
struct CancelOnError<'a>(Option<&'a Stops>);

impl CancelOnError<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnError<'_> {
    fn drop(&mut self) {
        if let Some(stops) = self.0 {
            stops.cancel_all();
        }
    }
}

/// What the control plane shares with the data plane and the admin listener.
struct ControlPlane {
    backends: Vec<Arc<Backend>>,
    pools: Vec<Arc<Pool>>,
    routing: Arc<Routing>,
    timeline: Arc<Timeline>,
    commands: mpsc::Sender<crate::routing::AdminCommand>,
    /// Cancelled when a critical task failed.
    failed: CancellationToken,
}

/// Binds and starts everything `config` describes. On an error nothing keeps
/// running.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = metrics::install();
    let budget = descriptor_budget(&config);
    let (bound, admin_tcp) = bind(&config)?;
    let stops = Stops::default();
    let guard = CancelOnError(Some(&stops));
    let (sessions, background, accepting) = (TaskTracker::new(), TaskTracker::new(), TaskTracker::new());
    let control = start_control_plane(&config, &metrics, &background, &stops.background);
    warn_insecure_backends(&config);
    let (threads, inboxes) = Threads::new(config.workers);
    let (listeners, server_tls, per_worker) = accept_loops(&config, bound, &control, &stops, &threads, &budget);
    let workers = start_workers(per_worker, inboxes, &stops, &sessions, &accepting).await?;
    let state = Arc::new(AdminState {
        backends: control.backends,
        pools: control.pools,
        routing: control.routing.clone(),
        draining: AtomicBool::new(false),
        metrics,
        timeline: control.timeline,
        commands: control.commands,
        token: config.admin.as_ref().and_then(|a| a.token.clone()),
        tls: server_tls,
    });
    let admin = match admin_tcp {
        Some(tcp) => {
            let address = tcp.local_addr().expect("a bound socket has an address");
            let ended =
                admin::run_on_own_thread(tcp, state.clone(), stops.background.clone()).map_err(StartError::Runtime)?;
            info!(%address, "admin listening");
            background.spawn(ended);
            Some(address)
        }
        None => None,
    };
    guard.disarm();
    Ok(Running {
        failed: control.failed,
        listeners,
        admin,
        routing: control.routing,
        state,
        grace: config.shutdown_grace,
        stops,
        sessions,
        background,
        accepting,
        workers,
        threads,
    })
}

/// Binds every listener (one socket per data-plane thread) and the admin listener,
/// before any task runs, so a bad address fails fast.
fn bind(config: &Config) -> Result<(Vec<Vec<std::net::TcpListener>>, Option<tokio::net::TcpListener>), StartError> {
    let mut bound = Vec::new();
    for listener in &config.listeners {
        let group =
            tcp::bind_group(listener.listen, &listener.tcp, config.workers).map_err(|source| StartError::Bind {
                what: format!("listener {}", listener.name),
                address: listener.listen,
                source,
            })?;
        bound.push(group);
    }
    let admin = match &config.admin {
        Some(admin) => Some(tcp::bind(admin.listen, None).map_err(|source| StartError::Bind {
            what: "admin".into(),
            address: admin.listen,
            source,
        })?),
        None => None,
    };
    Ok((bound, admin))
}

/// Backends and pools, the router, one checker per backend, and the metrics upkeep,
/// on the caller's runtime until `stop`.
fn start_control_plane(
    config: &Config,
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    background: &TaskTracker,
    stop: &CancellationToken,
) -> ControlPlane {
    let backends = Backend::all(config);
    let pools = Pool::all(config, &backends);
    let (events_tx, events_rx) = mpsc::channel(1024);
    let timeline = Arc::new(Timeline::default());
    let (commands, commands_rx) = mpsc::channel(64);
    let router = Router::new(
        backends.clone(),
        pools.clone(),
        timeline.clone(),
        events_rx,
        commands_rx,
    );
    let routing = router.routing();
    let prometheus = metrics.clone();
    background.spawn(crate::metrics::upkeep(
        move || {
            prometheus.run_upkeep();
            // Summaries of warnings a burst suppressed, once the burst is over.
            crate::logs::flush_all();
            // Clears `switchyard_local_alarm` once the alarm has lapsed.
            let _ = local::alarm();
        },
        crate::metrics::UPKEEP_PERIOD,
        stop.clone(),
    ));
    let failed = CancellationToken::new();
    critical(background, &failed, "router".into(), router.run(stop.clone()));
    for (backend, config) in backends.iter().zip(&config.backends) {
        let (backend, check, events, shutdown) =
            (backend.clone(), config.check.clone(), events_tx.clone(), stop.clone());
        // Made afresh (a new probe, no kept connection) each time it must restart.
        let checker = move || {
            let probe = Probe::new(&check.probe, backend.tls.as_ref(), backend.source).announcing(backend.send_proxy);
            let attention = backend.attention.clone();
            let checker = Checker::new(
                backend.id,
                &backend.name,
                backend.address,
                attention,
                probe,
                &check,
                events.clone(),
            )
            .resuming(backend.view().status);
            checker.run(shutdown.clone())
        };
        supervised(background, config.name.clone(), timeline.clone(), stop.clone(), checker);
    }
    ControlPlane {
        backends,
        pools,
        routing,
        timeline,
        commands,
        failed,
    }
}

/// Raises the descriptor limit, warns when `config` can exceed it, and returns the
/// process-wide session budget under it (see [`crate::local`]).
fn descriptor_budget(config: &Config) -> Arc<Semaphore> {
    let limit = match local::raise_descriptor_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "cannot raise the descriptor limit (RLIMIT_NOFILE) to its hard limit");
            local::descriptor_limit().0
        }
    };
    if let Some(warning) = local::budget_warning(config, limit) {
        warn!("{warning}");
    }
    let sessions = local::session_budget(config, limit);
    info!(descriptors = ?limit, sessions, reserve = local::DESCRIPTORS_RESERVE, "descriptor budget");
    Arc::new(Semaphore::new(sessions))
}

fn warn_insecure_backends(config: &Config) {
    for backend in &config.backends {
        if let Some(tls) = &backend.tls {
            if *tls.verify() == Verify::Insecure {
                warn!(backend = %backend.name, server_name = %tls.server_name(), "TLS to this backend does NOT verify its certificate (insecure = true): anyone on the path can impersonate it; labs only");
            }
        }
    }
}

/// One accept loop per listener and data-plane thread, each listener with its
/// session context and connection cap. Returns the listeners' bound addresses, their
/// TLS terminations (for reloads) and, per thread, its accept loops.
#[allow(clippy::type_complexity)]
fn accept_loops(
    config: &Config,
    bound: Vec<Vec<std::net::TcpListener>>,
    control: &ControlPlane,
    stops: &Stops,
    threads: &Arc<Threads>,
    budget: &Arc<Semaphore>,
) -> (Vec<(String, SocketAddr)>, Vec<Arc<ServerTls>>, Vec<Vec<Listener>>) {
    let mut server_tls = Vec::new();
    let mut listeners = Vec::new();
    let mut per_worker: Vec<Vec<Listener>> = (0..config.workers).map(|_| Vec::new()).collect();
    for (listener, group) in config.listeners.iter().zip(bound) {
        let address = group[0].local_addr().expect("a bound socket has an address");
        info!(listener = %listener.name, %address, pool = %config.pool_of(listener).name, sockets = group.len(), "listening");
        listeners.push((listener.name.clone(), address));
        let tls = listener.tls.as_ref().map(|tls| {
            Arc::new(ServerTls::new(
                &listener.name,
                tls.files.clone(),
                tls.loaded.clone(),
                tls.handshake_timeout,
            ))
        });
        server_tls.extend(tls.clone());
        let ctx = Arc::new(SessionContext {
            listener: listener.name.clone(),
            mode: listener.mode,
            tls,
            require_tls: listener.tls.as_ref().is_some_and(|tls| tls.require_tls),
            pool: control.pools[listener.pool.id].clone(),
            routing: control.routing.clone(),
            tcp: listener.tcp,
            kill: stops.kill_sessions.clone(),
            timeline: control.timeline.clone(),
            sessions_moved: ::metrics::counter!(metrics::SESSIONS_MOVED, "listener" => listener.name.clone()),
            connect: TcpConnect,
            login: listener.login,
            logins: Arc::new(Semaphore::new(listener.login.concurrent)),
            accept_proxy: listener.accept_proxy.clone(),
            sends_proxy: control.pools[listener.pool.id]
                .members
                .iter()
                .any(|m| m.backend.send_proxy.is_some()),
        });
        let limit = Arc::new(Semaphore::new(listener.max_connections));
        for (thread, (worker, tcp)) in per_worker.iter_mut().zip(group).enumerate() {
            worker.push(Listener {
                name: listener.name.clone(),
                tcp,
                limit: limit.clone(),
                budget: budget.clone(),
                ctx: ctx.clone(),
                thread,
                threads: threads.clone(),
            });
        }
    }
    (listeners, server_tls, per_worker)
}

/// Starts the data-plane threads and waits until each runs its accept loops.
async fn start_workers(
    per_worker: Vec<Vec<Listener>>,
    inboxes: Vec<mpsc::UnboundedReceiver<crate::spread::Arrival>>,
    stops: &Stops,
    sessions: &TaskTracker,
    accepting: &TaskTracker,
) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
    let mut workers = Vec::new();
    let mut started = Vec::new();
    for (index, (accept_loops, inbox)) in per_worker.into_iter().zip(inboxes).enumerate() {
        let worker = Worker {
            accept_loops,
            inbox,
            stop_accepting: stops.accepting.clone(),
            sessions: sessions.clone(),
            accepting: accepting.clone(),
            stop: stops.workers.clone(),
        };
        let (thread, is_ready) = worker.spawn(index).map_err(StartError::Runtime)?;
        workers.push(thread);
        started.push(is_ready);
    }
    for is_ready in started {
        is_ready
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("a data-plane thread died at start")))
            .map_err(StartError::Runtime)?;
    }
    Ok(workers)
}
