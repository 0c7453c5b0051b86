//! How fast the check defaults take a failed backend out, and what they cost:
//! `switchyard-drill detect`.
//!
//! ```text
//! detection   per check kind (tcp, http, mysql) and fault (refused: kill -9; hung:
//!             SIGSTOP, http and mysql only: a stopped process still completes TCP
//!             connects), ROUNDS rounds at a random phase of the check interval, no
//!             traffic (the data path's nudges would only make it faster): from the
//!             fault to the flip event on /events. Once with the defaults as they are
//!             (no check timing in the config), once with `--against` timings.
//! cost        the defaults' CPU per check: the proxy's (200 tcp, 200 http, 50 mysql
//!             backends, one kind at a time) and MariaDB's for the mysql checks (its
//!             CPU with the monitor running against idle), each over SECS seconds.
//! ```
//!
//! Prints `detect kind=K fault=F timings=T rounds=N p50_ms=N max_ms=N` and
//! `check_cost kind=K backends=N checks_per_s=N proxy_us_per_check=N [mariadb_us_per_check=N mariadb_core_pct=N]`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchyard_lab::mariadb::{Cluster, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_lab::system;

use crate::admin_http::get_json;
use crate::sysbench::{process_cpu_seconds, spawn, Proc};

/// A check kind under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tcp,
    Http,
    Mysql,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Http => "http",
            Kind::Mysql => "mysql",
        }
    }

    fn check(self) -> String {
        match self {
            Kind::Tcp => "kind = \"tcp\"".to_string(),
            Kind::Http => "kind = \"http\"\npath = \"/\"".to_string(),
            Kind::Mysql => format!("kind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\""),
        }
    }
}

/// The backend a detection round kills or stops: a Python HTTP server (tcp and http
/// checks) or a one-node MariaDB.
enum Target {
    Http(Option<Child>, SocketAddr),
    Mysql(Box<Cluster>),
}

impl Target {
    fn start(kind: Kind) -> Result<Target> {
        if kind == Kind::Mysql {
            return Ok(Target::Mysql(Box::new(Cluster::start(1)?)));
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], system::free_port()?));
        let child = Command::new("python3")
            .args(["-m", "http.server", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("python3 -m http.server")?;
        Ok(Target::Http(Some(child), addr))
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Target::Http(_, addr) => *addr,
            Target::Mysql(cluster) => cluster.node(0).addr(),
        }
    }

    fn pid(&self) -> Result<u32> {
        match self {
            Target::Http(child, _) => child.as_ref().map(Child::id).context("the server runs"),
            Target::Mysql(cluster) => cluster.node(0).pid().context("mariadbd runs"),
        }
    }

    /// `kill -9` (refused afterwards) or SIGSTOP (hung).
    fn fault(&mut self, hung: bool) -> Result<()> {
        match (self, hung) {
            (target, true) => system::signal(target.pid()?, "STOP"),
            (Target::Http(child, _), false) => system::kill9(child),
            (Target::Mysql(cluster), false) => cluster.kill9(0),
        }
    }

    /// The target of the next round: this one woken (SIGCONT) or restarted (MariaDB),
    /// or a new HTTP server.
    fn repaired(mut self, hung: bool, kind: Kind) -> Result<Target> {
        match (&mut self, hung) {
            (target, true) => system::signal(target.pid()?, "CONT")?,
            (Target::Mysql(cluster), false) => cluster.restart(0, false)?,
            (Target::Http(..), false) => return Target::start(kind),
        }
        Ok(self)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Target::Http(Some(child), _) = self {
            let _ = system::signal(child.id(), "CONT");
            system::stop(child, Duration::from_secs(1));
        }
    }
}

/// A switchyard process on `config` in `dir`, ready once `/status` answers.
fn proxy(binary: &Path, dir: &Path, name: &str, config: &str) -> Result<Proc> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    let mut command = Command::new(binary);
    command.arg("run").arg("--config").arg(&path).env("RUST_LOG", "warn");
    spawn(&mut command, &dir.join(format!("{name}.log")))
}

/// One backend `b1`..`bN` per address, checked as `check` says, behind one pool.
fn config(admin: SocketAddr, addresses: &[SocketAddr], check: &str) -> Result<String> {
    let mut text = format!("[admin]\nlisten = \"{admin}\"\n[check]\n{check}\n");
    let mut names = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        text += &format!("[backends.b{}]\naddress = \"{address}\"\n", i + 1);
        names.push(format!("\"b{}\"", i + 1));
    }
    let listen = SocketAddr::from(([127, 0, 0, 1], system::free_port()?));
    text += &format!(
        "[pools.p]\nbackends = [{}]\n[listeners.l]\nlisten = \"{listen}\"\npool = \"p\"\n",
        names.join(", ")
    );
    Ok(text)
}

/// Waits (bounded) until every backend on `/status` has `status`.
fn await_all(admin: SocketAddr, status: &str, limit: Duration) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(doc) = get_json(admin, "/status") {
            let backends = doc["backends"].as_array().cloned().unwrap_or_default();
            if !backends.is_empty() && backends.iter().all(|b| b["status"] == status) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("the backends were not all {status} within {limit:?}")
}

/// Wall-clock milliseconds of the first `up -> down` health event after event `after`.
fn down_event(admin: SocketAddr, after: u64, limit: Duration) -> Result<u64> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let events = get_json(admin, "/events")
            .and_then(|e| e.as_array().cloned())
            .unwrap_or_default();
        let flip = events.iter().find(|e| {
            e["kind"] == "health"
                && e["id"].as_u64().unwrap_or(0) > after
                && e["detail"].as_str().is_some_and(|d| d.starts_with("up -> down"))
        });
        if let Some(at) = flip.and_then(|e| e["at_ms"].as_u64()) {
            return Ok(at);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no up -> down event within {limit:?}")
}

