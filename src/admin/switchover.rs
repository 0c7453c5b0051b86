//! `POST /pools/{name}/switchover` with `{"to": "BACKEND"}` (or `?to=BACKEND`): an
//! orchestrated switchover (see [`crate::switchover`]). The answer comes when it is
//! over: 200 with the report when the target is the primary, 409 when a check before
//! any change refused it, 500 when a step failed and was undone (the report says which
//! step, why, and what was undone). The switchover runs on a task of its own, so it
//! finishes (or is undone) even if the client goes away.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{authorized, AdminState};
use crate::switchover::{self, Context};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    to: String,
}

pub(super) async fn post(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorized(&state, &headers) {
        return *refused;
    }
    let from_query = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("to=")))
        .map(str::to_string);
    let to = match (from_query, body.is_empty()) {
        (Some(to), true) => to,
        (None, false) => match serde_json::from_slice::<Request>(&body) {
            Ok(request) => request.to,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"to\": \"BACKEND\"}}: {e}\n"),
                )
                    .into_response()
            }
        },
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "name the target once: {\"to\": \"BACKEND\"} or ?to=BACKEND\n",
            )
                .into_response()
        }
    };
    // On a task of its own: a client that goes away must not stop a switchover halfway
    // (its undo and the release must run whatever happens to the answer).
    let running = tokio::spawn(async move {
        let ctx = Context {
            topology: &state.topology,
            router: &state.commands,
            timeline: &state.timeline,
        };
        switchover::run(&ctx, &name, &to).await
    });
    let report = match running.await {
        Ok(report) => report,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the switchover task failed: {e}\n"),
            )
                .into_response()
        }
    };
    let code = match &report.failed {
        None => StatusCode::OK,
        Some(failed) if failed.step == "check" => StatusCode::CONFLICT,
        Some(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(report)).into_response()
}
