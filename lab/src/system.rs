//! Small process and package helpers shared by the launchers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Whether an executable is on PATH (or in the sbin directories Debian uses).
pub fn has_command(name: &str) -> bool {
    let in_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    in_path
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(name).is_file())
}

/// Installs Debian packages for the commands that are missing (`(command, package)`).
pub fn ensure_packages(needed: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| !has_command(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("switchyard-lab: installing {missing:?} with apt-get");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args(&missing))?;
    Ok(())
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A loopback port that was free a moment ago, chosen below the kernel's ephemeral
/// range when possible (so that outgoing connections of a busy test run do not take
/// it before the server binds it).
pub fn free_port() -> Result<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_start > 12000 {
        for _ in 0..50 {
            let port = 10000 + (rand_u32() % u32::from(ephemeral_start - 10000)) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process and per instance: good enough to spread ports.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() as u32
}

/// A fresh, short directory under the system temp dir (unix socket paths must stay
/// under ~107 bytes).
pub fn temp_dir(prefix: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Sends a signal to a process we started.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    run(Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()))?;
    Ok(())
}

/// `kill -9` of the child in `slot`, if any, reaped; the slot is empty after.
pub fn kill9(slot: &mut Option<std::process::Child>) -> Result<()> {
    if let Some(mut child) = slot.take() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// Starts `command` with its output appended to the file `log`, no input.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Result<std::process::Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening the log {}", log.display()))?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("spawn {command:?}"))
}

/// Stops a child we started: SIGCONT (a stopped process cannot die of SIGTERM),
/// SIGTERM, up to `grace` to exit, then SIGKILL; always reaped.
pub fn stop(child: &mut std::process::Child, grace: std::time::Duration) {
    let pid = child.id();
    let _ = signal(pid, "CONT");
    let _ = signal(pid, "TERM");
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether a process exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}
