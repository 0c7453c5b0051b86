//! Redis failovers under Celery-like load: `switchyard-drill redis`.
//!
//! Per scenario a fresh lab (three `redis-server` nodes, node 1 the master, and three
//! Sentinels, quorum 2, `down-after-milliseconds` 1000) with two proxies in front at
//! once, each taking the same clients:
//!
//! The plan is a TOML file ([`plan`], shipped as `loadtest/scenarios/redis-sentinel.toml`):
//!
//! ```text
//! switchyard  a primary pool with redis checks every 250 ms and the Sentinels' word
//! haproxy     the common recipe: tcp-check send "info replication", expect
//!             role:master, inter 250ms, on-marked-down shutdown-sessions
//! clients     `writers` × the redis crate (kept connections, a new one every
//!             `reconnect_every` writes, each write `SET key` + `CONFIG GET port`
//!             pipelined: the node that took it), and with `kombu` a kombu producer +
//!             consumer (Celery's transport library, lab/py/redis_celery.py)
//! faults      kill9 · sentinel-failover · sigstop (`stop_for`) · restart-empty (kill -9,
//!             then back as an empty master) · replicaof-flip (REPLICAOF NO ONE on a
//!             replica by hand) · client-pause (CLIENT PAUSE `pause_for` WRITE)
//! ```
//!
//! A monitor asks every Sentinel `get-master-addr-by-name` every 10 ms. A write is
//! *acked by a non-master* when no Sentinel named its node from its start to its end
//! (±50 ms); *missing* when acknowledged and absent from the final master once the
//! Sentinels agree. Per target and client it prints
//! `redis scenario=S target=T client=C outage_ms=N errors=N acked_by_non_master=N missing_acked=N acked=N`
//! (kombu cannot tell which node took a message: its `acked_by_non_master` is `-`),
//! with `sentinel_named_ms`, Sentinel's own failover time (from the fault to the first
//! sample where a Sentinel names another node; `-`: none did; after a replica promoted
//! by hand, `sentinel_corrected_ms`: until Sentinel made it a replica again), and for
//! `sentinel-failover` how long after that the first write reached the new master
//! through each target (`first_write_after_announce_ms`).

pub mod judge;
pub mod plan;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use judge::{Op, Sample};
use plan::{Action, Fault, Plan, Workload};
use switchyard_lab::redis::{RedisSet, MASTER_NAME};
use switchyard_lab::system;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TARGETS: [&str; 2] = ["switchyard", "haproxy"];

/// Runs the faults of `plan` named in `only` (all when empty), each in a fresh lab.
pub async fn run(plan: &Plan, only: &[String], switchyard: &Path) -> Result<()> {
    let faults = plan.select(only)?;
    let packages = [("haproxy", "haproxy"), ("redis-sentinel", "redis-sentinel")];
    crate::sysbench::preflight(&packages, switchyard, &[], &[])?;
    eprintln!("drill: {} ({} faults)", plan.name, faults.len());
    for fault in faults {
        let name = fault.action.name();
        scenario(fault, plan.workload, switchyard)
            .await
            .with_context(|| format!("scenario {name}"))?;
    }
    Ok(())
}

