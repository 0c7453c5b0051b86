//! A shortage of the proxy's own resources is not a backend's fault.
//!
//! A connect that fails with EMFILE or ENFILE (descriptors), ENOBUFS (buffers),
//! ENOMEM (memory) or EADDRNOTAVAIL (local ports) says nothing about the backend: it
//! happens here. [`classify`] tells them apart; the checker then feeds nothing to
//! hysteresis, the router changes no state and fences nothing, and the data path
//! neither nudges the backend nor counts a backend connect failure. What happens
//! instead is [`report`]: a metric (`switchyard_local_failures_total{resource,site}`),
//! a rate-limited warning, and the process-wide alarm on `/status` and
//! `switchyard_local_alarm`, active for [`ALARM_HOLD`] after the last one.
//!
//! [`raise_descriptor_limit`] lifts RLIMIT_NOFILE's soft limit to the hard limit at
//! start; [`descriptor_budget`] is the sum that `check-config` and the start compare
//! with it.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::warn;

use crate::config::Config;
use crate::logs;
use crate::metrics as m;
use crate::timeline::now_ms;

/// How long the local alarm stays active after the last local failure.
pub const ALARM_HOLD: Duration = Duration::from_secs(30);

/// Which of the proxy's own resources ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// EMFILE, ENFILE: file descriptors.
    Descriptors,
    /// ENOBUFS: kernel buffers.
    Buffers,
    /// ENOMEM.
    Memory,
    /// EADDRNOTAVAIL, EADDRINUSE: local ports or addresses.
    Ports,
}

impl Resource {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Descriptors => "descriptors",
            Resource::Buffers => "buffers",
            Resource::Memory => "memory",
            Resource::Ports => "ports",
        }
    }
}

/// The local resource an I/O error says ran out, if it says so.
pub fn classify(error: &io::Error) -> Option<Resource> {
    match error.raw_os_error()? {
        libc::EMFILE | libc::ENFILE => Some(Resource::Descriptors),
        libc::ENOBUFS => Some(Resource::Buffers),
        libc::ENOMEM => Some(Resource::Memory),
        // EADDRINUSE: binding a `source` address found no free local port.
        libc::EADDRNOTAVAIL | libc::EADDRINUSE => Some(Resource::Ports),
        _ => None,
    }
}

/// The process-wide local alarm, as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LocalAlarm {
    /// What ran out, the last time.
    pub resource: Resource,
    /// Where: `check`, `connect` or `accept`.
    pub site: &'static str,
    /// The error, the last time.
    pub cause: String,
    /// When the last one happened (Unix ms).
    pub last_unix_ms: u64,
    /// How many since the process started.
    pub count: u64,
}

struct State {
    alarm: Option<(Instant, LocalAlarm)>,
    count: u64,
}

static STATE: Mutex<State> = Mutex::new(State { alarm: None, count: 0 });

/// Records a local failure at `site` (`check`, `connect`, `accept`) for `what` (a
/// backend or listener name).
pub fn report(resource: Resource, site: &'static str, what: &str, error: &str) {
    metrics::counter!(m::LOCAL_FAILURES, "resource" => resource.as_str(), "site" => site).increment(1);
    metrics::gauge!(m::LOCAL_ALARM).set(1.0);
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    state.count += 1;
    let alarm = LocalAlarm {
        resource,
        site,
        cause: error.to_string(),

        last_unix_ms: now_ms(),
        count: state.count,
    };
    state.alarm = Some((Instant::now(), alarm));
    drop(state);
    if logs::kinds::LOCAL_FAILURES.allow() {
        warn!(resource = resource.as_str(), site, at = %what, %error, "ALARM: the proxy ran short of its own resources; no backend is blamed");
    }
}

/// The alarm, while active (a local failure less than [`ALARM_HOLD`] ago); clears the
/// gauge once it is not.
pub fn alarm() -> Option<LocalAlarm> {
    let state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    match &state.alarm {
        Some((at, alarm)) if at.elapsed() < ALARM_HOLD => Some(alarm.clone()),
        _ => {
            metrics::gauge!(m::LOCAL_ALARM).set(0.0);
            None
        }
    }
}

