//! The Debian package end to end: built by cargo-deb from this tree (its debug binary:
//! a release build would add minutes to the suite; what is packaged is the same),
//! installed with `dpkg -i`, then: the system user exists, the config and the admin
//! token the postinst wrote are readable by it and nobody else, the package holds no
//! token, `switchyard check-config` passes on the installed config as that user, the
//! installed proxy serves with it and takes the token for a reload, a second install
//! keeps the token, and a purge removes user, token and config.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard_lab::system;
use switchyard_test_support::{http_get, poll_pause, within};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// The cargo-deb release the suite builds packages with.
const CARGO_DEB: &str = "3.8.0";
const TOKEN: &str = "/etc/switchyard/admin-token";
const CONFIG: &str = "/etc/switchyard/switchyard.toml";

/// Runs `program args` (at most 10 minutes: a cargo install, dpkg waiting on a lock),
/// panicking with its output when it fails; its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["600", program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// cargo-deb, installed when missing (the suite's script installs it first).
fn ensure_cargo_deb() {
    let present = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        run("cargo", &["install", "--locked", "cargo-deb", "--version", CARGO_DEB]);
    }
}

/// Purges the package when dropped, so a failed test leaves no user or files behind.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "switchyard"]).output();
    }
}

fn build_package(dir: &Path) -> PathBuf {
    let deb = dir.join("switchyard.deb");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let deb_text = deb.to_str().unwrap();
    // The assets name target/release/switchyard; with the dev profile cargo-deb takes
    // the debug binary this test was built with.
    assert!(Path::new(BIN).is_file());
    run(
        "cargo",
        &[
            "deb",
            "--manifest-path",
            manifest,
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--no-strip",
            "-o",
            deb_text,
        ],
    );
    deb
}

/// (mode bits, owner uid, group name) of `path`.
fn owned(path: &str) -> (u32, u32, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let group = run("stat", &["-c", "%G", path]).trim().to_string();
    (meta.mode() & 0o7777, meta.uid(), group)
}

#[tokio::test]
async fn the_deb_installs_a_user_a_tokenless_config_and_a_unit_that_checks_and_serves() {
    system::ensure_packages(&[("adduser", "adduser")]).unwrap();
    let before = Command::new("dpkg").args(["-s", "switchyard"]).output().unwrap();
    assert!(
        !before.status.success(),
        "a switchyard package is already installed here; this test installs and purges its own"
    );
    ensure_cargo_deb();
    let dir = system::temp_dir("sy-package").unwrap();
    let deb = build_package(&dir);
    let contents = run("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    assert!(contents.contains("./etc/switchyard/switchyard.toml"), "{contents}");
    assert!(
        contents.contains("./usr/lib/systemd/system/switchyard.service"),
        "{contents}"
    );
    assert!(
        !contents.contains("admin-token"),
        "the package ships no token:\n{contents}"
    );

    let installed = Installed;
    run("dpkg", &["-i", deb.to_str().unwrap()]);
    run("getent", &["passwd", "switchyard"]);
    assert_eq!(
        std::fs::read("/usr/bin/switchyard").unwrap(),
        std::fs::read(BIN).unwrap(),
        "the binary is ours"
    );
    assert_eq!(owned(CONFIG), (0o640, 0, "switchyard".to_string()));
    assert_eq!(owned(TOKEN), (0o640, 0, "switchyard".to_string()));
    let token = std::fs::read_to_string(TOKEN).unwrap();
    assert_eq!(token.trim().len(), 64, "32 random bytes in hex: {token:?}");
    assert!(token.trim().chars().all(|c| c.is_ascii_hexdigit()));

    let checked = as_service().args(["check-config", CONFIG]).output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success() && said.contains(": ok ("),
        "{said}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    serve_and_reload_as_the_service(token.trim()).await;

    // A reinstall (an upgrade in place) keeps the token and the operator's mode.
    std::fs::set_permissions(CONFIG, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    run("dpkg", &["-i", deb.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(TOKEN).unwrap(), token);
    assert_eq!(
        owned(CONFIG).0,
        0o600,
        "an upgrade leaves the administrator's mode alone"
    );
    // An empty token file (a disk that filled up) is written again.
    std::fs::write(TOKEN, "").unwrap();
    run("dpkg", &["-i", deb.to_str().unwrap()]);
    let again = std::fs::read_to_string(TOKEN).unwrap();
    assert_eq!(again.trim().len(), 64, "{again:?}");
    assert_ne!(again, token);

    drop(installed);
    assert!(!Path::new(TOKEN).exists() && !Path::new(CONFIG).exists(), "purged");
    let user = Command::new("getent").args(["passwd", "switchyard"]).output().unwrap();
    assert!(!user.status.success(), "the system user is gone after a purge");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The installed binary as the service's user and group (as the unit's `User=` and
/// `Group=` run it), started directly: killing it kills the proxy itself.
fn as_service() -> Command {
    let id = |flag: &str| run("id", &[flag, "switchyard"]).trim().parse::<u32>().unwrap();
    let mut command = Command::new("/usr/bin/switchyard");
    command.uid(id("-u")).gid(id("-g"));
    command
}

/// A process killed when dropped (also when an assertion fails first).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The installed binary runs the installed config as the service's user (as the unit's
/// ExecStart does), answers on its admin address and applies a reload with the token.
async fn serve_and_reload_as_the_service(token: &str) {
    let mut child = KillOnDrop(
        as_service()
            .args(["run", "--config", CONFIG])
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let admin: std::net::SocketAddr = "127.0.0.1:9900".parse().unwrap();
    within(Duration::from_secs(30), "the installed proxy to answer", async {
        loop {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("the installed proxy exited: {status}");
            }
            if tokio::net::TcpStream::connect(admin).await.is_ok() && http_get(admin, "/health/live").await.0 == 200 {
                return;
            }
            poll_pause().await;
        }
    })
    .await;
    let (_, status) = http_get(admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["pid"],
        child.0.id(),
        "the installed proxy answers, not another process"
    );
    let reloaded = Command::new("/usr/bin/switchyard")
        .args(["reload", "--admin", "127.0.0.1:9900", "--token", token])
        .output()
        .unwrap();
    let refused = Command::new("/usr/bin/switchyard")
        .args(["reload", "--admin", "127.0.0.1:9900", "--token", "not-the-token"])
        .output()
        .unwrap();
    drop(child);
    assert!(
        reloaded.status.success(),
        "the generated token reloads: {}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    assert_eq!(refused.status.code(), Some(1), "another token is refused");
}
