//! The admin HTTP listener (loopback by default):
//!
//! - `GET /health`: 200 while serving; 503 while draining or before every backend
//!   has been checked once, so a VIP or an upstream load balancer moves away first.
//! - `GET /health/live` and `GET /health/ready`: for HA managers and Kubernetes
//!   probes (see [`health`]).
//! - `GET /status`: JSON — pools (routable members, alarm, percentiles), every
//!   backend's state, role, replication report, last check and check percentiles,
//!   the failover timeline and the recent events.
//! - `GET /events`: the recent events alone.
//! - `GET /metrics`: Prometheus text.
//! - `GET /ui`: a self-contained status page (no external assets) that refreshes
//!   itself from `/status`.
//! - `POST /pools/{name}/hold[?for=10s]|release`: an operator's hold of a pool's new
//!   sessions (they wait, as while it has no member), e.g. around a switchover an
//!   orchestrator runs; the bearer token, as below.
//! - `POST /backends/{name}/drain|disable|enable`: operator overrides; they need
//!   `Authorization: Bearer <admin.token>` and are refused when no token is set.
//! - `POST /config/reload`: re-reads the config file and applies the difference (see
//!   `app::reload`); same token. 200 with what changed; 422 with the error
//!   `check-config` prints when the file is invalid (nothing changes).
//! - `POST /tls/reload`: re-reads every TLS listener's certificate, key and CA files
//!   and every backend's CA bundle and client certificate (as SIGHUP does); same token. 200 when all loaded, 422 when one kept its old
//!   certificate (the body says which file and why).

pub mod client;
pub mod health;
mod pools;
pub mod serve;
mod status;
mod switchover;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use status::{StatusBody, STATUS_PAGE};

use crate::backend::AdminMode;
use crate::config::Secret;
use crate::health::Status;
use crate::routing::{AdminAction, AdminCommand, Routing};
use crate::timeline::Timeline;
use crate::topology::Topology;

/// What the admin handlers read.
pub struct AdminState {
    /// What the process serves now (config, backends, pools, TLS listeners); a reload
    /// swaps it.
    pub topology: ArcSwap<Topology>,
    /// The published routing table, read for `/status`.
    pub routing: Arc<Routing>,
    /// Set when shutdown begins; `/health` answers 503 from then on.
    pub draining: AtomicBool,
    /// Set once `/health` found every backend checked: from then on an unchecked
    /// backend (one a reload added) does not make it answer 503.
    pub checked_once: AtomicBool,
    /// The Prometheus recorder's handle, rendered on `/metrics`.
    pub metrics: PrometheusHandle,
    /// The failover and event record behind `/status` and `/events`.
    pub timeline: Arc<Timeline>,
    /// Sends the operator overrides (`drain`, `disable`, `enable`) to the router.
    pub commands: mpsc::Sender<AdminCommand>,
    /// Where config reloads are sent (the reloader runs with the router).
    pub reloads: mpsc::Sender<crate::app::ReloadRequest>,
    /// The fleet this proxy belongs to (`[cluster]`), for `/status`.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl AdminState {
    /// Whether shutdown has begun (`/health` then answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Re-reads every TLS listener's certificates and every backend's CA bundle and
    /// client certificate; per listener and backend, `Ok` or why it kept its previous
    /// files. Live sessions are not touched.
    pub fn reload_tls(&self) -> Vec<Reloaded> {
        reload_tls_files(&self.topology.load())
    }

    /// Asks the reloader to re-read the config file (`config: None`) or to apply
    /// `config`, and waits for the outcome.
    pub async fn reload(
        &self,
        config: Option<crate::config::Config>,
    ) -> Result<crate::app::ReloadReport, crate::app::ReloadError> {
        let (reply, outcome) = oneshot::channel();
        let request = crate::app::ReloadRequest { config, reply };
        if self.reloads.send(request).await.is_err() {
            return Err(crate::app::ReloadError::Stopping);
        }
        outcome.await.unwrap_or(Err(crate::app::ReloadError::Stopping))
    }

    /// The bearer token the `POST` calls need; with `None` they are refused.
    pub fn token(&self) -> Option<Secret> {
        self.topology.load().config.admin.as_ref().and_then(|a| a.token.clone())
    }
}

/// Re-reads the TLS files of `topology`'s listeners and backends.
pub fn reload_tls_files(topology: &Topology) -> Vec<Reloaded> {
    let listeners = topology.tls.iter().map(|tls| Reloaded {
        kind: "listener",
        name: tls.listener().to_string(),
        result: tls.reload().map_err(|e| e.to_string()),
    });
    let backends = topology.backends.iter().filter_map(|b| {
        b.tls.as_ref().map(|tls| Reloaded {
            kind: "backend",
            name: b.name.clone(),
            result: tls.reload().map_err(|e| e.to_string()),
        })
    });
    listeners.chain(backends).collect()
}

