//! What the drill's clients connect to: switchyard (started in-process from the
//! library, on a generated config) or HAProxy configured as an experienced operator
//! would for MySQL — `option mysql-check`, `inter 250 fall 2 rise 1`,
//! `on-marked-down shutdown-sessions`, `balance first` with backups.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use switchyard::app::{self, Running};
use switchyard::config::Config;
use switchyard::timeline::FailoverEvent;
use switchyard_lab::mariadb::{Cluster, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_lab::system;

use crate::peers::Peers;
use crate::scenario::WorkloadKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Switchyard,
    Haproxy,
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetKind::Switchyard => "switchyard",
            TargetKind::Haproxy => "haproxy",
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

/// switchyard's config for a drill: checks every 100 ms, 300 ms timeout, fall 2.
pub fn switchyard_config(cluster: &Cluster) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\n\
         [check]\nkind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n\
         interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n"
    );
    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("\"db{}\"", n.index + 1))
        .collect();
    for node in cluster.nodes() {
        let _ = write!(
            text,
            "[backends.db{}]\naddress = \"{}\"\n\n",
            node.index + 1,
            node.addr()
        );
    }
    let _ = write!(
        text,
        "[pools.writer]\nbackends = [{}]\nrole = \"primary\"\nhold_timeout = \"10s\"\nconnect_timeout = \"1s\"\n\n\
         [listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n",
        names.join(", ")
    );
    text
}

/// HAProxy's config for the same drill (the reference an expert would deploy).
pub fn haproxy_config(cluster: &Cluster, port: u16) -> String {
    let mut text = format!(
        "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n\n\
         listen mysql\n    bind 127.0.0.1:{port}\n    option mysql-check user haproxy post-41\n    balance first\n"
    );
    for node in cluster.nodes() {
        let backup = if node.index == 0 { "" } else { " backup" };
        let _ = writeln!(
            text,
            "    server db{} {} check inter 250 fall 2 rise 1 on-marked-down shutdown-sessions{backup}",
            node.index + 1,
            node.addr()
        );
    }
    text
}

impl Target {
    pub async fn start(kind: TargetKind, peers: &Peers, workload: WorkloadKind) -> Result<Target> {
        match kind {
            TargetKind::Switchyard => {
                let config = Config::parse(&peers.switchyard_config(workload).await, "drill")?;
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
            TargetKind::Haproxy => {
                let Peers::Mysql(cluster) = peers else {
                    bail!("the HAProxy comparison is for MySQL drills (option mysql-check)");
                };
                system::ensure_packages(&[("haproxy", "haproxy")])?;
                let dir = system::temp_dir("sy-haproxy")?;
                let port = system::free_port()?;
                let cfg = dir.join("haproxy.cfg");
                let text = haproxy_config(&cluster.lock().expect("cluster lock"), port);
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
            let _ = system::signal(child.id(), "TERM");
            for _ in 0..50 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
