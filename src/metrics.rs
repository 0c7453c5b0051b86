//! Every metric name, in one place, and the process-wide Prometheus recorder.
//!
//! Labels are only `pool`, `backend`, `layer` (and later `role`). Handles are created
//! once, when the runtime objects are built, so the data path increments a counter
//! without a registry lookup.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Sessions accepted and connected to a backend. Labels: pool, backend.
pub const SESSIONS: &str = "switchyard_sessions_total";
/// Sessions currently open. Labels: pool.
pub const SESSIONS_ACTIVE: &str = "switchyard_sessions_active";
/// Bytes from clients to backends. Labels: pool, backend.
pub const BYTES_UPSTREAM: &str = "switchyard_bytes_upstream_total";
/// Bytes from backends to clients. Labels: pool, backend.
pub const BYTES_DOWNSTREAM: &str = "switchyard_bytes_downstream_total";
/// Failed connects from the data path. Labels: pool, backend, layer.
pub const CONNECT_FAILURES: &str = "switchyard_connect_failures_total";
/// Sessions closed because their backend left the pool. Labels: pool, backend.
pub const FENCED_SESSIONS: &str = "switchyard_fenced_sessions_total";
/// Sessions that had to wait for a routable backend. Labels: pool.
pub const HOLDS: &str = "switchyard_holds_total";
/// Sessions closed because no backend appeared within `hold_timeout`. Labels: pool.
pub const HOLD_TIMEOUTS: &str = "switchyard_hold_timeouts_total";
/// Routable backends right now (emitted at zero too). Labels: pool.
pub const ROUTABLE_BACKENDS: &str = "switchyard_routable_backends";
/// Health checks run. Labels: backend.
pub const CHECKS: &str = "switchyard_checks_total";
/// Failed health checks. Labels: backend, layer.
pub const CHECK_FAILURES: &str = "switchyard_check_failures_total";
/// Up/down flips. Labels: backend.
pub const FLIPS: &str = "switchyard_flips_total";
/// 1 when a backend is up, 0 otherwise. Labels: backend.
pub const BACKEND_UP: &str = "switchyard_backend_up";
/// Alarms raised (two writable backends in a primary pool). Labels: pool.
pub const ALARMS: &str = "switchyard_alarms_total";
/// 1 while a pool's alarm is active. Labels: pool.
pub const ALARM_ACTIVE: &str = "switchyard_alarm_active";
/// The routing table generation (one per published change).
pub const ROUTING_GENERATION: &str = "switchyard_routing_generation";

/// Installs the Prometheus recorder once per process and returns its handle. Later
/// calls (several proxies in one test process) share it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program's);
            // then ours still renders what is recorded through its own handle only.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