fn last_event_id(admin: SocketAddr) -> u64 {
    get_json(admin, "/events")
        .and_then(|e| {
            e.as_array()
                .and_then(|a| a.iter().filter_map(|e| e["id"].as_u64()).max())
        })
        .unwrap_or(0)
}

/// Timings under test: the defaults (`None`: nothing in the config), or explicit ones.
#[derive(Clone, Copy)]
struct Timings {
    label: &'static str,
    /// Extra `[check]` lines.
    lines: &'static str,
}

/// Detection rounds for one kind and fault: the milliseconds of each.
fn detection(binary: &Path, dir: &Path, kind: Kind, hung: bool, timings: Timings, rounds: u32) -> Result<Vec<u64>> {
    let mut target = Target::start(kind)?;
    let mut took = Vec::new();
    for round in 0..rounds {
        let admin = SocketAddr::from(([127, 0, 0, 1], system::free_port()?));
        let check = format!("{}\nrise = 1\n{}", kind.check(), timings.lines);
        let text = config(admin, &[target.addr()], &check)?;
        let proxy = proxy(binary, dir, &format!("detect-{}-{round}", kind.name()), &text)?;
        await_all(admin, "up", Duration::from_secs(30))?;
        let after = last_event_id(admin);
        // A random phase within the longest interval tried, so rounds sample where in
        // the check cycle a fault lands.
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..1000)));
        let at = switchyard::timeline::now_ms();
        target.fault(hung)?;
        let down = down_event(admin, after, Duration::from_secs(20));
        drop(proxy);
        target = target.repaired(hung, kind)?;
        took.push(down?.saturating_sub(at));
    }
    Ok(took)
}

/// The p50 (the upper median) and the max of `values` (sorted in place); zeros for
/// none.
fn p50_max(values: &mut [u64]) -> (u64, u64) {
    values.sort_unstable();
    match values.len() {
        0 => (0, 0),
        n => (values[n / 2], values[n - 1]),
    }
}

/// Runs detection for every kind and fault with the defaults and with `against`, then
/// the defaults' check cost over `secs`.
pub fn run(rounds: u32, secs: u64, against: &str, binary: &Path) -> Result<()> {
    crate::sysbench::preflight(&[], binary, &[], &[])?;
    switchyard_lab::mariadb::ensure_installed()?;
    let dir = system::temp_dir("sy-detect")?;
    let against = Timings {
        label: "against",
        lines: Box::leak(against.replace(',', "\n").into_boxed_str()),
    };
    let defaults = Timings {
        label: "defaults",
        lines: "",
    };
    for kind in [Kind::Tcp, Kind::Http, Kind::Mysql] {
        for hung in [false, true] {
            // A stopped process still completes TCP connects (the kernel answers).
            if hung && kind == Kind::Tcp {
                continue;
            }
            for timings in [defaults, against] {
                let mut took = detection(binary, &dir, kind, hung, timings, rounds)?;
                let (p50, max) = p50_max(&mut took);
                println!(
                    "detect kind={} fault={} timings={} rounds={rounds} p50_ms={p50} max_ms={max}",
                    kind.name(),
                    if hung { "hung" } else { "refused" },
                    timings.label
                );
            }
        }
    }
    for (kind, count) in [(Kind::Tcp, 200), (Kind::Http, 200), (Kind::Mysql, 50)] {
        cost(binary, &dir, kind, count, secs)?;
    }
    crate::sysbench::remove_drill_dir(&dir);
    Ok(())
}

/// The defaults' CPU per check for `count` backends of `kind` over `secs`: the
/// proxy's, and for mysql checks MariaDB's (against its idle CPU over as long).
fn cost(binary: &Path, dir: &Path, kind: Kind, count: usize, secs: u64) -> Result<()> {
    let target = Target::start(kind)?;
    let server = target.pid()?;
    let idle = if kind == Kind::Mysql {
        // Past its start-up work first, so the idle figure is idle.
        std::thread::sleep(Duration::from_secs(5));
        let before = process_cpu_seconds(server)?;
        std::thread::sleep(Duration::from_secs(secs));
        Some(process_cpu_seconds(server)? - before)
    } else {
        None
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], system::free_port()?));
    let text = config(admin, &vec![target.addr(); count], &kind.check())?;
    let proxy = proxy(binary, dir, &format!("cost-{}", kind.name()), &text)?;
    await_all(admin, "up", Duration::from_secs(30))?;
    let checks = |admin| checks_run(admin).context("checks_total on /metrics");
    let (c0, p0, s0) = (
        checks(admin)?,
        process_cpu_seconds(proxy.0.id())?,
        process_cpu_seconds(server)?,
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, p1, s1) = (
        checks(admin)?,
        process_cpu_seconds(proxy.0.id())?,
        process_cpu_seconds(server)?,
    );
    let ran = (c1 - c0).max(1.0);
    let mut line = format!(
        "check_cost kind={} backends={count} checks_per_s={:.0} proxy_us_per_check={:.1}",
        kind.name(),
        ran / secs as f64,
        (p1 - p0) * 1e6 / ran
    );
    if let Some(idle) = idle {
        let busy = ((s1 - s0) - idle).max(0.0);
        line += &format!(
            " mariadb_us_per_check={:.1} mariadb_core_pct={:.2}",
            busy * 1e6 / ran,
            busy * 100.0 / secs as f64
        );
    }
    println!("{line}");
    Ok(())
}

/// The sum of `switchyard_checks_total` over every backend.
fn checks_run(admin: SocketAddr) -> Option<f64> {
    let text = crate::admin_http::get_text(admin, "/metrics")?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("switchyard_checks_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}
