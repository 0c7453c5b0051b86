//! The admin HTTP listener (loopback by default):
//!
//! - `GET /health`: 200 while serving; 503 while draining or before every backend
//!   has been checked once, so a VIP or an upstream load balancer moves away first.
//! - `GET /status`: JSON with pools (routable members, alarm), every backend's
//!   state, role, replication report and last check, and the failover timeline.
//! - `GET /metrics`: Prometheus text.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::backend::{Backend, BackendView};
use crate::config::{Policy, PoolRole};
use crate::duration;
use crate::health::Status;
use crate::pool::Pool;
use crate::routing::Routing;
use crate::timeline::{FailoverEvent, Timeline};

/// What the admin handlers read.
pub struct AdminState {
    pub backends: Vec<Arc<Backend>>,
    pub pools: Vec<Arc<Pool>>,
    pub routing: Arc<Routing>,
    pub draining: AtomicBool,
    pub metrics: PrometheusHandle,
    pub timeline: Arc<Timeline>,
}

impl AdminState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

pub async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        error!(error = %e, "admin listener failed");
    }
}

async fn health(State(state): State<Arc<AdminState>>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if state.backends.iter().any(|b| b.view().status == Status::Unknown) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: not every backend checked yet\n",
        )
            .into_response();
    }
    (StatusCode::OK, "serving\n").into_response()
}

#[derive(Serialize)]
struct StatusBody {
    generation: u64,
    draining: bool,
    pools: Vec<PoolStatus>,
    backends: Vec<BackendView>,
    /// Failover events, oldest first.
    failovers: Vec<FailoverEvent>,
}

#[derive(Serialize)]
struct PoolStatus {
    name: String,
    role: PoolRole,
    policy: Policy,
    hold_timeout: String,
    routable: Vec<String>,
    /// Set while the pool has an alarm (two writable backends).
    alarm: Option<String>,
    members: Vec<MemberStatus>,
}

#[derive(Serialize)]
struct MemberStatus {
    backend: String,
    routable: bool,
    active_sessions: usize,
}

async fn status(State(state): State<Arc<AdminState>>) -> Json<StatusBody> {
    let table = state.routing.load();
    let pools = state
        .pools
        .iter()
        .map(|pool| {
            let routable = table.routable_names(pool.id);
            PoolStatus {
                name: pool.name().to_string(),
                role: pool.config.role,
                policy: pool.config.policy,
                hold_timeout: duration::format(pool.config.hold_timeout),
                alarm: pool.alarm(),
                members: pool
                    .members
                    .iter()
                    .map(|m| MemberStatus {
                        backend: m.backend.name.clone(),
                        routable: routable.contains(&m.backend.name),
                        active_sessions: m.active(),
                    })
                    .collect(),
                routable,
            }
        })
        .collect();
    Json(StatusBody {
        generation: table.generation,
        draining: state.is_draining(),
        pools,
        backends: state.backends.iter().map(|b| b.view()).collect(),
        failovers: state.timeline.events(),
    })
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render())
}
