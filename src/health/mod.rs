//! Health: probe → observation → transition.
//!
//! - [`probe`]: straight-line async functions that check one backend once and return
//!   a [`Report`] or a [`CheckError`] that knows its [`Layer`].
//! - [`Hysteresis`] (pure): turns a stream of pass/fail into `Up`/`Down` with
//!   `rise`/`fall`, and says when it flipped.
//! - [`cadence`] (pure): how long to wait before the next check.
//! - [`Checker`]: one task per backend, running the three above and sending an
//!   [`Observation`] per check to the router, which alone decides routing. It runs
//!   any [`Check`] (the [`probe::Probe`] in a proxy; in a fleet, `fleet::shared::SharedProbe`,
//!   which runs it or relays another proxy's) and hears the rest of the proxy
//!   through [`Attention`] (nudges, urgency); a probe that panics fails its check.

mod checker;
pub mod probe;

use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

pub use checker::{Attention, Check, Checker};

use crate::config::{BackendId, CheckConfig};

/// What a backend currently is, as far as its checks tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not checked yet.
    #[default]
    Unknown,
    /// Passing its checks, after hysteresis.
    Up,
    /// Failing its checks, after hysteresis.
    Down,
}

/// The role a backend reports. TCP and HTTP probes cannot tell, so they report
/// `Unknown`; the MySQL probe reports `Primary` (`read_only=0`) or `Replica`; the
/// MongoDB probe `Primary`, `Secondary` or `Arbiter` (and `Unknown` for a member in
/// another state, e.g. RECOVERING); the Redis probe `Primary` (`role:master`) or
/// `Replica` (`role:slave`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// No role reported: not checked yet, a TCP or HTTP probe, or a MongoDB member in
    /// another state.
    #[default]
    Unknown,
    /// Writable: a MySQL server with `read_only=0`, the MongoDB primary, a Redis master.
    Primary,
    /// A MySQL server with `read_only` on, or a Redis replica.
    Replica,
    /// A MongoDB secondary.
    Secondary,
    /// A MongoDB arbiter.
    Arbiter,
}

/// The OSI-ish layer a check failed at, as HAProxy reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layer {
    /// TCP connect: refused, unreachable, timed out.
    L4,
    /// TLS handshake.
    L6,
    /// The application protocol: bad or unexpected response, auth, role.
    L7,
    /// Not the backend's: the proxy ran short of its own resources (descriptors,
    /// buffers, memory, local ports). Such a check changes no backend's state.
    Local,
}

impl Layer {
    /// The layer's name: `L4`, `L6` or `L7`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::L4 => "L4",
            Layer::L6 => "L6",
            Layer::L7 => "L7",
            Layer::Local => "local",
        }
    }
}

/// Why one check failed.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum CheckError {
    /// The TCP connect failed (L4).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The deadline passed in this phase; the phase decides the layer.
    #[error("timed out while {0}")]
    Timeout(Phase),
    /// The TLS handshake failed (L6).
    #[error("TLS: {0}")]
    Tls(String),
    /// Authentication failed: credentials refused, or the SCRAM exchange failed (L7).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The exchange broke: an I/O error after connecting, or bytes that do not decode (L7).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The proxy's own resources ran out before the backend was reached: not the
    /// backend's failure (see [`crate::local`]).
    #[error("the proxy ran short of {} here: {error}", .resource.as_str())]
    Local {
        /// What ran out.
        resource: crate::local::Resource,
        /// The error, as the OS gave it.
        error: String,
    },
    /// A well-formed answer that fails the check: a status outside the expected range, a
    /// refused command, an unreadable `@@read_only` (L7).
    #[error("unexpected response: {0}")]
    Response(String),
}

/// The phase of a check, so that a timeout knows its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TCP connect.
    Connecting,
    /// The TLS handshake with the backend.
    Handshaking,
    /// A database login: the server's greeting and the authentication exchange.
    LoggingIn,
    /// Sending a request or command.
    Requesting,
    /// Reading the response.
    Reading,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "connecting",
            Phase::Handshaking => "in the TLS handshake",
            Phase::LoggingIn => "logging in",
            Phase::Requesting => "sending the request",
            Phase::Reading => "reading the response",
        })
    }
}

impl CheckError {
    /// The layer this failure is reported at.
    pub fn layer(&self) -> Layer {
        match self {
            CheckError::Connect(_) | CheckError::Timeout(Phase::Connecting) => Layer::L4,
            CheckError::Tls(_) | CheckError::Timeout(Phase::Handshaking) => Layer::L6,
            CheckError::Timeout(_) | CheckError::Auth(_) | CheckError::Protocol(_) | CheckError::Response(_) => {
                Layer::L7
            }
            CheckError::Local { .. } => Layer::Local,
        }
    }

    /// A failed connect: [`CheckError::Local`] when the proxy's own resources ran out
    /// (EMFILE and the like), else [`CheckError::Connect`].
    pub fn connect(error: &std::io::Error) -> CheckError {
        match crate::local::classify(error) {
            Some(resource) => CheckError::Local {
                resource,
                error: error.to_string(),
            },
            None => CheckError::Connect(error.to_string()),
        }
    }
}

