//! `sysbench oltp_read_write` direct, through switchyard (the release binary, as
//! deployed; a `tcp` listener and a `mysql`-mode one, whose command tracker follows
//! every packet) and through HAProxy, against one real MariaDB, in alternating rounds;
//! prints medians and switchyard's ratios. `loadtest/compare.sh` runs it last.
//!
//! Besides throughput, the CPU time each query costs (Linux `/proc`): the proxy's own,
//! and the whole machine's (every process and the kernel, idle excluded). On a
//! machine that sysbench and MariaDB already keep busy, a proxy's throughput is
//! bounded by what it adds to the machine's cost per query, so this row tells how
//! far any proxy could get, and what part of the gap is the proxy's own code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard_lab::mariadb::{Cluster, APP_PASSWORD, APP_USER};
use switchyard_lab::system;

use crate::proxy_config;

/// A process stopped by PID when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        system::stop(&mut self.0, Duration::from_secs(1));
    }
}

pub(crate) fn spawn(command: &mut Command, log: &Path) -> Result<Proc> {
    system::spawn_logged(command, log).map(Proc)
}

/// Before a drill: its Debian `packages` installed if missing, the `switchyard` binary
/// built, every one of `scenarios` among `known`.
pub(crate) fn preflight(
    packages: &[(&str, &str)],
    switchyard: &Path,
    scenarios: &[String],
    known: &[&str],
) -> Result<()> {
    system::ensure_packages(packages)?;
    if !switchyard.is_file() {
        bail!(
            "{} not found: cargo build --release -p switchyard",
            switchyard.display()
        );
    }
    if let Some(name) = scenarios.iter().find(|n| !known.contains(&n.as_str())) {
        bail!("unknown scenario {name:?}; the scenarios are {}", known.join(", "));
    }
    Ok(())
}

