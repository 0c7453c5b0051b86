//! Shared checks: per backend, one proxy of the fleet (the holder of its checker key)
//! runs the full probe and publishes what it saw; the others relay that and only check
//! that they can reach the backend themselves.
//!
//! [`SharedProbe`] is the [`Check`] a backend's checker runs in a fleet. Per check:
//! - this proxy holds the checker key, or no other proxy's observation is at hand
//!   (none published yet, its lease expired, etcd out of reach): the full probe, as
//!   without a fleet; when holding, the outcome is published if it changed (or once
//!   `republish` passed: ten lease periods, so a silent publisher can be told from a
//!   live one);
//! - else: a TCP connect every `light_interval` (a failed one fails the check here);
//!   then the published outcome and status are taken over as they are, without a
//!   second hysteresis. One exception: the publisher could not even connect (L4/L6)
//!   but this proxy can: it runs the full probe itself, so one proxy's broken network
//!   does not take the backend away from the whole fleet. Nor is an observation relayed
//!   that is older than a verdict naming the backend the primary while it says
//!   otherwise (its publisher may be cut off), or that was not renewed for twice
//!   `republish`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::health::probe::Probe;
use crate::health::{Attention, Check, CheckError, Report, Status};

/// What a backend's checker publishes under its observation key (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The proxy that checked.
    pub by: String,
    /// The status after its hysteresis.
    pub status: Status,
    /// Its last check.
    pub outcome: Outcome,
    /// When it published (Unix milliseconds).
    pub at_ms: u64,
}

/// One check's outcome, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The check passed with this report.
    Passed(Box<Report>),
    /// The check failed at `layer` (`L4`, `L6`, `L7`).
    Failed {
        /// The layer, as [`Layer::as_str`] names it.
        layer: String,
        /// The error, as the checker saw it.
        error: String,
    },
}

impl Published {
    /// A value read from etcd, or why it is not an observation.
    pub fn decode(bytes: &[u8]) -> Result<Published, String> {
        super::verdict::decode(bytes)
    }

    /// The JSON written to etcd.
    pub fn encode(&self) -> Vec<u8> {
        super::verdict::encode(self)
    }

    /// The outcome as this proxy's check result.
    fn result(&self) -> Result<Report, CheckError> {
        match &self.outcome {
            Outcome::Passed(report) => Ok((**report).clone()),
            Outcome::Failed { layer, error } => Err(CheckError::Response(format!(
                "{layer} failure seen by {}: {}",
                self.by,
                crate::logs::peer(error)
            ))),
        }
    }

    /// The publisher saw a writable primary.
    fn says_primary(&self) -> bool {
        matches!(&self.outcome, Outcome::Passed(report) if report.role == crate::health::Role::Primary)
    }

    /// The publisher could not reach the backend at all.
    fn unreachable(&self) -> bool {
        matches!(&self.outcome, Outcome::Failed { layer, .. } if layer == "L4" || layer == "L6")
    }

    /// Equal but for the publishing time and the replication position (which moves
    /// with every write on a primary).
    fn same_as(&self, other: &Published) -> bool {
        let strip = |p: &Published| match &p.outcome {
            Outcome::Passed(report) => Outcome::Passed(Box::new(Report {
                position: None,
                ..(**report).clone()
            })),
            failed => failed.clone(),
        };
        self.status == other.status && strip(self) == strip(other)
    }
}

/// An observation for the agent to publish.
#[derive(Debug)]
pub struct Publish {
    /// The backend's name.
    pub backend: String,
    /// What to write.
    pub observation: Published,
}

/// One backend's share of the fleet, as the agent and the backend's checker see it.
#[derive(Debug)]
pub struct SharedBackend {
    /// The backend's name (its keys are named after it).
    pub name: String,
    attention: ArcSwap<Attention>,
    /// Another proxy's latest observation, its etcd revision and when it arrived,
    /// while one is published and etcd answers.
    observation: ArcSwapOption<(Published, i64, Instant)>,
    /// Whether this proxy holds the backend's checker key.
    holding: AtomicBool,
    /// The etcd revision of the newest verdict naming this backend the primary.
    named: AtomicI64,
}

