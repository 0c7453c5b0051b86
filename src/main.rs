//! The `switchyard` binary: a thin shell over the library.
//!
//! Exit codes: 0 after a clean stop, 64 for a bad configuration or command line,
//! 69 when a port cannot be bound (and, for `status` and `health`, when the admin
//! listener cannot be reached); `health` exits 1 when the proxy answers "not ready".

#![deny(unsafe_code, rust_2018_idioms)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::time::Duration;

use switchyard::admin::client;
use switchyard::app;
use switchyard::config::{self, Config};
use switchyard::notify::State;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info};

#[path = "main/reload.rs"]
mod reload;
#[path = "main/upgrade.rs"]
mod upgrade;

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;
/// How often `health --watch` asks.
const WATCH_STEP: Duration = Duration::from_millis(100);

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A failover-aware TCP proxy and health checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the proxy described by a config file.
    Run {
        /// The TOML config file (see config/example.toml).
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Hot upgrade: take the listening sockets and the health state over from the
        /// process running on this config's `[runtime] upgrade_socket`; that process
        /// then drains and exits. If this one cannot start, the old one serves on.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validates a config file and exits (0 valid, 64 invalid).
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Prints the pools and backends of a running proxy (from its admin listener).
    Status {
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9900", env = "SWITCHYARD_ADMIN")]
        admin: SocketAddr,
        /// Print the raw /status JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Asks a running proxy whether it is ready (default) or live; for keepalived's
    /// track_script and other scripts. Exit 0: yes; 1: no (the reason is printed);
    /// 69: no answer within the timeout.
    Health {
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9900", env = "SWITCHYARD_ADMIN")]
        admin: SocketAddr,
        /// Ask /health/ready (the default).
        #[arg(long, conflicts_with = "live")]
        ready: bool,
        /// Ask /health/live instead.
        #[arg(long)]
        live: bool,
        /// How long to wait for each answer, e.g. 500ms.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        timeout: Duration,
        /// Keep asking every 100 ms for this long, and exit at the first answer that
        /// is not 200 (for keepalived, whose script interval is whole seconds: a
        /// check that watches 700 ms of each second notices a dead or hung proxy
        /// within about 0.4 s).
        #[arg(long, value_parser = parse_duration)]
        watch: Option<Duration>,
    },
    /// Asks a running proxy to re-read its config file and apply the difference (as
    /// SIGHUP does). Exit 0: applied (what changed is printed); 1: refused (the
    /// running config stays; the reason is printed); 69: no answer.
    Reload {
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9900", env = "SWITCHYARD_ADMIN")]
        admin: SocketAddr,
        /// The admin token (`[admin] token`).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Holds a pool's new sessions (they wait, as while it has no member) until
    /// `switchyard release` or the deadline, e.g. around a switchover run elsewhere.
    Hold {
        /// The pool's name.
        pool: String,
        /// The deadline (default: the pool's `hold_timeout`; at most 10m).
        #[arg(long = "for")]
        deadline: Option<String>,
        /// Also drain the pool's current members: MySQL sessions close at their next
        /// idle point (no command in flight, no transaction open), every session by
        /// this deadline (at most the hold's). Answers once they are gone.
        #[arg(long)]
        drain: Option<String>,
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9900", env = "SWITCHYARD_ADMIN")]
        admin: SocketAddr,
        /// The admin token (`[admin] token`).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Moves a MySQL pool's primary to another member, with no client error: hold,
    /// demote, catch up, promote, repoint, route, release; undone if a step fails
    /// (needs `[pools.NAME.switchover]`). Prints the report.
    Switchover {
        /// The pool's name.
        pool: String,
        /// The member to promote.
        #[arg(long)]
        to: String,
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9900", env = "SWITCHYARD_ADMIN")]
        admin: SocketAddr,
        /// The admin token (`[admin] token`).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Releases a pool `switchyard hold` held.
    Release {
        /// The pool's name.
        pool: String,
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9900", env = "SWITCHYARD_ADMIN")]
        admin: SocketAddr,
        /// The admin token (`[admin] token`).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Proxies one listener to backends in failover order, with TCP checks; no file needed.
    Forward {
        /// Where to listen, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: SocketAddr,
        /// A backend address; repeat for more, in failover order.
        #[arg(long = "backend", required = true)]
        backends: Vec<SocketAddr>,
        /// Also serve /health, /status and /metrics here.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` logs as its config's `[log]` says; every other command, and a config that
    // does not load, as the defaults do.
    let mut loaded = match &cli.command {
        Command::Run { config, .. } => Some(Config::load(config)),
        _ => None,
    };
    let log = match &loaded {
        Some(Ok(config)) => config.log.clone(),
        _ => switchyard::config::LogConfig::default(),
    };
    // Flushes the queued lines when main returns.
    let _log = switchyard::logging::install(&log);
    quiet_repeated_panics();
    let config = match cli.command {
        Command::CheckConfig { file } => {
            return match Config::load(&file) {
                Ok(config) => {
                    println!(
                        "{}: ok ({} listeners, {} pools, {} backends)",
                        file.display(),
                        config.listeners.len(),
                        config.pools.len(),
                        config.backends.len()
                    );
                    // What `run` will have: the soft limit raised to the hard one.
                    if let Some(warning) =
                        switchyard::local::budget_warning(&config, switchyard::local::descriptor_limit().1)
                    {
                        eprintln!("warning: {warning}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EX_USAGE)
                }
            };
        }
        Command::Run { upgrade, .. } => match loaded.take() {
            Some(Ok(config)) if upgrade => return upgrade::run_upgrade(config),
            Some(Ok(config)) => config,
            Some(Err(e)) => {
                error!("{e}");
                return ExitCode::from(EX_USAGE);
            }
            None => return ExitCode::from(EX_SOFTWARE),
        },
        Command::Forward {
            listen,
            backends,
            admin,
        } => match config::forward(listen, &backends, admin) {
            Ok(config) => config,
            Err(e) => {
                error!("{e}");
                return ExitCode::from(EX_USAGE);
            }
        },
        Command::Status { admin, json } => return status(admin, json),
        Command::Reload { admin, token } => return reload::reload(admin, token.as_deref()),
        command @ (Command::Hold { .. } | Command::Release { .. } | Command::Switchover { .. }) => {
            return pool_command(command)
        }
        Command::Health {
            admin,
            live,
            timeout,
            watch,
            ..
        } => {
            let path = if live { "/health/live" } else { "/health/ready" };
            return health(admin, path, timeout, watch.unwrap_or_default());
        }
    };
    // The control plane (checkers, router, admin) is light: one thread. The data plane
    // has its own threads (see `app`).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    runtime.block_on(run(config, None))
}

/// Serves `config` until a signal, a failure or a hot upgrade's hand-over; with
/// `taken`, on what a hot upgrade took over from the old process.
async fn run(config: Config, taken: Option<upgrade::Taken>) -> ExitCode {
    // Listened for before anything serves: SIGHUP's and SIGUSR2's default action is to
    // end the process, which a reload or an upgrade sent early must not do.
    let (hup, usr2) = (signal(SignalKind::hangup()), signal(SignalKind::user_defined2()));
    let upgrade_socket = config.upgrade_socket.clone();
    let source = PathBuf::from(&config.source);
    let (stream, inherited) = match taken {
        Some(taken) => (Some(taken.stream), Some(taken.inherited)),
        None => (None, None),
    };
    let running = match app::start_with(config, inherited).await {
        Ok(running) => running,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    match stream {
        Some(stream) => {
            if !upgrade::took_over(stream).await {
                running.shutdown().await;
                return ExitCode::from(EX_UNAVAILABLE);
            }
        }
        None => switchyard::notify::notify(State::Ready),
    }
    if let Some(path) = &upgrade_socket {
        if let Err(e) = running.listen_for_upgrades(path).await {
            error!(socket = %path.display(), error = %e, "cannot listen for hot upgrades; serving without them");
        }
    }
    let (code, handed_over) = tokio::select! {
        _ = wait_for_signal() => {
            info!("shutdown requested");
            (ExitCode::SUCCESS, false)
        }
        _ = running.failed() => (ExitCode::from(EX_SOFTWARE), false),
        _ = reload_on_sighup(&running, hup) => (ExitCode::from(EX_SOFTWARE), false),
        _ = upgrade::on_sigusr2(&source, upgrade_socket.is_some(), usr2) => (ExitCode::from(EX_SOFTWARE), false),
        _ = running.handed_over() => (ExitCode::SUCCESS, true),
    };
    // After a hand-over the new process is the service's main process: it said so.
    if !handed_over {
        switchyard::notify::notify(State::Stopping);
    }
    running.shutdown().await;
    code
}

fn status(admin: SocketAddr, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let fetched = runtime.block_on(client::get(admin, "/status", Duration::from_secs(5)));
    let document = fetched.and_then(|(code, body)| match code {
        200 => serde_json::from_str::<serde_json::Value>(&body).map_err(|e| format!("bad /status JSON: {e}")),
        other => Err(format!("/status answered {other}")),
    });
    match document {
        Ok(document) if json => {
            println!("{document:#}");
            ExitCode::SUCCESS
        }
        Ok(document) => {
            print!("{}", client::render(&document));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard status: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// A probe that panics on a hostile backend's bytes is caught and counted (see
/// `health::checker`), but the default hook would print the panic and its backtrace
/// at every check. This hook prints a panic of one place at most once a minute; a
/// panic elsewhere (a bug) is printed as before.
fn quiet_repeated_panics() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    static LAST: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let now = Instant::now();
        let print = {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            let seen = last.get_or_insert_with(HashMap::new);
            let due = seen
                .get(&place)
                .is_none_or(|at| now.duration_since(*at) >= Duration::from_secs(60));
            if due {
                seen.insert(place, now);
            }
            due
        };
        if print {
            default(info);
        }
    }));
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    switchyard::duration::parse(text)
}

/// `switchyard health`: GETs `path` (once, or every 100 ms for `watch`); exit 0 when
/// every answer was 200, 1 at the first other status (the body says why), 69 when
/// nothing answered within `timeout`.
fn health(admin: SocketAddr, path: &str, timeout: Duration, watch: Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let until = std::time::Instant::now() + watch;
    let mut answer = runtime.block_on(client::get(admin, path, timeout));
    while matches!(answer, Ok((200, _))) && std::time::Instant::now() + WATCH_STEP <= until {
        std::thread::sleep(WATCH_STEP);
        answer = runtime.block_on(client::get(admin, path, timeout));
    }
    match answer {
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            print!("{code} {body}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("switchyard health: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// `switchyard hold`, `release` and `switchover`.
fn pool_command(command: Command) -> ExitCode {
    match command {
        Command::Hold {
            pool,
            deadline,
            drain,
            admin,
            token,
        } => {
            let query: Vec<String> = [
                deadline.map(|d| format!("for={d}")),
                drain.map(|d| format!("drain={d}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            reload::pool_verb(admin, token.as_deref(), &format!("/pools/{pool}/hold{query}"))
        }
        Command::Release { pool, admin, token } => {
            reload::pool_verb(admin, token.as_deref(), &format!("/pools/{pool}/release"))
        }
        Command::Switchover { pool, to, admin, token } => {
            reload::pool_verb(admin, token.as_deref(), &format!("/pools/{pool}/switchover?to={to}"))
        }
        _ => ExitCode::from(EX_USAGE),
    }
}

/// Reloads the config file (and with it every TLS file) on every SIGHUP; the
/// outcome is logged by the reload. Never returns unless SIGHUP cannot be listened
/// for.
async fn reload_on_sighup(running: &app::Running, hup: std::io::Result<Signal>) {
    let mut hup = match hup {
        Ok(hup) => hup,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGHUP; reload with POST /config/reload");
            return std::future::pending().await;
        }
    };
    while hup.recv().await.is_some() {
        info!("SIGHUP: reloading the config");
        switchyard::notify::notify(State::Reloading);
        let _ = running.reload().await;
        switchyard::notify::notify(State::Ready);
    }
    std::future::pending().await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
