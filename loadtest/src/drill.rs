//! One scenario against one target, end to end: a fresh cluster, the target in front
//! of it, the workload and the faults at once, then the checks and the numbers.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use std::net::IpAddr;
use std::path::Path;

use switchyard_lab::mariadb::{Cluster, Placement};
use switchyard_lab::netns::{HaNet, Host};

use crate::fault::{FaultRecord, Faults, PrimaryTimeline};
use crate::ha::{self, HaFigures, VipMove};
use crate::measure::{self, Latency, Second};
use crate::pair::Pair;
use crate::peers::Peers;
use crate::scenario::{Scenario, WorkloadKind};
use crate::target::{Target, TargetKind};
use crate::workload::{self, Op, OpKind, Progress};

/// A moment the proxy recorded (switchyard only), ms since the drill started.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyMarker {
    pub label: String,
    pub at_ms: f64,
}

/// Everything a drill measured.
#[derive(Debug, Clone, Serialize)]
pub struct DrillResult {
    pub target: TargetKind,
    pub scenario: String,
    pub duration_s: u32,
    pub writes_ok: u64,
    pub writes_failed: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
    pub write_latency: Latency,
    pub read_latency: Latency,
    /// Per fault: from the moment it took effect (primary killed or read-only; else
    /// injected) to the end of the first successful write started after it, ms.
    pub outage_ms: Vec<Option<f64>>,
    pub longest_write_gap_ms: f64,
    pub errors: BTreeMap<String, u64>,
    /// Writes acknowledged by a server that was not the primary then (must be 0);
    /// `None` where the protocol does not say which server acknowledged (all but MySQL).
    pub acked_by_non_primary: Option<usize>,
    /// Acknowledged writes not found on the final primary afterwards (0 expected when
    /// the promoted replica had caught up); `None` for peers that store nothing.
    pub missing_writes: Option<usize>,
    /// Scripted MongoDB members: `hello`s answered while a member claimed primary with
    /// a stale term (so the proxy's checks saw the claim); `None` for other peers.
    pub stale_primary_hellos: Option<usize>,
    pub seconds: Vec<Second>,
    pub faults: Vec<FaultRecord>,
    pub timeline: PrimaryTimeline,
    pub proxy_markers: Vec<ProxyMarker>,
    /// HA pair drills: the VIP's moves and one line of figures per fault.
    pub vip_moves: Vec<VipMove>,
    /// HA pair drills: see [`crate::ha`].
    pub ha: Vec<HaFigures>,
    /// HA pair drills: acknowledged writes by the proxy host that carried them.
    pub acks_via: BTreeMap<String, u64>,
    /// Per fault: every operation within 2 s of it, for the report's close-ups.
    pub zooms: Vec<crate::report::zoom::Zoom>,
}

/// Runs `scenario` through `kind` on fresh peers, printing progress. The HA pair
/// (`switchyard-pair`) runs the binary `SWITCHYARD_BIN` names, else the release
/// build; see [`run_pair`].
pub async fn run(scenario: &Scenario, kind: TargetKind) -> Result<DrillResult> {
    if kind == TargetKind::Pair {
        let binary = std::env::var_os("SWITCHYARD_BIN").map_or_else(crate::sysbench::default_binary, Into::into);
        return run_pair(scenario, &binary).await;
    }
    let workload_kind = scenario.workload.kind;
    let peers = Arc::new(Peers::start(workload_kind).await?);
    let target = Target::start(kind, &peers, workload_kind).await?;
    await_ready(target.addr, workload_kind)
        .await
        .with_context(|| format!("{kind} never served a request"))?;

    let t0 = Instant::now();
    let t0_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0);
    let progress = Arc::new(Progress::default());
    let faults = Faults::new(peers.clone());
    let fault_task = tokio::spawn(faults.run(scenario.faults.clone(), t0));
    let ticker = tokio::spawn(report_progress(kind, progress.clone(), scenario.duration, t0));
    let ops = workload::run(target.addr, scenario.workload, scenario.duration, t0, progress).await;
    let (faults, timeline, final_primary) = fault_task.await?;
    ticker.abort();
    eprintln!();

    let proxy_markers = target
        .failovers()
        .iter()
        .flat_map(|e| {
            [
                ("proxy detected", e.fault_observed_ms),
                ("routing swapped", e.new_routed_ms),
                ("first session", e.first_session_ms),
            ]
            .into_iter()
            .filter_map(|(label, at)| {
                Some(ProxyMarker {
                    label: label.into(),
                    at_ms: at? as f64 - t0_unix_ms,
                })
            })
        })
        .collect();
    target.stop().await;
    let stored = peers.stored_ids(final_primary).await?;
    let mut result = summarize(scenario, kind, &ops, faults, timeline, proxy_markers, stored.as_ref());
    if let Peers::Mongo(set) = &*peers {
        result.stale_primary_hellos = Some(set.lock().expect("set lock").stale_hellos());
    }
    tokio::task::spawn_blocking(move || drop(peers)).await?;
    Ok(result)
}

