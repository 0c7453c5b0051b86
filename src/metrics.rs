//! Every metric name, in one place, and the process-wide Prometheus recorder.
//!
//! Labels: `pool`, `backend` and `layer` on the request and health paths;
//! `listener` on what belongs to a listener (TLS handshakes, moved sessions), with
//! `reason`, `version` or `certificate` where a TLS series needs them; `outcome` on
//! reloads. Each constant below names its own. Handles are created once, when the
//! runtime objects are built, so the data path increments a counter without a
//! registry lookup.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Sessions accepted and connected to a backend. Labels: pool, backend.
pub const SESSIONS: &str = "switchyard_sessions_total";
/// Sessions currently open. Labels: pool.
pub const SESSIONS_ACTIVE: &str = "switchyard_sessions_active";
/// Bytes from clients to backends. Labels: pool, backend.
pub const BYTES_UPSTREAM: &str = "switchyard_bytes_upstream_total";
/// Bytes from backends to clients. Labels: pool, backend.
pub const BYTES_DOWNSTREAM: &str = "switchyard_bytes_downstream_total";
/// Of the bytes both ways, those moved by splice(2), never copied through user space.
/// Labels: pool, backend.
pub const BYTES_SPLICED: &str = "switchyard_bytes_spliced_total";
/// Connections accepted on one data-plane thread and served on a less busy one.
/// Labels: listener.
pub const SESSIONS_MOVED: &str = "switchyard_sessions_moved_total";
/// Failed connects from the data path. Labels: pool, backend, layer.
pub const CONNECT_FAILURES: &str = "switchyard_connect_failures_total";
/// Sessions closed because their backend left the pool. Labels: pool, backend.
pub const FENCED_SESSIONS: &str = "switchyard_fenced_sessions_total";
/// Counter {pool, backend}: `mysql`-mode sessions a drain closed at an idle point.
pub const SESSIONS_CLOSED_IDLE: &str = "switchyard_sessions_closed_idle_total";
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
/// Health probes that panicked (each counted as a failed check at L7). Labels: backend.
pub const PROBE_PANICS: &str = "switchyard_probe_panics_total";
/// Checker tasks that died and were restarted (an alarm). Labels: backend.
pub const CHECKER_RESTARTS: &str = "switchyard_checker_restarts_total";
/// Failures caused by the proxy's own shortage (descriptors, buffers, memory, ports),
/// blamed on no backend. Labels: resource, site (check, connect, accept).
pub const LOCAL_FAILURES: &str = "switchyard_local_failures_total";
/// 1 while the local-resources alarm is active (a local failure in the last 30 s).
pub const LOCAL_ALARM: &str = "switchyard_local_alarm";
/// Admin connections closed at once because [`crate::admin::serve::MAX_CONNECTIONS`]
/// were open.
pub const ADMIN_REFUSED: &str = "switchyard_admin_refused_total";
/// From the end of a check to the routing table its observation changed, seconds:
/// the router's part of a failover.
pub const SWAP_SECONDS: &str = "switchyard_swap_seconds";
/// Config reloads. Labels: outcome (applied, rejected).
pub const CONFIG_RELOADS: &str = "switchyard_config_reloads_total";
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
/// 1 for the backend a primary pool routes to, 0 for its other members. Labels: pool, backend.
pub const PRIMARY: &str = "switchyard_primary";
/// TLS handshakes completed on a listener. Labels: listener, version, certificate
/// (the SNI name that chose it, or `default`).
pub const TLS_HANDSHAKES: &str = "switchyard_tls_handshakes_total";
/// TLS handshakes that failed on a listener. Labels: listener, reason (`timeout`,
/// `closed`, `rejected`: plaintext, garbage, no acceptable client certificate).
pub const TLS_HANDSHAKE_FAILURES: &str = "switchyard_tls_handshake_failures_total";
/// Certificate reloads. Labels: listener, outcome (`ok`, `failed`).
pub const TLS_RELOADS: &str = "switchyard_tls_reloads_total";
/// When a listener's certificate expires, Unix seconds. Labels: listener, certificate.
pub const TLS_CERT_EXPIRY: &str = "switchyard_tls_certificate_expiry_timestamp_seconds";
/// Backend TLS reloads (CA bundle, client certificate). Labels: backend, outcome.
pub const BACKEND_TLS_RELOADS: &str = "switchyard_backend_tls_reloads_total";
/// TLS handshakes to backends that failed on the data path. Labels: pool, backend.
pub const BACKEND_TLS_FAILURES: &str = "switchyard_backend_tls_failures_total";
/// Client connections closed for their PROXY protocol header. Labels: listener,
/// reason (`untrusted`, `timeout`, `malformed`, `closed`).
pub const PROXY_HEADERS_REFUSED: &str = "switchyard_proxy_headers_refused_total";
/// MySQL clients refused because they did not ask for TLS (`require_tls`). Labels: listener.
pub const MYSQL_PLAINTEXT_REFUSED: &str = "switchyard_mysql_plaintext_refused_total";
/// MySQL logins the proxy could not carry through (bad greeting, bad packet,
/// timeout). Labels: listener, reason.
pub const MYSQL_LOGIN_FAILURES: &str = "switchyard_mysql_login_failures_total";

