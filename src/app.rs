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
use tracing::{error, info};

use crate::admin::AdminState;
use crate::backend::Backend;
use crate::config::Config;
use crate::pool::Pool;
use crate::routing::Router;
use crate::spread::Threads;
use crate::timeline::Timeline;
use crate::topology::Topology;
use crate::upgrade::Inherited;
use crate::{local, metrics};

mod fabric;
mod handover;
mod parts;
mod reload;
mod running;
mod supervise;

use fabric::Fabric;
use parts::{bind, descriptor_budget, serve_listeners, start_admin, start_workers, warn_insecure_backends};
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
    start_with(config, None).await
}

/// [`start`], on what a hot upgrade took over from the running process: its listening
/// sockets (for the listeners and admin address that stay) and its backends' states.
pub async fn start_with(config: Config, mut inherited: Option<Inherited>) -> Result<Running, StartError> {
    let metrics = metrics::install();
    let budget = descriptor_budget(&config);
    let (bound, admin_tcp) = bind(&config, inherited.as_mut())?;
    let stops = Stops::default();
    let guard = CancelOnError(Some(&stops));
    let (sessions, background, accepting) = (TaskTracker::new(), TaskTracker::new(), TaskTracker::new());
    let backends = Backend::all(&config);
    if let Some(inherited) = &inherited {
        let restored = inherited.restore(&backends, &config.backends);
        info!(
            from_pid = inherited.from_pid,
            backends = restored,
            "hot upgrade: took over the backends' states"
        );
    }
    let pools = Pool::all(&config, &backends);
    upkeep(&metrics, &background, &stops.background);
    let (control, fabric) = control_plane(&config, &backends, &pools, budget, &stops, &background);
    warn_insecure_backends(&config);
    let (live, per_worker) = serve_listeners(&fabric, &config, &pools, bound);
    let (inboxes, threads) = (control.inboxes, fabric.threads.clone());
    let (workers, added) = start_workers(per_worker, inboxes, &stops, &sessions, &accepting).await?;
    let (reloads, reloads_rx) = mpsc::channel(4);
    let (next_backend, next_pool) = (backends.len(), pools.len());
    let state = Arc::new(AdminState {
        topology: ArcSwap::from_pointee(Topology::new(config, backends, pools, &live)),
        routing: control.routing.clone(),
        draining: AtomicBool::new(false),
        checked_once: AtomicBool::new(false),
        metrics,
        timeline: control.timeline,
        commands: control.commands,
        reloads,
        fleet: fabric.fleet.clone(),
    });
    let stop_admin = stops.background.child_token();
    let admin_socket = admin_tcp
        .as_ref()
        .and_then(|tcp| socket2::SockRef::from(tcp).try_clone().ok())
        .map(Into::into);
    let admin = start_admin(admin_tcp, &state, &stop_admin, &background)?;
    let (upgrades, upgrades_rx) = mpsc::channel(1);
    let handed_over = CancellationToken::new();
    let reloader = Reloader {
        fabric,
        state: state.clone(),
        router: control.reconfigure,
        checkers: control.checkers,
        live,
        added,
        next_backend,
        next_pool,
        upgrade: reload::Upgrade {
            listener: None,
            path: None,
            admin_socket,
            stop_admin,
            handed_over: handed_over.clone(),
        },
    };
    background.spawn(reloader.run(reloads_rx, upgrades_rx));
    background.spawn(crate::dns::watch::run(state.clone(), stops.background.clone()));
    guard.disarm();
    Ok(Running {
        failed: control.failed,
        admin,
        routing: control.routing,
        state,
        stops,
        sessions,
        background,
        accepting,
        workers,
        threads,
        upgrades,
        handed_over,
    })
}

impl Topology {
    fn new(config: Config, backends: Vec<Arc<Backend>>, pools: Vec<Arc<Pool>>, live: &[fabric::Live]) -> Topology {
        Topology {
            listeners: live.iter().map(|l| (l.config.name.clone(), l.address)).collect(),
            tls: live.iter().filter_map(|l| l.tls.clone()).collect(),
            backends,
            pools,
            config,
        }
    }
}

/// What the control plane hands to the rest of the start.
struct ControlPlane {
    routing: Arc<crate::routing::Routing>,
    timeline: Arc<Timeline>,
    commands: mpsc::Sender<crate::routing::AdminCommand>,
    reconfigure: mpsc::Sender<crate::routing::Reconfigure>,
    checkers: std::collections::HashMap<crate::config::BackendId, CancellationToken>,
    inboxes: Vec<mpsc::UnboundedReceiver<crate::spread::Arrival>>,
    /// Cancelled when a critical task failed.
    failed: CancellationToken,
}

/// The router and one checker per backend, on the caller's runtime, and the fabric
/// the listeners and later reloads are built from.
fn control_plane(
    config: &Config,
    backends: &[Arc<Backend>],
    pools: &[Arc<Pool>],
    budget: Arc<Semaphore>,
    stops: &Stops,
    background: &TaskTracker,
) -> (ControlPlane, Fabric) {
    let (events, events_rx) = mpsc::channel(1024);
    let (commands, commands_rx) = mpsc::channel(64);
    let (reconfigure, reconfigure_rx) = mpsc::channel(4);
    let timeline = Arc::new(Timeline::default());
    let router = Router::new(
        backends.to_vec(),
        pools.to_vec(),
        timeline.clone(),
        events_rx,
        commands_rx,
    )
    .reconfigured_by(reconfigure_rx);
    let (router, fleet) = match &config.cluster {
        None => (router, None),
        Some(cluster) => {
            let (fleet, news, proposals) = crate::fleet::start(cluster, stops.background.clone());
            (
                router.with_fleet(crate::routing::FleetLink::new(news, proposals)),
                Some(fleet),
            )
        }
    };
    let routing = router.routing();
    let failed = CancellationToken::new();
    critical(
        background,
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
        threads,
        fleet,
    };
    let checkers = backends
        .iter()
        .zip(&config.backends)
        .map(|(backend, c)| (backend.id, fabric.spawn_checker(backend, &c.check)))
        .collect();
    let control = ControlPlane {
        routing,
        timeline,
        commands,
        reconfigure,
        checkers,
        inboxes,
        failed,
    };
    (control, fabric)
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
