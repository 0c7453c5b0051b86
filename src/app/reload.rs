//! Config reload: SIGHUP, `POST /config/reload` and `switchyard reload` all send a
//! [`ReloadRequest`] to the one [`Reloader`] task, which re-reads the file exactly as
//! at start and applies the difference by name.
//!
//! Data flow: read + validate (a broken file: [`ReloadError::Invalid`], nothing
//! changes) → bind the listeners that are new or moved (a bind error: nothing
//! changes) → backends: an unchanged one keeps its `Arc` (slot, state, histograms,
//! checker); one whose check timings alone changed keeps all that but gets a new
//! checker resuming its status; any other change is a new backend in a new slot →
//! pools rebuilt over them, keeping the members that stay → the router applies both
//! in one generation ([`Reconfigure`], which fences the members that left) → checkers
//! started and stopped → listeners: a kept one swaps its context; a new one starts
//! its accept loops on every data-plane thread; a removed one stops accepting and its
//! sessions are closed after `shutdown.grace` → the new [`Topology`] is published.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod diff;
mod report;

use diff::{not_applied, same_socket, same_target};

pub use report::{Changes, ReloadError, ReloadReport, ReloadRequest};

use super::fabric::{Fabric, Live};
use crate::admin::AdminState;
use crate::backend::Backend;
use crate::config::{BackendId, Config, Members};
use crate::listener::Listener;
use crate::pool::{Member, Pool};
use crate::routing::Reconfigure;
use crate::timeline::EventKind;
use crate::topology::Topology;

/// The only writer of the topology after start.
pub(super) struct Reloader {
    pub(super) fabric: Fabric,
    pub(super) state: Arc<AdminState>,
    pub(super) router: mpsc::Sender<Reconfigure>,
    /// Each live backend's checker, by slot.
    pub(super) checkers: HashMap<BackendId, CancellationToken>,
    pub(super) live: Vec<Live>,
    /// Per data-plane thread, where new accept loops go.
    pub(super) added: Vec<mpsc::UnboundedSender<Listener>>,
    pub(super) next_backend: usize,
    pub(super) next_pool: usize,
    /// The hot upgrade's side of this process (see [`super::handover`]).
    pub(super) upgrade: Upgrade,
}

pub(crate) use super::handover::Upgrade;

/// The new topology's backends, and what the checkers must do once the router has it.
struct NewBackends {
    all: Vec<Arc<Backend>>,
    start: Vec<(Arc<Backend>, crate::config::CheckConfig)>,
    stop: Vec<BackendId>,
}

impl Reloader {
    /// Serves reload requests and hot upgrades (once `upgrades` gave it the upgrade
    /// socket) until the process stops accepting (shutdown, or a hand-over), then
    /// closes its copies of the listening sockets, so they close with the accept loops.
    pub(super) async fn run(
        mut self,
        mut requests: mpsc::Receiver<ReloadRequest>,
        mut upgrades: mpsc::Receiver<(tokio::net::UnixListener, std::path::PathBuf)>,
    ) {
        let stopping = self.fabric.stop_accepting.clone();
        loop {
            tokio::select! {
                Some(request) = requests.recv() => {
                    let outcome = self.reload(request.config).await;
                    let _ = request.reply.send(outcome);
                }
                Some((listener, path)) = upgrades.recv() => {
                    self.upgrade.listener = Some(listener);
                    self.upgrade.path = Some(path);
                }
                Some(stream) = self.upgrade.next() => {
                    if self.hand_over(stream).await {
                        return;
                    }
                }
                _ = stopping.cancelled() => return,
            }
        }
    }

    async fn reload(&mut self, given: Option<Config>) -> Result<ReloadReport, ReloadError> {
        let started = Instant::now();
        let current = self.state.topology.load_full();
        let loaded = match given {
            Some(config) => Ok(config),
            None => {
                let path = std::path::PathBuf::from(&current.config.source);
                tokio::task::spawn_blocking(move || Config::load(&path))
                    .await
                    .map_err(|_| ReloadError::Stopping)?
                    .map_err(ReloadError::Invalid)
            }
        };
        let outcome = match loaded {
            Ok(config) => self.apply(&current, config).await,
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(report) => {
                let mut report = report.clone();
                report.took_ms = started.elapsed().as_secs_f64() * 1000.0;
                report.summary = report.summary();
                let summary = report.summary.clone();
                info!(generation = report.generation, took_ms = report.took_ms, changes = %summary, "config reloaded");
                self.state
                    .timeline
                    .push(EventKind::Reload, None, None, format!("applied: {summary}"));
                ::metrics::counter!(crate::metrics::CONFIG_RELOADS, "outcome" => "applied").increment(1);
                return Ok(report);
            }
            Err(e) => {
                warn!(error = %e, "config reload rejected; the running configuration stays");
                self.state
                    .timeline
                    .push(EventKind::Reload, None, None, format!("rejected: {e}"));
                ::metrics::counter!(crate::metrics::CONFIG_RELOADS, "outcome" => "rejected").increment(1);
            }
        }
        outcome
    }