/// 1 while an operator holds a pool's new sessions (`POST /pools/NAME/hold`). Labels: pool.
pub const POOL_HELD: &str = "switchyard_pool_held";
/// Sessions waiting now for a routable member that answers. Labels: pool.
pub const SESSIONS_HELD: &str = "switchyard_sessions_held";
/// Changes of a primary pool's primary (a failover event opened; the first choice at
/// start is one). Labels: pool.
pub const FAILOVERS: &str = "switchyard_failovers_total";
/// 1 while etcd answers this proxy of a fleet (`[cluster]`), 0 while it is out of reach.
pub const FLEET_STORE_UP: &str = "switchyard_fleet_store_up";
/// The epoch (etcd revision) of a primary pool's verdict. Labels: pool.
pub const POOL_EPOCH: &str = "switchyard_pool_epoch";
/// Verdicts this proxy tried to write. Labels: pool, outcome (`won`, `lost`: another
/// proxy wrote first).
pub const FLEET_VERDICT_WRITES: &str = "switchyard_fleet_verdict_writes_total";
/// Observations this proxy published as a backend's checker.
pub const FLEET_OBSERVATIONS_PUBLISHED: &str = "switchyard_fleet_observations_published_total";
/// Histogram: from a verdict's writing (its writer's clock) to the routing table here
/// that follows it, seconds.
pub const FLEET_PROPAGATION_SECONDS: &str = "switchyard_fleet_propagation_seconds";

/// DNS lookups of host-named backends (`resolve = "ttl"`), by backend and outcome.
pub const DNS_LOOKUPS: &str = "switchyard_dns_lookups_total";
/// Times a host-named backend's addresses changed and its members followed.
pub const DNS_CHANGES: &str = "switchyard_dns_changes_total";
/// Log lines dropped because the log's writer thread fell behind.
pub const LOG_LINES_DROPPED: &str = "switchyard_log_lines_dropped_total";

/// Histogram: connect latency to a backend, seconds. Labels: pool, backend.
pub const CONNECT_SECONDS: &str = "switchyard_connect_seconds";
/// Histogram: health check round trip, seconds. Labels: backend.
pub const CHECK_SECONDS: &str = "switchyard_check_seconds";
/// Histogram: time a new session waited for a routable backend, seconds. Labels: pool.
pub const HOLD_SECONDS: &str = "switchyard_hold_seconds";
/// Histogram: session duration, seconds. Labels: pool, backend.
pub const SESSION_SECONDS: &str = "switchyard_session_seconds";
/// Histogram: bytes per session, both directions. Labels: pool, backend.
pub const SESSION_BYTES: &str = "switchyard_session_bytes";

