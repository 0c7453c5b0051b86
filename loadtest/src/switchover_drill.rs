//! Planned switchovers under load: `switchyard-drill switchover`.
//!
//! One three-node MariaDB GTID cluster; writers of two kinds, as web applications
//! use MySQL: per-request (a new connection per write, as Django runs) and pooled
//! clients that ping before each use (SQLAlchemy's `pool_pre_ping`, Django's
//! `CONN_HEALTH_CHECKS`: a `COM_PING`, then the statements, on a kept connection).
//! Each kind twice over: `mysql_async` in this process, and the Python clients
//! themselves (SQLAlchemy with `pool_pre_ping=True` over PyMySQL; PyMySQL with a
//! connection per write), from `lab/py/mysql_writer.py`.
//!
//! ```text
//! switchyard  N × POST /pools/writer/switchover, back and forth (db1 ⇄ db2)
//! haproxy     N × the same switchover run outside (read_only=1, catch up, promote,
//!             repoint), then HAProxy moved by its runtime API (new server ready,
//!             old one in maintenance with its sessions shut down): what an
//!             orchestrator's hook does
//! ```
//!
//! Per target and client kind it prints
//! `switchover scenario=mysql-KIND target=T switchovers=N errors=N pause_p99_ms=N wrong_node_acks=N missing_acked=N`:
//! `pause` is, per switchover, the longest write that overlapped it (p99 over the
//! switchovers); a wrong-node ack is a write acknowledged by a server other than the
//! primary of that moment (either one during a switchover); missing acks are
//! acknowledged writes absent from the final primary once every node caught up.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mysql_async::prelude::Queryable;
use switchyard_lab::mariadb::{
    Cluster, MONITOR_PASSWORD, MONITOR_USER, ORCHESTRATOR_PASSWORD, ORCHESTRATOR_USER, REPL_PASSWORD, REPL_USER,
};
use switchyard_lab::system;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sysbench::spawn;
use crate::workload::opts;

const TOKEN: &str = "drill-token";

/// Which kind of client wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `mysql_async`, a new connection per write.
    PerRequest,
    /// `mysql_async`, a kept connection pinged before each use.
    PrePing,
    /// SQLAlchemy with `pool_pre_ping=True` over PyMySQL.
    SqlAlchemy,
    /// PyMySQL, a new connection per write (Django without persistent connections).
    PyMysql,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::PerRequest, Kind::PrePing, Kind::SqlAlchemy, Kind::PyMysql];

    fn name(self) -> &'static str {
        match self {
            Kind::PerRequest => "per-request",
            Kind::PrePing => "pre-ping",
            Kind::SqlAlchemy => "sqlalchemy-pre-ping",
            Kind::PyMysql => "pymysql-per-request",
        }
    }
}

/// One write as its client saw it.
#[derive(Debug, Clone)]
struct Write {
    kind: Kind,
    tag: String,
    started: Instant,
    ended: Instant,
    /// The server that took it, or the error.
    result: Result<u32, String>,
}

/// One switchover: when, from which server to which.
#[derive(Debug, Clone, Copy)]
struct Move {
    started: Instant,
    ended: Instant,
    from: u32,
    to: u32,
}

