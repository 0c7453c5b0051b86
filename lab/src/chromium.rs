//! Headless Chromium (Debian's `chromium`) for the tests of pages: the DOM after the
//! page's scripts ran, a screenshot, and what the page's scripts logged as errors
//! (Chromium's console lines on stderr: an uncaught `ReferenceError` in a report's
//! script was seen there and failed its test).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::system;

/// What rendering a page gave.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The DOM after the scripts ran (`--dump-dom`); empty for a screenshot.
    pub dom: String,
    /// Console messages the page's scripts raised as errors (`Uncaught …`).
    pub script_errors: Vec<String>,
}

/// Renders `url` (with up to 4 s of virtual time for its scripts) and returns the DOM,
/// or with `screenshot` writes a PNG of a 1400×900 window there instead.
pub fn render(url: &str, screenshot: Option<&Path>) -> Result<Rendered> {
    system::ensure_packages(&[("chromium", "chromium")])?;
    let profile = system::temp_dir("sy-chromium-profile")?;
    // Bounded: a Chromium that hangs ends the test, not the suite.
    let mut command = Command::new("timeout");
    command.args(["60", "chromium"]);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=4000",
        "--window-size=1400,900",
        // Console messages to stderr, where script errors are looked for.
        "--enable-logging=stderr",
        "--v=0",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let out = command.arg(url).output().context("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let out = out?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("chromium failed on {url}: {stderr}");
    }
    let script_errors = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .map(String::from)
        .collect();
    Ok(Rendered {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        script_errors,
    })
}
