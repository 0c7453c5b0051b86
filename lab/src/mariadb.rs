//! A MariaDB primary + replicas with GTID replication on loopback.
//!
//! `Cluster::start(3)` installs `mariadb-server` if it is missing, creates one system
//! datadir (`mariadb-install-db`, once) and copies it per node, starts node 0 as the
//! writable primary and the others as `read_only` replicas of it (`log_slave_updates`,
//! `MASTER_USE_GTID=slave_pos`), creates the accounts below on the primary and lets
//! replication carry them to the replicas, and returns once a write on the primary is
//! visible on every replica. Dropping the cluster stops every node by PID and removes
//! the directory.
//!
//! Accounts (`mysql_native_password`, host `%`; the servers bind 127.0.0.1 only, or
//! the address of their [`Placement`] in a network namespace):
//! - `monitor`/`monitorpass`: REPLICA MONITOR, BINLOG MONITOR, PROCESS — enough for
//!   `@@read_only`, `@@gtid_binlog_pos` and `SHOW SLAVE STATUS`; a health checker needs
//!   no more.
//! - `app`/`apppass`: ALL on `appdb.*` and `sbtest.*` only, so `read_only` stops it
//!   (an account with ALL PRIVILEGES has READ_ONLY ADMIN and still writes).
//! - `repl`/`replpass`: REPLICATION SLAVE.
//! - `haproxy` (no password, no privileges): what HAProxy's `option mysql-check`
//!   logs in as, for side-by-side drills.
//! - root: over the node's unix socket only (what this module's `sql` uses).

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::system;

pub const MONITOR_USER: &str = "monitor";
pub const MONITOR_PASSWORD: &str = "monitorpass";
/// An account that may run a switchover (demote, promote, repoint).
pub const ORCHESTRATOR_USER: &str = "orchestrator";
pub const ORCHESTRATOR_PASSWORD: &str = "orchpass";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "apppass";
pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "replpass";

/// How long a node may take to start or a replica to catch up before we give up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One `mariadbd`.
#[derive(Debug)]
pub struct Node {
    /// 0-based; `server_id` is `index + 1`.
    pub index: usize,
    pub port: u16,
    /// The address it listens on (127.0.0.1 unless placed in a namespace).
    pub host: IpAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    pub fn server_id(&self) -> u32 {
        self.index as u32 + 1
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    /// The PID of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running replicated cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// Lines appended to every node's `[mariadbd]` section.
    extra: String,
    /// Where the nodes run: a network namespace and the address they bind there.
    placement: Placement,
    /// Semi-synchronous replication (see [`Cluster::start_semi_sync`]).
    semi_sync: bool,
}

/// Every node's semi-sync settings: the replica side on (a node may be either), the
/// primary waiting after the binlog sync (so an acknowledged commit is on a replica),
/// and falling back to asynchronous after 5 s without a replica.
const SEMI_SYNC: &str = "rpl_semi_sync_slave_enabled = ON\nrpl_semi_sync_master_wait_point = AFTER_SYNC\n\
                         rpl_semi_sync_master_timeout = 5000\nsync_binlog = 1\n";

/// Where a cluster's nodes run: by default on loopback in this namespace; for tests
/// of several hosts, in a network namespace the test made, on its address there.
/// The root login goes over each node's unix socket either way.
#[derive(Debug, Clone)]
pub struct Placement {
    /// `ip netns exec` into this namespace; `None` for this one.
    pub netns: Option<String>,
    /// The address every node binds (each on its own port).
    pub host: IpAddr,
    /// When not empty: node `i` binds `spread[i]` instead, all on one port (two
    /// servers behind one DNS name, as a managed database's endpoint moves).
    pub spread: Vec<IpAddr>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            netns: None,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            spread: Vec::new(),
        }
    }
}

/// The server binary: Debian's path, or the one on PATH.
pub(crate) fn mariadbd() -> &'static str {
    if Path::new("/usr/sbin/mariadbd").is_file() {
        "/usr/sbin/mariadbd"
    } else {
        "mariadbd"
    }
}

/// Installs the server and client packages if they are missing.
pub fn ensure_installed() -> Result<()> {
    system::ensure_packages(&[("mariadbd", "mariadb-server"), ("mariadb", "mariadb-client")])
}

impl Cluster {
    /// Starts `n` nodes: node 0 primary, the rest replicas of it.
    pub fn start(n: usize) -> Result<Cluster> {
        Cluster::start_with(n, "")
    }

    /// Like [`Cluster::start`], with `extra` lines (`option = value`) in every node's
    /// `[mariadbd]` section, e.g. `ssl_cert`, `ssl_key` and `ssl_ca` for TLS.
    pub fn start_with(n: usize, extra: &str) -> Result<Cluster> {
        Cluster::start_placed(n, extra, Placement::default())
    }

