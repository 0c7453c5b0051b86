//! Galera faults under write load: `switchyard-drill galera`.
//!
//! Per scenario a fresh 3-node MariaDB Galera cluster (`switchyard_lab::galera`) with
//! two proxies in front at once, each taking the same clients:
//!
//! ```text
//! switchyard  a primary pool over the three nodes, kind = "galera" checks every 250 ms,
//!             a mode = "mysql" listener
//! haproxy     as Open edX's configuration ships it for Galera: balance roundrobin,
//!             option mysql-check (a login), `check` with HAProxy's default timings
//! clients     4 writers per target, kept connections (a new one after an error); each
//!             write one transaction: an INSERT of its own key and an UPDATE of one of
//!             its target's 8 hot rows (as counters and sessions are in an LMS)
//! faults      writer-kill9 (node 1) · desync (wsrep_desync=ON on node 1 for 4 s) ·
//!             writer-sigstop (node 1 frozen 5 s) · non-primary (nodes 2 and 3 frozen
//!             6 s: node 1 alone in a non-Primary component) · sst-rejoin (node 3
//!             killed and rejoined by a full SST: its donor is Donor/Desynced)
//! ```
//!
//! Per target it prints `galera scenario=S target=T outage_ms=N errors=N conflicts=N
//! wrong_component_acks=N acked=N`: the longest gap between two committed writes from
//! 1 s before the fault; failed writes; of those, certification conflicts (1213
//! deadlock, what two writers on two nodes cause); and acknowledged writes missing from
//! the cluster afterwards (what a node outside the Primary component would have
//! acknowledged: Galera refuses those writes, so this stays 0 unless something is
//! wrong). `view_ms`: from the fault to node 2's first view of a smaller component
//! (Galera's own reaction: until then a commit waits for the lost node), and
//! `resume_after_view_ms`: from that view to the target's first committed write. For
//! switchyard also `resume_after_detect_ms`: from the moment its checks took the old
//! writer out (the failover event) to the first committed write after.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use mysql_async::prelude::Queryable;
use switchyard_lab::galera::Galera;
use switchyard_lab::mariadb::{APP_PASSWORD, APP_USER, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_lab::system;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::redis_drill::judge::{missing, outage, Op};

/// The faults, by the names the command line takes.
pub const SCENARIOS: [&str; 5] = ["writer-kill9", "desync", "writer-sigstop", "non-primary", "sst-rejoin"];

const TARGETS: [&str; 2] = ["switchyard", "haproxy"];
/// How long the clients run after the fault starts.
const OBSERVE: Duration = Duration::from_secs(14);
/// A write (or a connect) that takes longer has failed.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs each scenario of `scenarios` on a fresh cluster.
pub async fn run(scenarios: &[String], switchyard: &Path) -> Result<()> {
    crate::sysbench::preflight(&[("haproxy", "haproxy")], switchyard, scenarios, &SCENARIOS)?;
    for name in scenarios {
        scenario(name, switchyard)
            .await
            .with_context(|| format!("scenario {name}"))?;
    }
    Ok(())
}

/// One committed or failed write, and when it ended (Unix ms, to compare with the
/// proxy's failover event).
pub(crate) struct Write {
    pub(crate) op: Op,
    ended_unix_ms: u64,
}

async fn scenario(name: &str, switchyard: &Path) -> Result<()> {
    let galera = tokio::task::spawn_blocking(|| -> Result<Galera> {
        let galera = Galera::start(3)?;
        galera.sql(
            0,
            "CREATE TABLE appdb.hot (id INT PRIMARY KEY, n BIGINT NOT NULL);
             INSERT INTO appdb.hot SELECT seq, 0 FROM test.seq_0_to_15",
        )?;
        Ok(galera)
    })
    .await??;
    let galera = Arc::new(Mutex::new(galera));
    let dir = system::temp_dir("sy-galera-drill")?;
    let fronts = [system::free_port()?, system::free_port()?].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let admin = SocketAddr::from(([127, 0, 0, 1], system::free_port()?));
    let (sy_conf, ha_conf) = {
        let g = galera.lock().unwrap();
        (switchyard_config(&g, fronts[0], admin), haproxy_config(&g, fronts[1]))
    };
    let _proxies = crate::sysbench::spawn_side_by_side(&dir, switchyard, &sy_conf, &ha_conf)?;
    let writers = Writers::start(&fronts).await?;
    let views: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::default();
    let stop_views = CancellationToken::new();
    let view_monitor = {
        let node2 = galera.lock().unwrap().addr(1);
        tokio::spawn(watch_view(node2, stop_views.clone(), views.clone()))
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fault_at = Instant::now();
    let fault = {
        let (galera, name) = (galera.clone(), name.to_string());
        tokio::task::spawn_blocking(move || inject(&galera, &name))
    };
    tokio::time::sleep(OBSERVE).await;
    fault.await??;
    let until = Instant::now();
    let writes = writers.finish().await;
    stop_views.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), view_monitor).await;
    // When node 2 first saw its component shrink: Galera's own reaction to the fault.
    let view = views
        .lock()
        .unwrap()
        .iter()
        .find(|(at, size)| *at >= fault_at && *size < 3)
        .map(|(at, _)| *at);
    let failovers = crate::upgrade_bench::status(admin)
        .map(|s| s["failovers"].clone())
        .unwrap_or_default();
    let held = {
        let galera = galera.clone();
        tokio::task::spawn_blocking(move || held_keys(&galera)).await??
    };
    let since = fault_at - Duration::from_secs(1);
    for (t, target) in TARGETS.iter().enumerate() {
        let mine: Vec<&Write> = writes.iter().filter(|(i, _)| *i == t).map(|(_, w)| w).collect();
        let ops: Vec<Op> = mine.iter().map(|w| w.op.clone()).collect();
        let failed: Vec<&String> = ops.iter().filter_map(|o| o.result.as_ref().err()).collect();
        let mut line = format!(
            "galera scenario={name} target={target} outage_ms={} errors={} conflicts={} wrong_component_acks={} acked={}",
            outage(&ops, since, until).as_millis(),
            failed.len(),
            failed.iter().filter(|e| e.starts_with(CONFLICT)).count(),
            missing(&ops, &held),
            ops.len() - failed.len(),
        );
        line += &match view {
            Some(view) => {
                let first = ops
                    .iter()
                    .filter(|o| o.result.is_ok() && o.ended >= view)
                    .map(|o| o.ended)
                    .min();
                format!(
                    " view_ms={} resume_after_view_ms={}",
                    (view - fault_at).as_millis(),
                    first.map_or("-".into(), |f| (f - view).as_millis().to_string())
                )
            }
            None => " view_ms=-".into(),
        };
        if t == 0 {
            line += &resumed(&failovers, &mine);
        }
        println!("{line}");
        if std::env::var_os("DRILL_ERRORS").is_some() {
            let mut kinds = std::collections::BTreeMap::<String, usize>::new();
            for e in &failed {
                *kinds.entry(e.chars().take(60).collect()).or_default() += 1;
            }
            eprintln!("galera scenario={name} target={target} error kinds: {kinds:?}");
        }
    }
    drop(galera);
    crate::sysbench::remove_drill_dir(&dir);
    Ok(())
}

