//! `switchyard-drill fleet`: a fleet of switchyard processes (the release binary, small
//! configs: one primary pool over a 3-node MariaDB cluster, checks every 250 ms) on
//! one 3-member etcd, plus simulated watchers of the verdict key, measured in one run:
//!
//! - full probes per backend per check interval (MariaDB's `USER_STATISTICS`: the
//!   monitor user's SELECTs, one per probe) and monitor logins per node, first with
//!   `shared_checks = false` (every proxy judges alone: the reference), then shared;
//! - etcd requests per second (`grpc_server_handled_total` of every member), steady
//!   and through a failover;
//! - a failover (kill -9 of the primary, a replica promoted): from the verdict's
//!   writing to each proxy's routing swap (its failover event), and to each
//!   simulated watcher's event, p50/p99; writes through ten of the proxies, and how
//!   many a node acknowledged outside its time as the primary.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchyard_lab::{etcd, mariadb};

mod procs;
mod watchers;

use procs::Fleet;

/// The check interval of every proxy.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub proxies: usize,
    pub watchers: usize,
    /// Probes per backend per interval (the busiest node), alone and shared.
    pub probes: (f64, f64),
    /// Monitor logins on the busiest node, alone and shared.
    pub logins: (usize, usize),
    /// etcd requests per second, steady (shared) and during the failover.
    pub etcd_rps: (f64, f64),
    /// Verdict writing → routing swap, per proxy, ms.
    pub propagation_ms: Vec<u64>,
    /// Verdict writing → watch event, per simulated watcher, ms.
    pub watch_ms: Vec<u64>,
    pub acks: usize,
    pub wrong_node_acks: usize,
    /// Verdict compare-and-swaps of the failover, won and lost, summed over the fleet.
    pub cas: (f64, f64),
}

fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(work)
}

/// Runs the whole measurement with `proxies` processes and `watchers` watchers.
pub async fn run(binary: &Path, proxies: usize, watchers: usize) -> Result<Figures> {
    let (etcd, db) = tokio::join!(
        blocking(|| etcd::Cluster::start(3)),
        blocking(|| mariadb::Cluster::start(3))
    );
    let (etcd, mut db) = (etcd??, db??);
    for node in 0..3 {
        db.sql(node, "SET GLOBAL userstat = 1; SET GLOBAL max_connections = 2000")?;
    }
    let endpoints = etcd.endpoints();
    let mut figures = Figures {
        proxies,
        watchers,
        ..Figures::default()
    };
    // The reference: every proxy judges alone.
    let alone = Fleet::start(binary, &db, &endpoints, proxies, false, "/bench-alone").await?;
    alone.await_routed("db1", Duration::from_secs(60)).await?;
    figures.probes.0 = probes(&db, Duration::from_secs(5)).await?;
    figures.logins.0 = logins(&db)?;
    drop(alone);
    // Shared checks.
    let fleet = Fleet::start(binary, &db, &endpoints, proxies, true, "/bench").await?;
    fleet.await_routed("db1", Duration::from_secs(60)).await?;
    let settled = Instant::now() + Duration::from_secs(30);
    while logins(&db)? > 1 && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = etcd_requests(&etcd).await?;
    let window = Instant::now();
    figures.probes.1 = probes(&db, Duration::from_secs(10)).await?;
    figures.logins.1 = logins(&db)?;
    figures.etcd_rps.0 = (etcd_requests(&etcd).await? - before) / window.elapsed().as_secs_f64();
    // The failover, watched by the fleet and the simulated watchers.
    let key = "/bench/pools/writer/primary";
    let watching = watchers::start(&endpoints, key, watchers).await?;
    let writers = fleet.writers(10);
    tokio::time::sleep(Duration::from_secs(1)).await; // writes before the fault
    let before = etcd_requests(&etcd).await?;
    let window = Instant::now();
    db.kill9(0)?;
    let killed = switchyard::timeline::now_ms();
    tokio::task::block_in_place(|| -> Result<()> {
        db.promote(1)?;
        db.repoint(2, 1)
    })?;
    fleet.await_routed("db2", Duration::from_secs(60)).await?;
    figures.etcd_rps.1 = (etcd_requests(&etcd).await? - before) / window.elapsed().as_secs_f64();
    let verdict: serde_json::Value =
        serde_json::from_str(etcd.ctl(&["get", key, "--print-value-only"])?.trim()).context("the verdict is JSON")?;
    let written = verdict["at_ms"].as_u64().context("the verdict has at_ms")?;
    figures.propagation_ms = fleet.propagation("db2", written).await?;
    figures.cas = fleet.verdict_writes().await?;
    figures.watch_ms = watching.delays(written, Duration::from_secs(10)).await;
    let acks = writers.stop().await;
    figures.acks = acks.len();
    figures.wrong_node_acks = acks
        .iter()
        .filter(|(at, server)| (*server == 1 && *at > killed + 200) || *server == 3)
        .count();
    drop(fleet);
    Ok(figures)
}

