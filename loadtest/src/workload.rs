//! Open-loop MySQL clients. Each worker has a schedule (`rate` spread over the
//! workers); an operation that starts late because the previous one stalled counts
//! its wait as latency, so a stall shows up as latency, not as silence. Every loop
//! ends by the drill's duration, and every network wait is under [`OP_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use serde::Serialize;
use switchyard_lab::mariadb::{APP_PASSWORD, APP_USER};
use tokio::time::{sleep_until, timeout, Instant};

use crate::scenario::Workload;

/// Connect, write, or read: each under this limit.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Write,
    Read,
}

/// One client operation as the client saw it. Times are milliseconds since the
/// drill started.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub kind: OpKind,
    /// The write's unique id (reads: the id they read back).
    pub id: u64,
    pub worker: u32,
    pub scheduled_ms: f64,
    pub started_ms: f64,
    pub ended_ms: f64,
    /// The `@@server_id` that acknowledged it, or the error's kind.
    pub result: Result<u32, String>,
}

impl Op {
    /// Latency from the scheduled start (open loop).
    pub fn latency_ms(&self) -> f64 {
        self.ended_ms - self.scheduled_ms
    }
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

fn opts(target: SocketAddr) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(target.ip().to_string())
        .tcp_port(target.port())
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some("appdb"))
        // Without this mysql_async reconnects over the server's unix socket and
        // bypasses the proxy under test.
        .prefer_socket(false)
}

/// The error's kind, short enough to count by: a server error code, or the class.
pub fn error_kind(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(e) => format!("mysql {}", e.code),
        mysql_async::Error::Io(_) => "connection lost".into(),
        mysql_async::Error::Driver(_) => "driver".into(),
        other => format!("{other}").chars().take(40).collect(),
    }
}

async fn bounded<T>(work: impl std::future::Future<Output = mysql_async::Result<T>>) -> Result<T, String> {
    match timeout(OP_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error_kind(&e)),
        Err(_) => Err("timeout".into()),
    }
}

async fn write(conn: &mut Conn, id: u64, worker: u32) -> Result<u32, String> {
    bounded(conn.exec_drop(
        "INSERT INTO drill (id, server_id, worker) VALUES (?, @@server_id, ?)",
        (id, worker),
    ))
    .await?;
    bounded(conn.query_first::<u32, _>("SELECT @@server_id"))
        .await?
        .ok_or_else(|| "no server id".to_string())
}

async fn read(conn: &mut Conn, id: u64) -> Result<u32, String> {
    bounded(conn.exec_drop("SELECT id FROM drill WHERE id = ?", (id,))).await?;
    bounded(conn.query_first::<u32, _>("SELECT @@server_id"))
        .await?
        .ok_or_else(|| "no server id".to_string())
}

/// Runs the workload against `target` until `t0 + duration`; returns every operation.
pub async fn run(
    target: SocketAddr,
    workload: Workload,
    duration: Duration,
    t0: Instant,
    progress: Arc<Progress>,
) -> Vec<Op> {
    let workers = workload.writers + workload.short_lived;
    let interval = Duration::from_secs_f64(f64::from(workers) / f64::from(workload.rate));
    let ids = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let short_lived = worker >= workload.writers;
        let (ids, progress) = (ids.clone(), progress.clone());
        let offset = interval.mul_f64(f64::from(worker) / f64::from(workers));
        tasks.spawn(async move {
            let ms = |at: Instant| at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
            let mut conn: Option<Conn> = None;
            let mut ops = Vec::new();
            let mut last_id = 0;
            for k in 0u32.. {
                let scheduled = t0 + offset + interval * k;
                if scheduled >= t0 + duration {
                    break;
                }
                sleep_until(scheduled).await;
                let started = Instant::now();
                // Every fourth operation of a long-lived worker reads its last write back.
                let kind = if !short_lived && k % 4 == 3 && last_id > 0 {
                    OpKind::Read
                } else {
                    OpKind::Write
                };
                let id = if kind == OpKind::Write {
                    ids.fetch_add(1, Ordering::Relaxed)
                } else {
                    last_id
                };
                let result = async {
                    if conn.is_none() {
                        conn = Some(bounded(Conn::new(opts(target))).await?);
                    }
                    let c = conn.as_mut().expect("connected above");
                    match kind {
                        OpKind::Write => write(c, id, worker).await,
                        OpKind::Read => read(c, id).await,
                    }
                }
                .await;
                if result.is_err() || short_lived {
                    if let Some(c) = conn.take() {
                        // A clean goodbye when we can; a dead server needs none.
                        let _ = timeout(Duration::from_millis(200), c.disconnect()).await;
                    }
                }
                if kind == OpKind::Write && result.is_ok() {
                    last_id = id;
                }
                let counter = if result.is_ok() { &progress.ok } else { &progress.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                ops.push(Op {
                    kind,
                    id,
                    worker,
                    scheduled_ms: ms(scheduled),
                    started_ms: ms(started),
                    ended_ms: ms(Instant::now()),
                    result,
                });
            }
            if let Some(c) = conn.take() {
                let _ = timeout(Duration::from_millis(500), c.disconnect()).await;
            }
            ops
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap_or_default());
    }
    all.sort_by(|a, b| a.ended_ms.total_cmp(&b.ended_ms));
    all
}
