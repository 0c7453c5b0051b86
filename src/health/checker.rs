//! One checker task per backend: wait (cadence + jitter, cut short by a nudge),
//! probe once under the timeout, apply hysteresis, send the observation.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::probe::Probe;
use super::{cadence, jittered, Hysteresis, Observation};
use crate::backend::Backend;
use crate::config::CheckConfig;

/// The shortest gap between two checks, however often the data path nudges.
const NUDGE_GAP: Duration = Duration::from_millis(20);

pub struct Checker {
    backend: Arc<Backend>,
    probe: Probe,
    check: CheckConfig,
    events: mpsc::Sender<Observation>,
}

impl Checker {
    pub fn new(backend: Arc<Backend>, check: &CheckConfig, events: mpsc::Sender<Observation>) -> Self {
        Checker {
            probe: Probe::new(&check.probe, backend.tls.as_ref()),
            check: check.clone(),
            backend,
            events,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut health = Hysteresis::new(self.check.rise.get(), self.check.fall.get());
        let mut last = Instant::now();
        loop {
            let wait = cadence(&health, &self.check, self.backend.is_urgent());
            let mut next = last + jittered(wait, self.check.jitter.get(), fastrand::f64());
            loop {
                tokio::select! {
                    _ = sleep_until(next) => break,
                    _ = self.backend.nudged() => next = next.min(last + NUDGE_GAP),
                    _ = shutdown.cancelled() => return,
                }
            }
            let started = Instant::now();
            let result = tokio::select! {
                result = self.probe.check(self.backend.address, started + self.check.timeout) => result,
                _ = shutdown.cancelled() => return,
            };
            last = Instant::now();
            let flip = health.observe(result.is_ok());
            let observation = Observation {
                backend: self.backend.id,
                at: started.into_std(),
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