/// Probes per backend per interval over `window`: the busiest node's monitor SELECTs.
async fn probes(db: &mariadb::Cluster, window: Duration) -> Result<f64> {
    let before: Vec<u64> = (0..3).map(|n| selects(db, n)).collect::<Result<_>>()?;
    tokio::time::sleep(window).await;
    let intervals = window.as_secs_f64() / INTERVAL.as_secs_f64();
    let mut busiest = 0.0f64;
    for (n, before) in before.iter().enumerate() {
        busiest = busiest.max((selects(db, n)? - before) as f64 / intervals);
    }
    Ok(busiest)
}

fn selects(db: &mariadb::Cluster, node: usize) -> Result<u64> {
    let sql = "SELECT COALESCE(SUM(SELECT_COMMANDS), 0) FROM information_schema.USER_STATISTICS WHERE USER = 'monitor'";
    db.sql(node, sql)?.trim().parse().context("USER_STATISTICS")
}

/// The most monitor logins open on one node.
fn logins(db: &mariadb::Cluster) -> Result<usize> {
    let sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'monitor'";
    let mut most = 0;
    for node in 0..3 {
        if db.node(node).pid().is_some() {
            most = most.max(db.sql(node, sql)?.trim().parse().context("PROCESSLIST")?);
        }
    }
    Ok(most)
}

/// Messages etcd's members received so far (gRPC, all methods, unary and streams:
/// lease keep-alives and watch requests count one each).
async fn etcd_requests(etcd: &etcd::Cluster) -> Result<f64> {
    let mut total = 0.0;
    for i in 0..3 {
        let addr: SocketAddr = etcd.endpoint(i);
        let (code, body) = switchyard::admin::client::get(addr, "/metrics", Duration::from_secs(5))
            .await
            .map_err(anyhow::Error::msg)?;
        if code != 200 {
            bail!("etcd /metrics answered {code}");
        }
        total += body
            .lines()
            .filter(|l| l.starts_with("grpc_server_msg_received_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total)
}

fn percentile(values: &[u64], p: usize) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => 0,
        n => sorted[((n * p).div_ceil(100)).clamp(1, n) - 1],
    }
}

/// The report lines (the first in the form the issue asks for).
pub fn report(f: &Figures) -> String {
    format!(
        "fleet proxies={} probes_per_backend_per_interval={:.2} propagation_p99_ms={} wrong_node_acks={}\n\
         fleet reference (shared_checks = false): probes_per_backend_per_interval={:.2} monitor_logins_per_node={} (shared: {})\n\
         fleet propagation verdict->routing p50_ms={} p99_ms={} (proxies={}); verdict->watch event p50_ms={} p99_ms={} (watchers={} of {})\n\
         fleet etcd_requests_per_s steady={:.1} failover={:.1}; verdict CAS in all: won={} lost={}; writes acked={}",
        f.proxies,
        f.probes.1,
        percentile(&f.propagation_ms, 99),
        f.wrong_node_acks,
        f.probes.0,
        f.logins.0,
        f.logins.1,
        percentile(&f.propagation_ms, 50),
        percentile(&f.propagation_ms, 99),
        f.propagation_ms.len(),
        percentile(&f.watch_ms, 50),
        percentile(&f.watch_ms, 99),
        f.watch_ms.len(),
        f.watchers,
        f.etcd_rps.0,
        f.etcd_rps.1,
        f.cas.0,
        f.cas.1,
        f.acks,
    )
}
