//! `switchyard-drill reload`: how long a config reload with 1,000 backends takes to apply,
//! and whether sessions survive it. One fresh proxy process (the release binary),
//! `backends` TCP-checked backends over ten echo servers, ten pools of a tenth each
//! and a listener per pool; clients open, use and close sessions through one
//! listener all along. Each round reloads the unchanged file (the reference) and
//! then a version where 30% of the backends differ (a tenth removed, a tenth added,
//! a tenth at another address), alternating between two such versions. Reported:
//! the median apply time of each kind as the proxy measured it (`took_ms` of
//! `POST /config/reload`), their ratio, and the sessions that failed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SERVERS: usize = 10;
const POOLS: usize = 10;
const CLIENTS: usize = 16;
const TOKEN: &str = "reload-bench";

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Backends in the config.
    pub backends: usize,
    /// Apply times of the unchanged reloads, ms (as the proxy measured them).
    pub unchanged_ms: Vec<f64>,
    /// Apply times of the reloads that changed 30% of the backends, ms.
    pub changed_ms: Vec<f64>,
    /// Sessions completed and failed through all the reloads.
    pub sessions: (u64, u64),
}

async fn echo_server(name: String) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let banner = format!("{name}\n");
            tokio::spawn(async move {
                if stream.write_all(banner.as_bytes()).await.is_ok() {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                }
            });
        }
    });
    Ok(addr)
}

/// Version `v` of the config: `v == 0` is the base; odd and even versions after it
/// differ from it (and from each other) in 30% of the backends.
fn config(v: usize, backends: usize, servers: &[SocketAddr], admin: SocketAddr, listeners: &[SocketAddr]) -> String {
    let tenth = backends / 10;
    let mut text = format!(
        "[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n[check]\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
    );
    let mut members: Vec<Vec<String>> = vec![Vec::new(); POOLS];
    // Odd versions: the last tenth removed, a tenth added, the first tenth moved to
    // another server. Even ones after 0: the base set, the first tenth moved
    // elsewhere again. Any two consecutive versions differ in 30% of the backends.
    let odd = v % 2 == 1;
    for i in 0..backends + tenth {
        let present = if odd {
            i < backends - tenth || i >= backends
        } else {
            i < backends
        };
        if !present {
            continue;
        }
        let shift = if v > 0 && i < tenth { 1 + v % 2 } else { 0 };
        let server = servers[(i + shift) % servers.len()];
        text += &format!("[backends.b{i}]\naddress = \"{server}\"\n");
        members[i % POOLS].push(format!("\"b{i}\""));
    }
    for (p, names) in members.iter().enumerate() {
        text += &format!(
            "[pools.p{p}]\nbackends = [{}]\npolicy = \"round-robin\"\n",
            names.join(", ")
        );
        text += &format!("[listeners.l{p}]\nlisten = \"{}\"\npool = \"p{p}\"\n", listeners[p]);
    }
    text
}

async fn post_reload(admin: SocketAddr) -> Result<serde_json::Value> {
    match switchyard::admin::client::post(admin, "/config/reload", Some(TOKEN), Duration::from_secs(60)).await {
        Ok((200, body)) => Ok(serde_json::from_str(&body)?),
        Ok((code, body)) => bail!("/config/reload answered {code}: {body}"),
        Err(e) => bail!("reloading: {e}"),
    }
}

/// Sessions back to back through `target` until `stop`: (completed, failed).
async fn clients(target: SocketAddr, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let session = async {
                        let mut stream = BufReader::new(TcpStream::connect(target).await?);
                        let mut line = String::new();
                        stream.read_line(&mut line).await?;
                        stream.get_mut().write_all(b"ping\n").await?;
                        line.clear();
                        stream.read_line(&mut line).await?;
                        anyhow::ensure!(line == "ping\n", "echoed {line:?}");
                        Ok::<_, anyhow::Error>(())
                    };
                    match tokio::time::timeout(Duration::from_secs(5), session).await {
                        Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

/// Runs `rounds` rounds against `binary` with `backends` backends.
pub async fn run(binary: &Path, backends: usize, rounds: usize) -> Result<Figures> {
    let mut servers = Vec::new();
    for i in 0..SERVERS {
        servers.push(echo_server(format!("s{i}")).await?);
    }
    let port = || switchyard_lab::system::free_port().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let admin = port()?;
    let listeners = (0..POOLS).map(|_| port()).collect::<Result<Vec<_>>>()?;
    let dir = switchyard_lab::system::temp_dir("sy-reload-bench")?;
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, config(0, backends, &servers, admin, &listeners))?;
    let mut command = std::process::Command::new(binary);
    command.arg("run").arg("--config").arg(&path);
    let mut proxy = switchyard_lab::system::spawn_logged(&mut command, &dir.join("switchyard.log"))
        .with_context(|| format!("starting {}", binary.display()))?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = switchyard::admin::client::get(admin, "/health", Duration::from_secs(5)).await;
            if matches!(ready, Ok((200, _))) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the proxy did not check every backend within 30 s: {ready:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(clients(listeners[0], stop.clone()));
        let (mut unchanged_ms, mut changed_ms) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let took = |report: &serde_json::Value| report["took_ms"].as_f64().unwrap_or(f64::NAN);
            unchanged_ms.push(took(&post_reload(admin).await?));
            std::fs::write(&path, config(round, backends, &servers, admin, &listeners))?;
            let report = post_reload(admin).await?;
            changed_ms.push(took(&report));
            let count = |kind: &str| report["backends"][kind].as_array().map_or(0, Vec::len);
            println!(
                "round {round}: backends +{} -{} ~{}, {:.2} ms",
                count("added"),
                count("removed"),
                count("changed"),
                took(&report)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let sessions = load.await?;
        Ok(Figures {
            backends,
            unchanged_ms,
            changed_ms,
            sessions,
        })
    }
    .await;
    switchyard_lab::system::stop(&mut proxy, Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The report line.
pub fn report(figures: &Figures) -> String {
    let (unchanged, changed) = (median(&figures.unchanged_ms), median(&figures.changed_ms));
    format!(
        "reload backends={} rounds={} unchanged_median_ms={unchanged:.2} changed_30pct_median_ms={changed:.2} ratio={:.2} sessions_completed={} sessions_failed={}",
        figures.backends,
        figures.changed_ms.len(),
        changed / unchanged,
        figures.sessions.0,
        figures.sessions.1,
    )
}
