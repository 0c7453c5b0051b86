//! Log lines that survive an attack.
//!
//! - [`Limited`]: a per-kind budget of lines a second. Past it, lines are counted, not
//!   written, and the first line of a later second (or [`flush_all`], from the upkeep
//!   task) writes one summary: "…and 297 more hold timeouts in the last second". 300
//!   garbage clients cost ten lines and a summary, not 300.
//! - [`peer`]: text that came from a peer (a server's error message, a client's user
//!   name, a path) escaped and cut short, so that it cannot forge a log line with a
//!   newline or flood one with a megabyte.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::warn;

/// Lines of one kind written per second before the rest are only counted.
pub const LINES_PER_SECOND: u32 = 10;
/// The most characters of peer text a line carries.
pub const PEER_TEXT_MAX: usize = 200;

/// A budget of log lines a second for one kind of per-session or per-attempt warning.
#[derive(Debug)]
pub struct Limited {
    kind: &'static str,
    state: Mutex<Window>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    second: u64,
    written: u32,
    suppressed: u64,
}

impl Limited {
    /// A budget of [`LINES_PER_SECOND`] for `kind` (plural words: "hold timeouts").
    pub const fn new(kind: &'static str) -> Self {
        Limited {
            kind,
            state: Mutex::new(Window {
                second: 0,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to write this line now. The first line of a new second first writes the
    /// summary of what the previous one suppressed.
    pub fn allow(&self) -> bool {
        self.allow_at(unix_second())
    }

    /// [`Limited::allow`] at `second` (a Unix second).
    fn allow_at(&self, second: u64) -> bool {
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if window.second != second {
            self.summarize(&mut window);
            *window = Window {
                second,
                written: 0,
                suppressed: 0,
            };
        }
        if window.written < LINES_PER_SECOND {
            window.written += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }

    /// Writes the summary of a past second, if it suppressed anything.
    fn flush_at(&self, second: u64) {
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if window.second != second {
            self.summarize(&mut window);
        }
    }

    fn summarize(&self, window: &mut Window) {
        if window.suppressed > 0 {
            warn!(
                kind = self.kind,
                suppressed = window.suppressed,
                "…and {} more {} in the last second",
                window.suppressed,
                self.kind
            );
            window.suppressed = 0;
        }
    }

    /// Lines suppressed in the current window (for tests).
    #[cfg(test)]
    fn suppressed(&self) -> u64 {
        self.state.lock().unwrap().suppressed
    }
}

/// Every limited kind of warning, so the upkeep task can flush their summaries.
pub mod kinds {
    use super::Limited;

    /// A held session that found no backend in time.
    pub static HOLD_TIMEOUTS: Limited = Limited::new("hold timeouts");
    /// A `mysql`-mode login the proxy could not carry through.
    pub static LOGIN_FAILURES: Limited = Limited::new("login failures");
    /// A client's TLS handshake that failed.
    pub static TLS_FAILURES: Limited = Limited::new("TLS handshake failures");
    /// An admin request with a missing or wrong token.
    pub static BAD_TOKENS: Limited = Limited::new("refused admin tokens");
    /// A failed accept on a listener.
    pub static ACCEPT_ERRORS: Limited = Limited::new("accept errors");
    /// A connect to a backend that failed.
    pub static CONNECT_FAILURES: Limited = Limited::new("backend connect failures");
    /// A shortage of the proxy's own resources.
    pub static LOCAL_FAILURES: Limited = Limited::new("local resource failures");
    /// A client the proxy closed because its pool reaches nothing.
    pub static REFUSED_CLIENTS: Limited = Limited::new("refused clients");
    /// An admin connection closed because too many were open.
    pub static ADMIN_REFUSED: Limited = Limited::new("refused admin connections");
    /// Keepalive or TCP_USER_TIMEOUT that could not be set on a session's socket.
    pub static SOCKET_OPTIONS: Limited = Limited::new("socket option failures");
    /// A client connection closed for its PROXY protocol header (untrusted source,
    /// malformed, late).
    pub static PROXY_HEADERS: Limited = Limited::new("refused PROXY headers");

    pub(super) static ALL: [&Limited; 11] = [
        &SOCKET_OPTIONS,
        &ADMIN_REFUSED,
        &HOLD_TIMEOUTS,
        &LOGIN_FAILURES,
        &TLS_FAILURES,
        &BAD_TOKENS,
        &ACCEPT_ERRORS,
        &CONNECT_FAILURES,
        &LOCAL_FAILURES,
        &REFUSED_CLIENTS,
        &PROXY_HEADERS,
    ];
}

/// Writes the summaries of past seconds now (called by the upkeep task, so a burst
/// that stopped is still summarized).
pub fn flush_all() {
    let now = unix_second();
    kinds::ALL.iter().for_each(|kind| kind.flush_at(now));
}

fn unix_second() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Peer text for a log line or an error: control characters and quotes escaped
/// (`\n`, `\u{1b}`), at most [`PEER_TEXT_MAX`] characters, then `…`.
pub fn peer(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == PEER_TEXT_MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_lines_a_second_then_counted_then_a_summary_and_a_fresh_budget() {
        let limited = Limited::new("things");
        let allowed = (0..300).filter(|_| limited.allow_at(100)).count();
        assert_eq!(allowed, LINES_PER_SECOND as usize);
        assert_eq!(limited.suppressed(), 300 - u64::from(LINES_PER_SECOND));
        // The next second starts afresh (after writing the summary).
        assert!(limited.allow_at(101));
        assert_eq!(limited.suppressed(), 0);
        for _ in 0..20 {
            limited.allow_at(101);
        }
        limited.flush_at(102);
        assert_eq!(limited.suppressed(), 0, "a flush in a later second writes the summary");
    }

    #[test]
    fn peer_text_cannot_break_a_line_nor_flood_it() {
        assert_eq!(peer("user\nlevel=ERROR forged"), "user\\nlevel=ERROR forged");
        assert_eq!(peer("\u{1b}[31mred"), "\\u{1b}[31mred");
        let long = peer(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), PEER_TEXT_MAX + 1);
        assert!(long.ends_with('…'));
    }
}
