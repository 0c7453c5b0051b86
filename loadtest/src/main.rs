//! `switchyard-drill` (the `switchyard-loadtest` package's binary; `cargo install --path
//! loadtest`): failover drills through switchyard (and HAProxy side by side).
//!
//! - `switchyard-drill demo`: installs what it needs, runs the demo scenario (kill -9 failover
//!   and read_only switchover, 40 s) through switchyard and through HAProxy, prints
//!   the side-by-side table and the path of the HTML report.
//! - `switchyard-drill run SCENARIO [--target switchyard|haproxy]...`: any scenario file; a
//!   Redis drill file (`[workload] kind = "redis"`) runs as `switchyard-drill redis --plan`.
//! - `switchyard-drill soak [--duration 30m] [--every 30s]`: mixed load through one proxy
//!   process with a fault every window; descriptors and memory checked.
//! - `switchyard-drill sysbench [--rounds N] [--secs S]`: sysbench oltp_read_write direct,
//!   through switchyard's release binary and through HAProxy, alternating.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use switchyard_loadtest::drill;
use switchyard_loadtest::redis_drill;
use switchyard_loadtest::report;
use switchyard_loadtest::scenario::Scenario;
use switchyard_loadtest::target::TargetKind;

#[derive(Parser)]
#[command(
    name = "switchyard-drill",
    about = "Failover drills: real client load, injected faults, a report"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The demo: kill -9 failover and read_only switchover, switchyard vs HAProxy.
    Demo {
        /// Where to write report.json and report.html.
        #[arg(long, default_value = "target/drill-report")]
        out: PathBuf,
    },
    /// Runs a scenario file against one or more targets.
    Run {
        scenario: PathBuf,
        #[arg(long = "target", value_enum, default_values_t = [TargetKind::Switchyard])]
        targets: Vec<TargetKind>,
        #[arg(long, default_value = "target/drill-report")]
        out: PathBuf,
    },
    /// Admin port under a scrape flood: check round trips and routing swaps, idle vs
    /// 2,000 req/s on /metrics and /status, in one fresh proxy process.
    AdminFlood {
        /// Seconds per phase.
        #[arg(long, default_value_t = 15)]
        secs: u64,
        /// Requests a second in the flood phase.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// The switchyard binary to measure.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// Config reloads of one proxy with many backends: apply time (unchanged file vs
    /// 30% of the backends changed) and sessions lost under load.
    Reload {
        /// Backends in the config.
        #[arg(long, default_value_t = 1000)]
        backends: usize,
        /// Rounds (each: one unchanged reload, one changed).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// The switchyard binary to measure.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// A fleet of proxies on one etcd in front of a MariaDB cluster: probes per backend
    /// (shared vs alone), etcd load, and a failover's propagation to every proxy and to
    /// simulated watchers.
    Fleet {
        /// Proxy processes.
        #[arg(long, default_value_t = 50)]
        proxies: usize,
        /// Simulated watchers of the verdict key.
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// The switchyard binary.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// Hot binary upgrades in a row under wrk (`Connection: close`) to nginx and under
    /// sysbench to a three-node MariaDB cluster; counts what the clients saw.
    Upgrade {
        /// Upgrades per part.
        #[arg(long, default_value_t = 10)]
        upgrades: usize,
        /// Seconds between two upgrades.
        #[arg(long, default_value_t = 2.0)]
        every: f64,
        /// The switchyard binary (old and new processes alike).
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// Records fuzz seeds from real peers (MariaDB, the MongoDB peers, an HTTP server,
    /// the lab CA) into OUT/<target>/.
    RecordCorpus {
        #[arg(long, default_value = "fuzz/corpus")]
        out: PathBuf,
    },
    /// One switchyard process under mixed load (MySQL, MongoDB, TCP, TLS) with a fault
    /// every window; checks its descriptors and memory. Exits non-zero on a failure.
    Soak {
        #[arg(long, default_value = "30m")]
        duration: String,
        /// One fault per window of this length.
        #[arg(long, default_value = "30s")]
        every: String,
        #[arg(long, default_value = "target/soak-report")]
        out: PathBuf,
        /// The switchyard binary to soak.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// Planned switchovers under per-request and pre-ping writers: switchyard's
    /// orchestrated switchover vs the same switchover outside HAProxy, moved by its
    /// runtime API. Prints a `switchover scenario=...` line per target and client kind.
    Switchover {
        /// Switchovers per target.
        #[arg(long, default_value_t = 100)]
        switchovers: u32,
        /// The switchyard binary.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// How fast the check defaults take a refused or hung backend out (tcp, http,
    /// mysql; the defaults and `--against` timings in the same run), and their CPU per
    /// check in the proxy and in MariaDB. Prints `detect ...` and `check_cost ...` lines.
    Detect {
        /// Rounds per kind, fault and timings.
        #[arg(long, default_value_t = 10)]
        rounds: u32,
        /// Seconds per check-cost measurement.
        #[arg(long, default_value_t = 20)]
        secs: u64,
        /// `[check]` lines to compare with, comma-separated (the old defaults).
        #[arg(long, default_value = "interval = \"1s\",timeout = \"1s\",fall = 2")]
        against: String,
        /// The switchyard binary.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// Redis failovers (kill -9, SENTINEL FAILOVER, SIGSTOP, an empty master's return,
    /// REPLICAOF by hand, CLIENT PAUSE) under redis-crate writers and kombu, switchyard
    /// with the Sentinels' word vs HAProxy's tcp-check recipe, side by side. Prints a
    /// `redis scenario=...` line per target and client. The plan is
    /// loadtest/scenarios/redis-sentinel.toml unless `--plan` names another.
    Redis {
        /// Comma-separated fault names of the plan to run; all by default.
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// A Redis drill file (`[workload] kind = "redis"`).
        #[arg(long)]
        plan: Option<PathBuf>,
        /// The switchyard binary.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// Galera faults (the writer killed, desynced, frozen, cut into a non-Primary
    /// component; a rejoin by SST) under write load, switchyard's galera pool vs HAProxy
    /// round-robin with mysql-check, side by side. Prints a `galera scenario=...` line
    /// per target.
    Galera {
        /// Comma-separated; all by default.
        #[arg(long, value_delimiter = ',', default_values_t = switchyard_loadtest::galera_drill::SCENARIOS.map(String::from))]
        scenarios: Vec<String>,
        /// The switchyard binary.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// A managed database's endpoint that moves: a MariaDB failover done by moving a
    /// DNS name (dnsmasq), switchyard's resolve = "ttl" vs HAProxy's resolvers, side by
    /// side. Prints a `dns scenario=move ...` line per target and TTL.
    Dns {
        /// The record's TTLs to run with, seconds, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1u32, 5])]
        ttls: Vec<u32>,
        /// The switchyard binary.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
    /// sysbench oltp_read_write: direct vs switchyard vs HAProxy, one MariaDB.
    Sysbench {
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 8)]
        threads: u32,
        /// The switchyard binary to measure.
        #[arg(long, default_value_os_t = switchyard_loadtest::sysbench::default_binary())]
        switchyard: PathBuf,
    },
}

async fn soak(duration: &str, every: &str, out: &std::path::Path, binary: PathBuf) -> Result<()> {
    let time = |name: &str, text: &str| {
        switchyard::duration::parse(text).map_err(|e| anyhow::anyhow!("--{name}: expected {e}"))
    };
    let settings = switchyard_loadtest::soak::Settings {
        duration: time("duration", duration)?,
        every: time("every", every)?,
        binary,
    };
    let report = switchyard_loadtest::soak::run(&settings).await?;
    std::fs::create_dir_all(out)?;
    let json = out.join("soak.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    print!("{}", switchyard_loadtest::soak::text(&report));
    println!("report: {}", json.display());
    anyhow::ensure!(report.failures.is_empty(), "the soak failed");
    Ok(())
}

/// The commands that measure rather than drill.
async fn bench(command: Command) -> Result<()> {
    match command {
        Command::AdminFlood { secs, rate, switchyard } => {
            let (idle, flooded) =
                switchyard_loadtest::admin_flood::run(&switchyard, std::time::Duration::from_secs(secs), rate).await?;
            println!("{}", switchyard_loadtest::admin_flood::report(&idle, &flooded));
            Ok(())
        }
        Command::Reload {
            backends,
            rounds,
            switchyard,
        } => {
            let figures = switchyard_loadtest::reload_bench::run(&switchyard, backends, rounds).await?;
            println!("{}", switchyard_loadtest::reload_bench::report(&figures));
            Ok(())
        }
        Command::Fleet {
            proxies,
            watchers,
            switchyard,
        } => {
            let figures = switchyard_loadtest::fleet_bench::run(&switchyard, proxies, watchers).await?;
            println!("{}", switchyard_loadtest::fleet_bench::report(&figures));
            Ok(())
        }
        Command::Upgrade {
            upgrades,
            every,
            switchyard,
        } => {
            let every = std::time::Duration::from_secs_f64(every);
            let figures = tokio::task::spawn_blocking(move || {
                switchyard_loadtest::upgrade_bench::run(&switchyard, upgrades, every)
            })
            .await??;
            println!("{}", switchyard_loadtest::upgrade_bench::report(&figures));
            Ok(())
        }
        Command::RecordCorpus { out } => {
            let written = switchyard_loadtest::corpus::record(&out).await?;
            println!("{written} seeds under {}", out.display());
            Ok(())
        }
        Command::Soak {
            duration,
            every,
            out,
            switchyard,
        } => soak(&duration, &every, &out, switchyard).await,
        Command::Switchover {
            switchovers,
            switchyard,
        } => switchyard_loadtest::switchover_drill::run(switchovers, &switchyard).await,
        Command::Redis {
            scenarios,
            plan,
            switchyard,
        } => {
            let text = match plan {
                Some(path) => std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                None => redis_drill::plan::SHIPPED.to_string(),
            };
            let plan = redis_drill::plan::Plan::parse(&text)?;
            redis_drill::run(&plan, &scenarios, &switchyard).await
        }
        Command::Detect {
            rounds,
            secs,
            against,
            switchyard,
        } => {
            tokio::task::spawn_blocking(move || switchyard_loadtest::detect::run(rounds, secs, &against, &switchyard))
                .await?
        }
        Command::Dns { ttls, switchyard } => switchyard_loadtest::dns_drill::run(&ttls, &switchyard).await,
        Command::Galera { scenarios, switchyard } => {
            switchyard_loadtest::galera_drill::run(&scenarios, &switchyard).await
        }
        Command::Sysbench {
            rounds,
            secs,
            threads,
            switchyard,
        } => {
            tokio::task::spawn_blocking(move || {
                switchyard_loadtest::sysbench::compare(rounds, secs, threads, &switchyard)
            })
            .await?
        }
        Command::Demo { .. } | Command::Run { .. } => anyhow::bail!("a drill, not a measurement"),
    }
}

const DEMO: &str = include_str!("../scenarios/demo.toml");

#[tokio::main]
async fn main() -> Result<()> {
    let (scenario, targets, out) = match Cli::parse().command {
        Command::Demo { out } => {
            switchyard_lab::mariadb::ensure_installed()?;
            switchyard_lab::system::ensure_packages(&[("haproxy", "haproxy")])?;
            (
                Scenario::parse(DEMO)?,
                vec![TargetKind::Switchyard, TargetKind::Haproxy],
                out,
            )
        }
        Command::Run { scenario, targets, out } => {
            let text = std::fs::read_to_string(&scenario).with_context(|| format!("reading {}", scenario.display()))?;
            if redis_drill::plan::is_redis(&text) {
                // A Redis drill runs both targets side by side in each fault's lab.
                let plan =
                    redis_drill::plan::Plan::parse(&text).with_context(|| format!("in {}", scenario.display()))?;
                return redis_drill::run(&plan, &[], &switchyard_loadtest::sysbench::default_binary()).await;
            }
            let parsed = Scenario::parse(&text).with_context(|| format!("in {}", scenario.display()))?;
            (parsed, targets, out)
        }
        other => return bench(other).await,
    };
    eprintln!(
        "drill: {} ({} s), targets: {targets:?}",
        scenario.name,
        scenario.duration.as_secs()
    );
    let mut results = Vec::new();
    for target in targets {
        let result = drill::run(&scenario, target)
            .await
            .with_context(|| format!("drill through {target}"))?;
        results.push(result);
    }
    std::fs::create_dir_all(&out)?;
    let json = out.join("report.json");
    let html = out.join("report.html");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)?;
    std::fs::write(&html, report::html(&results))?;
    println!("\n{}", report::table(&results));
    for line in results.iter().flat_map(|r| &r.ha) {
        println!("{line}");
    }
    println!("report: {}\n        {}", html.display(), json.display());
    Ok(())
}
