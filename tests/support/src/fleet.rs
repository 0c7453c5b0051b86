//! A fleet of switchyard processes in front of a MariaDB cluster, sharing one etcd:
//! their configs, what their `/status` says of the fleet, and drill writers through
//! every one of them whose acknowledgements record the node that gave them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_lab::mariadb::Cluster;
use tokio_util::sync::CancellationToken;

use crate::mysql::{cluster_config, connect, insert};
use crate::process::Spawned;
use crate::{poll_pause, within};

const LIMIT: Duration = Duration::from_secs(40);

/// A proxy's config: the MariaDB cluster's writer and reader pools, and `[cluster]`.
pub fn proxy_config(db: &Cluster, name: &str, etcd: &[String], prefix: &str, extra: &str) -> String {
    let endpoints: Vec<String> = etcd.iter().map(|e| format!("\"{e}\"")).collect();
    // The admin address is the spawner's; the listeners' are fixed, so that a
    // restarted proxy listens where its clients connect.
    let text = cluster_config(db, "", "")
        .replacen("listen = \"127.0.0.1:0\"", "listen = \"{admin}\"", 1)
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", crate::refused_addr()),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", crate::refused_addr()),
            1,
        );
    format!(
        "{text}\n[cluster]\nname = \"{name}\"\netcd = [{}]\nprefix = \"{prefix}\"\nlease_ttl = \"2s\"\n\
         timeout = \"400ms\"\nlight_interval = \"500ms\"\n{extra}\n",
        endpoints.join(", ")
    )
}

/// One proxy of the fleet: its own process, which a test may kill and start again.
pub struct Proxy {
    /// Its name in the fleet.
    pub name: String,
    binary: String,
    config: String,
    /// The process, while it runs.
    pub process: Option<Spawned>,
}