/// Removes a drill's directory, unless `KEEP_DRILL_DIR` is set (then says where it is).
pub(crate) fn remove_drill_dir(dir: &Path) {
    if std::env::var_os("KEEP_DRILL_DIR").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A drill's two proxies in `dir`: switchyard on `switchyard.toml` (`sy_conf`; its log
/// at `DRILL_RUST_LOG`, default `info`, in `switchyard.log`) and HAProxy on
/// `haproxy.cfg` (`ha_conf`). Both stop when the pair is dropped.
pub(crate) fn spawn_side_by_side(dir: &Path, switchyard: &Path, sy_conf: &str, ha_conf: &str) -> Result<(Proc, Proc)> {
    std::fs::write(dir.join("switchyard.toml"), sy_conf)?;
    std::fs::write(dir.join("haproxy.cfg"), ha_conf)?;
    let proxy = spawn(
        Command::new(switchyard)
            .args(["run", "--config"])
            .arg(dir.join("switchyard.toml"))
            .env(
                "RUST_LOG",
                std::env::var("DRILL_RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        &dir.join("switchyard.log"),
    )?;
    Ok((proxy, spawn_haproxy(&dir.join("haproxy.cfg"))?))
}

/// HAProxy in the foreground on the config file `cfg`, its output in `<cfg dir>/haproxy.log`.
pub(crate) fn spawn_haproxy(cfg: &Path) -> Result<Proc> {
    let log = cfg.with_file_name("haproxy.log");
    spawn(Command::new("haproxy").arg("-db").arg("-f").arg(cfg), &log)
}

fn wait_listening(addr: SocketAddr, what: &str) -> Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {addr}")
}

/// How much longer than its `--time` one sysbench call may take (connecting,
/// preparing the tables) before `timeout` kills it.
const SYSBENCH_SLACK: u64 = 300;

/// One sysbench result.
#[derive(Debug, Clone, Copy)]
struct Run {
    tps: f64,
    p95_ms: f64,
    /// Statements run (sysbench's `queries:` total).
    queries: f64,
}

/// CPU time, in seconds: spent so far, or during one run.
#[derive(Debug, Clone, Copy)]
struct Spent {
    /// By the proxy process (user + system, every thread); 0 for the direct path.
    proxy: f64,
    /// By the whole machine: every CPU's time that was not idle, waiting for I/O or
    /// taken by the hypervisor (steal).
    machine: f64,
}

/// Clock ticks per second, for `/proc` times.
fn clock_ticks() -> Result<f64> {
    let out = system::run(Command::new("getconf").arg("CLK_TCK"))?;
    out.trim()
        .parse()
        .with_context(|| format!("getconf CLK_TCK printed {out:?}"))
}

/// The CPU time (user + system, every thread) of process `pid` so far, in clock ticks.
fn process_ticks(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (has the process exited? see its log)"))?;
    // Fields after the command name (which may hold spaces) in parentheses; utime and
    // stime are the 14th and 15th of the whole line.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    field(11)
        .zip(field(12))
        .map(|(u, s)| u + s)
        .context("/proc/PID/stat: no utime/stime")
}

/// The CPU time (user + system, every thread) of process `pid` so far, in seconds.
pub(crate) fn process_cpu_seconds(pid: u32) -> Result<f64> {
    Ok(process_ticks(pid)? / clock_ticks()?)
}

/// The proxy's and the machine's CPU time so far (`/proc`, `ticks` a second).
fn cpu_spent(proxy: Option<u32>, ticks: f64) -> Result<Spent> {
    let proxy = match proxy {
        Some(pid) => process_ticks(pid)?,
        None => 0.0,
    };
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("/proc/stat: no cpu line")?;
    let cpu = line
        .split_whitespace()
        .map(str::parse::<f64>)
        .collect::<Result<Vec<f64>, _>>()
        .ok()
        .filter(|cpu| cpu.len() >= 7)
        .with_context(|| format!("/proc/stat: cannot read the cpu line {line:?}"))?;
    // user nice system idle iowait irq softirq steal guest...: busy = user, nice,
    // system, irq, softirq. Not idle or iowait; not steal (time the hypervisor gave to
    // others is no work done here); guest time is already in user and nice.
    let machine = [0, 1, 2, 5, 6].iter().map(|&i| cpu[i]).sum::<f64>();
    Ok(Spent {
        proxy: proxy / ticks,
        machine: machine / ticks,
    })
}

pub(crate) fn sysbench(port: u16, command: &str, extra: &[&str]) -> Result<String> {
    let port = format!("--mysql-port={port}");
    let user = format!("--mysql-user={APP_USER}");
    let password = format!("--mysql-password={APP_PASSWORD}");
    let mut args = vec![
        "oltp_read_write",
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        &port,
        &user,
        &password,
        "--mysql-db=sbtest",
        "--tables=4",
        "--table-size=10000",
    ];
    args.extend_from_slice(extra);
    args.push(command);
    // `run` is bounded by --time; the outer limit covers a connect that never returns.
    let time: u64 = extra
        .iter()
        .find_map(|a| a.strip_prefix("--time=")?.parse().ok())
        .unwrap_or(0);
    let limit = time + SYSBENCH_SLACK;
    system::run(
        Command::new("timeout")
            .arg(limit.to_string())
            .arg("sysbench")
            .args(&args),
    )
    .with_context(|| format!("sysbench {command} (killed after {limit} s if it ran that long)"))
}

/// `transactions: N (X per sec.)`, `queries: Q (...)` and `95th percentile: Y` from
/// sysbench's report.
fn parse(out: &str) -> Option<Run> {
    let after = |label: &str| {
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(str::trim)
    };
    let tps = after("transactions:")?
        .split('(')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let p95_ms = after("95th percentile:")?.parse().ok()?;
    let queries = after("queries:")?.split_whitespace().next()?.parse().ok()?;
    Some(Run { tps, p95_ms, queries })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Runs the comparison; blocking (call it off the async workers).
pub fn compare(rounds: u32, secs: u64, threads: u32, switchyard: &Path) -> Result<()> {
    system::ensure_packages(&[("sysbench", "sysbench"), ("haproxy", "haproxy")])?;
    if !switchyard.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p switchyard)",
            switchyard.display()
        );
    }
    let cluster = Cluster::start(1)?;
    let node = cluster.node(0).addr();
    let dir = system::temp_dir("sy-sysbench")?;
    let proxies = Proxies::start(node, &dir, switchyard)?;
    let sy = Some(proxies.switchyard.0.id());
    let pids = [None, sy, sy, Some(proxies.haproxy.0.id())];
    let targets = [
        ("direct", node.port()),
        ("switchyard", proxies.switchyard_port),
        ("switchyard mysql mode", proxies.mysql_mode_port),
        ("haproxy", proxies.haproxy_port),
    ];
    sysbench(node.port(), "prepare", &[])?;
    let results = run_rounds(rounds, secs, threads, &targets, &pids)?;
    print_table(&results, rounds, secs, threads);
    drop(proxies);
    let _ = std::fs::remove_dir_all(&dir);
    drop(cluster);
    Ok(())
}

