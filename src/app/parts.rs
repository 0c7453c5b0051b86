//! The parts of a start: binding the sockets (or taking them over), the listeners'
//! accept loops, the data-plane threads, the admin listener, the descriptor budget.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::fabric::{self, Fabric};
use super::{StartError, Stops};
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::listener::Listener;
use crate::pool::Pool;
use crate::tls::Verify;
use crate::upgrade::Inherited;
use crate::worker::Worker;
use crate::{local, tcp};

/// Every listener on its bound sockets: what the reloader keeps of each, and per
/// data-plane thread its accept loops.
pub(super) fn serve_listeners(
    fabric: &Fabric,
    config: &Config,
    pools: &[Arc<Pool>],
    bound: Vec<Vec<std::net::TcpListener>>,
) -> (Vec<fabric::Live>, Vec<Vec<Listener>>) {
    let mut live = Vec::new();
    let mut per_worker: Vec<Vec<Listener>> = (0..fabric.threads.count()).map(|_| Vec::new()).collect();
    for (listener, group) in config.listeners.iter().zip(bound) {
        let (listening, loops) = fabric.listen(listener, &pools[listener.pool.id], group);
        live.push(listening);
        for accept in loops {
            per_worker[accept.thread].push(accept);
        }
    }
    (live, per_worker)
}

/// The admin listener on its own thread, until `stop`.
pub(super) fn start_admin(
    tcp: Option<tokio::net::TcpListener>,
    state: &Arc<AdminState>,
    stop: &CancellationToken,
    background: &TaskTracker,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(tcp) = tcp else { return Ok(None) };
    let address = tcp.local_addr().expect("a bound socket has an address");
    let ended = admin::run_on_own_thread(tcp, state.clone(), stop.clone()).map_err(StartError::Runtime)?;
    info!(%address, "admin listening");
    background.spawn(ended);
    Ok(Some(address))
}

/// Binds every listener (one socket per data-plane thread) and the admin listener,
/// before any task runs, so a bad address fails fast. What a hot upgrade took over
/// for the same name at the same address is used instead of a new socket.
pub(super) fn bind(
    config: &Config,
    mut inherited: Option<&mut Inherited>,
) -> Result<(Vec<Vec<std::net::TcpListener>>, Option<tokio::net::TcpListener>), StartError> {
    let mut bound = Vec::new();
    for listener in &config.listeners {
        if let Some(mut sockets) = inherited
            .as_mut()
            .and_then(|i| i.take_listener(&listener.name, listener.listen))
        {
            if let Err(e) = tcp::reconfigure(&sockets, &listener.tcp) {
                warn!(listener = %listener.name, error = %e, "cannot set the socket options on a socket taken over");
            }
            // More data-plane threads than the old process had: more sockets in its group.
            while sockets.len() < config.workers {
                match tcp::join_group(listener.listen, &listener.tcp) {
                    Ok(socket) => sockets.push(socket),
                    Err(e) => {
                        warn!(listener = %listener.name, error = %e, sockets = sockets.len(), "cannot add a socket to the group taken over; some threads get connections handed over only");
                        break;
                    }
                }
            }
            bound.push(sockets);
            continue;
        }
        let group =
            tcp::bind_group(listener.listen, &listener.tcp, config.workers).map_err(|source| StartError::Bind {
                what: format!("listener {}", listener.name),
                address: listener.listen,
                source,
            })?;
        bound.push(group);
    }
    let admin = match &config.admin {
        Some(admin) => match inherited.and_then(|i| i.take_admin(admin.listen)) {
            Some(socket) => Some(
                tokio::net::TcpListener::from_std(socket).map_err(|source| StartError::Bind {
                    what: "admin".into(),
                    address: admin.listen,
                    source,
                })?,
            ),
            None => Some(tcp::bind(admin.listen, None).map_err(|source| StartError::Bind {
                what: "admin".into(),
                address: admin.listen,
                source,
            })?),
        },
        None => None,
    };
    Ok((bound, admin))
}

/// Raises the descriptor limit, warns when `config` can exceed it, and returns the
/// process-wide session budget under it (see [`crate::local`]).
pub(super) fn descriptor_budget(config: &Config) -> Arc<Semaphore> {
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

pub(super) fn warn_insecure_backends(config: &Config) {
    for backend in &config.backends {
        if let Some(tls) = &backend.tls {
            if *tls.verify() == Verify::Insecure {
                warn!(backend = %backend.name, server_name = %tls.server_name(), "TLS to this backend does NOT verify its certificate (insecure = true): anyone on the path can impersonate it; labs only");
            }
        }
    }
}

/// Starts the data-plane threads and waits until each runs its accept loops.
pub(super) async fn start_workers(
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