impl SharedBackend {
    /// A backend nobody checks for this proxy yet.
    pub fn new(name: &str, attention: Arc<Attention>) -> Self {
        SharedBackend {
            name: name.to_string(),
            attention: ArcSwap::new(attention),
            observation: ArcSwapOption::empty(),
            holding: AtomicBool::new(false),
            named: AtomicI64::new(0),
        }
    }

    /// Another proxy published (or, `None`, withdrew) an observation at etcd
    /// revision `revision`: check again now.
    pub fn relay(&self, observation: Option<(Published, i64)>) {
        let arrived = Instant::now();
        self.observation
            .store(observation.map(|(published, revision)| Arc::new((published, revision, arrived))));
        self.attention.load().nudge();
    }

    /// A verdict at etcd revision `revision` names this backend the primary: an
    /// observation older than that which says otherwise is not relayed (its publisher
    /// may be cut off); the backend is checked fully here instead.
    pub fn named_primary(&self, revision: i64) {
        if self.named.fetch_max(revision, Ordering::Relaxed) < revision {
            self.attention.load().nudge();
        }
    }

    /// The backend's checker changed (a reload replaced the backend).
    pub fn set_attention(&self, attention: Arc<Attention>) {
        self.attention.store(attention);
    }

    /// Whether this proxy holds the checker key.
    pub fn holding(&self) -> bool {
        self.holding.load(Ordering::Relaxed)
    }

    /// This proxy won (or lost) the checker key.
    pub fn set_holding(&self, holding: bool) {
        if self.holding.swap(holding, Ordering::Relaxed) != holding {
            self.attention.load().nudge();
        }
    }
}

/// The check of a backend in a fleet; see the module docs.
pub struct SharedProbe {
    full: Probe,
    light: Probe,
    shared: Arc<SharedBackend>,
    proxy: String,
    light_interval: Duration,
    republish: Duration,
    publish: mpsc::Sender<Publish>,
    /// The last TCP connect of the light check: when, and whether it passed.
    reached: Option<(Instant, Result<(), CheckError>)>,
    /// Set when the last check relayed another proxy's observation (its status).
    relayed: Option<Status>,
    /// What this proxy last published, and when.
    published: Option<(Published, Instant)>,
    /// The full probe ran last (so its kept connection is worth keeping).
    ran_full: bool,
    /// Whether this proxy held the checker key at the last check.
    was_holding: bool,
}

impl SharedProbe {
    /// `full` is the configured probe, `light` a TCP connect to the same backend.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        full: Probe,
        light: Probe,
        shared: Arc<SharedBackend>,
        proxy: &str,
        light_interval: Duration,
        republish: Duration,
        publish: mpsc::Sender<Publish>,
    ) -> Self {
        SharedProbe {
            full,
            light,
            shared,
            proxy: proxy.to_string(),
            light_interval,
            republish,
            publish,
            reached: None,
            relayed: None,
            published: None,
            ran_full: false,
            was_holding: false,
        }
    }

    async fn full_check(&mut self, addr: SocketAddr, deadline: Instant) -> Result<Report, CheckError> {
        self.relayed = None;
        self.ran_full = true;
        self.full.check(addr, deadline).await
    }

    async fn reach(&mut self, addr: SocketAddr, deadline: Instant) -> Result<(), CheckError> {
        let due = match &self.reached {
            Some((at, Ok(()))) => at.elapsed() >= self.light_interval,
            _ => true,
        };
        if due {
            let result = self.light.check(addr, deadline).await.map(|_| ());
            self.reached = Some((Instant::now(), result));
        }
        self.reached.as_ref().map_or(Ok(()), |(_, r)| r.clone())
    }
}