/// ` resume_after_detect_ms=N`: from the writer pool's first failover away from node 1
/// (its checks took the old writer out) to the first write committed after it.
fn resumed(failovers: &serde_json::Value, writes: &[&Write]) -> String {
    let removed = failovers
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["from"] == "g1")
        .and_then(|f| f["old_removed_ms"].as_u64());
    let Some(removed) = removed else {
        return " resume_after_detect_ms=-".into();
    };
    let first = writes
        .iter()
        .filter(|w| w.op.result.is_ok() && w.ended_unix_ms >= removed)
        .map(|w| w.ended_unix_ms)
        .min();
    match first {
        Some(first) => format!(" resume_after_detect_ms={}", first - removed),
        None => " resume_after_detect_ms=-".into(),
    }
}

fn switchyard_config(galera: &Galera, front: SocketAddr, admin: SocketAddr) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"{admin}\"\n[shutdown]\ngrace = \"1s\"\n\n[check]\nkind = \"galera\"\n\
         user = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\ninterval = \"250ms\"\n\
         fast_interval = \"100ms\"\ndown_interval = \"250ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 2\n\n"
    );
    for i in 0..galera.len() {
        text += &format!("[backends.g{}]\naddress = \"{}\"\n\n", i + 1, galera.addr(i));
    }
    text += "[pools.writer]\nbackends = [\"g1\", \"g2\", \"g3\"]\nrole = \"primary\"\nhold_timeout = \"10s\"\n\n";
    // mysql mode: a reply saying the node cannot serve (1047) brings its check forward.
    text += &format!("[listeners.writer]\nlisten = \"{front}\"\npool = \"writer\"\nmode = \"mysql\"\n");
    text
}

