//! One checker task per backend: wait (cadence + jitter, cut short by a nudge),
//! check once under the timeout, apply hysteresis, send the observation.
//!
//! The checker knows its backend only by id, address and [`Attention`] (the two ways
//! the rest of the proxy asks for a check sooner), and runs any [`Check`]: the
//! configured [`Probe`] in a proxy, a scripted one in the paused-time tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::probe::Probe;
use super::{cadence, jittered, CheckError, Hysteresis, Observation, Report};
use crate::config::{BackendId, CheckConfig};

/// The shortest gap between two checks, however often the data path nudges.
const NUDGE_GAP: Duration = Duration::from_millis(20);

/// One check of one backend, every phase bounded by `deadline`.
pub trait Check: Send {
    /// Checks the backend at `addr` once, failing with [`CheckError::Timeout`] at `deadline`.
    fn check(&mut self, addr: SocketAddr, deadline: Instant)
        -> impl Future<Output = Result<Report, CheckError>> + Send;
}

impl Check for Probe {
    fn check(
        &mut self,
        addr: SocketAddr,
        deadline: Instant,
    ) -> impl Future<Output = Result<Report, CheckError>> + Send {
        Probe::check(self, addr, deadline)
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
    address: SocketAddr,
    attention: Arc<Attention>,
    check: C,
    config: CheckConfig,
    events: mpsc::Sender<Observation>,
}

impl<C: Check> Checker<C> {
    /// A checker for backend `backend` at `address` that runs `check` on `config`'s
    /// cadence, listens to `attention` and sends each [`Observation`] to `events`.
    pub fn new(
        backend: BackendId,
        address: SocketAddr,
        attention: Arc<Attention>,
        check: C,
        config: &CheckConfig,
        events: mpsc::Sender<Observation>,
    ) -> Self {
        Checker {
            backend,
            address,
            attention,
            check,
            config: config.clone(),
            events,
        }
    }

    /// Runs until `shutdown` is cancelled (also in the middle of a check) or the
    /// router stops listening.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut health = Hysteresis::new(self.config.rise.get(), self.config.fall.get());
        let mut last = Instant::now();
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
                result = self.check.check(self.address, started + self.config.timeout) => result,
                _ = shutdown.cancelled() => return,
            };
            last = Instant::now();
            let flip = health.observe(result.is_ok());
            let observation = Observation {
                backend: self.backend,
                latency: last - started,
                result,
                status: health.status(),
                flip,
            };
            if self.events.send(observation).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