    /// Like [`Cluster::start_with`], the nodes placed as `placement` says.
    pub fn start_placed(n: usize, extra: &str, placement: Placement) -> Result<Cluster> {
        assert!(n >= 1, "a cluster has at least one node");
        ensure_installed()?;
        let dir = system::temp_dir("sy-maria")?;
        let template = dir.join("template");
        // Its own tmpdir: parallel install runs sharing /tmp clash on temp tables now
        // and then ("Unknown table 'mysql.tmp_user_sys'").
        let install_tmp = dir.join("install-tmp");
        fs::create_dir_all(&install_tmp)?;
        let install_cnf = dir.join("install.cnf");
        let install_text = format!(
            "[mariadbd]\ndatadir = {}\ntmpdir = {}\n",
            template.display(),
            install_tmp.display()
        );
        fs::write(&install_cnf, install_text)?;
        system::run(
            Command::new("mariadb-install-db")
                .arg(format!("--defaults-file={}", install_cnf.display()))
                .env("TMPDIR", &install_tmp)
                .args([
                    "--user=root",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ]),
        )
        .context("mariadb-install-db")?;
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
            extra: extra.trim_end().to_string(),
            placement,
            semi_sync: false,
        };
        let shared_port = match cluster.placement.spread.is_empty() {
            true => None,
            false => Some(system::free_port()?),
        };
        for index in 0..n {
            let node_dir = cluster.dir.join(format!("n{}", index + 1));
            fs::create_dir_all(node_dir.join("tmp"))?;
            system::run(Command::new("cp").arg("-a").arg(&template).arg(node_dir.join("data")))?;
            let port = match shared_port {
                Some(port) => port,
                None => system::free_port()?,
            };
            cluster.nodes.push(Node {
                index,
                port,
                host: cluster
                    .placement
                    .spread
                    .get(index)
                    .copied()
                    .unwrap_or(cluster.placement.host),
                dir: node_dir,
                child: None,
            });
            cluster.write_config(index, index != 0)?;
        }
        for index in 0..n {
            cluster.spawn(index)?;
        }
        for index in 0..n {
            cluster.wait_ready_or_move(index)?;
        }
        cluster.bootstrap()?;
        Ok(cluster)
    }

    /// Starts `n` nodes with semi-synchronous replication: a commit the primary
    /// acknowledged is on a replica too, so killing the primary loses no acknowledged
    /// write, and a killed primary restarted by [`Cluster::restart_as_replica`] drops the
    /// transactions no replica received (MariaDB's `init_rpl_role = SLAVE` recovery).
    /// [`Cluster::promote`] and [`Cluster::rejoin_as_replica`] move the primary side.
    pub fn start_semi_sync(n: usize) -> Result<Cluster> {
        let mut cluster = Cluster::start_with(n, SEMI_SYNC)?;
        cluster.semi_sync = true;
        cluster.sql(0, "SET GLOBAL rpl_semi_sync_master_enabled = ON")?;
        for replica in 1..n {
            // The replica side is agreed on when replication connects.
            cluster.sql(replica, "STOP SLAVE; START SLAVE")?;
        }
        Ok(cluster)
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    fn write_config(&self, index: usize, read_only: bool) -> Result<()> {
        self.write_config_with(index, read_only, "")
    }

    fn write_config_with(&self, index: usize, read_only: bool, more: &str) -> Result<()> {
        let node = &self.nodes[index];
        let d = node.dir.display();
        let text = format!(
            "[mariadbd]\nuser = root\ndatadir = {d}/data\nsocket = {d}/mysqld.sock\npid-file = {d}/mysqld.pid\n\
             log_error = {d}/error.log\ntmpdir = {d}/tmp\nport = {port}\nbind-address = {host}\n\
             skip-name-resolve\nserver_id = {id}\nlog_bin = {d}/data/binlog\nlog_slave_updates = ON\n\
             binlog_format = ROW\ngtid_domain_id = 0\ngtid_strict_mode = ON\nread_only = {ro}\n\
             slave_net_timeout = 5\ninnodb_buffer_pool_size = 64M\ninnodb_log_file_size = 32M\n\
             max_connections = 300\nperformance_schema = OFF\n{extra}\n{more}",
            extra = self.extra,
            port = node.port,
            host = node.host,
            id = node.server_id(),
            ro = u8::from(read_only),
        );
        fs::write(node.dir.join("my.cnf"), text)?;
        Ok(())
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let mut command = match &self.placement.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, mariadbd()]);
                command
            }
            None => Command::new(mariadbd()),
        };
        command.arg(format!("--defaults-file={}", node.dir.join("my.cnf").display()));
        let child = system::spawn_logged(&mut command, &node.dir.join("stdout.log")).context("spawn mariadbd")?;
        self.nodes[index].child = Some(child);
        Ok(())
    }

    /// Waits for a node; if another process took its port in the meantime (a free
    /// port is only free until someone binds it), moves it to a new port and retries.
    fn wait_ready_or_move(&mut self, index: usize) -> Result<()> {
        for _ in 0..5 {
            match self.wait_ready(index) {
                Err(e) if e.to_string().contains("Address already in use") => {
                    self.nodes[index].port = system::free_port()?;
                    let read_only = index != 0;
                    self.write_config(index, read_only)?;
                    self.spawn(index)?;
                }
                other => return other,
            }
        }
        bail!("node{}: no free port after 5 tries", index + 1)
    }

    fn wait_ready(&mut self, index: usize) -> Result<()> {
        let started = Instant::now();
        loop {
            let node = &mut self.nodes[index];
            let ping = Command::new("mariadb-admin")
                .arg("--no-defaults")
                .arg(format!("--socket={}", node.socket().display()))
                .args(["-uroot", "--connect-timeout=1", "ping"])
                .output()?;
            if ping.status.success() {
                return Ok(());
            }
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("node{} exited with {status}: {}", index + 1, self.error_log(index));
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("node{} did not start: {}", index + 1, self.error_log(index));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn error_log(&self, index: usize) -> String {
        let text = fs::read_to_string(self.nodes[index].dir.join("error.log")).unwrap_or_default();
        let lines: Vec<_> = text.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn bootstrap(&mut self) -> Result<()> {
        self.sql(
            0,
            &format!(
                "CREATE USER '{REPL_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{REPL_PASSWORD}');
                 GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%';
                 CREATE USER '{MONITOR_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{MONITOR_PASSWORD}');
                 GRANT REPLICA MONITOR, BINLOG MONITOR, PROCESS ON *.* TO '{MONITOR_USER}'@'%';
                 CREATE USER '{ORCHESTRATOR_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{ORCHESTRATOR_PASSWORD}');
                 GRANT READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, REPLICA MONITOR, BINLOG MONITOR, RELOAD ON *.* TO '{ORCHESTRATOR_USER}'@'%';
                 CREATE USER '{APP_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{APP_PASSWORD}');
                 CREATE DATABASE appdb; CREATE DATABASE sbtest;
                 GRANT ALL ON appdb.* TO '{APP_USER}'@'%'; GRANT ALL ON sbtest.* TO '{APP_USER}'@'%';
                 CREATE TABLE appdb.kv (id BIGINT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64), server_id INT);
                 CREATE USER 'haproxy'@'127.0.0.1';"
            ),
        )?;
        let primary = self.nodes[0].addr();
        for index in 1..self.nodes.len() {
            // An empty slave position makes the replica fetch the whole binlog, accounts included.
            self.sql(
                index,
                &format!("SET GLOBAL gtid_slave_pos=''; {}; START SLAVE;", change_master(primary)),
            )?;
        }
        self.sql(0, "INSERT INTO appdb.kv (v, server_id) VALUES ('hello', @@server_id)")?;
        for index in 1..self.nodes.len() {
            self.wait_caught_up(index, 0)?;
        }
        Ok(())
    }

    /// Runs SQL as root over the node's unix socket; returns the batch output
    /// (tab-separated, no column names).
    pub fn sql(&self, index: usize, sql: &str) -> Result<String> {
        self.client(index, &["--skip-column-names"], sql)
    }

    fn client(&self, index: usize, flags: &[&str], sql: &str) -> Result<String> {
        let node = &self.nodes[index];
        system::run(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", node.socket().display()))
                .args(["-uroot", "--batch", "--connect-timeout=5"])
                .args(flags)
                .args(["-e", sql]),
        )
        .with_context(|| format!("node{}: {sql}", index + 1))
        .map(|out| out.trim_end().to_string())
    }

    /// `SHOW SLAVE STATUS` as a map (empty when the node replicates from nobody).
    pub fn slave_status(&self, index: usize) -> Result<HashMap<String, String>> {
        // Vertical output (`\G`) with column names: one `Name: value` per line.
        let text = self.client(index, &[], "SHOW SLAVE STATUS\\G")?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once(": "))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect())
    }

    /// Waits until replica `index` has applied everything `primary` has written.
    pub fn wait_caught_up(&self, index: usize, primary: usize) -> Result<()> {
        let gtid = self.sql(primary, "SELECT @@gtid_binlog_pos")?;
        let waited = self.sql(
            index,
            &format!("SELECT MASTER_GTID_WAIT('{gtid}', {})", READY_TIMEOUT.as_secs()),
        )?;
        if waited != "0" {
            bail!("node{} did not reach {gtid}: {:?}", index + 1, self.slave_status(index));
        }
        Ok(())
    }

    /// `kill -9` of a node.
    pub fn kill9(&mut self, index: usize) -> Result<()> {
        system::kill9(&mut self.nodes[index].child)
    }

    pub fn sigstop(&self, index: usize) -> Result<()> {
        system::signal(self.pid(index)?, "STOP")
    }

    pub fn sigcont(&self, index: usize) -> Result<()> {
        system::signal(self.pid(index)?, "CONT")
    }

    fn pid(&self, index: usize) -> Result<u32> {
        self.nodes[index]
            .pid()
            .with_context(|| format!("node{} is not running", index + 1))
    }

    /// (Re)starts a stopped node from its datadir, `read_only` as given.
    pub fn restart(&mut self, index: usize, read_only: bool) -> Result<()> {
        self.write_config(index, read_only)?;
        self.spawn(index)?;
        self.wait_ready(index)
    }

    /// Restarts a killed node as a read-only replica of `primary`. In a semi-sync
    /// cluster its recovery first drops what it wrote to its binlog that no replica
    /// acknowledged (it never answered those commits), so its history stays a prefix of
    /// the new primary's.
    pub fn restart_as_replica(&mut self, index: usize, primary: usize) -> Result<()> {
        let recovery = if self.semi_sync { "init_rpl_role = SLAVE\n" } else { "" };
        self.write_config_with(index, true, recovery)?;
        self.spawn(index)?;
        self.wait_ready(index)?;
        self.rejoin_as_replica(index, primary)
    }

    /// Promotes a replica: waits until it applied what it received, then stops
    /// replication and makes it writable (the recipe of a failover tool).
    pub fn promote(&self, index: usize) -> Result<()> {
        let status = self.slave_status(index)?;
        if let Some(io_pos) = status.get("Gtid_IO_Pos").filter(|p| !p.is_empty()) {
            self.sql(index, &format!("SELECT MASTER_GTID_WAIT('{io_pos}', 10)"))?;
        }
        let semi_sync = if self.semi_sync {
            "SET GLOBAL rpl_semi_sync_master_enabled = ON; "
        } else {
            ""
        };
        self.sql(
            index,
            &format!("STOP SLAVE; RESET SLAVE ALL; {semi_sync}SET GLOBAL read_only=0"),
        )?;
        Ok(())
    }

    /// Points replica `index` at `primary`.
    pub fn repoint(&self, index: usize, primary: usize) -> Result<()> {
        let primary = self.nodes[primary].addr();
        self.sql(index, &format!("STOP SLAVE; {}; START SLAVE", change_master(primary)))?;
        Ok(())
    }

    /// Makes a former primary (already `read_only`, and caught up by the new primary)
    /// a replica of `primary`: its own transactions are in `gtid_binlog_pos`, so
    /// replication starts after them.
    pub fn rejoin_as_replica(&self, index: usize, primary: usize) -> Result<()> {
        let primary = self.nodes[primary].addr();
        let semi_sync = if self.semi_sync {
            "SET GLOBAL rpl_semi_sync_master_enabled = OFF; "
        } else {
            ""
        };
        self.sql(
            index,
            &format!(
                "SET GLOBAL read_only=1; {semi_sync}STOP SLAVE; SET GLOBAL gtid_slave_pos=@@gtid_binlog_pos; {}; START SLAVE",
                change_master(primary)
            ),
        )?;
        Ok(())
    }

    /// The node with the most advanced `gtid_current_pos` among `candidates`.
    pub fn most_advanced(&self, candidates: &[usize]) -> Result<usize> {
        let mut best = (candidates[0], 0u64);
        for &index in candidates {
            let pos = self.sql(index, "SELECT @@gtid_current_pos")?;
            let seq = pos.rsplit('-').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if seq > best.1 {
                best = (index, seq);
            }
        }
        Ok(best.0)
    }
}

fn change_master(primary: SocketAddr) -> String {
    let (host, port) = (primary.ip(), primary.port());
    format!(
        "CHANGE MASTER TO MASTER_HOST='{host}', MASTER_PORT={port}, MASTER_USER='{REPL_USER}', \
         MASTER_PASSWORD='{REPL_PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1"
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                system::stop(&mut child, Duration::from_secs(10));
            }
        }
        if std::env::var_os("SWITCHYARD_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
