//! `switchyard-drill upgrade`: hot binary upgrades under load, counting what clients saw.
//!
//! Two parts, each on one fresh switchyard process (the release binary) and then
//! `upgrades` new ones in a row, each started with `run --upgrade` while the load
//! runs, the next once the previous answers `/status` with its own PID:
//!
//! - wrk with `Connection: close` (a new connection per request, at full rate) through
//!   switchyard to nginx; first a run of the same length without upgrades, the
//!   reference. Reported: requests, requests a second as a ratio to the reference,
//!   socket errors (connect, read, write, timeout) and non-2xx answers.
//! - sysbench `oltp_read_write` through switchyard to the lab's three-node MariaDB
//!   cluster (a primary pool), as back-to-back 1-second runs of 8 threads so new
//!   connections keep arriving at whichever process accepts; sysbench stops at the
//!   first error, and so does this part. Reported: transactions and runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchyard_lab::daemon::Daemon;
use switchyard_lab::mariadb::{Cluster, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_lab::system;

/// What wrk saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wrk {
    /// Requests completed.
    pub requests: u64,
    /// Requests a second.
    pub rate: f64,
    /// Socket errors: connect, read, write, timeout.
    pub socket_errors: [u64; 4],
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
}

impl Wrk {
    /// Reads wrk's report.
    pub fn parse(out: &str) -> Option<Wrk> {
        let mut wrk = Wrk::default();
        for line in out.lines().map(str::trim) {
            if let Some((requests, _)) = line.split_once(" requests in ") {
                wrk.requests = requests.trim().parse().ok()?;
            } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
                wrk.rate = rate.trim().parse().ok()?;
            } else if let Some(errors) = line.strip_prefix("Socket errors:") {
                for (i, part) in errors.split(',').enumerate().take(4) {
                    wrk.socket_errors[i] = part.split_whitespace().nth(1)?.parse().ok()?;
                }
            } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
                wrk.non_2xx = n.trim().parse().ok()?;
            }
        }
        (wrk.requests > 0).then_some(wrk)
    }

    /// Every failed request.
    pub fn errors(&self) -> u64 {
        self.socket_errors.iter().sum::<u64>() + self.non_2xx
    }
}

/// One part's figures.
#[derive(Debug, Clone)]
pub struct Figures {
    /// wrk without upgrades, and with them.
    pub wrk: (Wrk, Wrk),
    /// sysbench: transactions and 1-second runs (each with 8 new connections); an
    /// error aborts the run (and this part).
    pub sysbench: (f64, f64),
    /// Upgrades done in each part.
    pub upgrades: usize,
}

/// The processes of one part: the serving one and those draining.
struct Generations {
    binary: PathBuf,
    config: PathBuf,
    admin: SocketAddr,
    log: PathBuf,
    children: Vec<Child>,
}

impl Generations {
    fn start(binary: &Path, dir: &Path, config: &str, admin: SocketAddr) -> Result<Generations> {
        let path = dir.join("switchyard.toml");
        std::fs::write(&path, config)?;
        let mut generations = Generations {
            binary: binary.to_path_buf(),
            config: path,
            admin,
            log: dir.join("switchyard.log"),
            children: Vec::new(),
        };
        generations.spawn(false)?;
        Ok(generations)
    }

    /// Starts a process (with `--upgrade`: a new generation) and waits until it is the
    /// one answering with every backend checked or taken over.
    fn spawn(&mut self, upgrade: bool) -> Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn");
        if upgrade {
            command.arg("--upgrade");
        }
        let child = system::spawn_logged(&mut command, &self.log)?;
        let pid = child.id();
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ours = status(self.admin).is_some_and(|s| {
                s["pid"] == pid
                    && s["backends"]
                        .as_array()
                        .is_some_and(|b| b.iter().all(|b| b["status"] != "unknown"))
            });
            if ours {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "process {pid} did not take over within 30 s (log: {})",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `count` upgrades, `every` apart.
    fn upgrade(&mut self, count: usize, every: Duration) -> Result<()> {
        for _ in 0..count {
            std::thread::sleep(every);
            self.spawn(true)?;
        }
        Ok(())
    }
}

impl Drop for Generations {
    fn drop(&mut self) {
        for child in &mut self.children {
            system::stop(child, Duration::from_secs(2));
        }
    }
}

fn config(
    admin: SocketAddr,
    listen: SocketAddr,
    dir: &Path,
    check: &str,
    backends: &[(String, SocketAddr)],
    pool: &str,
) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"{admin}\"\n[shutdown]\ngrace = \"30s\"\n[runtime]\nupgrade_socket = \"{}\"\n[check]\n{check}interval = \"500ms\"\n",
        dir.join("upgrade.sock").display()
    );
    for (name, addr) in backends {
        text += &format!("[backends.{name}]\naddress = \"{addr}\"\n");
    }
    let names: Vec<_> = backends.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    text += &format!(
        "[pools.p]\nbackends = [{}]\n{pool}\n[listeners.l]\nlisten = \"{listen}\"\npool = \"p\"\n",
        names.join(", ")
    );
    text
}

/// `GET /status` (blocking, bounded): the document, or `None`.
pub(crate) fn status(admin: SocketAddr) -> Option<serde_json::Value> {
    crate::admin_http::get_json(admin, "/status")
}