fn summarize(
    scenario: &Scenario,
    target: TargetKind,
    ops: &[Op],
    faults: Vec<FaultRecord>,
    timeline: PrimaryTimeline,
    proxy_markers: Vec<ProxyMarker>,
    stored: Option<&HashSet<u64>>,
) -> DrillResult {
    // Which server acknowledged a write is known for MySQL (`@@server_id`) and the
    // scripted MongoDB members (`labMember` in the write reply).
    let knows_acker = matches!(scenario.workload.kind, WorkloadKind::Mysql | WorkloadKind::Mongo);
    let count = |kind: OpKind, ok: bool| ops.iter().filter(|o| o.kind == kind && o.result.is_ok() == ok).count() as u64;
    let duration_s = scenario.duration.as_secs() as u32;
    let zooms = faults
        .iter()
        .map(|f| {
            let at_ms = f.effective_ms.unwrap_or(f.injected_ms);
            crate::report::zoom::Zoom {
                at_ms,
                points: crate::report::zoom::points(ops, at_ms),
            }
        })
        .collect();
    DrillResult {
        target,
        scenario: scenario.name.clone(),
        duration_s,
        writes_ok: count(OpKind::Write, true),
        writes_failed: count(OpKind::Write, false),
        reads_ok: count(OpKind::Read, true),
        reads_failed: count(OpKind::Read, false),
        write_latency: measure::latency(ops, OpKind::Write),
        read_latency: measure::latency(ops, OpKind::Read),
        outage_ms: faults
            .iter()
            .map(|f| measure::outage_after(ops, f.effective_ms.unwrap_or(f.injected_ms)))
            .collect(),
        longest_write_gap_ms: measure::longest_write_gap(ops, scenario.duration.as_secs_f64() * 1000.0),
        errors: measure::errors_by_kind(ops),
        acked_by_non_primary: knows_acker.then(|| measure::acked_by_non_primary(ops, &timeline).len()),
        missing_writes: stored.map(|present| measure::missing_writes(ops, present).len()),
        stale_primary_hellos: None,
        seconds: measure::per_second(ops, duration_s),
        faults,
        timeline,
        proxy_markers,
        vip_moves: Vec::new(),
        ha: Vec::new(),
        acks_via: BTreeMap::new(),
        zooms,
    }
}

/// Runs `scenario` (a MySQL workload) through an HA pair of `binary` processes in
/// network namespaces: the cluster on the database host, the clients on the client
/// host (their threads enter its namespace), keepalived's VIP in between.
pub async fn run_pair(scenario: &Scenario, binary: &Path) -> Result<DrillResult> {
    if scenario.workload.kind != WorkloadKind::Mysql {
        anyhow::bail!("the HA pair drills a MySQL workload");
    }
    let (peers, cluster, pair) = start_pair(binary).await?;
    let (addr, client_ns) = (pair.addr(), pair.net.ns(Host::Client));
    let proxies: Vec<(String, String)> = [Host::Proxy1, Host::Proxy2]
        .into_iter()
        .map(|h| (pair.net.ip(h).to_string(), h.name().to_string()))
        .collect();
    let pair = Arc::new(std::sync::Mutex::new(pair));
    in_namespace(&client_ns, move || async move {
        await_ready(addr, WorkloadKind::Mysql).await
    })
    .await?
    .context("the pair never served a write through its VIP")?;

    let t0 = Instant::now();
    let t0_unix_ms = unix_ms();
    let progress = Arc::new(Progress::default());
    let faults = Faults {
        peers: peers.clone(),
        landed_ms: None,
        cluster: Some(cluster),
        primary: 0,
        dead: Vec::new(),
        pair: Some(pair.clone()),
        dead_proxies: Vec::new(),
    };
    let fault_task = tokio::spawn(faults.run(scenario.faults.clone(), t0));
    let ticker = tokio::spawn(report_progress(
        TargetKind::Pair,
        progress.clone(),
        scenario.duration,
        t0,
    ));
    let (workload, duration) = (scenario.workload, scenario.duration);
    let ops = in_namespace(&client_ns, move || {
        workload::run(addr, workload, duration, t0, progress)
    })
    .await?;
    let (faults, timeline, final_primary) = fault_task.await?;
    ticker.abort();
    eprintln!();

    let moves = vip_moves(&pair.lock().expect("pair lock"), t0_unix_ms);
    let markers = moves
        .iter()
        .map(|m| ProxyMarker {
            label: format!("VIP to {}", m.to),
            at_ms: m.at_ms,
        })
        .collect();
    let stored = peers.stored_ids(final_primary).await?.unwrap_or_default();
    let mut result = summarize(
        scenario,
        TargetKind::Pair,
        &ops,
        faults,
        timeline,
        markers,
        Some(&stored),
    );
    let duration_ms = duration.as_secs_f64() * 1000.0;
    result.ha = ha::figures(&ops, &result.faults, &moves, &result.timeline, &stored, duration_ms);
    result.vip_moves = moves;
    result.acks_via = acks_via(&ops, &proxies);
    // The databases first (their processes live in the pair's namespaces), then the pair.
    tokio::task::spawn_blocking(move || {
        drop(peers);
        drop(pair);
    })
    .await?;
    Ok(result)
}

