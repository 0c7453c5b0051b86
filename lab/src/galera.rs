//! A MariaDB Galera cluster (wsrep, `galera-4`) on loopback.
//!
//! `Galera::start(3)` installs `mariadb-server`, `galera-4` and `rsync` if they are
//! missing, creates a system datadir on node 1 only, bootstraps it as a new cluster
//! (`--wsrep-new-cluster`), creates the accounts below there, and joins the other nodes
//! one at a time by rsync SST (a donor is blocked while it donates). It returns once
//! every node is `Synced` in a cluster of `n` and a write on the last node is visible on
//! node 1. Dropping it stops every node by PID and removes the directory.
//!
//! Each node takes four free loopback ports: SQL, group communication (`gmcast`), IST
//! and SST. Failure detection is shortened (suspect 1 s, inactive 2 s) so a fault
//! shows within about 1.5 s, as in the recipe the drills were measured with.
//!
//! The servers run as the OS user `mysql`, not root: the rsync SST script starts an
//! rsync daemon on the joiner, and one started by root drops to `nobody` and cannot
//! write the datadir.
//!
//! Accounts (`mysql_native_password`, host `%`, created on node 1 and carried by
//! Galera): `monitor`/`monitorpass` (PROCESS: `SHOW GLOBAL STATUS`), `app`/`apppass`
//! (ALL on `appdb.*`; table `appdb.kv`), `admin`/`adminpass` (ALL), and `haproxy` (no
//! password, no privileges) for HAProxy's `mysql-check`. Root logs in over the node's
//! unix socket only.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::mariadb::{mariadbd, APP_PASSWORD, APP_USER, MONITOR_PASSWORD, MONITOR_USER};
use crate::system;

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "adminpass";

const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";
const RUN_AS: &str = "mysql";
/// How long a node may take to start, join or sync before we give up.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Galera's failure detection, shortened from its defaults (suspect 5 s, inactive 15 s).
const EVS: &str = "evs.keepalive_period=PT0.3S;evs.inactive_check_period=PT0.3S;evs.suspect_timeout=PT1S;\
                   evs.inactive_timeout=PT2S;evs.install_timeout=PT2S;evs.join_retrans_period=PT0.3S";

/// One node's ports and processes.
#[derive(Debug)]
struct Node {
    sql: u16,
    gcomm: u16,
    ist: u16,
    sst: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A running Galera cluster; nodes are numbered from 0.
#[derive(Debug)]
pub struct Galera {
    dir: PathBuf,
    nodes: Vec<Node>,
}

/// Installs the server, the Galera provider and rsync (the SST method) if missing.
pub fn ensure_installed() -> Result<()> {
    crate::mariadb::ensure_installed()?;
    system::ensure_packages(&[("rsync", "rsync")])?;
    if !Path::new(PROVIDER).is_file() {
        system::ensure_packages(&[("galera-provider-missing", "galera-4")])?;
    }
    Ok(())
}

impl Galera {
    /// Starts an `n`-node cluster (see the module docs).
    pub fn start(n: usize) -> Result<Galera> {
        assert!(n >= 1, "a cluster has at least one node");
        ensure_installed()?;
        let dir = system::temp_dir("sy-galera")?;
        let mut nodes = Vec::new();
        for index in 0..n {
            let node_dir = dir.join(format!("n{}", index + 1));
            fs::create_dir_all(node_dir.join("data"))?;
            fs::create_dir_all(node_dir.join("tmp"))?;
            nodes.push(Node {
                sql: system::free_port()?,
                gcomm: system::free_port()?,
                ist: system::free_port()?,
                sst: system::free_port()?,
                dir: node_dir,
                child: None,
            });
        }
        let mut galera = Galera { dir, nodes };
        for index in 0..n {
            galera.write_config(index)?;
        }
        system::run(
            Command::new("chown")
                .args(["-R", &format!("{RUN_AS}:")])
                .arg(&galera.dir),
        )?;
        system::run(Command::new("chmod").arg("o+x").arg(&galera.dir))?;
        galera.install_first()?;
        galera.spawn(0, &["--wsrep-new-cluster"])?;
        galera.wait_synced(0, 1)?;
        galera.accounts()?;
        for index in 1..n {
            galera.spawn(index, &[])?;
            galera.wait_synced(index, index + 1)?;
        }
        for index in 0..n {
            galera.wait_synced(index, n)?;
        }
        galera.sql(n - 1, "INSERT INTO appdb.kv (v) VALUES ('hello')")?;
        let seen = galera.sql(0, "SET SESSION wsrep_sync_wait=1; SELECT COUNT(*) FROM appdb.kv")?;
        if seen != "1" {
            bail!("a write on node{n} is not on node1 ({seen} rows)");
        }
        Ok(galera)
    }

