//! The values of the raw tree that have rules of their own (a duration's syntax, a
//! minimum, a range, a shape), checked by serde as the file is read: a mistake names
//! the key, the line and what was expected, before any rule across fields runs.

use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::config::Fraction;
use crate::duration;

/// Reads a `T` and turns it into `U` with `check`, whose error says what was
/// expected (it becomes "expected …").
fn checked<'de, D, T, U>(deserializer: D, check: impl FnOnce(T) -> Result<U, String>) -> Result<U, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let value = T::deserialize(deserializer)?;
    check(value).map_err(|expected| D::Error::custom(format_args!("expected {expected}")))
}

/// Implements `Deserialize` for a one-field newtype through [`checked`].
macro_rules! checked_value {
    ($name:ident, $from:ty, $check:expr) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                checked(deserializer, |value: $from| $check(value).map($name))
            }
        }
    };
}

/// A duration in the config's syntax (`250ms`, `2s`, `5m`, `1h`; see [`duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);
checked_value!(ConfigDuration, String, |text: String| duration::parse(&text));

/// A duration above zero (timeouts: zero would fail everything at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);
checked_value!(Timeout, String, |text: String| {
    let value = duration::parse(&text)?;
    if value.is_zero() {
        return Err("a duration above zero".to_string());
    }
    Ok(value)
});

/// The shortest check interval accepted: faster probing costs more than it buys.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A check interval: at least [`MIN_INTERVAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);
checked_value!(Interval, String, |text: String| {
    let value = duration::parse(&text)?;
    if value < MIN_INTERVAL {
        return Err(format!("at least 100ms, got {}", duration::format(value)));
    }
    Ok(value)
});

/// A keepalive idle time: at least one second (the kernel counts in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive(pub Duration);
checked_value!(Keepalive, String, |text: String| {
    let value = duration::parse(&text)?;
    if value < Duration::from_secs(1) {
        return Err("at least 1s".to_string());
    }
    Ok(value)
});

/// `rise` and `fall`: a whole number of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub NonZeroU32);
checked_value!(Count, i64, |value: i64| {
    u32::try_from(value)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("a whole number of at least 1, got {value}"))
});

/// Check jitter: a fraction from 0.0 to 0.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jitter(pub Fraction);
checked_value!(Jitter, f64, |value: f64| {
    Fraction::new(value)
        .filter(|j| j.get() <= 0.5)
        .ok_or_else(|| format!("a fraction from 0.0 to 0.5, got {value}"))
});

/// `log.level`: a filter in `RUST_LOG`'s syntax, checked as `tracing` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(pub String);
checked_value!(LogLevel, String, |text: String| {
    // A bare word is a level (tracing would take "loud" for a target name); every
    // `target=level` names a level too.
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let level = |word: &str| LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    let directives_ok = text.split(',').all(|d| match d.rsplit_once('=') {
        Some((target, word)) => !target.trim().is_empty() && level(word),
        None => level(d),
    });
    match tracing_subscriber::EnvFilter::builder().parse(&text) {
        Ok(_) if directives_ok => Ok(text),
        _ => Err(format!(
            "a filter like \"info\" or \"warn,switchyard::access=info\" (levels: off, error, warn, info, debug, trace), got {text:?}"
        )),
    }
});

/// `log.access_sample`: a fraction from 0.0 to 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample(pub Fraction);
checked_value!(Sample, f64, |value: f64| {
    Fraction::new(value).ok_or_else(|| format!("a fraction from 0.0 to 1.0, got {value}"))
});

/// `runtime.workers`: 0 (one per core) to 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers(pub u16);
checked_value!(Workers, i64, |value: i64| {
    u16::try_from(value)
        .ok()
        .filter(|n| *n <= 256)
        .ok_or_else(|| format!("0 (one per core) to 256, got {value}"))
});

/// `listeners.*.max_connections`: 1 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxConnections(pub usize);
checked_value!(MaxConnections, i64, |value: i64| {
    usize::try_from(value)
        .ok()
        .filter(|m| (1..=1_000_000).contains(m))
        .ok_or_else(|| format!("a number from 1 to 1000000, got {value}"))
});

/// An HTTP method: upper-case letters (`GET`, `HEAD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMethod(pub String);
checked_value!(HttpMethod, String, |method: String| {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("an HTTP method like \"GET\", got \"{method}\""));
    }
    Ok(method)
});

/// An HTTP request path: starts with `/`, no spaces or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPath(pub String);
checked_value!(HttpPath, String, |path: String| {
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("a path starting with \"/\" and without spaces, got \"{path}\""));
    }
    Ok(path)
});

/// A `Host` header: not empty, no spaces or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHeader(pub String);
checked_value!(HostHeader, String, |host: String| {
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("a host name without spaces, got \"{host}\""));
    }
    Ok(host)
});

/// Expected HTTP statuses: `"200"` or `"200-399"`, within 100-599.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRange(pub RangeInclusive<u16>);
checked_value!(StatusRange, String, |text: String| {
    status_range(&text)
        .ok_or_else(|| format!("a status like \"200\" or a range like \"200-399\" within 100-599, got \"{text}\""))
});

fn status_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high): (u16, u16) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    (100 <= low && low <= high && high <= 599).then_some(low..=high)
}
