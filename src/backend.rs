//! The runtime side of a configured backend: its address, the [`Attention`] its
//! checker listens to (nudge, urgency) and the last view the router recorded for
//! `/status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::Histogram;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{BackendConfig, BackendId, Config};
use crate::health::{Attention, Layer, Report, Role, Status};
use crate::metrics as m;
use crate::stats::Recorder;
use crate::tls::ClientTls;

/// One backend, shared by every pool it is a member of.
#[derive(Debug)]
pub struct Backend {
    /// Its slot: the index the router and the routing table know it by. At start the
    /// same as its index in the config; a reload gives a new or changed backend a slot
    /// never used before.
    pub id: BackendId,
    /// Its configured name, which labels its metrics and names it in `/status` and the
    /// admin API.
    pub name: String,
    /// Where sessions and health checks connect to.
    pub address: SocketAddr,
    /// The local address they connect from, when configured.
    pub source: Option<std::net::IpAddr>,
    /// A PROXY protocol header before every session's and check's first byte.
    pub send_proxy: Option<crate::protocol::proxy_header::Version>,
    /// TLS to this backend on the data path, when configured.
    pub tls: Option<ClientTls>,
    /// Its address came from a host name followed by TTL: a new one takes no traffic
    /// before its first check, whatever its pool's `initial_state`.
    pub follows_dns: bool,
    /// Shared with its checker.
    pub attention: Arc<Attention>,
    view: watch::Sender<BackendView>,
    /// Health check round trips, µs (recorded by the router).
    pub check: Recorder,
    /// Records `CHECK_SECONDS` for this backend (the router records each check).
    pub check_seconds: Histogram,
}

/// An operator's override of a backend, set through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminMode {
    /// Routed when healthy.
    #[default]
    Enabled,
    /// No new sessions; open sessions go on until they end.
    Draining,
    /// No new sessions; open sessions are closed as each pool's `on_leave` says.
    Disabled,
}

/// What `/status` shows of a backend; written by the router only.
#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    /// The backend's name.
    pub name: String,
    /// The backend's address.
    pub address: SocketAddr,
    /// Up, down or not checked yet, after hysteresis.
    pub status: Status,
    /// The role its last passing check reported (`Unknown` until one does).
    pub role: Role,
    /// The operator's override.
    pub admin: AdminMode,
    /// What the last passing check reported (replication state, server id, ...).
    pub report: Option<Report>,
    /// The latest check's outcome, pass or fail; `None` before the first.
    pub last_check: Option<LastCheck>,
}

/// The outcome of a backend's latest health check, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastCheck {
    /// Whether the check passed.
    pub ok: bool,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The layer it failed at, when it did.
    pub layer: Option<Layer>,
    /// The check's round trip (serialized in milliseconds).
    #[serde(serialize_with = "as_millis")]
    pub latency: Duration,
    /// Unix time in milliseconds.
    pub at_unix_ms: u128,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl LastCheck {
    /// A `LastCheck` stamped with the current wall-clock time.
    pub fn now(ok: bool, error: Option<String>, layer: Option<Layer>, latency: Duration) -> Self {
        let at_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        LastCheck {
            ok,
            error,
            layer,
            latency,
            at_unix_ms,
        }
    }
}

impl Backend {
    /// One backend per entry of `config.backends`, each with its index as its id.
    pub fn all(config: &Config) -> Vec<Arc<Backend>> {
        config
            .backends
            .iter()
            .enumerate()
            .map(|(id, b)| Arc::new(Backend::new(id, b)))
            .collect()
    }

    /// Builds backend `id` from its config: name, address, data-path TLS and its
    /// `CHECK_SECONDS` histogram; its view starts `Unknown` and enabled.
    pub fn new(id: BackendId, config: &BackendConfig) -> Self {
        Backend {
            id,
            name: config.name.clone(),
            address: config.address,
            source: config.source,
            send_proxy: config.send_proxy,
            follows_dns: config
                .resolve
                .as_ref()
                .is_some_and(|r| r.mode == crate::config::ResolveMode::Ttl),
            tls: config.tls.as_ref().map(|tls| ClientTls::new(&config.name, tls)),
            attention: Arc::default(),
            check: Recorder::default(),
            check_seconds: metrics::histogram!(m::CHECK_SECONDS, "backend" => config.name.clone()),
            view: watch::Sender::new(BackendView {
                name: config.name.clone(),
                address: config.address,
                status: Status::Unknown,
                role: Role::Unknown,
                admin: AdminMode::Enabled,
                report: None,
                last_check: None,
            }),
        }
    }

    /// Asks the checker for an early re-check (the data path failed to connect).
    pub fn nudge(&self) {
        self.attention.nudge();
    }

    /// Set by the router while a pool this backend serves has nothing routable, so
    /// its checker uses the fast interval.
    pub fn set_urgent(&self, urgent: bool) {
        self.attention.set_urgent(urgent);
    }

    /// A copy of the view the router last recorded.
    pub fn view(&self) -> BackendView {
        self.view.borrow().clone()
    }

    /// Sees every update of the view (tests await a status with it).
    pub fn watch_view(&self) -> watch::Receiver<BackendView> {
        self.view.subscribe()
    }

    /// Only the router calls this.
    pub fn update_view(&self, update: impl FnOnce(&mut BackendView)) {
        self.view.send_modify(update);
    }
}