/// Runs the drill; `switchovers` per target.
pub async fn run(switchovers: u32, switchyard: &Path) -> Result<()> {
    system::ensure_packages(&[("haproxy", "haproxy")])?;
    if !switchyard.is_file() {
        bail!(
            "{} not found: cargo build --release -p switchyard",
            switchyard.display()
        );
    }
    let cluster = Arc::new(Mutex::new(tokio::task::spawn_blocking(|| Cluster::start(3)).await??));
    let dir = system::temp_dir("sy-switchover")?;
    let (port, admin) = (system::free_port()?, system::free_port()?);
    let config = switchyard_config(&cluster.lock().unwrap(), port, admin);
    std::fs::write(dir.join("switchyard.toml"), config)?;
    let proxy = spawn(
        Command::new(switchyard)
            .args(["run", "--config"])
            .arg(dir.join("switchyard.toml"))
            .env("RUST_LOG", "warn"),
        &dir.join("switchyard.log"),
    )?;
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    await_write(front).await.context("a first write through switchyard")?;
    let moves = drive(front, switchovers, |i| {
        let to = if i % 2 == 0 { 1 } else { 0 };
        async move {
            let path = format!("/pools/writer/switchover?to=db{}", to + 1);
            let limit = Duration::from_secs(120);
            match switchyard::admin::client::post(admin, &path, Some(TOKEN), limit).await {
                Ok((200, _)) => Ok(to),
                Ok((code, body)) => bail!("switchover {i} to db{}: {code} {body}", to + 1),
                Err(e) => bail!("switchover {i}: {e}"),
            }
        }
    })
    .await?;
    let primary = moves.1.last().map_or(0, |m| m.to as usize - 1);
    report("switchyard", &cluster, primary, &moves.0, &moves.1, switchovers).await?;
    drop(proxy);

    // HAProxy in front of the same cluster, moved by an orchestrator's hook.
    let ha_port = system::free_port()?;
    let socket = dir.join("haproxy.sock");
    std::fs::write(
        dir.join("haproxy.cfg"),
        haproxy_config(&cluster.lock().unwrap(), ha_port, &socket, primary),
    )?;
    let haproxy = crate::sysbench::spawn_haproxy(&dir.join("haproxy.cfg"))?;
    let ha_front = SocketAddr::from(([127, 0, 0, 1], ha_port));
    await_write(ha_front).await.context("a first write through HAProxy")?;
    let current = Arc::new(Mutex::new(primary));
    let moves = drive(ha_front, switchovers, |_| {
        let (cluster, current, socket) = (cluster.clone(), current.clone(), socket.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let from = *current.lock().unwrap();
                let to = if from == 0 { 1 } else { 0 };
                external_switchover(&cluster.lock().unwrap(), &socket, from, to)?;
                *current.lock().unwrap() = to;
                Ok(to)
            })
            .await?
        }
    })
    .await?;
    let primary = *current.lock().unwrap();
    report("haproxy", &cluster, primary, &moves.0, &moves.1, switchovers).await?;
    drop(haproxy);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs the writers against `front` while `switchover(i)` moves the primary
