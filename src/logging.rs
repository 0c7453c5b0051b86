//! The process's log, as `[log]` says: installed once at start ([`install`]), and a
//! reload's changes applied ([`apply`]).
//!
//! ```text
//! event ─▶ filter (log.level, or RUST_LOG; reloadable) ─▶ text | JSON lines ─▶ queue ─▶ writer thread ─▶ stderr
//! ```
//!
//! Lines are written by a thread of their own: a data-plane thread never waits on a
//! slow standard error (a pipe to a busy journald). Past [`QUEUED_LINES`] waiting,
//! lines are dropped, not waited for, and counted (`switchyard_log_lines_dropped_total`):
//! a proxy that stalls its sessions to write about them fails its users twice.
//!
//! The access log ([`access_wanted`]) is one line per session at its end on the
//! `switchyard::access` target; whether it is written at all and the share of
//! normally ended sessions that get one are switches sessions read without a lock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

/// Lines that may wait for the writer thread before new ones are dropped.
pub const QUEUED_LINES: usize = 64 * 1024;

/// What [`install`] set up, for [`apply`].
struct Installed {
    filter: reload::Handle<EnvFilter, Registry>,
    format: LogFormat,
    /// `RUST_LOG` was set: it wins over `log.level`.
    from_env: bool,
    /// The `log.level` in effect (or last asked for, under `RUST_LOG`).
    level: Mutex<String>,
    dropped: ErrorCounter,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The access log's switches: on, and the share of normal ends kept, out of `u32::MAX`.
static ACCESS_ON: AtomicBool = AtomicBool::new(true);
static ACCESS_SAMPLE: AtomicU32 = AtomicU32::new(u32::MAX);

/// Installs the process's log; the guard flushes the queued lines when dropped (keep
/// it until the process ends). A second call installs nothing and returns `None`.
pub fn install(config: &LogConfig) -> Option<WorkerGuard> {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    // `log.level` was checked when the config was read; RUST_LOG may be anything, and
    // one that does not parse is set aside (with a warning once the log is up).
    let env_filter = env.as_deref().and_then(|text| EnvFilter::try_new(text).ok());
    let from_env = env_filter.is_some();
    let refused_env = if from_env { None } else { env };
    let filter =
        env_filter.unwrap_or_else(|| EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info")));
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("switchyard-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    // Colour only for a person at a terminal: not in log files or journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(writer).with_ansi(ansi))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(writer),
            )
            .try_init(),
    };
    if installed.is_err() {
        return None;
    }
    if let Some(text) = refused_env {
        tracing::warn!(rust_log = %crate::logs::peer(&text), level = %config.level, "RUST_LOG is not a filter tracing reads; logging as log.level says");
    }
    set_access(config);
    let _ = INSTALLED.set(Installed {
        filter: handle,
        format: config.format,
        from_env,
        level: Mutex::new(config.level.clone()),
        dropped,
    });
    Some(guard)
}

/// Applies a reloaded `[log]`: the filter and the access log switches change at once;
/// what cannot change in a running process is returned, for the reload's report.
pub fn apply(config: &LogConfig) -> Vec<String> {
    set_access(config);
    let Some(installed) = INSTALLED.get() else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    if installed.format != config.format {
        kept.push("log.format (takes a restart or a hot upgrade)".to_string());
    }
    let mut level = installed.level.lock().unwrap_or_else(|e| e.into_inner());
    if *level != config.level {
        *level = config.level.clone();
        if installed.from_env {
            kept.push("log.level (RUST_LOG is set and wins)".to_string());
        } else if let Ok(filter) = EnvFilter::try_new(&config.level) {
            if installed.filter.reload(filter).is_err() {
                kept.push("log.level (the log is gone)".to_string());
            }
        }
    }
    kept
}

/// Lines dropped because the writer thread fell behind, since start.
pub fn dropped_lines() -> u64 {
    INSTALLED.get().map_or(0, |i| i.dropped.dropped_lines() as u64)
}

fn set_access(config: &LogConfig) {
    ACCESS_ON.store(config.access.enabled, Ordering::Relaxed);
    ACCESS_SAMPLE.store(share(config.access.sample.get()), Ordering::Relaxed);
}

/// A fraction as a share of `u32::MAX`.
fn share(fraction: f64) -> u32 {
    (fraction.clamp(0.0, 1.0) * f64::from(u32::MAX)).round() as u32
}

/// Whether a session that ended `normally` (closed by a side, idle) or not gets an
/// access line: never with the access log off, always when it did not end normally,
/// else for the configured share of sessions.
pub fn access_wanted(normally: bool) -> bool {
    if !ACCESS_ON.load(Ordering::Relaxed) {
        return false;
    }
    let sample = ACCESS_SAMPLE.load(Ordering::Relaxed);
    !normally || sample == u32::MAX || kept(sample, fastrand::u32(..))
}

/// Whether a draw from `0..u32::MAX` falls in a share `sample` of them (all of them
/// at `u32::MAX`, none at 0).
fn kept(sample: u32, draw: u32) -> bool {
    sample == u32::MAX || draw < sample
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_keeps_its_share_of_draws() {
        assert!(kept(share(1.0), u32::MAX - 1) && kept(share(1.0), 0));
        assert!(!kept(share(0.0), 0), "a share of 0 keeps nothing");
        let tenth = share(0.1);
        let kept_of = (0..10_000u32).filter(|i| kept(tenth, i.wrapping_mul(429_497))).count();
        assert!((900..=1100).contains(&kept_of), "{kept_of} of 10,000 at 0.1");
    }
}
