//! An HA pair of switchyard proxies behind a keepalived VRRP address, in network
//! namespaces ([`switchyard_lab::netns`]): two proxy hosts, each running the
//! `switchyard` binary and keepalived on the shipped `config/ha-pair/` files (only
//! addresses and paths replaced), the MariaDB cluster on a host of its own, and the
//! clients on a fourth. What the drill's proxy-tier faults do to it is here too.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use switchyard_lab::mariadb::{Cluster, MONITOR_PASSWORD};
use switchyard_lab::netns::{HaNet, Host};
use switchyard_lab::system;

/// The shipped files the pair runs on.
const SWITCHYARD_TOML: &str = include_str!("../../config/ha-pair/switchyard.toml");
const KEEPALIVED_A: &str = include_str!("../../config/ha-pair/keepalived-a.conf");
const KEEPALIVED_B: &str = include_str!("../../config/ha-pair/keepalived-b.conf");
const NOTIFY: &str = include_str!("../../config/ha-pair/ha-notify.sh");

/// The port the pair's listener serves MySQL on (as shipped).
pub const PORT: u16 = 3306;

/// One keepalived transition, from the notify hook's log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transition {
    /// Unix time, ms.
    pub at_unix_ms: f64,
    /// `px1` or `px2`.
    pub host: String,
    /// `MASTER`, `BACKUP`, `FAULT` or `STOP`.
    pub state: String,
}

/// What a proxy host suffers for a while (see [`Pair::disturb`]).
#[derive(Debug, Clone, Copy)]
pub enum Disturbance {
    /// Its switchyard stopped (SIGSTOP).
    Hang,
    /// The host off the bridge, its link up.
    Partition,
    /// The host's route to the database host prohibited.
    RouteLoss,
}

/// The running pair.
pub struct Pair {
    /// The namespaces, and every process started in them.
    pub net: HaNet,
    binary: PathBuf,
}

impl Pair {
    /// Starts switchyard and keepalived on both proxy hosts in front of `cluster`
    /// (placed on the database host of `net`), and waits until one holds the VIP.
    pub fn start(net: HaNet, cluster: &Cluster, binary: &Path) -> Result<Pair> {
        system::ensure_packages(&[("keepalived", "keepalived")])?;
        let dir = net.dir().to_path_buf();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write("monitor-password", MONITOR_PASSWORD)?;
        write("admin-token", "pair-admin-token")?;
        let notify = NOTIFY.replace(
            "LOG=/var/log/switchyard/ha-transitions.log",
            &format!("LOG={}", dir.join("transitions.log").display()),
        );
        write_script(&dir.join("ha-notify.sh"), &notify)?;
        write("transitions.log", "")?;
        // keepalived runs the readiness check by absolute path only.
        let binary = binary
            .canonicalize()
            .with_context(|| format!("the switchyard binary {}", binary.display()))?;
        let mut pair = Pair { binary, net };
        pair.write_switchyard_config(cluster)?;
        for host in [Host::Proxy1, Host::Proxy2] {
            pair.start_proxy(host)?;
            pair.start_keepalived(host)?;
        }
        pair.net
            .wait_single_owner(Duration::from_secs(30))
            .context("the pair never held its VIP")?;
        Ok(pair)
    }

