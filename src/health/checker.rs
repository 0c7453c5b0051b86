//! One checker task per backend: wait (cadence + jitter, cut short by a nudge),
//! check once under the timeout, apply hysteresis, send the observation.
//!
//! The checker knows its backend only by id, address and [`Attention`] (the two ways
//! the rest of the proxy asks for a check sooner), and runs any [`Check`]: the
//! configured [`Probe`] in a proxy, a scripted one in the paused-time tests.
//!
//! Two results never reach hysteresis as the backend's fault: a probe that panics
//! is one failed check at L7 (caught here), and a check that failed for want of the
//! proxy's own resources (`CheckError::Local`, EMFILE and the like) changes no
//! status at all (see [`crate::local`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::probe::Probe;
use super::{cadence, jittered, CheckError, Hysteresis, Observation, Report, Status};
use crate::config::{BackendId, CheckConfig};
use crate::metrics as m;

/// The shortest gap between two checks, however often the data path nudges.
const NUDGE_GAP: Duration = Duration::from_millis(20);

/// One check of one backend, every phase bounded by `deadline`.
pub trait Check: Send {
    /// Checks the backend at `addr` once, failing with [`CheckError::Timeout`] at `deadline`.
    fn check(&mut self, addr: SocketAddr, deadline: Instant)
        -> impl Future<Output = Result<Report, CheckError>> + Send;

    /// Forgets what a check left behind (a kept connection): called after a check
    /// that panicked, whose state is unknown.
    fn reset(&mut self) {}

    /// Set when the last check relayed another proxy's verdict on the backend (a
    /// fleet's shared check): its status is taken as it is, without a second hysteresis.
    fn relayed(&self) -> Option<Status> {
        None
    }

    /// Hears the status and result of every check, after hysteresis.
    fn observed(&mut self, _status: Status, _result: &Result<Report, CheckError>) {}
}

impl Check for Probe {
    fn check(
        &mut self,
        addr: SocketAddr,
        deadline: Instant,
    ) -> impl Future<Output = Result<Report, CheckError>> + Send {
        Probe::check(self, addr, deadline)
    }

    fn reset(&mut self) {
        self.forget_connection();
    }
}

/// How the data path and the router ask a backend's checker for attention: a nudge
/// (check soon: a connect just failed) and urgency (use the fast interval: a pool it
/// serves has nothing routable).
#[derive(Debug, Default)]
pub struct Attention {
    nudge: Notify,
    urgent: AtomicBool,
}

impl Attention {
    /// Asks for an early re-check.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Resolves once someone called [`Attention::nudge`].
    pub async fn nudged(&self) {
        self.nudge.notified().await
    }

    /// Whether the router asked for the fast interval (a pool this backend serves has
    /// nothing routable).
    pub fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::Relaxed)
    }

    /// Turning urgent also nudges, so a checker asleep in its down interval does not
    /// miss the news.
    pub fn set_urgent(&self, urgent: bool) {
        if !self.urgent.swap(urgent, Ordering::Relaxed) && urgent {
            self.nudge();
        }
    }
}

/// Checks one backend until shutdown; see the module docs.
pub struct Checker<C: Check = Probe> {
    backend: BackendId,
    /// The backend's name, for the log line and metric of a probe that panicked.
    name: String,
    address: SocketAddr,
    attention: Arc<Attention>,
    check: C,
    config: CheckConfig,
    events: mpsc::Sender<Observation>,
    /// The status hysteresis starts from (`Unknown` for a new backend).
    resume_from: Status,
}

impl<C: Check> Checker<C> {
    /// A checker for backend `backend` at `address` that runs `check` on `config`'s
    /// cadence, listens to `attention` and sends each [`Observation`] to `events`.
    pub fn new(
        backend: BackendId,
        name: &str,
        address: SocketAddr,
        attention: Arc<Attention>,
        check: C,
        config: &CheckConfig,
        events: mpsc::Sender<Observation>,
    ) -> Self {
        Checker {
            backend,
            name: name.to_string(),
            address,
            attention,
            check,
            config: config.clone(),
            events,
            resume_from: Status::Unknown,
        }
    }

    /// Starts hysteresis from `status`, the backend's last known one: a checker made
    /// again after its task died must not let one check decide.
    pub fn resuming(mut self, status: Status) -> Self {
        self.resume_from = status;
        self
    }

    /// Runs until `shutdown` is cancelled (also in the middle of a check) or the
    /// router stops listening.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut health = Hysteresis::resume(self.config.rise.get(), self.config.fall.get(), self.resume_from);
        let mut last = Instant::now();
        let mut panicked_before = false;
        loop {
            let wait = cadence(&health, &self.config, self.attention.is_urgent());
            let mut next = last + jittered(wait, self.config.jitter.get(), fastrand::f64());
            loop {
                tokio::select! {
                    _ = sleep_until(next) => break,
                    _ = self.attention.nudged() => next = next.min(last + NUDGE_GAP),
                    _ = shutdown.cancelled() => return,
                }
            }
            let started = Instant::now();
            let result = tokio::select! {
                result = caught(self.check.check(self.address, started + self.config.timeout)) => result,
                _ = shutdown.cancelled() => return,
            };
            if result.is_err() {
                self.check.reset();
            }
            let result = result.unwrap_or_else(|panic| {
                // A panic in a probe (a library's, on a peer's bytes) is this
                // backend's failed check at L7, never the process's end.
                metrics::counter!(m::PROBE_PANICS, "backend" => self.name.clone()).increment(1);
                if !panicked_before {
                    error!(backend = %self.name, panic = %panic, "a health probe panicked; counted as a failed check (logged once per backend)");
                    panicked_before = true;
                }
                Err(CheckError::Protocol(format!("the probe panicked: {panic}")))
            });
            last = Instant::now();
            let flip = match &result {
                // The proxy ran short of its own resources: the backend is not to blame.
                Err(CheckError::Local { resource, error }) => {
                    crate::local::report(*resource, "check", &self.name, error);
                    None
                }
                result => match self.check.relayed() {
                    Some(status) => health.force(status),
                    None => health.observe(result.is_ok()),
                },
            };
            self.check.observed(health.status(), &result);
            let observation = Observation {
                backend: self.backend,
                latency: last - started,
                result,
                status: health.status(),
                flip,
                at: last,
            };
            if self.events.send(observation).await.is_err() {
                return;
            }
        }
    }
}

/// Runs `work`, and turns a panic inside it into `Err` with the panic's message.
async fn caught<F: Future>(work: F) -> Result<F::Output, String> {
    let mut work = Box::pin(work);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Ok(output)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                std::task::Poll::Ready(Err(message))
            }
        }
    })
    .await
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
