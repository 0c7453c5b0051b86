//! What the drill's clients connect to: switchyard (started in-process from the
//! library) or HAProxy (a process, MySQL drills only), each on the config
//! [`crate::proxy_config`] builds from the peers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use switchyard::app::{self, Running};
use switchyard::config::Config;
use switchyard::timeline::FailoverEvent;
use switchyard_lab::system;

use crate::peers::Peers;
use crate::proxy_config;
use crate::scenario::WorkloadKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Switchyard,
    Haproxy,
    /// Two switchyard processes behind keepalived's VIP, in network namespaces
    /// (MySQL workloads; see `drill::run_pair`).
    #[serde(rename = "switchyard-pair")]
    #[value(name = "switchyard-pair")]
    Pair,
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetKind::Switchyard => "switchyard",
            TargetKind::Haproxy => "haproxy",
            TargetKind::Pair => "switchyard-pair",
        })
    }
}

/// A started target.
pub struct Target {
    pub kind: TargetKind,
    pub addr: SocketAddr,
    /// The admin listener, for switchyard.
    pub admin: Option<SocketAddr>,
    proxy: Option<Running>,
    haproxy: Option<Child>,
    dir: Option<PathBuf>,
}

impl Target {
    pub async fn start(kind: TargetKind, peers: &Peers, workload: WorkloadKind) -> Result<Target> {
        match kind {
            TargetKind::Switchyard => {
                let config = Config::parse(&proxy_config::switchyard(peers, workload).await, "drill")?;
                let proxy = app::start(config).await?;
                let addr = proxy.listener("writer").context("writer listener")?;
                let admin = proxy.admin();
                Ok(Target {
                    kind,
                    addr,
                    admin,
                    proxy: Some(proxy),
                    haproxy: None,
                    dir: None,
                })
            }
            TargetKind::Pair => bail!("the HA pair runs through drill::run_pair"),
            TargetKind::Haproxy => {
                let Peers::Mysql(cluster) = peers else {
                    bail!("the HAProxy comparison is for MySQL drills (option mysql-check)");
                };
                system::ensure_packages(&[("haproxy", "haproxy")])?;
                let dir = system::temp_dir("sy-haproxy")?;
                let port = system::free_port()?;
                let cfg = dir.join("haproxy.cfg");
                let text = proxy_config::haproxy(&cluster.lock().expect("cluster lock"), port);
                std::fs::write(&cfg, text)?;
                let log = std::fs::File::create(dir.join("haproxy.log"))?;
                let child = Command::new("haproxy")
                    .arg("-db")
                    .arg("-f")
                    .arg(&cfg)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("spawn haproxy")?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let target = Target {
                    kind,
                    addr,
                    admin: None,
                    proxy: None,
                    haproxy: Some(child),
                    dir: Some(dir),
                };
                for _ in 0..100 {
                    if tokio::net::TcpStream::connect(addr).await.is_ok() {
                        return Ok(target);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                bail!("haproxy did not listen on {addr}")
            }
        }
    }

    /// switchyard's failover records (empty for HAProxy, which keeps none).
    pub fn failovers(&self) -> Vec<FailoverEvent> {
        self.proxy.as_ref().map(Running::failovers).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown().await;
        }
        if let Some(mut child) = self.haproxy.take() {
            let _ = tokio::task::spawn_blocking(move || system::stop(&mut child, Duration::from_secs(1))).await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
