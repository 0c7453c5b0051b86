//! `switchyard-drill soak`: one switchyard process under mixed load for a long time, a
//! fault every window, and the process watched all along.
//!
//! Data flow: [`setup::Stage`] starts the peers and the proxy (a process of its own,
//! so its descriptors and memory are its own) → four open-loop loads at once
//! (MySQL through a `mode = "mysql"` listener, the MongoDB driver, TCP echo, TLS
//! echo) → three fault tasks, one per peer group, replaying [`plan::schedule`] (kill
//! -9 and rejoin, SIGSTOP, `read_only` switchover, election, a refusing backend) →
//! a sampler reading the proxy's `/proc` four times a second → [`SoakReport`]: per load
//! what clients saw, per fault window the descriptor floor against the baseline,
//! memory after the warm-up against its end, and the list of failed criteria.
//!
//! Pass: the proxy alive to the end and still serving every load after the last
//! fault, every fault step done, the descriptors back at the baseline after every
//! fault (a window's floor, or a later one's: see [`Descriptors::above_baseline`])
//! and, once the load is over, back at what the proxy held before it began, RSS
//! ≤ 5 % above its level at the end of [`plan::warmup`], no write acknowledged by a
//! non-primary, no acknowledged write missing afterwards.

pub mod plan;
mod report;
pub mod setup;
pub mod tls_echo;

use report::finish;
pub use report::{failures, text};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio::time::Instant;

use crate::fault::{FaultRecord, Faults, PrimaryTimeline};
use crate::scenario::{Workload, WorkloadKind};
use crate::workload::{self, Op, Progress};
use plan::{Descriptors, Group, Memory, Sample};

/// How long, how often, and which binary.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    /// One fault per window of this length.
    pub every: Duration,
    pub binary: PathBuf,
}

/// What one load's clients saw.
#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub name: &'static str,
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    /// Successful operations that started after the last fault's window began.
    pub ok_in_last_window: u64,
    /// Writes acknowledged by a server that was not the primary then (MySQL, MongoDB).
    pub acked_by_non_primary: Option<usize>,
    /// Acknowledged writes not on the final primary afterwards (MySQL, MongoDB).
    pub missing: Option<usize>,
}

/// One fault step as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultLine {
    pub group: Group,
    pub record: FaultRecord,
}

/// Everything the soak measured, and what failed.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub duration_s: u64,
    pub every_s: u64,
    pub flows: Vec<Flow>,
    pub faults: Vec<FaultLine>,
    pub descriptors: Option<Descriptors>,
    /// Descriptors before any client connected, and once every client was gone.
    pub idle_fds: (usize, usize),
    pub memory: Option<Memory>,
    pub samples: Vec<Sample>,
    /// How the proxy ended if it exited by itself.
    pub proxy_exit: Option<String>,
    /// The criteria that failed; empty when the soak passed.
    pub failures: Vec<String>,
}

/// The four loads: MySQL 100 writes/s, MongoDB 50/s, TCP 100/s, TLS 20/s, each
/// over long-lived workers and one or two that reconnect per operation.
fn loads() -> [(WorkloadKind, Workload); 3] {
    let load = |kind, writers, short_lived, rate| Workload {
        kind,
        writers,
        short_lived,
        rate,
        reconnect_every: 0,
        op_timeout: None,
    };
    [
        (WorkloadKind::Mysql, load(WorkloadKind::Mysql, 4, 2, 100)),
        (WorkloadKind::Mongo, load(WorkloadKind::Mongo, 3, 1, 50)),
        (WorkloadKind::Tcp, load(WorkloadKind::Tcp, 4, 2, 100)),
    ]
}

/// How often the proxy process is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

const TLS_LOAD: tls_echo::Load = tls_echo::Load {
    long_lived: 2,
    short_lived: 1,
    rate: 20,
};

/// Runs the soak; an `Err` is a soak that could not run (peers, proxy start), a
/// failed criterion is in [`SoakReport::failures`].
pub async fn run(settings: &Settings) -> Result<SoakReport> {
    let stage = setup::Stage::start().await?;
    let (mut proxy, addrs) = stage.proxy(&settings.binary).await?;
    let outcome = drive(settings, &stage, addrs, proxy.id()).await;
    let proxy_exit = proxy.try_wait().ok().flatten().map(|status| status.to_string());
    switchyard_lab::system::stop(&mut proxy, Duration::from_secs(5));
    let report = match outcome {
        Ok(driven) => Ok(finish(settings, &stage, driven, proxy_exit).await),
        Err(e) => Err(e.context(format!("the proxy's log is in {}", stage.dir.display()))),
    };
    let dir = stage.dir.clone();
    tokio::task::spawn_blocking(move || drop(stage)).await?;
    if report.as_ref().is_ok_and(|r| r.failures.is_empty()) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report
}

