//! `[log]`: what the log says and how it is written (see [`crate::logging`], which
//! installs it and applies a reload's changes).

use super::Fraction;

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Text lines for people, or JSON lines for a collector.
    pub format: LogFormat,
    /// A filter in `RUST_LOG`'s syntax (`info`, `warn,switchyard::access=info`);
    /// the `RUST_LOG` variable, when set, wins.
    pub level: String,
    /// The session access log: one line per session at its end.
    pub access: AccessLog,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: super::defaults::LOG_LEVEL.to_string(),
            access: AccessLog {
                enabled: true,
                sample: Fraction::new(1.0).expect("1.0 is a fraction"),
            },
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-04T01:02:03.456Z  INFO span{fields}: message key=value`; colour only
    /// when standard error is a terminal.
    Text,
    /// One JSON object a line, with the same fields as the text.
    Json,
}

/// The session access log, on its own target (`switchyard::access`, INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLog {
    /// `log.access`: written at all (default on).
    pub enabled: bool,
    /// `log.access_sample`: the share of sessions that ended normally (closed by
    /// either side, idle) that get a line; every other end always does.
    pub sample: Fraction,
}