fn wrk(target: SocketAddr, secs: u64) -> Result<Wrk> {
    let out = Command::new("timeout")
        .arg((secs + 30).to_string())
        .args(["wrk", "-t2", "-c64", &format!("-d{secs}s"), "-H", "Connection: close"])
        .arg(format!("http://{target}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Wrk::parse(&text).with_context(|| format!("no result in wrk's output: {text}"))
}

fn addr() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], system::free_port()?)))
}

/// wrk through switchyard to nginx: (without upgrades, with `upgrades`).
fn wrk_part(binary: &Path, upgrades: usize, every: Duration) -> Result<(Wrk, Wrk)> {
    let nginx_addr = addr()?;
    let _nginx = Daemon::nginx(
        &format!("server {{ listen {nginx_addr}; location / {{ return 200 \"ok\\n\"; }} }}"),
        nginx_addr,
    )?;
    let dir = system::temp_dir("sy-upgrade-wrk")?;
    let (admin, listen) = (addr()?, addr()?);
    let text = config(
        admin,
        listen,
        &dir,
        "kind = \"tcp\"\n",
        &[("web".into(), nginx_addr)],
        "",
    );
    let mut generations = Generations::start(binary, &dir, &text, admin)?;
    let secs = (every.as_secs_f64() * (upgrades as f64 + 1.0)).ceil() as u64;
    let reference = wrk(listen, secs)?;
    let load = std::thread::spawn(move || wrk(listen, secs));
    generations.upgrade(upgrades, every)?;
    let upgraded = load.join().map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??;
    Ok((reference, upgraded))
}

/// sysbench through switchyard to a three-node cluster: (transactions, runs). A run
/// that fails (sysbench stops at its first error) fails this part.
fn sysbench_part(binary: &Path, upgrades: usize, every: Duration) -> Result<(f64, f64)> {
    let cluster = Cluster::start(3)?;
    let dir = system::temp_dir("sy-upgrade-sysbench")?;
    let (admin, listen) = (addr()?, addr()?);
    let nodes: Vec<_> = (0..3)
        .map(|i| (format!("db{}", i + 1), cluster.node(i).addr()))
        .collect();
    let check = format!("kind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n");
    let text = config(
        admin,
        listen,
        &dir,
        &check,
        &nodes,
        "role = \"primary\"\nhold_timeout = \"10s\"",
    );
    let mut generations = Generations::start(binary, &dir, &text, admin)?;
    crate::sysbench::sysbench(cluster.node(0).addr().port(), "prepare", &[])?;
    let until = Instant::now() + every.mul_f64(upgrades as f64 + 1.0);
    let port = listen.port();
    // sysbench 1.0 keeps its connections for a whole run: back-to-back 1-second runs
    // bring new connections to whichever process accepts, all along.
    let load = std::thread::spawn(move || -> Result<(f64, f64)> {
        let (mut transactions, mut runs) = (0.0, 0.0);
        while Instant::now() < until {
            let out = crate::sysbench::sysbench(port, "run", &["--threads=8", "--time=1", "--events=0"])?;
            transactions += count(&out, "transactions:");
            runs += 1.0;
        }
        Ok((transactions, runs))
    });
    generations.upgrade(upgrades, every)?;
    load.join()
        .map_err(|_| anyhow::anyhow!("the sysbench thread panicked"))?
}

/// The first number after `label` in sysbench's report (0 when absent).
fn count(out: &str, label: &str) -> f64 {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Runs both parts: `upgrades` upgrades each, `every` apart.
pub fn run(binary: &Path, upgrades: usize, every: Duration) -> Result<Figures> {
    system::ensure_packages(&[("wrk", "wrk"), ("sysbench", "sysbench"), ("nginx", "nginx")])?;
    let wrk = wrk_part(binary, upgrades, every)?;
    let sysbench = sysbench_part(binary, upgrades, every)?;
    Ok(Figures {
        wrk,
        sysbench,
        upgrades,
    })
}

/// The report lines.
pub fn report(figures: &Figures) -> String {
    let (reference, upgraded) = &figures.wrk;
    format!(
        "upgrade wrk upgrades={} requests={} errors={} socket_errors(connect,read,write,timeout)={:?} non_2xx={} rate={:.0}/s reference_rate={:.0}/s ratio={:.2} reference_errors={}\n\
         upgrade sysbench upgrades={} transactions={} runs={} (8 connections each) errors=0",
        figures.upgrades,
        upgraded.requests,
        upgraded.errors(),
        upgraded.socket_errors,
        upgraded.non_2xx,
        upgraded.rate,
        reference.rate,
        upgraded.rate / reference.rate,
        reference.errors(),
        figures.upgrades,
        figures.sysbench.0,
        figures.sysbench.1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrks_report_is_read_errors_included() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n\
            \x20 41230 requests in 10.00s, 5.1MB read\n\
            \x20 Socket errors: connect 1, read 2, write 0, timeout 3\n\
            \x20 Non-2xx or 3xx responses: 4\nRequests/sec:   4123.01\nTransfer/sec:    512.00KB\n";
        let wrk = Wrk::parse(out).unwrap();
        assert_eq!(wrk.requests, 41230);
        assert_eq!(wrk.socket_errors, [1, 2, 0, 3]);
        assert_eq!(wrk.errors(), 10);
        assert!((wrk.rate - 4123.01).abs() < 1e-9);
        assert_eq!(Wrk::parse("no requests"), None);
    }
}