    /// Node `index`'s SQL address.
    pub fn addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[index].sql))
    }

    /// How many nodes the cluster was started with.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn write_config(&self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let d = node.dir.display();
        let members: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.gcomm)).collect();
        let text = format!(
            "[mariadbd]\nuser = {RUN_AS}\ndatadir = {d}/data\nsocket = {d}/mysqld.sock\npid-file = {d}/mysqld.pid\n\
             log_error = {d}/error.log\ntmpdir = {d}/tmp\nport = {sql}\nbind-address = 127.0.0.1\n\
             skip-name-resolve\nserver_id = {id}\nbinlog_format = ROW\ndefault_storage_engine = InnoDB\n\
             innodb_autoinc_lock_mode = 2\ninnodb_buffer_pool_size = 64M\ninnodb_log_file_size = 32M\n\
             innodb_flush_log_at_trx_commit = 2\nmax_connections = 300\nperformance_schema = OFF\n\
             wsrep_on = ON\nwsrep_provider = {PROVIDER}\nwsrep_cluster_name = switchyard_lab\n\
             wsrep_cluster_address = gcomm://{members}\nwsrep_node_name = n{id}\n\
             wsrep_node_address = 127.0.0.1:{gcomm}\nwsrep_node_incoming_address = 127.0.0.1:{sql}\n\
             wsrep_sst_receive_address = 127.0.0.1:{sst}\nwsrep_sst_method = rsync\nwsrep_slave_threads = 2\n\
             wsrep_provider_options = \"gmcast.listen_addr=tcp://127.0.0.1:{gcomm};ist.recv_addr=127.0.0.1:{ist};\
             gcache.size=32M;gcache.page_size=32M;{EVS}\"\n",
            sql = node.sql,
            gcomm = node.gcomm,
            ist = node.ist,
            sst = node.sst,
            id = index + 1,
            members = members.join(","),
        );
        fs::write(node.dir.join("my.cnf"), text)?;
        Ok(())
    }

    fn install_first(&self) -> Result<()> {
        let node = &self.nodes[0];
        system::run(
            Command::new("mariadb-install-db")
                .arg(format!("--defaults-file={}", node.dir.join("my.cnf").display()))
                .env("TMPDIR", node.dir.join("tmp"))
                .args([
                    &format!("--user={RUN_AS}"),
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ]),
        )
        .context("mariadb-install-db")?;
        Ok(())
    }

    fn accounts(&self) -> Result<()> {
        self.sql(
            0,
            &format!(
                "CREATE USER '{MONITOR_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{MONITOR_PASSWORD}');
                 GRANT PROCESS ON *.* TO '{MONITOR_USER}'@'%';
                 CREATE USER '{APP_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{APP_PASSWORD}');
                 CREATE DATABASE appdb; GRANT ALL ON appdb.* TO '{APP_USER}'@'%';
                 CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{ADMIN_PASSWORD}');
                 GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%';
                 CREATE TABLE appdb.kv (id BIGINT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64), server_id INT);
                 CREATE USER 'haproxy'@'127.0.0.1';"
            ),
        )?;
        Ok(())
    }

    fn spawn(&mut self, index: usize, args: &[&str]) -> Result<()> {
        let node = &self.nodes[index];
        let _ = fs::remove_file(node.dir.join("mysqld.pid"));
        let mut command = Command::new(mariadbd());
        command
            .arg(format!("--defaults-file={}", node.dir.join("my.cnf").display()))
            .args(args);
        let child = system::spawn_logged(&mut command, &node.dir.join("stdout.log")).context("spawn mariadbd")?;
        self.nodes[index].child = Some(child);
        Ok(())
    }

    /// Runs SQL as root over node `index`'s unix socket; the batch output, trimmed.
    pub fn sql(&self, index: usize, sql: &str) -> Result<String> {
        let node = &self.nodes[index];
        system::run(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", node.dir.join("mysqld.sock").display()))
                .args([
                    "-uroot",
                    "--batch",
                    "--skip-column-names",
                    "--connect-timeout=2",
                    "-e",
                    sql,
                ]),
        )
        .with_context(|| format!("galera node{}: {sql}", index + 1))
        .map(|out| out.trim_end().to_string())
    }

    /// One `SHOW GLOBAL STATUS` value of node `index` (`None` when it does not answer).
    pub fn status(&self, index: usize, name: &str) -> Option<String> {
        let row = self.sql(index, &format!("SHOW GLOBAL STATUS LIKE '{name}'")).ok()?;
        row.split_once('\t').map(|(_, v)| v.to_string())
    }

    /// Waits until node `index` is `Synced`, ready, in a Primary component of `size`.
    pub fn wait_synced(&mut self, index: usize, size: usize) -> Result<()> {
        self.wait_for(index, |g| {
            g.status(index, "wsrep_local_state").as_deref() == Some("4")
                && g.status(index, "wsrep_ready").as_deref() == Some("ON")
                && g.status(index, "wsrep_cluster_status").as_deref() == Some("Primary")
                && g.status(index, "wsrep_cluster_size") == Some(size.to_string())
        })
        .with_context(|| format!("node{} did not sync in a cluster of {size}", index + 1))
    }

    /// Waits until `ready(self)` holds, failing if node `index` exits meanwhile.
    pub fn wait_for(&mut self, index: usize, ready: impl Fn(&Galera) -> bool) -> Result<()> {
        let started = Instant::now();
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(status) = self.nodes[index]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("node{} exited with {status}: {}", index + 1, self.error_log(index));
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("timed out: {}", self.error_log(index));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn error_log(&self, index: usize) -> String {
        let text = fs::read_to_string(self.nodes[index].dir.join("error.log")).unwrap_or_default();
        let lines: Vec<_> = text.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The PID of node `index`'s server.
    pub fn pid(&self, index: usize) -> Result<u32> {
        self.nodes[index]
            .child
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("galera node{} is not running", index + 1))
    }

    /// `kill -9` of node `index`.
    pub fn kill9(&mut self, index: usize) -> Result<()> {
        system::kill9(&mut self.nodes[index].child)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to node `index`'s server.
    pub fn signal(&self, index: usize, signal: &str) -> Result<()> {
        system::signal(self.pid(index)?, signal)
    }

    /// Starts a stopped (or killed) node again: recovers its position from InnoDB
    /// (`--wsrep-recover`, what `galera_recovery` does) and rejoins from there, by IST
    /// when a donor's gcache still holds the rest. `sst` forces a full state transfer
    /// (the node is a Joiner, its donor `Donor/Desynced`, meanwhile). Returns without
    /// waiting for it to sync (see [`Galera::wait_synced`]).
    pub fn rejoin(&mut self, index: usize, sst: bool) -> Result<()> {
        let dir = self.nodes[index].dir.clone();
        let mut args = Vec::new();
        if sst {
            let _ = fs::remove_file(dir.join("data/grastate.dat"));
        } else if let Some(position) = self.recover(index)? {
            args.push(format!("--wsrep_start_position={position}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(index, &args)
    }

    fn recover(&self, index: usize) -> Result<Option<String>> {
        let dir = &self.nodes[index].dir;
        let log = dir.join("recover.log");
        let _ = fs::remove_file(&log);
        let _ = Command::new(mariadbd())
            .arg(format!("--defaults-file={}", dir.join("my.cnf").display()))
            .arg("--wsrep-recover")
            .arg(format!("--log-error={}", log.display()))
            .output()?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|line| line.split_once("WSREP: Recovered position:"))
            .map(|(_, position)| position.trim().to_string())
            .next_back())
    }
}

impl Drop for Galera {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                system::stop(&mut child, Duration::from_secs(20));
            }
        }
        if std::env::var_os("SWITCHYARD_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