/// The pair's network, the cluster on its database host, and the pair in front.
async fn start_pair(binary: &Path) -> Result<(Arc<Peers>, Arc<std::sync::Mutex<Cluster>>, Pair)> {
    let net = tokio::task::spawn_blocking(HaNet::up).await??;
    let placement = Placement {
        netns: Some(net.ns(Host::Db)),
        host: IpAddr::V4(net.ip(Host::Db)),
        spread: Vec::new(),
    };
    let peers = Arc::new(Peers::mysql(placement).await?);
    let Peers::Mysql(cluster) = &*peers else {
        unreachable!("Peers::mysql starts a cluster")
    };
    let cluster = cluster.clone();
    let (binary, for_pair) = (binary.to_path_buf(), cluster.clone());
    let pair = tokio::task::spawn_blocking(move || Pair::start(net, &for_pair.lock().expect("cluster lock"), &binary))
        .await??;
    Ok((peers, cluster, pair))
}

/// keepalived's MASTER transitions, in ms since the drill started.
fn vip_moves(pair: &Pair, t0_unix_ms: f64) -> Vec<VipMove> {
    pair.transitions()
        .into_iter()
        .filter(|t| t.state == "MASTER")
        .map(|t| VipMove {
            at_ms: t.at_unix_ms - t0_unix_ms,
            to: t.host,
        })
        .collect()
}

/// Acknowledged writes by the proxy host that carried them (`proxies`: address,
/// name).
fn acks_via(ops: &[Op], proxies: &[(String, String)]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for op in ops.iter().filter(|o| o.kind == OpKind::Write && o.result.is_ok()) {
        let via = op.via.as_deref().unwrap_or("?");
        let name = proxies
            .iter()
            .find(|(ip, _)| ip == via)
            .map_or(via, |(_, name)| name.as_str());
        *counts.entry(name.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Runs the future `make` builds on a thread of its own that entered the network
/// namespace `ns` first (with a runtime of its own: its sockets live there).
async fn in_namespace<F>(ns: &str, make: impl FnOnce() -> F + Send + 'static) -> Result<F::Output>
where
    F: std::future::Future,
    F::Output: Send + 'static,
{
    let ns = ns.to_string();
    let thread = std::thread::spawn(move || -> Result<F::Output> {
        switchyard_lab::netns::enter(&ns)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(runtime.block_on(make()))
    });
    tokio::task::spawn_blocking(move || thread.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?).await?
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}

/// Waits until one operation through the target succeeds (it has found a backend).
async fn await_ready(addr: std::net::SocketAddr, kind: WorkloadKind) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !workload::ready(addr, kind).await {
        if Instant::now() > deadline {
            anyhow::bail!("no operation succeeded within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn report_progress(kind: TargetKind, progress: Arc<Progress>, duration: Duration, t0: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        eprint!(
            "\r[{kind}] {:>3}/{}s  ok {:>6}  failed {:>5}",
            t0.elapsed().as_secs(),
            duration.as_secs(),
            progress.ok.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed)
        );
    }
}