impl Proxy {
    /// Starts `binary` on `config` (whose `[admin]` listens on `{admin}`).
    pub async fn start(binary: &str, name: &str, config: String) -> Proxy {
        let process = Some(Spawned::start(binary, name, &config).await);
        Proxy {
            name: name.to_string(),
            binary: binary.to_string(),
            config,
            process,
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.process = None; // Spawned kills on drop
    }

    /// Starts it again on the same config.
    pub async fn restart(&mut self) {
        self.kill();
        self.process = Some(Spawned::start(&self.binary, &self.name, &self.config).await);
    }

    fn process(&self) -> &Spawned {
        self.process
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// Reloads it on `config` (SIGHUP), which its restarts then use too.
    pub fn reload(&mut self, config: String) {
        self.process().reload_with(&config);
        self.config = config;
    }

    /// Its config now.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// `/status`.
    pub async fn status(&self) -> serde_json::Value {
        self.process().status().await
    }

    /// The address of its listener `name`.
    pub async fn listener(&self, name: &str) -> SocketAddr {
        let status = self.status().await;
        let listener = status["listeners"]
            .as_array()
            .and_then(|all| all.iter().find(|l| l["name"] == name));
        listener
            .and_then(|l| l["address"].as_str())
            .and_then(|a| a.parse().ok())
            .expect("the listener is on /status")
    }

    /// Pool `name` on `/status`.
    pub async fn pool(&self, name: &str) -> serde_json::Value {
        crate::pool_status(&self.status().await, name)
    }

    /// The value of a series on `/metrics`.
    pub async fn metric(&self, series: &str) -> f64 {
        self.process().metric(series).await
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.process.as_ref().map(Spawned::log_text).unwrap_or_default()
    }

    /// The lines of its log about the fleet, primaries and flips.
    pub fn fleet_log(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["fleet", "primary", "flipped", "role", "etcd"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        lines.join("\n")
    }
}

/// Waits until every running proxy routes pool `pool` to `backend` alone, at one
/// epoch; returns it.
pub async fn await_routed(proxies: &[&Proxy], pool: &str, backend: &str) -> i64 {
    let converged = async {
        loop {
            let mut epochs = Vec::new();
            for proxy in proxies.iter().filter(|p| p.process.is_some()) {
                let status = proxy.pool(pool).await;
                if status["routable"] == serde_json::json!([backend]) && status["fleet"]["primary"] == backend {
                    epochs.push(status["fleet"]["epoch"].as_i64().unwrap_or(-1));
                }
            }
            let running = proxies.iter().filter(|p| p.process.is_some()).count();
            if epochs.len() == running && epochs.windows(2).all(|w| w[0] == w[1]) {
                return epochs[0];
            }
            poll_pause().await;
        }
    };
    match tokio::time::timeout(LIMIT, converged).await {
        Ok(epoch) => epoch,
        Err(_) => {
            for proxy in proxies.iter().filter(|p| p.process.is_some()) {
                eprintln!("--- {}: {}\n{}", proxy.name, proxy.pool(pool).await, proxy.fleet_log());
            }
            panic!("timed out after {LIMIT:?} waiting for every proxy to route {pool} to {backend} at one epoch");
        }
    }
}

/// Backend → the proxies that say they check it for the fleet.
pub async fn holders(proxies: &[&Proxy]) -> BTreeMap<String, Vec<String>> {
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for proxy in proxies.iter().filter(|p| p.process.is_some()) {
        let status = proxy.status().await;
        for backend in status["fleet"]["checking"].as_array().into_iter().flatten() {
            let backend = backend.as_str().unwrap_or_default().to_string();
            held.entry(backend).or_default().push(proxy.name.clone());
        }
    }
    held
}

/// Waits until each of `backends` has exactly one checker among the running proxies.
pub async fn await_one_checker_each(proxies: &[&Proxy], backends: &[&str]) -> BTreeMap<String, Vec<String>> {
    within(LIMIT, "one checker per backend", async {
        loop {
            let held = holders(proxies).await;
            if backends.iter().all(|b| held.get(*b).is_some_and(|h| h.len() == 1)) {
                return held;
            }
            poll_pause().await;
        }
    })
    .await
}

/// One acknowledged write: when (Unix ms), through which proxy, by which server.
#[derive(Debug, Clone)]
pub struct Ack {
    /// When the acknowledgement arrived.
    pub at_ms: u64,
    /// The proxy it went through.
    pub proxy: String,
    /// The `@@server_id` of the node that took it.
    pub server_id: u32,
}

/// Writers through every proxy's writer listener, reconnecting after every error and
/// every 20 writes, until stopped (or 100,000 writes each).
pub struct Writers {
    stop: CancellationToken,
    acks: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<usize>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// One writer per `(proxy name, writer address)`.
    pub fn start(targets: Vec<(String, SocketAddr)>) -> Writers {
        let (stop, acks, errors) = (CancellationToken::new(), Arc::default(), Arc::default());
        let tasks = targets
            .into_iter()
            .map(|(proxy, addr)| tokio::spawn(write(proxy, addr, stop.clone(), Arc::clone(&acks), Arc::clone(&errors))))
            .collect();
        Writers {
            stop,
            acks,
            errors,
            tasks,
        }
    }

    /// The acknowledgements so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Failed writes and connects so far.
    pub fn errors(&self) -> usize {
        *self.errors.lock().unwrap()
    }

    /// Stops every writer and waits for them.
    pub async fn stop(self) -> (Vec<Ack>, usize) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let acks = self.acks.lock().unwrap().clone();
        let errors = *self.errors.lock().unwrap();
        (acks, errors)
    }
}

async fn write(
    proxy: String,
    addr: SocketAddr,
    stop: CancellationToken,
    acks: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<usize>>,
) {
    let mut written = 0;
    while !stop.is_cancelled() && written < 100_000 {
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(3), connect(addr)).await else {
            *errors.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for _ in 0..20 {
            if stop.is_cancelled() {
                break;
            }
            written += 1;
            match tokio::time::timeout(Duration::from_secs(3), insert(&mut conn, &proxy)).await {
                Ok(Ok(server_id)) => acks.lock().unwrap().push(Ack {
                    at_ms: switchyard::timeline::now_ms(),
                    proxy: proxy.clone(),
                    server_id,
                }),
                _ => {
                    *errors.lock().unwrap() += 1;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.disconnect()).await;
    }
}
