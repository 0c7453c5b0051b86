//! The `/status` document and the `/ui` page that renders it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::AdminState;
use crate::backend::BackendView;
use crate::config::{Policy, PoolRole};
use crate::duration;
use crate::stats::Summary;
use crate::timeline::{Event, FailoverEvent};

/// The status page: plain HTML, inline CSS and JS, no external assets.
pub const STATUS_PAGE: &str = include_str!("ui.html");

/// The `/status` JSON document.
#[derive(Serialize)]
pub struct StatusBody {
    /// The PID of the process answering (after a hot upgrade, the new one's).
    pub pid: u32,
    /// The generation of the routing table it was built from.
    pub generation: u64,
    /// Whether shutdown has begun.
    pub draining: bool,
    /// Every listener: its name, bound address and pool.
    pub listeners: Vec<ListenerStatus>,
    /// Every pool: its routable members, alarm and percentiles.
    pub pools: Vec<PoolStatus>,
    /// Every backend: its view and health check percentiles.
    pub backends: Vec<BackendStatus>,
    /// Failover events, oldest first.
    pub failovers: Vec<FailoverEvent>,
    /// Set while the proxy ran short of its own resources (descriptors, memory, ports)
    /// in the last 30 s: a local fault, blamed on no backend.
    pub local_alarm: Option<crate::local::LocalAlarm>,
    /// Recent events, oldest first.
    pub events: Vec<Event>,
    /// The fleet this proxy belongs to (`[cluster]` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// This proxy in its fleet, on `/status`.
#[derive(Serialize)]
pub struct FleetStatus {
    /// Its name in the fleet.
    pub name: String,
    /// Whether etcd answers.
    pub store_up: bool,
    /// The backends whose checker key it holds (it checks them for the fleet).
    pub checking: Vec<String>,
}

/// A listener on `/status`.
#[derive(Serialize)]
pub struct ListenerStatus {
    /// Its configured name.
    pub name: String,
    /// Where it is bound.
    pub address: std::net::SocketAddr,
    /// The pool it routes to.
    pub pool: String,
}

#[derive(Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub role: PoolRole,
    pub policy: Policy,
    pub hold_timeout: String,
    pub routable: Vec<String>,
    /// Set while the pool has an alarm (two writable backends).
    pub alarm: Option<String>,
    /// Set while an operator holds the pool's new sessions: until when (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until_ms: Option<u64>,
    /// Primary pools of a fleet: the verdict's epoch and primary, and the fleet alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::pool::FleetView>,
    /// Primary Redis pools with Sentinels: the master they name, or a failover under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<crate::pool::SentinelView>,
    /// Connect latency to its members, µs.
    pub connect_us: Summary,
    /// Session duration, µs.
    pub session_us: Summary,
    /// Bytes per session.
    pub session_bytes: Summary,
    /// Time held sessions waited, µs.
    pub hold_us: Summary,
    pub members: Vec<MemberStatus>,
}

#[derive(Serialize)]
pub struct MemberStatus {
    pub backend: String,
    pub routable: bool,
    pub active_sessions: usize,
    pub connect_us: Summary,
    pub session_us: Summary,
    pub session_bytes: Summary,
}

#[derive(Serialize)]
pub struct BackendStatus {
    #[serde(flatten)]
    pub view: BackendView,
    /// Health check round trip, µs.
    pub check_us: Summary,
}

pub async fn status(State(state): State<Arc<AdminState>>) -> Json<StatusBody> {
    let table = state.routing.load();
    let topology = state.topology.load();
    let pools = topology
        .pools
        .iter()
        .map(|pool| {
            let routable = table.routable_names(pool.id);
            let stats = || pool.members.iter().map(|m| &m.stats);
            PoolStatus {
                name: pool.name().to_string(),
                role: pool.config.role,
                policy: pool.config.policy,
                hold_timeout: duration::format(pool.config.hold_timeout),
                alarm: pool.alarm(),
                held_until_ms: pool.held_until(),
                fleet: (state.fleet.is_some() && pool.config.role == PoolRole::Primary).then(|| pool.fleet()),
                sentinel: pool.config.sentinel.is_some().then(|| pool.sentinel()),
                connect_us: Summary::merge(stats().map(|s| &s.connect)),
                session_us: Summary::merge(stats().map(|s| &s.duration)),
                session_bytes: Summary::merge(stats().map(|s| &s.bytes)),
                hold_us: pool.hold.summary(),
                members: pool
                    .members
                    .iter()
                    .map(|m| MemberStatus {
                        backend: m.backend.name.clone(),
                        routable: routable.contains(&m.backend.name),
                        active_sessions: m.active(),
                        connect_us: m.stats.connect.summary(),
                        session_us: m.stats.duration.summary(),
                        session_bytes: m.stats.bytes.summary(),
                    })
                    .collect(),
                routable,
            }
        })
        .collect();
    let listeners = topology
        .config
        .listeners
        .iter()
        .zip(&topology.listeners)
        .map(|(config, (name, address))| ListenerStatus {
            name: name.clone(),
            address: *address,
            pool: config.pool.name.clone(),
        })
        .collect();
    Json(StatusBody {
        pid: std::process::id(),
        generation: table.generation,
        draining: state.is_draining(),
        listeners,
        pools,
        backends: topology
            .backends
            .iter()
            .map(|b| BackendStatus {
                view: b.view(),
                check_us: b.check.summary(),
            })
            .collect(),
        failovers: state.timeline.failovers(),
        local_alarm: crate::local::alarm(),
        events: state.timeline.events(),
        fleet: state.fleet.as_ref().map(|fleet| FleetStatus {
            name: fleet.config().name.clone(),
            store_up: fleet.store_up(),
            checking: fleet.holding(),
        }),
    })
}