fn haproxy_config(galera: &Galera, front: SocketAddr) -> String {
    let mut text = format!(
        "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         listen galera\n  bind {front}\n  balance roundrobin\n  option mysql-check user haproxy post-41\n"
    );
    for i in 0..galera.len() {
        text += &format!("  server g{} {} check\n", i + 1, galera.addr(i));
    }
    text
}

async fn connect(front: SocketAddr) -> Result<mysql_async::Conn> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(front.ip().to_string())
        .tcp_port(front.port())
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some("appdb"))
        .prefer_socket(false);
    Ok(tokio::time::timeout(OP_TIMEOUT, mysql_async::Conn::new(opts))
        .await
        .context("connect timed out")??)
}

/// The writers of a drill: 4 per front, each front's index their target.
pub(crate) struct Writers {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writes: Arc<Mutex<Vec<(usize, Write)>>>,
}

impl Writers {
    /// Starts them once a write commits through every front (bounded).
    pub(crate) async fn start(fronts: &[SocketAddr]) -> Result<Writers> {
        for &front in fronts {
            await_write(front).await?;
        }
        let (stop, writes) = (CancellationToken::new(), Arc::default());
        let mut tasks = Vec::new();
        for (t, front) in fronts.iter().enumerate() {
            for w in 0..4 {
                tasks.push(tokio::spawn(writer(*front, t, w, stop.clone(), Arc::clone(&writes))));
            }
        }
        Ok(Writers { stop, tasks, writes })
    }