/// Descriptors one proxied session holds: the client's and the backend's sockets.
pub const DESCRIPTORS_PER_SESSION: u64 = 2;
/// Descriptors the process holds besides sessions: the runtime, logs, listeners'
/// spare, the admin port's clients.
pub const DESCRIPTORS_BASE: u64 = 64;
/// Descriptors kept free for checks and the admin port: 64 for checks' reconnects and
/// the admin port's cap of 64 connections (`admin::serve::MAX_CONNECTIONS`), so that
/// neither sessions nor an admin flood can take a check's descriptor.
pub const DESCRIPTORS_RESERVE: u64 = 128;

/// The descriptors `config` can need at once: every listener's `max_connections` ×
/// [`DESCRIPTORS_PER_SESSION`], one per check (a kept probe connection), the listeners
/// themselves, the base and the reserve.
pub fn descriptor_budget(config: &Config) -> u64 {
    let sessions: u64 = config
        .listeners
        .iter()
        .map(|l| l.max_connections as u64 * DESCRIPTORS_PER_SESSION)
        .sum();
    let fixed = config.backends.len() as u64 + config.listeners.len() as u64 + 1;
    sessions + fixed + DESCRIPTORS_BASE + DESCRIPTORS_RESERVE
}

/// Sessions the process may carry at once under `limit` descriptors: what is left
/// after one per check, one per listening socket, the base and the reserve, two per
/// session. Past it, listeners stop accepting (clients wait in the backlog) and the
/// reserve stays free for checks and the admin port.
pub fn session_budget(config: &Config, limit: Option<u64>) -> usize {
    let Some(limit) = limit else {
        return tokio::sync::Semaphore::MAX_PERMITS;
    };
    let sockets = (config.listeners.len() * config.workers) as u64;
    let fixed = config.backends.len() as u64 + sockets + DESCRIPTORS_BASE + DESCRIPTORS_RESERVE;
    let budget = limit.saturating_sub(fixed) / DESCRIPTORS_PER_SESSION;
    budget.clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u64) as usize
}

/// RLIMIT_NOFILE's soft and hard limits (`None`: unlimited).
pub fn descriptor_limit() -> (Option<u64>, Option<u64>) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (limit.current, limit.maximum)
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the limit in force.
pub fn raise_descriptor_limit() -> io::Result<Option<u64>> {
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(limit.current);
    }
    limit.current = limit.maximum;
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
    Ok(limit.current)
}

/// The warning for `config` against a limit of `limit` descriptors, if it can run
/// short.
pub fn budget_warning(config: &Config, limit: Option<u64>) -> Option<String> {
    let need = descriptor_budget(config);
    let limit = limit?;
    (need > limit).then(|| {
        format!(
            "the listeners' max_connections × {DESCRIPTORS_PER_SESSION} descriptors per session, plus one per check \
             and a reserve of {DESCRIPTORS_RESERVE}, can need {need} descriptors, more than the limit of {limit} \
             (RLIMIT_NOFILE): lower max_connections or raise the limit (LimitNOFILE=, ulimit -n)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxys_own_shortages_are_local() {
        for (errno, resource) in [
            (libc::EMFILE, Resource::Descriptors),
            (libc::ENFILE, Resource::Descriptors),
            (libc::ENOBUFS, Resource::Buffers),
            (libc::ENOMEM, Resource::Memory),
            (libc::EADDRNOTAVAIL, Resource::Ports),
        ] {
            assert_eq!(classify(&io::Error::from_raw_os_error(errno)), Some(resource));
        }
        for errno in [
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
            libc::EHOSTUNREACH,
            libc::ECONNRESET,
        ] {
            assert_eq!(classify(&io::Error::from_raw_os_error(errno)), None);
        }
        assert_eq!(classify(&io::Error::other("no errno")), None);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let raised = raise_descriptor_limit().unwrap();
        assert_eq!(descriptor_limit(), (raised, raised));
    }
}