/// What a passing check learned.
#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize)]
pub struct Report {
    /// The role the backend reports (`Unknown` from TCP and HTTP probes).
    pub role: Role,
    /// Replication state, when the backend replicates from another.
    pub replica: Option<ReplicaState>,
    /// The server's own identity (MySQL `@@server_id`).
    pub server_id: Option<u32>,
    /// The replication position it reports (MySQL GTID), for operators.
    pub position: Option<String>,
    /// A MongoDB member's hello (set name, election, lastWrite, ...).
    pub mongo: Option<crate::protocol::mongo::Hello>,
    /// A Redis node's replication history and offsets.
    pub redis: Option<probe::RedisInfo>,
    /// A Galera node's wsrep state.
    pub galera: Option<probe::GaleraState>,
}

impl Report {
    /// A pass that says nothing about roles (TCP, HTTP).
    pub fn reachable() -> Report {
        Report::default()
    }
}

/// How a replica is replicating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReplicaState {
    /// The receiving (IO) thread is connected to its source.
    pub io_running: bool,
    /// The receiving thread is trying to reconnect (the source is unreachable).
    pub io_connecting: bool,
    /// The applying (SQL) thread runs.
    pub sql_running: bool,
    /// `Seconds_Behind_Master`; `None` when the server reports NULL.
    #[serde(serialize_with = "lag_secs", deserialize_with = "lag_from_secs")]
    pub lag: Option<Duration>,
    /// `host:port` of its source.
    pub source: Option<String>,
}

fn lag_from_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let secs: Option<u64> = serde::Deserialize::deserialize(d)?;
    Ok(secs.map(Duration::from_secs))
}

fn lag_secs<S: serde::Serializer>(lag: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match lag {
        Some(lag) => s.serialize_some(&lag.as_secs()),
        None => s.serialize_none(),
    }
}

/// One check's outcome, as the router receives it.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The backend checked.
    pub backend: BackendId,
    /// How long the check took.
    pub latency: Duration,
    /// What the check learned, or why it failed.
    pub result: Result<Report, CheckError>,
    /// The status after this observation.
    pub status: Status,
    /// Set when this observation flipped the status.
    pub flip: Option<Flip>,
    /// When the check ended: the router measures from here to the table it publishes
    /// (`switchyard_swap_seconds`).
    pub at: tokio::time::Instant,
}

/// A change of [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flip {
    /// The status before.
    pub from: Status,
    /// The status after.
    pub to: Status,
}

/// `rise`/`fall` hysteresis. The first observation decides at once (a fresh proxy
/// should not wait `rise` checks to serve); afterwards `fall` consecutive failures
/// take an `Up` backend down and `rise` consecutive passes bring a `Down` one up.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    status: Status,
    /// Consecutive results agreeing with the latest one.
    streak: u32,
    last_ok: bool,
    rise: u32,
    fall: u32,
}

impl Hysteresis {
    /// Starts `Unknown`, with the `rise` and `fall` thresholds (each at least 1).
    pub fn new(rise: u32, fall: u32) -> Self {
        Hysteresis {
            status: Status::Unknown,
            streak: 0,
            last_ok: true,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Starts at `status` (what a restarted checker's backend was), so that rise and
    /// fall apply from the first check instead of one check deciding.
    pub fn resume(rise: u32, fall: u32, status: Status) -> Self {
        Hysteresis {
            status,
            last_ok: status != Status::Down,
            ..Hysteresis::new(rise, fall)
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Consecutive failures so far (0 after a pass).
    pub fn failing(&self) -> u32 {
        if self.last_ok {
            0
        } else {
            self.streak
        }
    }

    /// Takes `status` as it is (another proxy's hysteresis decided it); returns the
    /// flip, if any. The streak starts again from it.
    pub fn force(&mut self, status: Status) -> Option<Flip> {
        self.last_ok = status != Status::Down;
        self.streak = 1;
        let from = std::mem::replace(&mut self.status, status);
        (from != status).then_some(Flip { from, to: status })
    }

    /// Records one check result; returns the flip it caused, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Flip> {
        self.streak = if ok == self.last_ok {
            self.streak.saturating_add(1)
        } else {
            1
        };
        self.last_ok = ok;
        let to = match (self.status, ok) {
            (Status::Unknown, true) => Status::Up,
            (Status::Unknown, false) => Status::Down,
            (Status::Up, false) if self.streak >= self.fall => Status::Down,
            (Status::Down, true) if self.streak >= self.rise => Status::Up,
            (status, _) => status,
        };
        let from = std::mem::replace(&mut self.status, to);
        (from != to).then_some(Flip { from, to })
    }
}

/// How long a checker waits before its next check, before jitter: at once when
/// unchecked, `fast_interval` while failing or when the router asked for urgency,
/// `down_interval` while down, `interval` otherwise.
pub fn cadence(health: &Hysteresis, check: &CheckConfig, urgent: bool) -> Duration {
    match health.status() {
        Status::Unknown => Duration::ZERO,
        Status::Down if urgent => check.fast_interval.min(check.down_interval),
        Status::Down => check.down_interval,
        Status::Up if urgent || health.failing() > 0 => check.fast_interval,
        Status::Up => check.interval,
    }
}

/// Scales `wait` by a random factor in `1 ± jitter` so that a fleet of proxies does
/// not probe a backend in lockstep.
pub fn jittered(wait: Duration, jitter: f64, unit_random: f64) -> Duration {
    let factor = 1.0 + jitter * (2.0 * unit_random - 1.0);
    wait.mul_f64(factor.max(0.0))
}

#[cfg(test)]
mod tests;