/// The outcome of reloading one listener's or backend's TLS files.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// `listener` or `backend`.
    pub kind: &'static str,
    /// The listener's or backend's name.
    pub name: String,
    /// `Ok`, or why it kept its previous files.
    pub result: Result<(), String>,
}

impl Reloaded {
    /// As the admin API shows it.
    pub fn json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ self.kind: self.name, "reloaded": self.result.is_ok() });
        if let Err(e) = &self.result {
            body["error"] = e.clone().into();
        }
        body
    }
}

/// Serves the admin routes on a thread of its own (a current-thread runtime), apart
/// from the checkers, the router and the data plane; the returned future ends when
/// that thread has stopped.
pub fn run_on_own_thread(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (ended, on_end) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("switchyard-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => run(listener, state, shutdown).await,
                    Err(e) => tracing::error!(error = %e, "cannot register the admin socket; no admin listener"),
                }
            });
            let _ = ended.send(());
        })?;
    Ok(async move {
        let _ = on_end.await;
    })
}

/// Serves the admin HTTP routes on `listener` until `shutdown` is cancelled, then
/// shuts down gracefully.
pub async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/status", get(status::status))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/ui", get(ui))
        .route("/backends/{name}/{verb}", post(verb))
        .route("/pools/{name}/switchover", post(switchover::post))
        .route("/pools/{name}/{verb}", post(pools::verb))
        .route("/tls/reload", post(reload_tls))
        .route("/config/reload", post(reload_config))
        .with_state(state);
    serve::serve(listener, app, shutdown).await;
}

async fn health(State(state): State<Arc<AdminState>>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    // Only at start: a backend a reload adds is unchecked for a moment, which is no
    // reason to take the whole proxy out of a load balancer.
    if !state.checked_once.load(Ordering::Relaxed)
        && state
            .topology
            .load()
            .backends
            .iter()
            .any(|b| b.view().status == Status::Unknown)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: not every backend checked yet\n",
        )
            .into_response();
    }
    state.checked_once.store(true, Ordering::Relaxed);
    (StatusCode::OK, "serving\n").into_response()
}

async fn events(State(state): State<Arc<AdminState>>) -> Response {
    Json(state.timeline.events()).into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    ::metrics::counter!(crate::metrics::LOG_LINES_DROPPED).absolute(crate::logging::dropped_lines());
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render())
}

async fn ui() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = state.token() else {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "admin calls are disabled: set [admin] token in the config\n",
            )
                .into_response(),
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        if crate::logs::kinds::BAD_TOKENS.allow() {
            warn!("admin: refused a call without the right bearer token");
        }
        Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                "a valid `Authorization: Bearer <token>` header is required\n",
            )
                .into_response(),
        ))
    }
}

async fn verb(
    State(state): State<Arc<AdminState>>,
    Path((name, verb)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorized(&state, &headers) {
        return *refused;
    }
    let mode = match verb.as_str() {
        "drain" => AdminMode::Draining,
        "disable" => AdminMode::Disabled,
        "enable" => AdminMode::Enabled,
        _ => return (StatusCode::NOT_FOUND, "verbs: drain, disable, enable\n").into_response(),
    };
    let Some(backend) = state.topology.load().backend(&name).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no backend named {name:?}\n")).into_response();
    };
    match command(
        &state,
        AdminAction::Backend {
            backend: backend.id,
            mode,
        },
    )
    .await
    {
        Ok(generation) => {
            Json(serde_json::json!({ "backend": name, "mode": mode, "generation": generation })).into_response()
        }
        Err(refused) => *refused,
    }
}

/// Sends an operator command to the router; the generation that includes it.
pub(crate) async fn command(state: &AdminState, action: AdminAction) -> Result<u64, Box<Response>> {
    AdminCommand::send(&state.commands, action)
        .await
        .map_err(|why| Box::new((StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()))
}

async fn reload_tls(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorized(&state, &headers) {
        return *refused;
    }
    // File reads: off the async workers.
    let reloading = state.clone();
    let Ok(results) = tokio::task::spawn_blocking(move || reloading.reload_tls()).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the reload task failed\n").into_response();
    };
    let all_ok = results.iter().all(|r| r.result.is_ok());
    let body: Vec<_> = results.iter().map(Reloaded::json).collect();
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, Json(body)).into_response()
}

/// How long `POST /config/reload` waits for the reloader.
const RELOAD_LIMIT: Duration = Duration::from_secs(60);

async fn reload_config(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorized(&state, &headers) {
        return *refused;
    }
    use crate::app::ReloadError;
    match tokio::time::timeout(RELOAD_LIMIT, state.reload(None)).await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e @ (ReloadError::Invalid(_) | ReloadError::Bind { .. }))) => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response()
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the reload did not finish within {RELOAD_LIMIT:?}\n"),
        )
            .into_response(),
    }
}
