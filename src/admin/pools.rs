//! `POST /pools/{name}/hold[?for=DURATION][&drain=DURATION]` and
//! `POST /pools/{name}/release`: an operator's hold of a pool's new sessions, and
//! the drain of its current members' sessions at idle points.
//!
//! With `drain`, the answer waits until the drained members have no session left or
//! the drain's deadline passed, and says what is left: an orchestrator demotes the old
//! primary once it answers, and knows whether any session was still busy.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::time::Instant;

use super::{authorized, command, AdminState};
use crate::config::MAX_HOLD;
use crate::pool::Pool;
use crate::routing::AdminAction;

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
        let left = pool.drained(Instant::now() + drain).await;
        body["drained"] = left
            .into_iter()
            .map(|(backend, sessions_left)| serde_json::json!({ "backend": backend, "sessions_left": sessions_left }))
            .collect();
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
