//! The duration syntax used throughout the config: an unsigned integer followed by
//! `ms`, `s`, `m` or `h` (`250ms`, `2s`, `5m`, `1h`). No fractions, no bare numbers:
//! a bare `5` is the classic "seconds or milliseconds?" outage.

use std::time::Duration;

/// Parses `250ms`, `2s`, `5m`, `1h`. The error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("a duration with a unit like \"250ms\" or \"2s\", got \"{text}\""))?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("a duration like \"250ms\" or \"2s\", got \"{text}\""))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3600)),
        _ => return Err(format!("a duration unit of ms, s, m or h, got \"{text}\"")),
    };
    if duration > MAX {
        return Err(format!("a duration of at most 365 days, got \"{text}\""));
    }
    Ok(duration)
}

/// The longest duration accepted: far beyond any sensible timeout, and small enough
/// that `Instant + duration` can never overflow.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Formats a duration back into the config syntax (used by `/status`).
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_bare_numbers_fractions_and_unknown_units() {
        assert!(parse("5").unwrap_err().contains("unit"));
        assert!(parse("1.5s").is_err());
        assert!(parse("3 days").is_err());
        assert!(parse("").is_err());
        assert!(parse("ms").is_err());
        assert!(parse("5000000000000000h").unwrap_err().contains("365 days"));
        assert!(parse("99999999999999999999999s").is_err(), "overflowing digits");
    }

    #[test]
    fn formats_round_trip() {
        for text in ["250ms", "2s", "1500ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