/// `count` times (each returns the new primary's index); the writes and the moves.
async fn drive<F, Fut>(front: SocketAddr, count: u32, mut switchover: F) -> Result<(Vec<Write>, Vec<Move>)>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let stop = CancellationToken::new();
    let writes = Arc::new(Mutex::new(Vec::new()));
    let python = Python::start(front)?;
    let mut tasks = Vec::new();
    for (i, kind) in [Kind::PerRequest, Kind::PerRequest, Kind::PrePing, Kind::PrePing]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(writer(front, kind, i, stop.clone(), writes.clone())));
    }
    let mut moves = Vec::new();
    let mut from = current_server(front).await?;
    let result = async {
        for i in 0..count {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let started = Instant::now();
            let to = switchover(i).await? as u32 + 1;
            moves.push(Move {
                started,
                ended: Instant::now(),
                from,
                to,
            });
            from = to;
            if (i + 1) % 10 == 0 {
                eprintln!("{} switchovers done", i + 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let from_python = tokio::task::spawn_blocking(move || python.stop()).await??;
    result?;
    let mut writes = std::mem::take(&mut *writes.lock().unwrap());
    writes.extend(from_python);
    Ok((writes, moves))
}

impl Drop for Python {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            system::stop(child, Duration::from_secs(2));
        }
    }
}

/// The Python clients (`lab/py/mysql_writer.py`), until a stop file appears.
struct Python {
    children: Vec<(Kind, Child)>,
    stop_file: std::path::PathBuf,
    /// The wall clock and the monotonic one at the same moment, to place their writes.
    epoch: (std::time::SystemTime, Instant),
}

impl Python {
    fn start(front: SocketAddr) -> Result<Python> {
        let python = switchyard_lab::python::python()?;
        let dir = system::temp_dir("sy-pywriters")?;
        let stop_file = dir.join("stop");
        let mut children = Vec::new();
        for kind in [Kind::SqlAlchemy, Kind::PyMysql] {
            let child = Command::new(&python)
                .arg(switchyard_lab::python::script("mysql_writer.py"))
                .args([
                    front.ip().to_string(),
                    front.port().to_string(),
                    kind.name().to_string(),
                ])
                .arg(format!("sw-{}", kind.name()))
                .arg(&stop_file)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .context("start a Python writer")?;
            children.push((kind, child));
        }
        Ok(Python {
            children,
            stop_file,
            epoch: (std::time::SystemTime::now(), Instant::now()),
        })
    }

    /// Stops the writers and reads what they did.
    fn stop(mut self) -> Result<Vec<Write>> {
        std::fs::write(&self.stop_file, b"")?;
        let mut writes = Vec::new();
        for (kind, child) in std::mem::take(&mut self.children) {
            // Bounded: each writer stops within one write once the file exists.
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "the {} writer failed: {}",
                    kind.name(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let v: serde_json::Value = serde_json::from_str(line).context("a writer's JSON line")?;
                let at = |key: &str| self.instant(v[key].as_f64().unwrap_or(0.0));
                let result = if v["ok"].as_bool() == Some(true) {
                    Ok(v["server_id"].as_u64().unwrap_or(0) as u32)
                } else {
                    Err(v["error"].as_str().unwrap_or("").to_string())
                };
                writes.push(Write {
                    kind,
                    tag: v["tag"].as_str().unwrap_or("").to_string(),
                    started: at("start"),
                    ended: at("end"),
                    result,
                });
            }
        }
        let _ = std::fs::remove_dir_all(self.stop_file.parent().expect("a dir"));
        Ok(writes)
    }

    fn instant(&self, wall: f64) -> Instant {
        instant_of(self.epoch, wall)
    }
}

/// The monotonic instant of `wall` (seconds since the Unix epoch), given one moment
/// on both clocks: to place the writes a Python client timed.
pub(crate) fn instant_of(epoch: (std::time::SystemTime, Instant), wall: f64) -> Instant {
    let base = epoch
        .0
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    // Before the epoch by `offset` seconds when negative.
    let offset = wall - base;
    if offset >= 0.0 {
        epoch.1 + Duration::from_secs_f64(offset)
    } else {
        epoch.1 - Duration::from_secs_f64(-offset)
    }
}

/// One client until `stop`: per-request writes, or pre-ping uses of a kept connection.
async fn writer(front: SocketAddr, kind: Kind, id: usize, stop: CancellationToken, out: Arc<Mutex<Vec<Write>>>) {
    let mut kept: Option<mysql_async::Conn> = None;
    for n in 0..1_000_000u64 {
        if stop.is_cancelled() {
            break;
        }
        let tag = format!("sw-{}-{id}-{n}", kind.name());
        let started = Instant::now();
        let result = match kind {
            Kind::PerRequest | Kind::PyMysql => per_request(front, &tag).await,
            Kind::PrePing | Kind::SqlAlchemy => pre_ping(front, &mut kept, &tag).await,
        };
        let result = result.map_err(|e| e.to_string());
        if result.is_err() {
            kept = None;
        }
        out.lock().unwrap().push(Write {
            kind,
            tag,
            started,
            ended: Instant::now(),
            result,
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn per_request(front: SocketAddr, tag: &str) -> mysql_async::Result<u32> {
    let mut conn = connect(front).await?;
    let id = insert(&mut conn, tag).await?;
    // The client's goodbye: a close that meets a closed connection loses nothing.
    let _ = conn.disconnect().await;
    Ok(id)
}

async fn pre_ping(front: SocketAddr, kept: &mut Option<mysql_async::Conn>, tag: &str) -> mysql_async::Result<u32> {
    let alive = match kept.as_mut() {
        Some(conn) => conn.ping().await.is_ok(),
        None => false,
    };
    if !alive {
        *kept = Some(connect(front).await?);
    }
    insert(kept.as_mut().expect("connected"), tag).await
}

async fn connect(addr: SocketAddr) -> mysql_async::Result<mysql_async::Conn> {
    match tokio::time::timeout(Duration::from_secs(30), mysql_async::Conn::new(opts(addr))).await {
        Ok(conn) => conn,
        Err(_) => Err(mysql_async::Error::Other("connect timed out".into())),
    }
}

/// Inserts a row tagged `tag`; the server that took it.
async fn insert(conn: &mut mysql_async::Conn, tag: &str) -> mysql_async::Result<u32> {
    conn.exec_drop("INSERT INTO kv (v, server_id) VALUES (?, @@server_id)", (tag,))
        .await?;
    Ok(conn.query_first("SELECT @@server_id").await?.unwrap_or(0))
}

async fn current_server(front: SocketAddr) -> Result<u32> {
    let mut conn = connect(front).await?;
    let id: u32 = conn.query_first("SELECT @@server_id").await?.unwrap_or(0);
    let _ = conn.disconnect().await;
    Ok(id)
}

/// Waits (bounded) until a write goes through `front`.
async fn await_write(front: SocketAddr) -> Result<()> {
    let mut last = String::new();
    for _ in 0..100 {
        match per_request(front, "drill-ready").await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no write went through {front} in 20 s: {last}")
}

/// The figures of one target, per client kind.
async fn report(
    target: &str,
    cluster: &Arc<Mutex<Cluster>>,
    primary: usize,
    writes: &[Write],
    moves: &[Move],
    switchovers: u32,
) -> Result<()> {
    let acked: Vec<String> = writes
        .iter()
        .filter(|w| w.result.is_ok())
        .map(|w| w.tag.clone())
        .collect();
    let missing = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || missing_on(&cluster.lock().unwrap(), primary, &acked)).await??
    };
    for kind in Kind::ALL {
        let mine: Vec<&Write> = writes.iter().filter(|w| w.kind == kind).collect();
        let errors: Vec<&Write> = mine.iter().copied().filter(|w| w.result.is_err()).collect();
        let wrong = mine.iter().filter(|w| wrong_node(w, moves)).count();
        let lost = mine.iter().filter(|w| missing.contains(&w.tag)).count();
        println!(
            "switchover scenario=mysql-{} target={target} switchovers={switchovers} writes={} errors={} pause_p99_ms={:.0} wrong_node_acks={wrong} missing_acked={lost}",
            kind.name(),
            mine.len(),
            errors.len(),
            pause_p99_ms(&mine, moves),
        );
        for w in errors.iter().take(3) {
            let error = w.result.as_ref().unwrap_err().replace('\n', " ");
            println!("  e.g. {}: {}", w.tag, error.chars().take(200).collect::<String>());
        }
    }
    Ok(())
}

/// Whether `w` was acknowledged by a server that was not the primary then.
fn wrong_node(w: &Write, moves: &[Move]) -> bool {
    let Ok(server) = w.result else {
        return false;
    };
    let during = moves.iter().find(|m| w.ended >= m.started && w.started <= m.ended);
    if let Some(m) = during {
        return server != m.from && server != m.to;
    }
    // Outside a switchover: the last move's target before it (or the first's source).
    let before = moves.iter().rev().find(|m| m.ended < w.started);
    let primary = before.map_or_else(|| moves.first().map_or(server, |m| m.from), |m| m.to);
    server != primary
}

/// Per switchover, the longest write that overlapped it; the p99 over switchovers.
fn pause_p99_ms(writes: &[&Write], moves: &[Move]) -> f64 {
    let mut pauses: Vec<f64> = moves
        .iter()
        .map(|m| {
            writes
                .iter()
                .filter(|w| w.ended >= m.started && w.started <= m.ended)
                .map(|w| (w.ended - w.started).as_secs_f64() * 1000.0)
                .fold(0.0, f64::max)
        })
        .collect();
    pauses.sort_by(|a, b| a.total_cmp(b));
    match pauses.len() {
        0 => 0.0,
        n => pauses[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1],
    }
}

/// The acknowledged tags absent from node `primary` once every node caught up.
fn missing_on(cluster: &Cluster, primary: usize, acked: &[String]) -> Result<Vec<String>> {
    for other in (0..cluster.nodes().len()).filter(|&i| i != primary) {
        cluster.wait_caught_up(other, primary)?;
    }
    let present = cluster.sql(primary, "SELECT v FROM appdb.kv")?;
    let present: std::collections::HashSet<&str> = present.lines().collect();
    Ok(acked
        .iter()
        .filter(|t| !present.contains(t.as_str()))
        .cloned()
        .collect())
}

fn switchyard_config(cluster: &Cluster, port: u16, admin: u16) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\n\
         [check]\nkind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n\
         interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n"
    );
    let mut names = Vec::new();
    for node in cluster.nodes() {
        text += &format!("[backends.db{}]\naddress = \"{}\"\n\n", node.index + 1, node.addr());
        names.push(format!("\"db{}\"", node.index + 1));
    }
    text += &format!(
        "[pools.writer]\nbackends = [{}]\nrole = \"primary\"\nhold_timeout = \"30s\"\n\n\
         [pools.writer.switchover]\nuser = \"{ORCHESTRATOR_USER}\"\npassword = \"{ORCHESTRATOR_PASSWORD}\"\n\
         replication_user = \"{REPL_USER}\"\nreplication_password = \"{REPL_PASSWORD}\"\n\n\
         [listeners.writer]\nlisten = \"127.0.0.1:{port}\"\npool = \"writer\"\nmode = \"mysql\"\n",
        names.join(", ")
    );
    text
}

/// HAProxy with every node listed, only `primary` in service; moved by the runtime API.
fn haproxy_config(cluster: &Cluster, port: u16, socket: &Path, primary: usize) -> String {
    let mut text = format!(
        "global\n    maxconn 4096\n    stats socket {} level admin\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
         timeout client 60s\n    timeout server 60s\n\nlisten mysql\n    bind 127.0.0.1:{port}\n    \
         option mysql-check user haproxy post-41\n    balance first\n",
        socket.display()
    );
    for node in cluster.nodes() {
        let state = if node.index == primary { "" } else { " disabled" };
        text += &format!(
            "    server db{} {} check inter 250 fall 2 rise 1 on-marked-down shutdown-sessions{state}\n",
            node.index + 1,
            node.addr()
        );
    }
    text
}

/// The switchover an orchestrator runs beside HAProxy, then its hook moves HAProxy.
fn external_switchover(cluster: &Cluster, socket: &Path, from: usize, to: usize) -> Result<()> {
    cluster.sql(from, "SET GLOBAL read_only=1")?;
    cluster.wait_caught_up(to, from)?;
    cluster.promote(to)?;
    haproxy_command(socket, &format!("set server mysql/db{} state ready", to + 1))?;
    haproxy_command(socket, &format!("set server mysql/db{} state maint", from + 1))?;
    haproxy_command(socket, &format!("shutdown sessions server mysql/db{}", from + 1))?;
    for other in (0..cluster.nodes().len()).filter(|&i| i != from && i != to) {
        cluster.repoint(other, to)?;
    }
    cluster.rejoin_as_replica(from, to)
}

fn haproxy_command(socket: &Path, command: &str) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("HAProxy's runtime socket {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    if !answer.trim().is_empty() {
        bail!("HAProxy refused {command:?}: {}", answer.trim());
    }
    Ok(())
}