    /// Stops them (each given 10 s to end its write); every write, by target.
    pub(crate) async fn finish(self) -> Vec<(usize, Write)> {
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

/// Waits (bounded) until a write through `front` commits.
async fn await_write(front: SocketAddr) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(mut conn) = connect(front).await {
            if write_once(&mut conn, "warm-up", 0).await.is_ok() {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no write through {front} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One write transaction: the writer's own key, and one hot row.
async fn write_once(conn: &mut mysql_async::Conn, key: &str, hot: u64) -> Result<()> {
    let work = async {
        conn.query_drop("START TRANSACTION").await?;
        conn.exec_drop("INSERT INTO kv (v, server_id) VALUES (?, @@server_id)", (key,))
            .await?;
        conn.exec_drop("UPDATE hot SET n = n + 1 WHERE id = ?", (hot,)).await?;
        conn.query_drop("COMMIT").await
    };
    Ok(tokio::time::timeout(OP_TIMEOUT, work).await.context("timed out")??)
}

async fn writer(
    front: SocketAddr,
    target: usize,
    n: usize,
    stop: CancellationToken,
    writes: Arc<Mutex<Vec<(usize, Write)>>>,
) {
    let mut conn: Option<mysql_async::Conn> = None;
    let mut i = 0u64;
    while !stop.is_cancelled() {
        i += 1;
        let key = format!("t{target}w{n}n{i}");
        let started = Instant::now();
        let result = async {
            if conn.is_none() {
                conn = Some(connect(front).await?);
            }
            // Each target its own hot rows: a conflict is between its own writers.
            let hot = (target as u64) * 8 + i % 8;
            write_once(conn.as_mut().expect("connected above"), &key, hot).await
        }
        .await;
        if result.is_err() {
            conn = None; // an unknown state: start over on a new connection
        }
        let ended_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let op = Op {
            key,
            started,
            ended: Instant::now(),
            result: result.map(|()| None).map_err(|e| describe(&e)),
        };
        let failed = op.result.is_err();
        writes.lock().unwrap().push((target, Write { op, ended_unix_ms }));
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How a certification conflict's error starts ([`describe`]): MariaDB's 1213
/// (ER_LOCK_DEADLOCK), which Galera returns for a transaction another node's
/// write set won against.
const CONFLICT: &str = "server error 1213";

/// A failed write in a few words; a server's error by its code.
fn describe(error: &anyhow::Error) -> String {
    match error.downcast_ref::<mysql_async::Error>() {
        Some(mysql_async::Error::Server(e)) => format!("server error {}: {}", e.code, e.message),
        _ => format!("{error:#}"),
    }
}

/// Samples node `node`'s `wsrep_cluster_size` every 20 ms until `stop` (a sample
/// that fails or takes over 500 ms is skipped).
async fn watch_view(node: SocketAddr, stop: CancellationToken, views: Arc<Mutex<Vec<(Instant, u32)>>>) {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(node.ip().to_string())
        .tcp_port(node.port())
        .user(Some(MONITOR_USER))
        .pass(Some(MONITOR_PASSWORD))
        .prefer_socket(false);
    let mut conn: Option<mysql_async::Conn> = None;
    while !stop.is_cancelled() {
        let sample = tokio::time::timeout(Duration::from_millis(500), async {
            if conn.is_none() {
                conn = Some(mysql_async::Conn::new(opts.clone()).await?);
            }
            let row: Option<(String, u32)> = conn
                .as_mut()
                .expect("connected above")
                .query_first("SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'")
                .await?;
            Ok::<_, mysql_async::Error>(row.map(|(_, size)| size))
        })
        .await;
        match sample {
            Ok(Ok(Some(size))) => views.lock().unwrap().push((Instant::now(), size)),
            _ => conn = None,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fault `name`, from a blocking thread.
fn inject(galera: &Mutex<Galera>, name: &str) -> Result<()> {
    let pause = |nodes: &[usize], for_: Duration| -> Result<()> {
        for &i in nodes {
            galera.lock().unwrap().signal(i, "STOP")?;
        }
        std::thread::sleep(for_);
        for &i in nodes {
            galera.lock().unwrap().signal(i, "CONT")?;
        }
        Ok(())
    };
    match name {
        "writer-kill9" => galera.lock().unwrap().kill9(0),
        "desync" => {
            galera.lock().unwrap().sql(0, "SET GLOBAL wsrep_desync=ON")?;
            std::thread::sleep(Duration::from_secs(4));
            galera.lock().unwrap().sql(0, "SET GLOBAL wsrep_desync=OFF").map(drop)
        }
        "writer-sigstop" => pause(&[0], Duration::from_secs(5)),
        "non-primary" => pause(&[1, 2], Duration::from_secs(6)),
        "sst-rejoin" => {
            let mut g = galera.lock().unwrap();
            g.kill9(2)?;
            g.rejoin(2, true)
        }
        other => bail!("unknown scenario {other}"),
    }
}

/// Waits (bounded) until every node is Synced again, then reads every key the
/// cluster holds.
fn held_keys(galera: &Mutex<Galera>) -> Result<HashSet<String>> {
    let mut g = galera.lock().unwrap();
    let alive: Vec<usize> = (0..g.len()).filter(|&i| g.pid(i).is_ok()).collect();
    let size = alive.len();
    for &i in &alive {
        g.wait_synced(i, size)?;
    }
    let text = g.sql(alive[0], "SET SESSION wsrep_sync_wait=1; SELECT v FROM appdb.kv")?;
    Ok(text.lines().map(str::to_string).collect())
}