    async fn apply(&mut self, current: &Topology, config: Config) -> Result<ReloadReport, ReloadError> {
        let mut report = ReloadReport {
            not_applied: not_applied(&current.config, &config),
            ..ReloadReport::default()
        };
        let mut bound = self.bind_new(&config)?;
        // The start is over once every backend was checked: the ones this reload adds
        // do not make `/health` say "starting" again.
        if current
            .backends
            .iter()
            .all(|b| b.view().status != crate::health::Status::Unknown)
        {
            self.state
                .checked_once
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let backends = self.backends(current, &config, &mut report);
        let pools = self.pools(current, &config, &backends.all, &mut report);
        // Contexts first: a session held on a pool slot this reload removes would wait
        // out its hold_timeout; one on a slot the router has yet to publish waits only
        // for the table that follows.
        self.listeners(&config, &pools, &mut bound, &mut report);
        let (done, applied) = oneshot::channel();
        let change = Reconfigure {
            backends: backends.all.clone(),
            pools: pools.clone(),
            done,
        };
        // No timeout once sent: the router is in-process and applies it, or it has
        // died (the oneshot is dropped and the process stops).
        self.router.send(change).await.map_err(|_| ReloadError::Router)?;
        report.generation = applied.await.map_err(|_| ReloadError::Router)?;
        if current.config.log != config.log {
            report.applied.push("[log]".to_string());
        }
        report.not_applied.extend(crate::logging::apply(&config.log));
        for slot in backends.stop {
            if let Some(checker) = self.checkers.remove(&slot) {
                checker.cancel();
            }
        }
        for (backend, check) in backends.start {
            let checker = self.fabric.spawn_checker(&backend, &check);
            self.checkers.insert(backend.id, checker);
        }
        let topology = Arc::new(Topology::new(config, backends.all, pools, &self.live));
        self.state.topology.store(topology.clone());
        let tls = tokio::task::spawn_blocking(move || crate::admin::reload_tls_files(&topology)).await;
        report.tls = tls.unwrap_or_default().iter().map(|r| r.json()).collect();
        Ok(report)
    }

    /// Binds every listener that is new or whose socket changed, before anything else
    /// changes.
    fn bind_new(&self, config: &Config) -> Result<HashMap<String, Vec<std::net::TcpListener>>, ReloadError> {
        let mut bound = HashMap::new();
        for listener in &config.listeners {
            let kept = self
                .live
                .iter()
                .any(|l| l.config.name == listener.name && same_socket(&l.config, listener));
            if !kept {
                let group = crate::tcp::bind_group(listener.listen, &listener.tcp, self.fabric.threads.count())
                    .map_err(|source| ReloadError::Bind {
                        listener: listener.name.clone(),
                        address: listener.listen,
                        source,
                    })?;
                bound.insert(listener.name.clone(), group);
            }
        }
        Ok(bound)
    }

    /// The new config's backends: kept, restarted with new check timings, or new.
    fn backends(&mut self, current: &Topology, config: &Config, report: &mut ReloadReport) -> NewBackends {
        let mut new = NewBackends {
            all: Vec::new(),
            start: Vec::new(),
            stop: Vec::new(),
        };
        let old = |name: &str| {
            current
                .config
                .backends
                .iter()
                .zip(&current.backends)
                .find(|(c, _)| c.name == name)
        };
        for backend in &config.backends {
            match old(&backend.name) {
                Some((was, kept)) if was == backend => new.all.push(kept.clone()),
                Some((was, kept)) if same_target(was, backend) => {
                    report.backends.changed.push(backend.name.clone());
                    new.stop.push(kept.id);
                    new.start.push((kept.clone(), backend.check.clone()));
                    new.all.push(kept.clone());
                }
                was => {
                    match was {
                        Some((_, replaced)) => {
                            report.backends.changed.push(backend.name.clone());
                            new.stop.push(replaced.id);
                        }
                        None => report.backends.added.push(backend.name.clone()),
                    }
                    let created = Arc::new(Backend::new(self.next_backend, backend));
                    self.next_backend += 1;
                    new.start.push((created.clone(), backend.check.clone()));
                    new.all.push(created);
                }
            }
        }
        for (was, gone) in current.config.backends.iter().zip(&current.backends) {
            if config.backend(&was.name).is_none() {
                report.backends.removed.push(was.name.clone());
                new.stop.push(gone.id);
            }
        }
        new
    }

    /// The new config's pools over `backends` (in config order), keeping the members
    /// and the run-time state of the pools that stay.
    fn pools(
        &mut self,
        current: &Topology,
        config: &Config,
        backends: &[Arc<Backend>],
        report: &mut ReloadReport,
    ) -> Vec<Arc<Pool>> {
        let mut pools = Vec::new();
        for pool in &config.pools {
            let old = current.pool(&pool.name);
            let slot = old.map_or_else(
                || {
                    self.next_pool += 1;
                    self.next_pool - 1
                },
                |old| old.id,
            );
            let members: Vec<Arc<Member>> = pool
                .members
                .iter()
                .map(|&id| {
                    let backend = &backends[id];
                    old.and_then(|old| old.members.iter().find(|m| Arc::ptr_eq(&m.backend, backend)).cloned())
                        .unwrap_or_else(|| Arc::new(Member::new(slot, &pool.name, backend.clone())))
                })
                .collect();
            let mut runtime = pool.clone();
            runtime.members = Members::new(
                pool.members
                    .names()
                    .iter()
                    .cloned()
                    .zip(members.iter().map(|m| m.backend.id)),
            );
            let same_members = |old: &Pool| {
                old.members.len() == members.len() && old.members.iter().zip(&members).all(|(a, b)| Arc::ptr_eq(a, b))
            };
            match old {
                Some(old) if old.config == runtime && same_members(old) => pools.push(old.clone()),
                _ => {
                    let rebuilt = Pool::with_members(slot, runtime, members);
                    match old {
                        Some(old) => {
                            rebuilt.carry_over(old);
                            if old.config != *pool {
                                report.pools.changed.push(pool.name.clone());
                            }
                        }
                        None => report.pools.added.push(pool.name.clone()),
                    }
                    pools.push(Arc::new(rebuilt));
                }
            }
        }
        for old in &current.pools {
            if config.pool(old.name()).is_none() {
                report.pools.removed.push(old.name().to_string());
            }
        }
        pools
    }

    /// Swaps the context of every listener that stays, starts the new ones and stops
    /// the removed ones (their sessions get `shutdown.grace`).
    fn listeners(
        &mut self,
        config: &Config,
        pools: &[Arc<Pool>],
        bound: &mut HashMap<String, Vec<std::net::TcpListener>>,
        report: &mut ReloadReport,
    ) {
        let mut old: HashMap<String, Live> = self.live.drain(..).map(|l| (l.config.name.clone(), l)).collect();
        for listener in &config.listeners {
            let pool = &pools[listener.pool.id];
            match bound.remove(&listener.name) {
                Some(group) => {
                    let (live, loops) = self.fabric.listen(listener, pool, group);
                    for accept in loops {
                        let thread = accept.thread;
                        let _ = self.added[thread].send(accept);
                    }
                    match old.remove(&listener.name) {
                        Some(moved) => {
                            report.listeners.changed.push(listener.name.clone());
                            self.retire(moved, config.shutdown_grace);
                        }
                        None => report.listeners.added.push(listener.name.clone()),
                    }
                    self.live.push(live);
                }
                None => {
                    let Some(kept) = old.remove(&listener.name) else {
                        continue;
                    };
                    if kept.config.tcp != listener.tcp {
                        if let Err(e) = crate::tcp::reconfigure(&kept.sockets, &listener.tcp) {
                            warn!(listener = %listener.name, error = %e, "reload: cannot set the new socket options; new sessions keep the old ones");
                        }
                    }
                    let (serving, tls, _) = self.fabric.serving(listener, pool, Some(&kept));
                    kept.serving.store(Arc::new(serving));
                    if kept.config != *listener {
                        report.listeners.changed.push(listener.name.clone());
                    }
                    self.live.push(Live {
                        config: listener.clone(),
                        tls,
                        ..kept
                    });
                }
            }
        }
        for (name, removed) in old {
            report.listeners.removed.push(name);
            self.retire(removed, config.shutdown_grace);
        }
        report.listeners.removed.sort();
    }

    /// Stops a listener's accept loops now and closes its sessions after `grace`.
    fn retire(&self, listener: Live, grace: Duration) {
        info!(listener = %listener.config.name, address = %listener.address, grace = ?grace, "reload: listener removed; no new sessions, open ones get the grace period");
        listener.stop.cancel();
        let (kill, stop) = (listener.kill, self.fabric.stop_background.clone());
        self.fabric.background.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => kill.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }
}
