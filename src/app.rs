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

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::backend::Backend;
use crate::config::Config;
use crate::listener::Listener;
use crate::pool::Pool;
use crate::routing::Router;
use crate::spread::Threads;
use crate::timeline::Timeline;
use crate::tls::Verify;
use crate::topology::Topology;
use crate::worker::Worker;
use crate::{local, metrics, tcp};

mod fabric;
mod reload;
mod running;
mod supervise;

use fabric::Fabric;
use reload::Reloader;

pub use reload::{Changes, ReloadError, ReloadReport, ReloadRequest};
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

/// Binds and starts everything `config` describes. On an error nothing keeps
/// running.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = metrics::install();
    let budget = descriptor_budget(&config);
    let (bound, admin_tcp) = bind(&config)?;
    let stops = Stops::default();
    let guard = CancelOnError(Some(&stops));
    let (sessions, background, accepting) = (TaskTracker::new(), TaskTracker::new(), TaskTracker::new());
    let (events, events_rx) = mpsc::channel(1024);
    let (commands, commands_rx) = mpsc::channel(64);
    let (reconfigure, reconfigure_rx) = mpsc::channel(4);
    let timeline = Arc::new(Timeline::default());
    let backends = Backend::all(&config);
    let pools = Pool::all(&config, &backends);
    let router = Router::new(
        backends.clone(),
        pools.clone(),
        timeline.clone(),
        events_rx,
        commands_rx,
    )
    .reconfigured_by(reconfigure_rx);
    let routing = router.routing();
    upkeep(&metrics, &background, &stops.background);
    let failed = CancellationToken::new();
    critical(
        &background,
        &failed,
        "router".into(),
        router.run(stops.background.clone()),
    );
    let (threads, inboxes) = Threads::new(config.workers);
    let fabric = Fabric {
        background: background.clone(),
        stop_background: stops.background.clone(),
        stop_accepting: stops.accepting.clone(),
        kill_sessions: stops.kill_sessions.clone(),
        events,
        timeline: timeline.clone(),
        routing: routing.clone(),
        budget,
        threads: threads.clone(),
    };
    let checkers = backends
        .iter()
        .zip(&config.backends)
        .map(|(backend, c)| (backend.id, fabric.spawn_checker(backend, &c.check)))
        .collect();
    warn_insecure_backends(&config);
    let mut live = Vec::new();
    let mut per_worker: Vec<Vec<Listener>> = (0..threads.count()).map(|_| Vec::new()).collect();
    for (listener, group) in config.listeners.iter().zip(bound) {
        let (listening, loops) = fabric.listen(listener, &pools[listener.pool.id], group);
        live.push(listening);
        for accept in loops {
            per_worker[accept.thread].push(accept);
        }
    }
    let (workers, added) = start_workers(per_worker, inboxes, &stops, &sessions, &accepting).await?;
    let (reloads, reloads_rx) = mpsc::channel(4);
    let (next_backend, next_pool) = (backends.len(), pools.len());
    let topology = Topology {
        listeners: live.iter().map(|l| (l.config.name.clone(), l.address)).collect(),
        tls: live.iter().filter_map(|l| l.tls.clone()).collect(),
        backends,
        pools,
        config,
    };
    let state = Arc::new(AdminState {
        topology: ArcSwap::from_pointee(topology),
        routing: routing.clone(),
        draining: AtomicBool::new(false),
        metrics,
        timeline,
        commands,
        reloads,
    });
    let reloader = Reloader {
        fabric,
        state: state.clone(),
        router: reconfigure,
        checkers,
        live,
        added,
        next_backend,
        next_pool,
    };
    background.spawn(reloader.run(reloads_rx));
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
        failed,
        admin,
        routing,
        state,
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

/// The metrics upkeep, on the caller's runtime until `stop`.
fn upkeep(metrics: &metrics_exporter_prometheus::PrometheusHandle, background: &TaskTracker, stop: &CancellationToken) {
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

/// Starts the data-plane threads and waits until each runs its accept loops.
async fn start_workers(
    per_worker: Vec<Vec<Listener>>,
    inboxes: Vec<mpsc::UnboundedReceiver<crate::spread::Arrival>>,
    stops: &Stops,
    sessions: &TaskTracker,
    accepting: &TaskTracker,
) -> Result<(Vec<std::thread::JoinHandle<()>>, Vec<mpsc::UnboundedSender<Listener>>), StartError> {
    let mut workers = Vec::new();
    let mut started = Vec::new();
    let mut senders = Vec::new();
    for (index, (accept_loops, inbox)) in per_worker.into_iter().zip(inboxes).enumerate() {
        let (sender, added) = mpsc::unbounded_channel();
        senders.push(sender);
        let worker = Worker {
            accept_loops,
            added,
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
    Ok((workers, senders))
}
