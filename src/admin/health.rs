//! Liveness and readiness, for an HA manager (keepalived's `track_script`) or
//! Kubernetes probes.
//!
//! - `GET /health/live`: 200 while the process serves its admin port (also while it
//!   drains: restarting a draining proxy would only cut its sessions sooner).
//! - `GET /health/ready`: 200 when this proxy can take new clients: the config is
//!   loaded and every listener bound (the admin port only opens after that), it is
//!   not draining, and every pool with `required = true` routes to a backend, or at
//!   least reaches one of its members and has routed nothing for less than its
//!   `hold_timeout`. The last clause keeps both proxies of a pair ready while a
//!   database failover leaves a primary pool without a primary for a moment (its
//!   replicas are up, sessions are held); a proxy that lost its route to the
//!   databases sees every member down and answers 503 with the reason, and one that
//!   reaches only some of them (no primary) gives up once its held sessions would
//!   time out. When every database is down, both proxies of a pair are not ready.
//!   Readiness is answered by the control plane: it speaks for the checks and the
//!   routing table, not for each data-plane thread (a hung or dead process answers
//!   nothing at all, which fails the check too).
//! - `GET /health`: as before (200 serving; 503 draining or before every backend was
//!   checked once).
//!
//! [`readiness`] is the rule, pure; the handlers gather its inputs.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use crate::health::Status;

/// What readiness knows of one required pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    /// The pool's name, for the reason.
    pub name: String,
    /// Members the routing table routes to now.
    pub routable: usize,
    /// Members whose last checks found them up, whatever their role.
    pub up: usize,
    /// Members not checked yet.
    pub unchecked: usize,
    /// Whether the pool has routed nothing for longer than its `hold_timeout`.
    pub unroutable_too_long: bool,
}

/// `Ok` when the proxy is ready; otherwise why not, one line.
pub fn readiness(draining: bool, required: &[PoolHealth]) -> Result<(), String> {
    if draining {
        return Err("draining".into());
    }
    let mut reasons = Vec::new();
    for pool in required {
        if pool.routable > 0 || (pool.up > 0 && !pool.unroutable_too_long) {
            continue;
        }
        reasons.push(if pool.up > 0 {
            format!(
                "pool {}: members reachable, but none routable for longer than its hold_timeout",
                pool.name
            )
        } else if pool.unchecked > 0 {
            format!("pool {}: not every member checked yet", pool.name)
        } else {
            format!("pool {}: no member reachable", pool.name)
        });
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join("; "))
    }
}

/// `GET /health/live`.
pub async fn live() -> Response {
    (StatusCode::OK, "live\n").into_response()
}

/// `GET /health/ready`.
pub async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    let table = state.routing.load();
    let required: Vec<PoolHealth> = state
        .topology
        .load()
        .pools
        .iter()
        .filter(|pool| pool.config.required)
        .map(|pool| {
            let statuses: Vec<Status> = pool.members.iter().map(|m| m.backend.view().status).collect();
            PoolHealth {
                name: pool.name().to_string(),
                routable: table.routable(pool.id).len(),
                up: statuses.iter().filter(|s| **s == Status::Up).count(),
                unchecked: statuses.iter().filter(|s| **s == Status::Unknown).count(),
                unroutable_too_long: pool.unroutable_for().is_some_and(|d| d > pool.config.hold_timeout),
            }
        })
        .collect();
    match readiness(state.is_draining(), &required) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(routable: usize, up: usize, unchecked: usize) -> PoolHealth {
        PoolHealth {
            name: "db".into(),
            routable,
            up,
            unchecked,
            unroutable_too_long: false,
        }
    }

    #[test]
    fn ready_while_every_required_pool_routes_or_reaches_a_member() {
        assert_eq!(readiness(false, &[]), Ok(()), "no required pool");
        assert_eq!(readiness(false, &[pool(1, 3, 0)]), Ok(()));
        // A failover: no primary for a moment, the replicas up; sessions are held.
        assert_eq!(readiness(false, &[pool(0, 2, 0)]), Ok(()));
    }

    #[test]
    fn not_ready_when_a_required_pool_reaches_nothing_or_when_draining() {
        let lost = readiness(false, &[pool(1, 1, 0), pool(0, 0, 0)]).unwrap_err();
        assert_eq!(lost, "pool db: no member reachable");
        let starting = readiness(false, &[pool(0, 0, 3)]).unwrap_err();
        assert!(starting.contains("not every member checked"), "{starting}");
        assert_eq!(readiness(true, &[pool(1, 3, 0)]), Err("draining".into()));
        // Replicas reachable but no primary for longer than the hold: give way.
        let stuck = PoolHealth {
            unroutable_too_long: true,
            ..pool(0, 2, 0)
        };
        assert!(readiness(false, &[stuck]).unwrap_err().contains("hold_timeout"));
    }
}
