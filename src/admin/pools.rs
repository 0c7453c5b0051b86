//! `POST /pools/{name}/hold[?for=DURATION][&drain=DURATION]` and
//! `POST /pools/{name}/release`: an operator's hold of a pool's new sessions, and
//! the drain of its current members' sessions at idle points.
//!
//! With `drain`, the answer waits until the drained members have no session left or
//! the drain's deadline passed, and says what is left: an orchestrator demotes the old
//! primary once it answers, and knows whether any session was still busy.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::time::Instant;

use super::{authorized, command, AdminState};
use crate::pool::{Eviction, Pool};
use crate::routing::AdminAction;

/// The longest hold an operator may ask for.
pub(super) const MAX_HOLD: Duration = Duration::from_secs(600);
/// How often a drain's answer looks at the sessions left.
const DRAIN_POLL: Duration = Duration::from_millis(20);

pub(super) async fn verb(
    State(state): State<Arc<AdminState>>,
    Path((name, verb)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorized(&state, &headers) {
        return *refused;
    }
    let Some(pool) = state.topology.load().pool(&name).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no pool named {name:?}\n")).into_response();
    };
    let action = match verb.as_str() {
        "hold" => match hold(&pool, uri.query().unwrap_or("")) {
            Ok(action) => action,
            Err(expected) => return (StatusCode::BAD_REQUEST, expected).into_response(),
        },
        "release" => AdminAction::Release { pool: pool.id },
        _ => return (StatusCode::NOT_FOUND, "verbs: hold, release\n").into_response(),
    };
    let generation = match command(&state, action).await {
        Ok(generation) => generation,
        Err(refused) => return *refused,
    };
    let mut body = serde_json::json!({
        "pool": name,
        "held_until_ms": pool.held_until(),
        "generation": generation,
    });
    if let AdminAction::Hold { drain: Some(drain), .. } = action {
        body["drained"] = drained(&pool, Instant::now() + drain).await;
    }
    Json(body).into_response()
}

/// The hold a query asks for: `for` (default: the pool's `hold_timeout`), and `drain`
/// (at most `for`).
fn hold(pool: &Pool, query: &str) -> Result<AdminAction, String> {
    let value = |key: &str| query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
    let deadline = match value("for").map(crate::duration::parse) {
        None => pool.config.hold_timeout,
        Some(Ok(d)) if !d.is_zero() && d <= MAX_HOLD => d,
        Some(_) => {
            return Err(format!(
                "for=DURATION (above zero, at most {})\n",
                crate::duration::format(MAX_HOLD)
            ))
        }
    };
    let drain = match value("drain").map(crate::duration::parse) {
        None => None,
        Some(Ok(d)) if !d.is_zero() && d <= deadline => Some(d),
        Some(_) => {
            return Err(format!(
                "drain=DURATION (above zero, at most the hold's {})\n",
                crate::duration::format(deadline)
            ))
        }
    };
    Ok(AdminAction::Hold {
        pool: pool.id,
        deadline,
        drain,
    })
}

/// Waits until the drained members of `pool` have no session left, or until `by` (and
/// a moment for the last ones to close); the sessions left on each.
async fn drained(pool: &Pool, by: Instant) -> serde_json::Value {
    let draining = || {
        pool.members
            .iter()
            .filter(|m| matches!(m.eviction_now(), Eviction::AtIdle(_)))
    };
    let limit = by + Duration::from_secs(1);
    while draining().any(|m| m.active() > 0) && Instant::now() < limit {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    draining()
        .map(|m| serde_json::json!({ "backend": m.backend.name, "sessions_left": m.active() }))
        .collect()
}
