//! A Python virtual environment for the Python-based peers and clients (pymongo,
//! nx-27017, SecantusDB), created once under the build's target directory.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::system;

/// What the venv holds. Versions pinned where a peer's behaviour matters.
const PACKAGES: &[&str] = &[
    "pymongo==4.20.*",
    "nx-27017==0.8.1",
    "secantusdb==0.7.0b3",
    "SQLAlchemy==2.0.*",
    "PyMySQL==1.1.*",
    "kombu[redis]==5.*",
];

/// The venv's directory: `SWITCHYARD_LAB_VENV`, else `target/lab-venv` of this workspace.
fn venv_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_LAB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lab-venv"))
}

/// The venv's python, creating the venv and installing [`PACKAGES`] the first time.
pub fn python() -> Result<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = venv_dir();
    let python = dir.join("bin/python");
    let stamp = dir.join("switchyard-lab.stamp");
    let wanted = PACKAGES.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && python.is_file() {
        return Ok(python);
    }
    eprintln!(
        "switchyard-lab: creating a Python venv in {} with {PACKAGES:?}",
        dir.display()
    );
    system::run(Command::new("python3").arg("-m").arg("venv").arg(&dir)).context("python3 -m venv")?;
    system::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(PACKAGES),
    )
    .context("pip install")?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// Runs a Python snippet with the venv's interpreter; returns its stdout.
pub fn run(code: &str, args: &[&str]) -> Result<String> {
    let python = python()?;
    system::run(Command::new(python).arg("-c").arg(code).args(args))
}

/// The path of a script shipped in `lab/py/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py").join(name)
}