/// switchyard and HAProxy, each in front of the one node, listening and routing.
struct Proxies {
    switchyard: Proc,
    switchyard_port: u16,
    mysql_mode_port: u16,
    haproxy: Proc,
    haproxy_port: u16,
}

impl Proxies {
    fn start(node: SocketAddr, dir: &Path, switchyard: &Path) -> Result<Proxies> {
        let (switchyard_port, mysql_mode_port) = (system::free_port()?, system::free_port()?);
        let sy_config = dir.join("switchyard.toml");
        std::fs::write(
            &sy_config,
            proxy_config::switchyard_one_node(node, switchyard_port, mysql_mode_port),
        )?;
        let sy = spawn(
            Command::new(switchyard)
                .args(["run", "--config"])
                .arg(&sy_config)
                .env("RUST_LOG", "warn"),
            &dir.join("switchyard.log"),
        )?;
        let haproxy_port = system::free_port()?;
        let ha_config = dir.join("haproxy.cfg");
        std::fs::write(&ha_config, proxy_config::haproxy_one_node(node, haproxy_port))?;
        let ha = spawn(
            Command::new("haproxy").arg("-db").arg("-f").arg(&ha_config),
            &dir.join("haproxy.log"),
        )?;
        for (name, port) in [
            ("switchyard", switchyard_port),
            ("switchyard", mysql_mode_port),
            ("haproxy", haproxy_port),
        ] {
            wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), name)?;
        }
        await_first_query(switchyard_port, dir)?;
        await_first_query(mysql_mode_port, dir)?;
        Ok(Proxies {
            switchyard: sy,
            switchyard_port,
            mysql_mode_port,
            haproxy: ha,
            haproxy_port,
        })
    }
}