    /// The shipped switchyard config with the cluster's addresses and the lab's
    /// secret files.
    fn write_switchyard_config(&self, cluster: &Cluster) -> Result<()> {
        let dir = self.net.dir();
        let mut text = SWITCHYARD_TOML
            .replace(
                "/etc/switchyard/admin-token",
                &dir.join("admin-token").display().to_string(),
            )
            .replace(
                "/etc/switchyard/monitor-password",
                &dir.join("monitor-password").display().to_string(),
            );
        for (i, node) in cluster.nodes().iter().enumerate() {
            text = text.replace(&format!("10.0.0.2{}:3306", i + 1), &node.addr().to_string());
        }
        let path = dir.join("switchyard.toml");
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The keepalived config of `host`: the shipped one for A (px1) or B (px2), with
    /// the lab's addresses, binary and notify script.
    fn keepalived_config(&self, host: Host) -> String {
        let shipped = if host == Host::Proxy1 {
            KEEPALIVED_A
        } else {
            KEEPALIVED_B
        };
        let dir = self.net.dir();
        shipped
            .replace("10.0.0.100", &self.net.vip().to_string())
            .replace("10.0.0.11", &self.net.ip(Host::Proxy1).to_string())
            .replace("10.0.0.12", &self.net.ip(Host::Proxy2).to_string())
            .replace("/usr/bin/switchyard", &self.binary.display().to_string())
            .replace(
                "/etc/switchyard/ha-notify.sh",
                &dir.join("ha-notify.sh").display().to_string(),
            )
    }

    fn proxy_name(host: Host) -> String {
        format!("switchyard-{}", host.name())
    }

    /// Starts (or restarts) switchyard on `host`.
    pub fn start_proxy(&mut self, host: Host) -> Result<()> {
        let mut command = self.net.command(host, &self.binary.display().to_string());
        command
            .args(["run", "--config"])
            .arg(self.net.dir().join("switchyard.toml"))
            .env("RUST_LOG", "info");
        self.net.spawn(&Self::proxy_name(host), command)?;
        Ok(())
    }

    fn start_keepalived(&mut self, host: Host) -> Result<()> {
        let dir = self.net.dir().to_path_buf();
        let name = host.name();
        let conf = dir.join(format!("keepalived-{name}.conf"));
        fs::write(&conf, self.keepalived_config(host)).with_context(|| format!("writing {}", conf.display()))?;
        let mut command = self.net.command(host, "keepalived");
        // -n: no fork (its PID is ours); -l: log to stdout; -D: details; -G: no
        // syslog; -P: VRRP only; -R: no respawn of a killed child; own pid files.
        command
            .args(["-n", "-l", "-D", "-G", "-P", "-R", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join(format!("ka-{name}.pid")))
            .arg("-r")
            .arg(dir.join(format!("ka-{name}-vrrp.pid")));
        self.net.spawn(&format!("keepalived-{name}"), command)?;
        Ok(())
    }

    /// The proxy host holding the VIP now (waits up to 10 s for a single one).
    pub fn active(&self) -> Result<Host> {
        self.net.wait_single_owner(Duration::from_secs(10))
    }

    /// The proxy host that does not hold the VIP now.
    pub fn standby(&self) -> Result<Host> {
        Ok(self.active()?.peer().expect("a proxy host has a peer"))
    }

    /// `kill -9` of switchyard on `host`.
    pub fn kill_proxy(&mut self, host: Host) -> Result<()> {
        self.net.kill9(&Self::proxy_name(host))
    }

    /// SIGSTOP (`true`) or SIGCONT of switchyard on `host`.
    pub fn hang_proxy(&mut self, host: Host, hung: bool) -> Result<()> {
        let pid = self
            .net
            .pid(&Self::proxy_name(host))
            .with_context(|| format!("switchyard on {} is not running", host.name()))?;
        system::signal(pid, if hung { "STOP" } else { "CONT" })
    }

    /// Starts (`on`) or ends a disturbance of `host`.
    pub fn disturb(&mut self, disturbance: Disturbance, host: Host, on: bool) -> Result<()> {
        match (disturbance, on) {
            (Disturbance::Hang, hung) => self.hang_proxy(host, hung),
            (Disturbance::Partition, true) => self.net.cut(host),
            (Disturbance::Partition, false) => self.net.heal(host),
            (Disturbance::RouteLoss, blocked) => self.net.block_db(host, blocked),
        }
    }

    /// Whether switchyard runs on `host`.
    pub fn proxy_running(&mut self, host: Host) -> bool {
        self.net.pid(&Self::proxy_name(host)).is_some()
    }

    /// Keeps both cores of the machine busy from `host`'s namespace for `duration`
    /// (two `sh` loops, ended by `timeout`).
    pub fn stress(&mut self, host: Host, duration: Duration) -> Result<()> {
        for i in 0..2 {
            let mut command = self.net.command(host, "timeout");
            command
                .arg(format!("{}", duration.as_secs_f64()))
                .args(["sh", "-c", "while :; do :; done"]);
            self.net.spawn(&format!("stress-{}-{i}", host.name()), command)?;
        }
        Ok(())
    }

    /// Every keepalived transition so far.
    pub fn transitions(&self) -> Vec<Transition> {
        let text = fs::read_to_string(self.net.dir().join("transitions.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let at: f64 = fields.next()?.parse().ok()?;
                let host = match fields.next()? {
                    "a" => "px1",
                    "b" => "px2",
                    other => other,
                };
                Some(Transition {
                    at_unix_ms: at * 1000.0,
                    host: host.to_string(),
                    state: fields.next()?.to_string(),
                })
            })
            .collect()
    }

    /// The VIP and port the clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.net.vip(), PORT))
    }

    /// Waits until `ready` answers for switchyard on `host` (its admin port, asked
    /// from inside its namespace).
    pub fn await_ready(&self, host: Host, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self
                .net
                .command(host, &self.binary.display().to_string())
                .args(["health", "--ready", "--admin", "127.0.0.1:9900", "--timeout", "300ms"])
                .output()
                .with_context(|| format!("running {} health in {}", self.binary.display(), host.name()))?;
            if status.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "switchyard on {} not ready after {limit:?}: {}",
                    host.name(),
                    String::from_utf8_lossy(&status.stdout).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Writes a script only root can change (keepalived's `enable_script_security`).
fn write_script(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .with_context(|| format!("writing the script {}", path.display()))
}
