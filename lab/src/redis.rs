//! A Redis master and replicas from Debian's `redis-server`, on free loopback ports, in a
//! throw-away directory, optionally watched by Sentinels (`redis-server --sentinel`,
//! quorum 2, `down-after-milliseconds` 1000, `failover-timeout` 3000); stopped by PID
//! when dropped, Sentinels first. No persistence; full syncs start at once
//! (`repl-diskless-sync-delay 0`), as in `backends.md`'s recipe. Sentinel rewrites its
//! own config and the nodes' (`CONFIG REWRITE`): a node restarted with [`RedisSet::restart`]
//! comes back with the role Sentinel last gave it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::system;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One node.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A master (node 0) and its replicas.
#[derive(Debug)]
pub struct RedisSet {
    nodes: Vec<Node>,
    sentinels: Vec<Node>,
    dir: PathBuf,
    /// TLS only (no plain port): the CA, the server certificate and its key.
    tls: Option<[PathBuf; 3]>,
}

/// The name the Sentinels monitor the master by.
pub const MASTER_NAME: &str = "labmaster";

impl RedisSet {
    /// `n` nodes: node 0 the master, the others its replicas, all linked.
    pub fn start(n: usize) -> Result<RedisSet> {
        system::ensure_packages(&[("redis-server", "redis-server"), ("redis-cli", "redis-tools")])?;
        let dir = system::temp_dir("sy-redis")?;
        let mut set = RedisSet {
            nodes: Vec::new(),
            sentinels: Vec::new(),
            dir,
            tls: None,
        };
        for i in 0..n {
            let port = system::free_port()?;
            set.nodes.push(Node { port, child: None });
            let master = (i > 0).then(|| set.nodes[0].port);
            set.write_config(i, master)?;
            set.spawn(i)?;
        }
        for i in 1..n {
            set.await_link(i)?;
        }
        Ok(set)
    }

