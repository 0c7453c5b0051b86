//! A Redis master and replicas from Debian's `redis-server`, on free loopback ports, in a
//! throw-away directory; stopped by PID when dropped. No persistence; full syncs start
//! at once (`repl-diskless-sync-delay 0`), as in `backends.md`'s recipe.

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
    dir: PathBuf,
}

impl RedisSet {
    /// `n` nodes: node 0 the master, the others its replicas, all linked.
    pub fn start(n: usize) -> Result<RedisSet> {
        system::ensure_packages(&[("redis-server", "redis-server"), ("redis-cli", "redis-tools")])?;
        let dir = system::temp_dir("sy-redis")?;
        let mut set = RedisSet { nodes: Vec::new(), dir };
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

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[i].port))
    }

    /// Runs `redis-cli` against node `i`; its output.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String> {
        // Bounded: a node that accepts and never answers cannot hang the caller.
        system::run(
            Command::new("timeout")
                .args([
                    "10",
                    "redis-cli",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.nodes[i].port.to_string(),
                ])
                .args(args),
        )
        .map(|out| out.trim_end().to_string())
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
        let started = Instant::now();
        while self.cli(i, &["PING"]).ok().as_deref() != Some("PONG") {
            if started.elapsed() > READY_TIMEOUT {
                bail!("redis node{} did not answer PING", i + 1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
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

impl Drop for RedisSet {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                system::stop(&mut child, Duration::from_secs(5));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