impl Check for SharedProbe {
    async fn check(&mut self, addr: SocketAddr, deadline: Instant) -> Result<Report, CheckError> {
        let observation = self.shared.observation.load_full().filter(|_| !self.shared.holding());
        let Some(relayed) = observation else {
            return self.full_check(addr, deadline).await;
        };
        let (observation, revision, arrived) = (&relayed.0, relayed.1, relayed.2);
        let contradicted = revision < self.shared.named.load(Ordering::Relaxed) && !observation.says_primary();
        // A publisher republishes at least every `republish`: one silent for twice that
        // is stuck, whatever its lease says.
        let stale = arrived.elapsed() > 2 * self.republish;
        if contradicted || stale {
            return self.full_check(addr, deadline).await;
        }
        if std::mem::take(&mut self.ran_full) {
            // Another proxy checks now: no kept monitor connection from this one.
            self.full.forget_connection();
        }
        self.relayed = None;
        self.reach(addr, deadline).await?;
        if observation.unreachable() {
            return self.full_check(addr, deadline).await;
        }
        self.relayed = Some(observation.status);
        observation.result()
    }

    fn reset(&mut self) {
        self.full.forget_connection();
    }

    fn relayed(&self) -> Option<Status> {
        self.relayed
    }

    fn observed(&mut self, status: Status, result: &Result<Report, CheckError>) {
        let holding = self.shared.holding();
        if holding && !std::mem::replace(&mut self.was_holding, holding) {
            self.published = None; // (again) the checker: publish at once
        }
        self.was_holding = holding;
        if self.relayed.is_some() || !holding {
            return;
        }
        let outcome = match result {
            Ok(report) => Outcome::Passed(Box::new(report.clone())),
            Err(CheckError::Local { .. }) => return, // the proxy's own shortage: nothing to share
            Err(e) => Outcome::Failed {
                layer: e.layer().as_str().to_string(),
                error: e.to_string(),
            },
        };
        let observation = Published {
            by: self.proxy.clone(),
            status,
            outcome,
            at_ms: crate::timeline::now_ms(),
        };
        let fresh = self
            .published
            .as_ref()
            .is_some_and(|(last, at)| last.same_as(&observation) && at.elapsed() < self.republish);
        if fresh {
            return;
        }
        let publish = Publish {
            backend: self.shared.name.clone(),
            observation: observation.clone(),
        };
        // A full queue (etcd slow) drops this one; the next check publishes again.
        if self.publish.try_send(publish).is_ok() {
            self.published = Some((observation, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Role;

    fn published(status: Status, outcome: Outcome) -> Published {
        Published {
            by: "b".into(),
            status,
            outcome,
            at_ms: 1,
        }
    }

    fn primary(position: &str) -> Outcome {
        Outcome::Passed(Box::new(Report {
            role: Role::Primary,
            position: Some(position.into()),
            ..Report::default()
        }))
    }

    #[test]
    fn observations_round_trip_and_compare_without_their_position() {
        let one = published(Status::Up, primary("0-1-5"));
        assert_eq!(Published::decode(&one.encode()), Ok(one.clone()));
        assert!(Published::decode(b"{}").is_err());
        assert!(Published::decode(&vec![b' '; 70_000]).is_err());
        let later = Published {
            at_ms: 9,
            ..published(Status::Up, primary("0-1-6"))
        };
        assert!(one.same_as(&later), "a moving GTID alone is no news");
        assert!(!one.same_as(&published(Status::Down, primary("0-1-5"))));
        assert!(one.says_primary());
    }

    #[test]
    fn relayed_failures_keep_their_layer_and_publisher() {
        let failed = |layer: &str| {
            published(
                Status::Down,
                Outcome::Failed {
                    layer: layer.into(),
                    error: "connect failed: refused".into(),
                },
            )
        };
        assert!(failed("L4").unreachable() && failed("L6").unreachable());
        assert!(!failed("L7").unreachable() && !failed("L7").says_primary());
        let error = failed("L7").result().unwrap_err();
        assert!(error.to_string().contains("L7 failure seen by b"), "{error}");
    }
}