/// Buckets for the `_seconds` histograms: 100 µs to 30 s, roughly ×2.5 apart, so a
/// sub-millisecond connect and a multi-second hold both land in a useful bucket.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];
/// Buckets for bytes per session: 64 B to 1 GiB, ×4 apart.
pub const BYTES_BUCKETS: [f64; 13] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
];

/// Installs the Prometheus recorder once per process and returns its handle. Later
/// calls (several proxies in one test process) share it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(SESSION_BYTES.into()), &BYTES_BUCKETS))
                .expect("static, non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program's);
            // then ours still renders what is recorded through its own handle only.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Present from the start, so a dashboard and an alert rule see the 0.
            metrics::gauge!(LOCAL_ALARM).set(0.0);
            handle
        })
        .clone()
}

/// How often recorded histogram samples are folded into their buckets when nobody
/// scrapes `/metrics`.
pub const UPKEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `fold` (`PrometheusHandle::run_upkeep`: folds pending histogram samples into
/// buckets) every `period` until `stop`. The recorder keeps every sample until then (a
/// scrape does it too), so without this a proxy nobody scrapes grows without bound
/// (figures: `docs/performance.md`).
pub async fn upkeep(fold: impl Fn(), period: std::time::Duration, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => fold(),
            _ = stop.cancelled() => return,
        }
    }
}

/// HELP text for every metric (promtool and dashboards want it).
fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(SESSIONS, "Sessions connected to a backend.");
    describe_gauge!(SESSIONS_ACTIVE, "Sessions open now.");
    describe_counter!(BYTES_UPSTREAM, Unit::Bytes, "Bytes from clients to backends.");
    describe_counter!(BYTES_DOWNSTREAM, Unit::Bytes, "Bytes from backends to clients.");
    describe_counter!(
        BYTES_SPLICED,
        Unit::Bytes,
        "Of the bytes both ways, those moved by splice(2) without a copy through user space."
    );
    describe_counter!(
        SESSIONS_MOVED,
        "Connections accepted on one data-plane thread and served on a less busy one."
    );
    describe_counter!(CONNECT_FAILURES, "Failed connects from the data path, by layer.");
    describe_counter!(FENCED_SESSIONS, "Sessions closed because their backend left the pool.");
    describe_counter!(
        SESSIONS_CLOSED_IDLE,
        "MySQL sessions a drain closed at an idle point (no command in flight, no transaction open)."
    );
    describe_counter!(HOLDS, "Sessions that waited for a routable backend.");
    describe_counter!(
        HOLD_TIMEOUTS,
        "Sessions closed because no backend appeared within hold_timeout."
    );
    describe_gauge!(ROUTABLE_BACKENDS, "Backends a pool routes new sessions to now.");
    describe_checks_and_the_rest();
    describe_fleet();
}

/// HELP text for the checks, the router, TLS and the histograms.
fn describe_fleet() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(POOL_HELD, "1 while an operator holds a pool's new sessions.");
    describe_gauge!(
        SESSIONS_HELD,
        "Sessions waiting now for a routable backend that answers."
    );
    describe_counter!(
        FAILOVERS,
        "Changes of a primary pool's primary, the first choice at start included."
    );
    describe_gauge!(
        FLEET_STORE_UP,
        "1 while etcd answers (a [cluster] proxy), 0 while it is out of reach."
    );
    describe_gauge!(
        POOL_EPOCH,
        "The epoch (etcd revision) of a primary pool's fleet verdict."
    );
    describe_counter!(
        FLEET_VERDICT_WRITES,
        "Fleet verdicts this proxy tried to write, by outcome (won, lost)."
    );
    describe_counter!(
        FLEET_OBSERVATIONS_PUBLISHED,
        "Observations this proxy published as the fleet's checker of a backend."
    );
    describe_histogram!(
        FLEET_PROPAGATION_SECONDS,
        Unit::Seconds,
        "From a fleet verdict's writing to the routing table here that follows it."
    );
}

