//! `run --upgrade` and SIGUSR2: the binary's side of a hot upgrade (the protocol is in
//! `switchyard::upgrade`).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use switchyard::config::Config;
use switchyard::notify::{self, State};
use switchyard::upgrade::{self, Inherited};
use tracing::{error, info, warn};

use super::{EX_UNAVAILABLE, EX_USAGE};

/// What `run --upgrade` took over before starting.
pub struct Taken {
    pub stream: UnixStream,
    pub inherited: Inherited,
}

/// `run --config FILE --upgrade`: takes over from the process on the config's upgrade
/// socket, then serves as `run` does. Exit 64 without an upgrade socket, 69 when the
/// running process cannot be reached (it serves on, untouched).
pub fn run_upgrade(config: Config) -> ExitCode {
    let Some(path) = config.upgrade_socket.clone() else {
        error!("{}: --upgrade needs [runtime] upgrade_socket", config.source);
        return ExitCode::from(EX_USAGE);
    };
    let (stream, inherited) = match upgrade::take_over(&path) {
        Ok(taken) => taken,
        Err(e) => {
            error!(socket = %path.display(), error = %e, "hot upgrade: cannot take over; the running process serves on");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    info!(
        from_pid = inherited.from_pid,
        listeners = inherited.listeners.len(),
        "hot upgrade: took the listening sockets over"
    );
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    runtime.block_on(super::run(config, Some(Taken { stream, inherited })))
}

/// This process serves: tells the old one (which stops accepting) and the service
/// manager (this is its main process now). False if the old process could not be
/// told: it serves on, and this one must not.
pub async fn took_over(stream: UnixStream) -> bool {
    let confirmed = tokio::task::spawn_blocking(move || {
        let mut stream = stream;
        upgrade::send_ready(&mut stream)?;
        Ok::<_, std::io::Error>(upgrade::await_bye(&mut stream))
    })
    .await;
    match confirmed {
        Ok(Ok(Ok(()))) => info!("hot upgrade: the old process let go; this one serves alone"),
        // `ready` went out: the old one stops (or stopped) accepting, so serve.
        Ok(Ok(Err(e))) => warn!(error = %e, "hot upgrade: the old process did not say bye; serving anyway"),
        Ok(Err(e)) => {
            error!(error = %e, "hot upgrade: cannot tell the old process; it serves on and this one stops");
            return false;
        }
        Err(e) => {
            error!(error = %e, "hot upgrade: the confirmation failed; this one stops");
            return false;
        }
    }
    notify::notify(State::TookOver(std::process::id()));
    true
}

/// On every SIGUSR2, starts `run --config <config> --upgrade` from the binary this
/// process was started from (its path now: a package upgrade puts the new binary
/// there). Never returns unless SIGUSR2 cannot be listened for.
pub async fn on_sigusr2(config: &Path, enabled: bool, usr2: std::io::Result<tokio::signal::unix::Signal>) {
    let binary = binary_path();
    let mut usr2 = match usr2 {
        Ok(usr2) => usr2,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGUSR2; upgrade with `switchyard run --upgrade`");
            return std::future::pending().await;
        }
    };
    while usr2.recv().await.is_some() {
        if !enabled {
            warn!("SIGUSR2: no hot upgrade without [runtime] upgrade_socket");
            continue;
        }
        match std::process::Command::new(&binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--upgrade")
            .spawn()
        {
            Ok(child) => {
                info!(binary = %binary.display(), pid = child.id(), "SIGUSR2: started the new process of a hot upgrade")
            }
            Err(e) => {
                error!(binary = %binary.display(), error = %e, "SIGUSR2: cannot start the new process; serving on")
            }
        }
    }
    std::future::pending().await
}

/// The binary's path as started, without the ` (deleted)` Linux appends once it was
/// replaced on disk.
fn binary_path() -> PathBuf {
    let path = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("switchyard"));
    let text = path.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(original) => PathBuf::from(original),
        None => path,
    }
}