async fn scenario(fault: Fault, load: Workload, switchyard: &Path) -> Result<()> {
    let name = fault.action.name();
    let set = tokio::task::spawn_blocking(|| -> Result<RedisSet> {
        let mut set = RedisSet::start(3)?;
        set.start_sentinels(3)?;
        Ok(set)
    })
    .await??;
    let set = Arc::new(Mutex::new(set));
    let dir = system::temp_dir("sy-redis-drill")?;
    let fronts = [system::free_port()?, system::free_port()?].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let (sy_conf, ha_conf) = {
        let set = set.lock().unwrap();
        (switchyard_config(&set, fronts[0]), haproxy_config(&set, fronts[1]))
    };
    let _proxies = crate::sysbench::spawn_side_by_side(&dir, switchyard, &sy_conf, &ha_conf)?;
    for front in fronts {
        await_write(front).await?;
    }
    let sentinels: Vec<SocketAddr> = (0..3).map(|j| set.lock().unwrap().sentinel_addr(j)).collect();
    let master_port = set.lock().unwrap().addr(0).port();
    let stop = CancellationToken::new();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let monitor = tokio::spawn(watch_sentinels(sentinels.clone(), stop.clone(), samples.clone()));
    // The writers start once the monitor has its first sample (bounded).
    for _ in 0..500 {
        if !samples.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ops: Arc<Mutex<Vec<(usize, Op)>>> = Arc::default();
    let mut writers = Vec::new();
    for (t, front) in fronts.iter().enumerate() {
        for w in 0..load.writers as usize {
            let client = Client {
                front: *front,
                target: t,
                id: w,
                load,
            };
            writers.push(tokio::spawn(client.write(stop.clone(), ops.clone())));
        }
    }
    let kombu = if load.kombu {
        Some(Kombu::start(&fronts, &dir)?)
    } else {
        None
    };
    tokio::time::sleep(load.warmup).await;
    let fault_at = Instant::now();
    let injected = {
        let set = set.clone();
        tokio::task::spawn_blocking(move || inject(&set, fault))
    };
    tokio::time::sleep(fault.observe).await;
    let corrected = injected.await??;
    let until = Instant::now();
    stop.cancel();
    for task in writers {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let _ = monitor.await;
    let kombu = match kombu {
        Some(kombu) => Some(tokio::task::spawn_blocking(move || kombu.stop()).await??),
        None => None,
    };
    let (held, final_master) = {
        let set = set.clone();
        let keys: Vec<String> = ops.lock().unwrap().iter().map(|(_, o)| o.key.clone()).collect();
        tokio::task::spawn_blocking(move || held_keys(&set, &keys)).await??
    };
    let seen = Seen {
        ops: std::mem::take(&mut *ops.lock().unwrap()),
        samples: std::mem::take(&mut *samples.lock().unwrap()),
        kombu,
        held,
        final_master,
        master_port,
        fault_at,
        until,
        corrected,
    };
    report(name, &seen);
    drop(set);
    crate::sysbench::remove_drill_dir(&dir);
    Ok(())
}

/// What one scenario saw, for [`report`].
struct Seen {
    /// By target index.
    ops: Vec<(usize, Op)>,
    samples: Vec<Sample>,
    /// `None` when the plan runs no kombu clients.
    kombu: Option<KombuFigures>,
    /// The keys the final master holds, and its port.
    held: HashSet<String>,
    final_master: u16,
    /// The master's port before the fault.
    master_port: u16,
    fault_at: Instant,
    until: Instant,
    /// After a replica promoted by hand: how long Sentinel took to correct it.
    corrected: Option<Duration>,
}

/// Prints the `redis scenario=...` lines of one scenario, per target and client.
fn report(name: &str, seen: &Seen) {
    let announced = judge::announced(&seen.samples, seen.master_port, seen.fault_at);
    // Sentinel's own failover time: from the fault to a Sentinel naming another node;
    // after a replica promoted by hand, to Sentinel making it a replica again.
    let sentinel = match (announced, seen.corrected) {
        (_, Some(took)) => format!("sentinel_named_ms=- sentinel_corrected_ms={}", took.as_millis()),
        (Some(a), None) => format!("sentinel_named_ms={}", (a - seen.fault_at).as_millis()),
        (None, None) => "sentinel_named_ms=-".to_string(),
    };
    let since = seen.fault_at - Duration::from_secs(1);
    for (t, target) in TARGETS.iter().enumerate() {
        let mine: Vec<Op> = seen
            .ops
            .iter()
            .filter(|(i, _)| *i == t)
            .map(|(_, o)| o.clone())
            .collect();
        let acked = |ops: &[Op]| ops.iter().filter(|o| o.result.is_ok()).count();
        let mut line = format!(
            "redis scenario={name} target={target} client=redis-rs outage_ms={} errors={} acked_by_non_master={} missing_acked={} acked={} {sentinel}",
            judge::outage(&mine, since, seen.until).as_millis(),
            mine.len() - acked(&mine),
            mine.iter().filter(|o| judge::by_non_master(o, &seen.samples)).count(),
            judge::missing(&mine, &seen.held),
            acked(&mine),
        );
        if name == "sentinel-failover" {
            let first = announced.and_then(|a| judge::first_on(&mine, seen.final_master, a - Duration::from_secs(5)));
            if let (Some(a), Some(f)) = (announced, first) {
                line += &format!(" first_write_after_announce_ms={}", judge::signed_ms(f, a));
            }
        }
        println!("{line}");
        let Some((published, received)) = seen.kombu.as_ref().map(|k| &k[t]) else {
            continue;
        };
        println!(
            "redis scenario={name} target={target} client=kombu outage_ms={} errors={} acked_by_non_master=- missing_acked={} acked={}",
            judge::outage(published, since, seen.until).as_millis(),
            published.len() - acked(published),
            judge::missing(published, received),
            acked(published),
        );
    }
}

/// `fault` against the lab's master (node 1), from a blocking thread. For
/// `replicaof-flip`, how long Sentinel took to make the node a replica again.
fn inject(set: &Mutex<RedisSet>, fault: Fault) -> Result<Option<Duration>> {
    let cli = |i: usize, args: &[&str]| set.lock().unwrap().cli(i, args).map(drop);
    match fault.action {
        Action::Kill9 => set.lock().unwrap().kill9(0),
        Action::SentinelFailover => set
            .lock()
            .unwrap()
            .sentinel_cli(0, &["SENTINEL", "FAILOVER", MASTER_NAME])
            .map(drop),
        Action::Sigstop => {
            let pid = set.lock().unwrap().pid(0).context("the master runs")?;
            system::signal(pid, "STOP")?;
            std::thread::sleep(fault.lasting);
            system::signal(pid, "CONT")
        }
        Action::RestartEmpty => {
            set.lock().unwrap().kill9(0)?;
            let started = std::time::Instant::now();
            while set.lock().unwrap().sentinel_master().ok() == Some(0) {
                if started.elapsed() > Duration::from_secs(15) {
                    bail!("no failover within 15 s of the kill");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            set.lock().unwrap().restart_empty(0)
        }
        Action::ClientPause => cli(0, &["CLIENT", "PAUSE", &fault.lasting.as_millis().to_string(), "WRITE"]),
        Action::ReplicaofFlip => return flip_replica(set),
    }
    .map(|()| None)
}

/// `REPLICAOF NO ONE` on node 2, a replica; how long Sentinel took to make it a
/// replica again (`None`: not within 30 s).
fn flip_replica(set: &Mutex<RedisSet>) -> Result<Option<Duration>> {
    set.lock().unwrap().cli(1, &["REPLICAOF", "NO", "ONE"])?;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if set.lock().unwrap().info(1, "role").ok().as_deref() == Some("slave") {
            return Ok(Some(started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

/// Waits (bounded) until the Sentinels agree, then reads which of `keys` the master
/// they name holds; those keys and the master's port.
fn held_keys(set: &Mutex<RedisSet>, keys: &[String]) -> Result<(HashSet<String>, u16)> {
    let started = std::time::Instant::now();
    let master = loop {
        let set = set.lock().unwrap();
        let named: Vec<Option<String>> = (0..3)
            .map(|j| {
                set.sentinel_cli(j, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME])
                    .ok()
            })
            .collect();
        if named.iter().all(|n| n.is_some() && *n == named[0]) {
            break set.sentinel_master()?;
        }
        drop(set);
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the Sentinels did not agree within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let addr = set.lock().unwrap().addr(master);
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut held = HashSet::new();
    for chunk in keys.chunks(1000) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut conn)?;
        held.extend(
            chunk
                .iter()
                .zip(values)
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.clone()),
        );
    }
    Ok((held, addr.port()))
}

/// Samples every Sentinel's word every 10 ms until `stop`.
async fn watch_sentinels(sentinels: Vec<SocketAddr>, stop: CancellationToken, out: Arc<Mutex<Vec<Sample>>>) {
    let config = connection_config(Duration::from_millis(200));
    let mut conns = Vec::new();
    for s in &sentinels {
        let client = redis::Client::open(format!("redis://{s}/")).expect("a sentinel URL");
        conns.push(client.get_multiplexed_async_connection_with_config(&config).await.ok());
    }
    while !stop.is_cancelled() {
        let mut named = Vec::new();
        for conn in conns.iter_mut() {
            let word: Option<(String, u16)> = match conn {
                Some(c) => redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER_NAME)
                    .query_async(c)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            named.push(word.map(|(_, port)| port));
        }
        out.lock().unwrap().push(Sample {
            at: Instant::now(),
            named,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn connection_config(limit: Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(limit)
        .set_response_timeout(limit)
}

/// One redis-crate client of one target.
struct Client {
    front: SocketAddr,
    /// The target's index in [`TARGETS`].
    target: usize,
    id: usize,
    load: Workload,
}

impl Client {
    /// Writes through `front` until `stop`: a kept connection, replaced every
    /// `reconnect_every` writes and after an error.
    async fn write(self, stop: CancellationToken, out: Arc<Mutex<Vec<(usize, Op)>>>) {
        let Client {
            front,
            target,
            id,
            load,
        } = self;
        let Ok(client) = redis::Client::open(format!("redis://{front}/")) else {
            return;
        };
        let config = connection_config(Duration::from_secs(2));
        let mut kept: Option<redis::aio::MultiplexedConnection> = None;
        let mut uses = 0;
        for n in 0..1_000_000u64 {
            if stop.is_cancelled() {
                break;
            }
            if load.reconnect_every > 0 && uses == load.reconnect_every {
                (kept, uses) = (None, 0);
            }
            let key = format!("sy:{}:{id}:{n}", TARGETS[target]);
            let started = Instant::now();
            let result = async {
                if kept.is_none() {
                    kept = Some(client.get_multiplexed_async_connection_with_config(&config).await?);
                }
                let conn = kept.as_mut().expect("connected");
                let ((), port): ((), Vec<String>) = redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(n)
                    .cmd("CONFIG")
                    .arg("GET")
                    .arg("port")
                    .query_async(conn)
                    .await?;
                Ok::<_, redis::RedisError>(port.get(1).and_then(|p| p.parse().ok()))
            }
            .await
            .map_err(|e| e.to_string());
            if result.is_err() {
                (kept, uses) = (None, 0);
            } else {
                uses += 1;
            }
            let ended = Instant::now();
            out.lock().unwrap().push((
                target,
                Op {
                    key,
                    started,
                    ended,
                    result,
                },
            ));
            tokio::time::sleep(load.pause).await;
        }
    }
}

/// Waits (bounded) until a SET goes through `front`.
async fn await_write(front: SocketAddr) -> Result<()> {
    let client = redis::Client::open(format!("redis://{front}/"))?;
    let mut last = String::new();
    for _ in 0..100 {
        let attempt = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&connection_config(Duration::from_secs(1)))
                .await?;
            redis::cmd("SET")
                .arg("drill-ready")
                .arg(1)
                .query_async::<()>(&mut conn)
                .await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no write went through {front} in 20 s: {last}")
}

fn switchyard_config(set: &RedisSet, front: SocketAddr) -> String {
    let mut text = String::from(
        "[shutdown]\ngrace = \"1s\"\n\n[check]\nkind = \"redis\"\ninterval = \"250ms\"\nfast_interval = \"100ms\"\n\
         timeout = \"500ms\"\nrise = 1\nfall = 2\n\n",
    );
    for i in 0..3 {
        text += &format!("[backends.r{}]\naddress = \"{}\"\n\n", i + 1, set.addr(i));
    }
    let sentinels: Vec<String> = (0..3).map(|j| format!("\"{}\"", set.sentinel_addr(j))).collect();
    text += &format!(
        "[pools.cache]\nbackends = [\"r1\", \"r2\", \"r3\"]\nrole = \"primary\"\non_leave = \"close\"\n\
         hold_timeout = \"10s\"\nconnect_timeout = \"500ms\"\n\n\
         [pools.cache.sentinel]\nsentinels = [{}]\nmaster_name = \"{MASTER_NAME}\"\n\n\
         [listeners.cache]\nlisten = \"{front}\"\npool = \"cache\"\n",
        sentinels.join(", ")
    );
    text
}

/// The tcp-check recipe operators use in front of Redis.
fn haproxy_config(set: &RedisSet, front: SocketAddr) -> String {
    let mut text = format!(
        "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\
         frontend redis_front\n  bind {front}\n  default_backend redis\n\
         backend redis\n  option tcp-check\n  tcp-check connect\n  tcp-check send PING\\r\\n\n  tcp-check expect string +PONG\n\
         \x20 tcp-check send info\\ replication\\r\\n\n  tcp-check expect string role:master\n\
         \x20 tcp-check send QUIT\\r\\n\n  tcp-check expect string +OK\n"
    );
    for i in 0..3 {
        text += &format!(
            "  server r{} {} check inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions\n",
            i + 1,
            set.addr(i)
        );
    }
    text
}

/// The kombu producer and consumer of each target (`lab/py/redis_celery.py`).
struct Kombu {
    children: Vec<std::process::Child>,
    stop_file: std::path::PathBuf,
    epoch: (std::time::SystemTime, Instant),
}

/// Per target: the publishes and the message numbers received.
type KombuFigures = Vec<(Vec<Op>, HashSet<String>)>;

impl Kombu {
    /// Their output goes to `kombu-TARGET.log` in `logs`.
    fn start(fronts: &[SocketAddr], logs: &Path) -> Result<Kombu> {
        let python = switchyard_lab::python::python()?;
        let dir = system::temp_dir("sy-kombu")?;
        let stop_file = dir.join("stop");
        let mut children = Vec::new();
        for (front, target) in fronts.iter().zip(TARGETS) {
            let log = std::fs::File::create(logs.join(format!("kombu-{target}.log")))?;
            // A queue per target: both proxies front the same nodes.
            let child = Command::new(&python)
                .arg(switchyard_lab::python::script("redis_celery.py"))
                .args([
                    front.ip().to_string(),
                    front.port().to_string(),
                    format!("drill-{target}"),
                ])
                .arg(&stop_file)
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .context("start the kombu clients")?;
            children.push(child);
        }
        Ok(Kombu {
            children,
            stop_file,
            epoch: (std::time::SystemTime::now(), Instant::now()),
        })
    }

    fn stop(mut self) -> Result<KombuFigures> {
        std::fs::write(&self.stop_file, b"")?;
        let mut figures = Vec::new();
        // Popped one by one: on an error, Drop stops the ones not waited for yet.
        while !self.children.is_empty() {
            let child = self.children.remove(0);
            // Bounded: the producer stops within one publish, the consumer drains ≤ 20 s.
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("the kombu clients failed: see kombu-TARGET.log in the drill's directory (KEEP_DRILL_DIR=1 keeps it)");
            }
            let (mut published, mut received) = (Vec::new(), HashSet::new());
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let v: serde_json::Value = serde_json::from_str(line).context("a kombu JSON line")?;
                let n = v["n"].as_u64().unwrap_or(0).to_string();
                match v["kind"].as_str() {
                    Some("publish") => {
                        let ok = v["ok"].as_bool() == Some(true);
                        published.push(Op {
                            key: n,
                            started: self.instant(v["start"].as_f64().unwrap_or(0.0)),
                            ended: self.instant(v["end"].as_f64().unwrap_or(0.0)),
                            result: if ok { Ok(None) } else { Err(v["error"].to_string()) },
                        });
                    }
                    Some("received") => {
                        received.insert(n);
                    }
                    _ => {}
                }
            }
            figures.push((published, received));
        }
        let _ = std::fs::remove_dir_all(self.stop_file.parent().expect("a dir"));
        Ok(figures)
    }

    fn instant(&self, wall: f64) -> Instant {
        crate::switchover_drill::instant_of(self.epoch, wall)
    }
}

impl Drop for Kombu {
    fn drop(&mut self) {
        for child in &mut self.children {
            system::stop(child, Duration::from_secs(2));
        }
    }
}