fn describe_checks_and_the_rest() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CHECKS, "Health checks run.");
    describe_counter!(CHECK_FAILURES, "Failed health checks, by layer.");
    describe_counter!(
        PROBE_PANICS,
        "Health probes that panicked, each counted as a failed check at L7."
    );
    describe_counter!(
        CHECKER_RESTARTS,
        "Checker tasks that died and were restarted with backoff (an alarm)."
    );
    describe_counter!(
        LOCAL_FAILURES,
        "Failures caused by the proxy's own shortage of descriptors, buffers, memory or ports; no backend is blamed."
    );
    describe_gauge!(LOCAL_ALARM, "1 while the local-resources alarm is active.");
    describe_counter!(
        ADMIN_REFUSED,
        "Admin connections closed at once because the admin connection cap was reached."
    );
    describe_histogram!(
        SWAP_SECONDS,
        Unit::Seconds,
        "From the end of a check to the routing table its observation changed (the router's part of a failover)."
    );
    describe_counter!(FLIPS, "Up/down flips of a backend.");
    describe_counter!(
        CONFIG_RELOADS,
        "Config reloads, by outcome (applied; rejected: the running config stayed)."
    );
    describe_gauge!(BACKEND_UP, "1 when a backend is up, 0 otherwise.");
    describe_counter!(
        ALARMS,
        "Alarms raised: more than one writable backend in a primary pool."
    );
    describe_gauge!(ALARM_ACTIVE, "1 while a pool's alarm is active.");
    describe_counter!(
        TLS_HANDSHAKES,
        "TLS handshakes completed on a listener, by version and certificate."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS handshakes that failed on a listener, by reason."
    );
    describe_counter!(TLS_RELOADS, "TLS certificate reloads, by outcome.");
    describe_gauge!(TLS_CERT_EXPIRY, "When a listener's certificate expires, Unix seconds.");
    describe_counter!(
        BACKEND_TLS_FAILURES,
        "TLS handshakes to a backend that failed on the data path."
    );
    describe_counter!(
        PROXY_HEADERS_REFUSED,
        "Client connections closed for their PROXY protocol header, by reason."
    );
    describe_counter!(
        MYSQL_PLAINTEXT_REFUSED,
        "MySQL clients refused because they did not ask for TLS."
    );
    describe_counter!(
        MYSQL_LOGIN_FAILURES,
        "MySQL logins the proxy could not carry through, by reason."
    );
    describe_gauge!(
        ROUTING_GENERATION,
        "Routing table generation; grows by one per published change."
    );
    describe_gauge!(
        PRIMARY,
        "1 for the backend a primary pool routes to, 0 for its other members."
    );
    describe_counter!(
        DNS_LOOKUPS,
        "DNS lookups of host-named backends, by backend (its name in the file) and outcome (ok, error)."
    );
    describe_counter!(
        DNS_CHANGES,
        "Times a host-named backend resolved to other addresses and its members followed."
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines dropped, not waited for, because the log's writer fell behind."
    );
    describe_histogram!(CONNECT_SECONDS, Unit::Seconds, "Connect latency to a backend.");
    describe_histogram!(CHECK_SECONDS, Unit::Seconds, "Health check round trip.");
    describe_histogram!(
        HOLD_SECONDS,
        Unit::Seconds,
        "Time a new session waited for a routable backend."
    );
    describe_histogram!(SESSION_SECONDS, Unit::Seconds, "Session duration.");
    describe_histogram!(SESSION_BYTES, Unit::Bytes, "Bytes per session, both directions.");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn upkeep_runs_every_period_until_stopped() {
        let runs = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let counting = runs.clone();
        let fold = move || {
            counting.fetch_add(1, Ordering::SeqCst);
        };
        let task = tokio::spawn(upkeep(fold, Duration::from_millis(10), stop.clone()));
        let repeated = async {
            while runs.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), repeated)
            .await
            .expect("upkeep repeats");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("upkeep stops when told")
            .unwrap();
    }
}