    /// One standalone master that speaks TLS only (`port 0`, `tls-port`), with the
    /// server certificate `cert`/`key` issued by the CA in `ca`; clients are not asked
    /// for certificates.
    pub fn start_tls(ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> Result<RedisSet> {
        system::ensure_packages(&[("redis-server", "redis-server"), ("redis-cli", "redis-tools")])?;
        let mut set = RedisSet {
            nodes: vec![Node {
                port: system::free_port()?,
                child: None,
            }],
            sentinels: Vec::new(),
            dir: system::temp_dir("sy-redis-tls")?,
            tls: Some([ca.to_path_buf(), cert.to_path_buf(), key.to_path_buf()]),
        };
        set.write_config(0, None)?;
        set.spawn(0)?;
        Ok(set)
    }

    /// Starts `n` Sentinels watching node 0 as [`MASTER_NAME`] and waits until each
    /// sees every replica and every other Sentinel.
    pub fn start_sentinels(&mut self, n: usize) -> Result<()> {
        for j in 0..n {
            let port = system::free_port()?;
            let d = self.dir.join(format!("s{}", j + 1));
            std::fs::create_dir_all(&d)?;
            let conf = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\nsentinel parallel-syncs {MASTER_NAME} 1\n",
                d.display(),
                self.nodes[0].port
            );
            std::fs::write(d.join("sentinel.conf"), conf)?;
            let child = system::spawn_logged(
                Command::new("redis-server")
                    .arg(d.join("sentinel.conf"))
                    .arg("--sentinel"),
                &d.join("sentinel.log"),
            )?;
            self.sentinels.push(Node {
                port,
                child: Some(child),
            });
            await_answer(
                || self.sentinel_cli(j, &["PING"]),
                "PONG",
                &format!("sentinel{}", j + 1),
            )?;
        }
        let (replicas, others) = ((self.nodes.len() - 1).to_string(), (n - 1).to_string());
        for j in 0..n {
            let field = |name: &str| -> Result<String> {
                let out = self.sentinel_cli(j, &["SENTINEL", "MASTER", MASTER_NAME])?;
                let lines: Vec<&str> = out.lines().collect();
                let at = lines.iter().position(|l| *l == name).context("no such field")?;
                Ok(lines.get(at + 1).copied().unwrap_or_default().to_string())
            };
            let started = Instant::now();
            while field("num-slaves").ok() != Some(replicas.clone())
                || field("num-other-sentinels").ok() != Some(others.clone())
            {
                if started.elapsed() > READY_TIMEOUT {
                    bail!(
                        "sentinel{} does not see {replicas} replicas and {others} Sentinels",
                        j + 1
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Sentinel `j`'s address.
    pub fn sentinel_addr(&self, j: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.sentinels[j].port))
    }

    /// Runs `redis-cli` against Sentinel `j`; its output.
    pub fn sentinel_cli(&self, j: usize, args: &[&str]) -> Result<String> {
        cli(self.sentinels[j].port, None, args)
    }

    /// The node index the Sentinels name (`get-master-addr-by-name`, first answer).
    pub fn sentinel_master(&self) -> Result<usize> {
        for j in 0..self.sentinels.len() {
            let Ok(out) = self.sentinel_cli(j, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]) else {
                continue;
            };
            let port: Option<u16> = out.lines().nth(1).and_then(|p| p.trim().parse().ok());
            if let Some(i) = self.nodes.iter().position(|n| Some(n.port) == port) {
                return Ok(i);
            }
        }
        bail!("no Sentinel names a node of the set")
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Starts node `i` again from its config as Sentinel last rewrote it.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)
    }

    /// Starts node `i` again as a standalone master with an empty dataset (the config
    /// without its `replicaof`): the split-brain case.
    pub fn restart_empty(&mut self, i: usize) -> Result<()> {
        self.write_config(i, None)?;
        self.spawn(i)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[i].port))
    }

    /// Runs `redis-cli` against node `i`; its output.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String> {
        cli(
            self.nodes[i].port,
            self.tls.as_ref().map(|[ca, _, _]| ca.as_path()),
            args,
        )
    }

    /// `INFO replication` field `key` of node `i`.
    pub fn info(&self, i: usize, key: &str) -> Result<String> {
        let text = self.cli(i, &["INFO", "replication"])?;
        text.lines()
            .find_map(|l| l.trim_end().strip_prefix(key)?.strip_prefix(':').map(str::to_string))
            .with_context(|| format!("node{}: no {key} in INFO replication", i + 1))
    }

    /// Makes node `i` a master (`REPLICAOF NO ONE`).
    pub fn promote(&self, i: usize) -> Result<()> {
        self.cli(i, &["REPLICAOF", "NO", "ONE"]).map(drop)
    }

    /// Makes node `i` a replica of node `master` and waits for the link.
    pub fn replicate(&self, i: usize, master: usize) -> Result<()> {
        self.cli(i, &["REPLICAOF", "127.0.0.1", &self.nodes[master].port.to_string()])?;
        self.await_link(i)
    }

    /// `kill -9` of node `i`.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn write_config(&self, i: usize, master: Option<u16>) -> Result<()> {
        let d = self.dir.join(format!("r{}", i + 1));
        std::fs::create_dir_all(&d)?;
        let mut conf = format!(
            "port {}\nbind 127.0.0.1\ndaemonize no\ndir {}\nsave \"\"\nappendonly no\nreplica-read-only yes\n\
             repl-timeout 5\nrepl-ping-replica-period 1\nrepl-diskless-sync-delay 0\n",
            self.nodes[i].port,
            d.display()
        );
        if let Some(port) = master {
            conf += &format!("replicaof 127.0.0.1 {port}\n");
        }
        if let Some([ca, cert, key]) = &self.tls {
            conf = conf.replacen(&format!("port {}\n", self.nodes[i].port), "port 0\n", 1);
            conf += &format!(
                "tls-port {}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n",
                self.nodes[i].port,
                cert.display(),
                key.display(),
                ca.display()
            );
        }
        std::fs::write(d.join("redis.conf"), conf)?;
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let d = self.dir.join(format!("r{}", i + 1));
        let child = system::spawn_logged(
            Command::new("redis-server").arg(d.join("redis.conf")),
            &d.join("redis.log"),
        )?;
        self.nodes[i].child = Some(child);
        await_answer(|| self.cli(i, &["PING"]), "PONG", &format!("redis node{}", i + 1))
    }

    fn await_link(&self, i: usize) -> Result<()> {
        let started = Instant::now();
        while self.info(i, "master_link_status").ok().as_deref() != Some("up") {
            if started.elapsed() > READY_TIMEOUT {
                bail!("redis node{} did not link to its master", i + 1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// `redis-cli` against the node on `port`, bounded: a node that accepts and never
/// answers cannot hang the caller.
fn cli(port: u16, tls_ca: Option<&std::path::Path>, args: &[&str]) -> Result<String> {
    let mut command = Command::new("timeout");
    command.args(["10", "redis-cli", "-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(ca) = tls_ca {
        command.arg("--tls").arg("--cacert").arg(ca);
    }
    system::run(command.args(args)).map(|out| out.trim_end().to_string())
}

fn await_answer(ask: impl Fn() -> Result<String>, wanted: &str, what: &str) -> Result<()> {
    let started = Instant::now();
    while ask().ok().as_deref() != Some(wanted) {
        if started.elapsed() > READY_TIMEOUT {
            bail!("{what} did not answer {wanted}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Drop for RedisSet {
    fn drop(&mut self) {
        for node in self.sentinels.iter_mut().chain(&mut self.nodes) {
            if let Some(mut child) = node.child.take() {
                system::stop(&mut child, Duration::from_secs(5));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