/// switchyard routes once its first check passed: waits for a query to go through.
fn await_first_query(port: u16, dir: &Path) -> Result<()> {
    for attempt in 0.. {
        let probe = Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=tcp",
                "--connect-timeout=5",
                "-h127.0.0.1",
                &format!("-P{port}"),
            ])
            .args([&format!("-u{APP_USER}"), &format!("-p{APP_PASSWORD}"), "-e", "SELECT 1"])
            .output()?;
        if probe.status.success() {
            break;
        }
        if attempt > 100 {
            bail!(
                "no query went through switchyard in 10 s: {} (its log: {})",
                String::from_utf8_lossy(&probe.stderr).trim(),
                dir.join("switchyard.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `rounds` runs against each target in turn; per target, each round's result and
/// the CPU time it cost.
fn run_rounds(
    rounds: u32,
    secs: u64,
    threads: u32,
    targets: &[(&str, u16)],
    pids: &[Option<u32>],
) -> Result<Vec<Vec<(Run, Spent)>>> {
    let time = format!("--time={secs}");
    let threads = format!("--threads={threads}");
    let ticks = clock_ticks()?;
    let mut results: Vec<Vec<(Run, Spent)>> = vec![Vec::new(); targets.len()];
    for round in 1..=rounds {
        for (i, (name, port)) in targets.iter().enumerate() {
            let before = cpu_spent(pids[i], ticks)?;
            let out = sysbench(*port, "run", &[&threads, &time, "--events=0"])?;
            let after = cpu_spent(pids[i], ticks)?;
            let run = parse(&out).with_context(|| format!("{name}: no result in sysbench's output:\n{out}"))?;
            let spent = Spent {
                proxy: after.proxy - before.proxy,
                machine: after.machine - before.machine,
            };
            results[i].push((run, spent));
        }
        eprintln!("sysbench round {round} done");
    }
    Ok(results)
}

/// The medians of `results` (direct, switchyard tcp, switchyard mysql mode, haproxy)
/// as a Markdown table.
fn print_table(results: &[Vec<(Run, Spent)>], rounds: u32, secs: u64, threads: u32) {
    let medians = |of: &dyn Fn(&Run, &Spent) -> f64| -> Vec<f64> {
        results
            .iter()
            .map(|r| median(r.iter().map(|(run, spent)| of(run, spent)).collect()))
            .collect()
    };
    let tps = medians(&|run, _| run.tps);
    let p95 = medians(&|run, _| run.p95_ms);
    // µs per query (sysbench's statements, BEGIN and COMMIT included).
    let proxy_us = medians(&|run, spent| spent.proxy / run.queries * 1e6);
    let machine_us = medians(&|run, spent| spent.machine / run.queries * 1e6);
    println!("\nsysbench oltp_read_write (--threads={threads}, {secs} s per run, medians of {rounds} rounds):\n");
    println!(
        "| | direct | switchyard | switchyard mysql mode | haproxy | switchyard / direct | switchyard / haproxy | mysql mode / tcp mode |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let row = |name: &str, v: &[f64], decimals: usize| {
        let shown = |x: f64| {
            if x == 0.0 {
                "-".to_string()
            } else {
                format!("{x:.decimals$}")
            }
        };
        let ratio = |a: f64, b: f64| {
            if a == 0.0 || b == 0.0 {
                "-".to_string()
            } else {
                format!("{:.2}", a / b)
            }
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            shown(v[0]),
            shown(v[1]),
            shown(v[2]),
            shown(v[3]),
            ratio(v[1], v[0]),
            ratio(v[1], v[3]),
            ratio(v[2], v[1]),
        );
    };
    row("transactions/s", &tps, 0);
    row("p95 latency, ms", &p95, 2);
    row("machine CPU per query, µs", &machine_us, 1);
    row("proxy CPU per query, µs", &proxy_us, 1);
}

/// The switchyard binary drills run by default: this checkout's release build, else
/// the `switchyard` on PATH.
pub fn default_binary() -> PathBuf {
    let built = PathBuf::from("target/release/switchyard");
    if built.is_file() {
        return built;
    }
    // An installed `switchyard-drill` run outside the repository: the `switchyard` on
    // PATH (`cargo install --path .`, or the Debian package's).
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("switchyard"))
        .find(|candidate| candidate.is_file())
        .unwrap_or(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sysbench_reports() {
        let out = "SQL statistics:\n    transactions:                        12345  (411.44 per sec.)\n\
                   queries:                             246900 (8228.80 per sec.)\n\
                   Latency (ms):\n         min:                                    1.02\n\
                   95th percentile:                       28.67\n";
        let run = parse(out).unwrap();
        assert_eq!(run.tps, 411.44);
        assert_eq!(run.p95_ms, 28.67);
        assert_eq!(run.queries, 246900.0);
        assert!(parse("nothing").is_none());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
