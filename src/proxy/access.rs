//! The access log: one line per session at its end, on the `switchyard::access` target
//! at INFO, inside the session's span (listener, pool, client, backend, TLS version
//! and SNI come from it). The line adds the cause, the phase times and the bytes:
//!
//! ```text
//! INFO session{listener=db pool=primary client=10.0.0.5:51234 backend=db1 tls="TLSv1.3" sni="db.example"}:
//!   switchyard::access: session cause=client-closed duration_ms=412.301 hold_ms=0.0
//!   connect_ms=0.212 tls_ms=1.804 from_client=1802 from_backend=90311
//! ```
//!
//! A [`Phases`] is filled as the session passes each phase (a few words on its
//! future, no allocation); [`write`] formats it only when the line is wanted
//! ([`crate::logging::access_wanted`]: the access log's switch and sampling).

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::Ended;
#[cfg(test)]
use super::LoginEnd;

/// Microseconds, saturating; [`Micros::NONE`] for a phase the session did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Micros(u32);

impl Micros {
    pub(super) const NONE: Micros = Micros(u32::MAX);

    pub(super) fn of(d: Duration) -> Micros {
        Micros(u32::try_from(d.as_micros()).unwrap_or(u32::MAX - 1))
    }

    fn ms(self) -> Option<f64> {
        (self != Micros::NONE).then(|| f64::from(self.0) / 1000.0)
    }
}

/// What a session did, phase by phase.
#[derive(Debug)]
pub(super) struct Phases {
    pub(super) accepted: Instant,
    /// The client's TLS handshake (`tcp` and `mongo` listeners with TLS; in `mysql`
    /// mode both handshakes are part of `login`).
    pub(super) tls: Micros,
    /// From the session's arrival to the start of the connect that succeeded: failed
    /// attempts and waiting for a routable member.
    pub(super) hold: Micros,
    /// The connect that succeeded.
    pub(super) connect: Micros,
    /// The TLS handshake with the backend.
    pub(super) backend_tls: Micros,
    /// `mysql` mode: the connection phase, from the backend's answer to the OK.
    pub(super) login: Micros,
    pub(super) from_client: u64,
    pub(super) from_backend: u64,
    /// Why the copy failed, when it did.
    pub(super) error: Option<std::io::ErrorKind>,
}

impl Phases {
    pub(super) fn new() -> Phases {
        Phases {
            accepted: Instant::now(),
            tls: Micros::NONE,
            hold: Micros::NONE,
            connect: Micros::NONE,
            backend_tls: Micros::NONE,
            login: Micros::NONE,
            from_client: 0,
            from_backend: 0,
            error: None,
        }
    }
}

impl Ended {
    /// The access log's word for it.
    pub fn cause(self) -> &'static str {
        match self {
            Ended::ClientClosed => "client-closed",
            Ended::BackendClosed => "backend-closed",
            Ended::Failed => "error",
            Ended::Idle => "idle-timeout",
            Ended::Fenced => "fenced",
            Ended::IdlePoint => "drained-at-idle-point",
            Ended::NotPrimary => "not-primary",
            Ended::Shutdown => "shutdown",
            Ended::NoBackend => "no-backend-within-hold",
            Ended::ConnectFailed => "connect-failed",
            Ended::LocalShortage => "proxy-short-of-resources",
            Ended::Handshake => "client-tls-failed",
            Ended::BackendTls => "backend-tls-failed",
            Ended::Login(_) => "login-refused",
        }
    }

    /// A normal end (either side closed, or idle): sampled by `log.access_sample`.
    pub fn normal(self) -> bool {
        matches!(self, Ended::ClientClosed | Ended::BackendClosed | Ended::Idle)
    }
}

/// Writes the session's access line, if the access log wants it.
pub(super) fn write(phases: &Phases, ended: Ended) {
    if !crate::logging::access_wanted(ended.normal()) {
        return;
    }
    // Sessions live for days: the duration is not capped as the phases are.
    let duration = phases.accepted.elapsed().as_micros() as f64 / 1000.0;
    info!(
        target: "switchyard::access",
        cause = %ended.cause(),
        duration_ms = duration,
        hold_ms = phases.hold.ms(),
        connect_ms = phases.connect.ms(),
        tls_ms = phases.tls.ms(),
        backend_tls_ms = phases.backend_tls.ms(),
        login_ms = phases.login.ms(),
        from_client = phases.from_client,
        from_backend = phases.from_backend,
        error = phases.error.map(tracing::field::display),
        reason = match ended {
            Ended::Login(why) => Some(why.reason()),
            _ => None,
        },
        "session"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_not_passed_has_no_time_and_long_ones_saturate() {
        assert_eq!(Micros::NONE.ms(), None);
        assert_eq!(Micros::of(Duration::from_micros(1500)).ms(), Some(1.5));
        // A phase (hold, connect, handshakes, login) is bounded by its timeouts; one
        // past 71 minutes reads as 71 minutes (the session's duration is not capped).
        let long = Micros::of(Duration::from_secs(10_000));
        assert_ne!(long, Micros::NONE, "a long phase is still a phase");
        assert_eq!(long.ms(), Some(f64::from(u32::MAX - 1) / 1000.0));
    }

    #[test]
    fn only_closes_and_idle_ends_are_normal() {
        let all = [
            Ended::ClientClosed,
            Ended::BackendClosed,
            Ended::Failed,
            Ended::Idle,
            Ended::Fenced,
            Ended::IdlePoint,
            Ended::NotPrimary,
            Ended::Shutdown,
            Ended::NoBackend,
            Ended::ConnectFailed,
            Ended::LocalShortage,
            Ended::Handshake,
            Ended::BackendTls,
            Ended::Login(LoginEnd::Timeout),
        ];
        let normal: Vec<&str> = all.iter().filter(|e| e.normal()).map(|e| e.cause()).collect();
        assert_eq!(normal, ["client-closed", "backend-closed", "idle-timeout"]);
        let mut causes: Vec<&str> = all.iter().map(|e| e.cause()).collect();
        causes.sort_unstable();
        causes.dedup();
        assert_eq!(causes.len(), all.len(), "every end has its own word");
    }
}