/// What [`drive`] brings back for [`finish`].
struct Driven {
    ops: [Vec<Op>; 4],
    idle_fds: (usize, usize),
    faults: Vec<(Group, Vec<FaultRecord>, PrimaryTimeline, usize)>,
    samples: Vec<Sample>,
}

async fn await_ready(addrs: setup::Addrs, stage: &setup::Stage) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (addr, kind) in [
        (addrs.mysql, WorkloadKind::Mysql),
        (addrs.mongo, WorkloadKind::Mongo),
        (addrs.tcp, WorkloadKind::Tcp),
    ] {
        while !workload::ready(addr, kind).await {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no {kind:?} operation through the proxy within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let probe = tls_echo::Load {
        long_lived: 1,
        short_lived: 0,
        rate: 10,
    };
    let progress = Arc::new(Progress::default());
    let ops = tls_echo::run(
        addrs.tls,
        stage.connector.clone(),
        probe,
        Duration::from_millis(100),
        Instant::now(),
        progress,
    )
    .await;
    anyhow::ensure!(
        ops.iter().any(|o| o.result.is_ok()),
        "no TLS exchange through the proxy: {ops:?}"
    );
    Ok(())
}

async fn drive(settings: &Settings, stage: &setup::Stage, addrs: setup::Addrs, pid: u32) -> Result<Driven> {
    await_ready(addrs, stage).await?;
    let idle_before = idle_fds(pid, None).await;
    let (duration, t0) = (settings.duration, Instant::now());
    let samples = Arc::new(Mutex::new(Vec::new()));
    let progress = Arc::new(Progress::default());
    let sampler = tokio::spawn(watch(pid, t0, duration, samples.clone(), progress.clone()));
    let steps = plan::schedule(duration, settings.every);
    let mut fault_tasks = Vec::new();
    for (group, peers) in [
        (Group::Mysql, &stage.mysql),
        (Group::Mongo, &stage.mongo),
        (Group::Servers, &stage.servers),
    ] {
        let faults = Faults::new(peers.clone());
        let mine = steps.iter().filter(|s| s.group == group).map(|s| s.fault).collect();
        fault_tasks.push((group, tokio::spawn(faults.run(mine, t0))));
    }
    let [mysql, mongo, tcp] = loads();
    let (mysql, mongo, tcp, tls) = tokio::join!(
        workload::run(addrs.mysql, mysql.1, duration, t0, progress.clone()),
        workload::run(addrs.mongo, mongo.1, duration, t0, progress.clone()),
        workload::run(addrs.tcp, tcp.1, duration, t0, progress.clone()),
        tls_echo::run(
            addrs.tls,
            stage.connector.clone(),
            TLS_LOAD,
            duration,
            t0,
            progress.clone()
        ),
    );
    let mut faults = Vec::new();
    for (group, task) in fault_tasks {
        let (records, timeline, primary) = task.await?;
        faults.push((group, records, timeline, primary));
    }
    sampler.abort();
    let idle_after = idle_fds(pid, Some(idle_before)).await;
    let samples = std::mem::take(&mut *samples.lock().expect("samples lock"));
    Ok(Driven {
        ops: [mysql, mongo, tcp, tls],
        idle_fds: (idle_before, idle_after),
        faults,
        samples,
    })
}

/// The descriptors process `pid` holds with no client connected: the fewest over
/// a second, or, with `until`, the first count at or under it within 30 s (clients
/// that just left take a moment to be reaped).
async fn idle_fds(pid: u32, until: Option<usize>) -> usize {
    let deadline = Instant::now()
        + if until.is_some() {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(1)
        };
    let mut fewest = usize::MAX;
    while Instant::now() < deadline {
        let fds = setup::sample(pid, 0.0).map_or(usize::MAX, |s| s.fds);
        fewest = fewest.min(fds);
        if until.is_some_and(|limit| fewest <= limit) {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    fewest
}

/// Samples process `pid` four times a second until `duration` ends (or the process
/// does): often enough that a window's last quarter holds moments with no
/// short-lived client connected, whose descriptor count is what the proxy itself
/// holds. Prints a progress line every 10 s.
async fn watch(pid: u32, t0: Instant, duration: Duration, samples: Arc<Mutex<Vec<Sample>>>, progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    for n in 0u64.. {
        if t0.elapsed() > duration {
            return;
        }
        tick.tick().await;
        let at_s = t0.elapsed().as_secs_f64();
        let Some(sample) = setup::sample(pid, at_s) else { return };
        samples.lock().expect("samples lock").push(sample);
        if n % 40 == 0 {
            eprintln!(
                "[soak] {:>5.0}/{} s  ok {:>8}  failed {:>6}  fds {:>4}  rss {:>7} KiB",
                at_s,
                duration.as_secs(),
                progress.ok.load(Ordering::Relaxed),
                progress.failed.load(Ordering::Relaxed),
                sample.fds,
                sample.rss_kb
            );
        }
    }
}
