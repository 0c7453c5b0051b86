//! The fleet's processes: one config each, started together, stopped by PID on drop;
//! what their `/status` says; writers through some of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mysql_async::prelude::Queryable;
use switchyard::admin::client::get;
use switchyard_lab::mariadb::{self, MONITOR_PASSWORD, MONITOR_USER};
use tokio_util::sync::CancellationToken;

/// One proxy process.
struct Proc {
    admin: SocketAddr,
    writer: SocketAddr,
    child: Child,
}

/// The running fleet.
pub struct Fleet {
    procs: Vec<Proc>,
    dir: PathBuf,
}

fn config(
    db: &mariadb::Cluster,
    name: &str,
    etcd: &[String],
    shared: bool,
    prefix: &str,
    admin: SocketAddr,
    writer: SocketAddr,
) -> String {
    let interval = super::INTERVAL.as_millis();
    let mut text = format!(
        "[admin]\nlisten = \"{admin}\"\n[check]\nkind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n\
         interval = \"{interval}ms\"\ntimeout = \"500ms\"\n[runtime]\nworkers = 1\n"
    );
    for node in db.nodes() {
        text += &format!("[backends.db{}]\naddress = \"{}\"\n", node.index + 1, node.addr());
    }
    let etcd: Vec<String> = etcd.iter().map(|e| format!("\"{e}\"")).collect();
    text += &format!(
        "[pools.writer]\nbackends = [\"db1\", \"db2\", \"db3\"]\nrole = \"primary\"\nhold_timeout = \"10s\"\n\
         [listeners.writer]\nlisten = \"{writer}\"\npool = \"writer\"\n\
         [cluster]\nname = \"{name}\"\netcd = [{}]\nprefix = \"{prefix}\"\nshared_checks = {shared}\n",
        etcd.join(", ")
    );
    text
}

impl Fleet {
    /// Starts `n` proxies and waits until each answers `/health/live`.
    pub async fn start(
        binary: &Path,
        db: &mariadb::Cluster,
        etcd: &[String],
        n: usize,
        shared: bool,
        prefix: &str,
    ) -> Result<Fleet> {
        let dir = switchyard_lab::system::temp_dir("sy-fleet-bench")?;
        let mut fleet = Fleet { procs: Vec::new(), dir };
        let mut taken = std::collections::HashSet::new();
        let mut port = || -> Result<SocketAddr> {
            loop {
                let port = switchyard_lab::system::free_port()?;
                if taken.insert(port) {
                    return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
                }
            }
        };
        for i in 0..n {
            let (admin, writer) = (port()?, port()?);
            let path = fleet.dir.join(format!("p{i}.toml"));
            std::fs::write(&path, config(db, &format!("p{i}"), etcd, shared, prefix, admin, writer))?;
            let mut command = std::process::Command::new(binary);
            command.arg("run").arg("--config").arg(&path).env("RUST_LOG", "warn");
            let child = switchyard_lab::system::spawn_logged(&mut command, &fleet.dir.join(format!("p{i}.log")))
                .with_context(|| format!("starting {}", binary.display()))?;
            fleet.procs.push(Proc { admin, writer, child });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, proc) in fleet.procs.iter().enumerate() {
            while !matches!(
                get(proc.admin, "/health/live", Duration::from_secs(2)).await,
                Ok((200, _))
            ) {
                if Instant::now() > deadline {
                    bail!("proxy p{i} did not start; see {}", fleet.dir.display());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(fleet)
    }

    async fn pool(&self, i: usize) -> Result<serde_json::Value> {
        let (_, body) = get(self.procs[i].admin, "/status", Duration::from_secs(5))
            .await
            .map_err(anyhow::Error::msg)?;
        let status: serde_json::Value = serde_json::from_str(&body)?;
        let pool = status["pools"].as_array().and_then(|p| p.first()).cloned();
        let mut pool = pool.context("no pool on /status")?;
        pool["failovers"] = status["failovers"].clone();
        Ok(pool)
    }

    /// Waits until every proxy routes the writer pool to `backend` at one epoch.
    pub async fn await_routed(&self, backend: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut epochs = Vec::new();
            for i in 0..self.procs.len() {
                let pool = self.pool(i).await?;
                if pool["routable"] == serde_json::json!([backend]) {
                    epochs.push(pool["fleet"]["epoch"].as_i64().unwrap_or(-1));
                }
            }
            if epochs.len() == self.procs.len() && epochs.windows(2).all(|w| w[0] == w[1]) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} proxies route {backend} after {limit:?}",
                    epochs.len(),
                    self.procs.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Per proxy: from `written_ms` to its routing swap to `backend`.
    pub async fn propagation(&self, backend: &str, written_ms: u64) -> Result<Vec<u64>> {
        let mut delays = Vec::new();
        for i in 0..self.procs.len() {
            let pool = self.pool(i).await?;
            let routed = pool["failovers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["to"] == backend)
                .filter_map(|f| f["new_routed_ms"].as_u64())
                .max()
                .with_context(|| format!("p{i} has no failover to {backend}"))?;
            delays.push(routed.saturating_sub(written_ms));
        }
        Ok(delays)
    }

    /// Verdict writes (won, lost) summed over the fleet.
    pub async fn verdict_writes(&self) -> Result<(f64, f64)> {
        let (mut won, mut lost) = (0.0, 0.0);
        for proc in &self.procs {
            let (_, body) = get(proc.admin, "/metrics", Duration::from_secs(5))
                .await
                .map_err(anyhow::Error::msg)?;
            for line in body
                .lines()
                .filter(|l| l.starts_with("switchyard_fleet_verdict_writes_total{"))
            {
                let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
                if line.contains("outcome=\"won\"") {
                    won += value;
                } else {
                    lost += value;
                }
            }
        }
        Ok((won, lost))
    }

    /// A writer through each of the first `n` proxies (reconnecting every 20 writes).
    pub fn writers(&self, n: usize) -> Writers {
        let stop = CancellationToken::new();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let tasks = self
            .procs
            .iter()
            .take(n)
            .map(|p| tokio::spawn(write(p.writer, stop.clone(), acks.clone())))
            .collect();
        Writers { stop, acks, tasks }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            switchyard_lab::system::stop(&mut proc.child, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writers through some proxies; each acknowledgement records when and by which server.
pub struct Writers {
    stop: CancellationToken,
    acks: Arc<Mutex<Vec<(u64, u32)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Stops them; every `(ack time ms, server_id)`.
    pub async fn stop(self) -> Vec<(u64, u32)> {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let acks = self.acks.lock().expect("acks").clone();
        acks
    }
}

async fn write(addr: SocketAddr, stop: CancellationToken, acks: Arc<Mutex<Vec<(u64, u32)>>>) {
    let opts = crate::workload::opts(addr);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stop.is_cancelled() && Instant::now() < deadline {
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(3), mysql_async::Conn::new(opts.clone())).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for _ in 0..20 {
            if stop.is_cancelled() {
                break;
            }
            let insert = async {
                conn.exec_drop("INSERT INTO kv (v, server_id) VALUES ('fleet', @@server_id)", ())
                    .await?;
                conn.query_first::<u32, _>("SELECT @@server_id").await
            };
            match tokio::time::timeout(Duration::from_secs(3), insert).await {
                Ok(Ok(Some(server))) => acks
                    .lock()
                    .expect("acks")
                    .push((switchyard::timeline::now_ms(), server)),
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.disconnect()).await;
    }
}
