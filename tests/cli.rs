//! The binary: exit codes for bad configs, `forward` mode, SIGTERM draining, and the
//! systemd notifications (READY, RELOADING, STOPPING) on a socket of the test's own.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;
use switchyard_test_support as support;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const LIMIT: Duration = Duration::from_secs(30);

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A port that was free a moment ago (the binary must bind it itself).
fn free_port() -> SocketAddr {
    refused_addr()
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until something accepts on `addr`.
async fn await_listening(addr: SocketAddr) {
    within(LIMIT, "the proxy to listen", async {
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::task::yield_now().await;
            poll_pause().await;
        }
    })
    .await
}

#[test]
fn check_config_exits_64_and_names_the_key() {
    let path = write_config(
        "bad.toml",
        "[backends.a]\naddress = \"127.0.0.1:1\"\n[pools.p]\nbackends = [\"a\"]\nhold_timeout = \"soon\"\n[listeners.l]\nlisten = \"127.0.0.1:0\"\npool = \"p\"\n",
    );
    for args in [
        vec!["check-config".into(), path.display().to_string()],
        vec!["run".into(), "--config".into(), path.display().to_string()],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("bad.toml") && stderr.contains("pools.p.hold_timeout"),
            "{stderr}"
        );
    }
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let out = Command::new(BIN).args(["check-config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bind_failure_exits_69() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = write_config(
        "taken.toml",
        &format!("[backends.a]\naddress = \"127.0.0.1:1\"\n[pools.p]\nbackends = [\"a\"]\n[listeners.l]\nlisten = \"{addr}\"\npool = \"p\"\n"),
    );
    let out = Command::new(BIN).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn forward_mode_proxies_to_the_first_healthy_backend() {
    let dead = refused_addr();
    let live = Server::start(Behavior::Echo("live")).await;
    let listen = free_port();
    let child = Command::new(BIN)
        .args([
            "forward",
            "--listen",
            &listen.to_string(),
            "--backend",
            &dead.to_string(),
            "--backend",
            &live.addr.to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Proc(child);
    await_listening(listen).await;
    let (_s, banner) = within(LIMIT, "a session", connect_and_read_banner(listen)).await;
    assert_eq!(banner, "live");
    drop(child);
}

#[tokio::test]
async fn sigterm_drains_open_sessions_then_exits() {
    let backend = Server::start(Behavior::Echo("b")).await;
    let (listen, admin) = (free_port(), free_port());
    let path = write_config(
        "drain.toml",
        &format!(
            "[admin]\nlisten = \"{admin}\"\n[shutdown]\ngrace = \"20s\"\n[backends.b]\naddress = \"{}\"\n\
             [pools.p]\nbackends = [\"b\"]\n[listeners.l]\nlisten = \"{listen}\"\npool = \"p\"\n",
            backend.addr
        ),
    );
    let mut child = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    await_listening(listen).await;
    let (mut session, banner) = within(LIMIT, "a session", connect_and_read_banner(listen)).await;
    assert_eq!(banner, "b");

    signal(&child.0, "TERM");
    within(LIMIT, "/health to turn 503", async {
        while http_get(admin, "/health").await.0 != 503 {
            poll_pause().await;
        }
    })
    .await;
    // The listening socket closes right after the drain starts: no new sessions.
    within(LIMIT, "the listener to close", async {
        while TcpStream::connect(listen).await.is_ok() {
            poll_pause().await;
        }
    })
    .await;
    // The open session still works during the drain.
    session.write_all(b"during drain\n").await.unwrap();
    assert_eq!(read_line(&mut session).await, "during drain");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "still draining while a session is open"
    );

    drop(session);
    let status = within(LIMIT, "the process to exit", async {
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                return status;
            }
            poll_pause().await;
        }
    })
    .await;
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("draining"), "{stderr}");
}

/// `switchyard health --ready`'s exit code and output for the proxy at `admin`.
async fn ready(admin: SocketAddr) -> (i32, String) {
    health(admin, &["--timeout", "2s"]).await
}

/// `switchyard health --ready ARGS --admin ADDR`: its exit code and output.
async fn health(admin: SocketAddr, args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["health", "--ready"])
            .args(&args)
            .arg("--admin")
            .arg(admin.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Waits until `switchyard health --ready` exits with `code`; returns its output.
async fn await_ready_code(admin: SocketAddr, code: i32, what: &str) -> String {
    within(LIMIT, what, async {
        loop {
            let (got, text) = ready(admin).await;
            if got == code {
                return text;
            }
            poll_pause().await;
        }
    })
    .await
}

#[tokio::test]
async fn readiness_follows_the_required_pool_and_the_cli_says_so() {
    let backend_addr = refused_addr();
    let (listen, admin) = (free_port(), free_port());
    let path = write_config(
        "ready.toml",
        &format!(
            "[admin]\nlisten = \"{admin}\"\n[check]\ninterval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 1\n\
             [backends.db]\naddress = \"{backend_addr}\"\n\
             [pools.p]\nbackends = [\"db\"]\nrequired = true\n[listeners.l]\nlisten = \"{listen}\"\npool = \"p\"\n"
        ),
    );
    // Nothing answers on the admin address yet: 69.
    let (code, text) = ready(admin).await;
    assert_eq!(code, 69, "{text}");
    let _child = Proc(Command::new(BIN).args(["run", "--config"]).arg(&path).spawn().unwrap());
    await_listening(admin).await;
    assert_eq!(http_get(admin, "/health/live").await.0, 200, "live from the start");
    // The only member of the required pool refuses connections: not ready, and why.
    let text = await_ready_code(admin, 1, "not ready while the pool reaches nothing").await;
    assert!(text.contains("503") && text.contains("pool p"), "{text}");
    let server = Server::start_on(backend_addr, Behavior::Echo("db")).await;
    let text = await_ready_code(admin, 0, "ready once the member is up").await;
    assert_eq!(text, "ready\n");
    // --watch asks again and again, and still says yes at the end.
    assert_eq!(health(admin, &["--watch", "300ms"]).await, (0, "ready\n".into()));
    server.stop().await;
    let text = await_ready_code(admin, 1, "not ready once it is gone again").await;
    assert!(text.contains("no member reachable"), "{text}");
    assert_eq!(http_get(admin, "/health/live").await.0, 200, "still live");
}

/// The next datagram on `socket` (the notifications a service manager would read).
async fn next_notification(socket: &tokio::net::UnixDatagram, what: &str) -> String {
    let mut buf = [0u8; 512];
    let n = within(LIMIT, what, socket.recv(&mut buf)).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn systemd_hears_ready_reloading_and_stopping() {
    let backend = Server::start(Behavior::Echo("b")).await;
    let listen = free_port();
    let path = write_config(
        "notify.toml",
        &format!(
            "[backends.b]\naddress = \"{}\"\n[pools.p]\nbackends = [\"b\"]\n[listeners.l]\nlisten = \"{listen}\"\npool = \"p\"\n",
            backend.addr
        ),
    );
    let socket_path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket_path);
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let child = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("NOTIFY_SOCKET", &socket_path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = next_notification(&socket, "READY=1").await;
    assert!(ready.starts_with("READY=1"), "{ready}");
    // Ready means serving: the listener accepts at once.
    let (_, banner) = within(LIMIT, "a session", connect_and_read_banner(listen)).await;
    assert_eq!(banner, "b");
    signal(&child.0, "HUP");
    let reloading = next_notification(&socket, "RELOADING=1").await;
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    let usec: u64 = reloading
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("MONOTONIC_USEC=")
        .parse()
        .unwrap();
    assert!(usec > 0);
    assert!(next_notification(&socket, "READY=1 after the reload")
        .await
        .starts_with("READY=1"));
    signal(&child.0, "TERM");
    assert!(next_notification(&socket, "STOPPING=1").await.starts_with("STOPPING=1"));
    drop(child);
    let _ = std::fs::remove_file(&socket_path);
}

/// `switchyard run --config PATH`, killed on drop.
fn run_proxy(path: &std::path::Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `switchyard ARGS...`: its exit status, stdout and stderr.
fn cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// `switchyard reload` with the admin address and token.
fn reload_command(admin: SocketAddr, token: &str) -> (i32, String, String) {
    cli(&["reload", "--admin", &admin.to_string(), "--token", token])
}

#[tokio::test]
async fn sighup_and_switchyard_reload_apply_the_edited_file() {
    let backend = Server::start(Behavior::Echo("b")).await;
    let (admin, first, second) = (free_port(), free_port(), free_port());
    let base = format!(
        "[admin]\nlisten = \"{admin}\"\ntoken = \"t0ken\"\n[check]\ninterval = \"100ms\"\n[backends.b]\naddress = \"{}\"\n[pools.p]\nbackends = [\"b\"]\n[listeners.first]\nlisten = \"{first}\"\npool = \"p\"\n",
        backend.addr
    );
    let path = write_config("reload-cli.toml", &base);
    let child = run_proxy(&path);
    await_listening(first).await;
    // SIGHUP: a listener added to the file starts serving.
    let with_second = format!("{base}[listeners.second]\nlisten = \"{second}\"\npool = \"p\"\n");
    std::fs::write(&path, &with_second).unwrap();
    signal(&child.0, "HUP");
    await_listening(second).await;
    let (_, banner) = within(
        LIMIT,
        "a session on the added listener",
        connect_and_read_banner(second),
    )
    .await;
    assert_eq!(banner, "b");
    // A broken file: refused with check-config's words, and everything serves on.
    std::fs::write(
        &path,
        with_second.replace("interval = \"100ms\"", "interval = \"fast\""),
    )
    .unwrap();
    let (code, _, stderr) = reload_command(admin, "t0ken");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("422") && stderr.contains("check.interval"), "{stderr}");
    let (_, banner) = within(
        LIMIT,
        "a session after the refused reload",
        connect_and_read_banner(second),
    )
    .await;
    assert_eq!(banner, "b");
    // The listener removed again: `switchyard reload` says what changed.
    std::fs::write(&path, &base).unwrap();
    let (code, stdout, stderr) = reload_command(admin, "t0ken");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("applied in ") && stdout.contains("listeners -second"),
        "{stdout}"
    );
    let (code, _, stderr) = reload_command(admin, "wrong");
    assert_eq!(code, 1, "a wrong token is refused: {stderr}");
    drop(child);
}

/// `switchyard hold|release|switchover POOL [--for D] [--to B]`.
fn pool_command(verb: &str, pool: &str, admin: SocketAddr, extra: &[&str]) -> (i32, String, String) {
    let admin = admin.to_string();
    let mut args = vec![verb, pool, "--admin", &admin, "--token", "t0ken"];
    args.extend_from_slice(extra);
    cli(&args)
}

#[tokio::test]
async fn switchyard_hold_makes_new_sessions_wait_until_release_and_keeps_live_ones() {
    let backend = Server::start(Behavior::Echo("b")).await;
    let (admin, front) = (free_port(), free_port());
    let config = format!(
        "[admin]\nlisten = \"{admin}\"\ntoken = \"t0ken\"\n[check]\ninterval = \"100ms\"\n[backends.b]\naddress = \"{}\"\n\
         [pools.p]\nbackends = [\"b\"]\nhold_timeout = \"30s\"\n[listeners.front]\nlisten = \"{front}\"\npool = \"p\"\n",
        backend.addr
    );
    let path = write_config("hold-cli.toml", &config);
    let child = run_proxy(&path);
    await_listening(front).await;
    let (mut live, banner) = within(LIMIT, "a session before the hold", connect_and_read_banner(front)).await;
    assert_eq!(banner, "b");
    let (code, stdout, stderr) = pool_command("hold", "p", admin, &["--for", "20s"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"held_until_ms\":"), "{stdout}");
    let status: serde_json::Value = serde_json::from_str(&http_get(admin, "/status").await.1).unwrap();
    assert!(pool_status(&status, "p")["held_until_ms"].is_u64(), "{status}");
    // A new session is held: it waits (counted as a hold), then the release serves it.
    let holds = || async {
        http_get(admin, "/metrics")
            .await
            .1
            .lines()
            .any(|l| l == "switchyard_holds_total{pool=\"p\"} 1")
    };
    let waiting = tokio::spawn(connect_and_read_banner(front));
    within(LIMIT, "the new session to be held", async {
        while !holds().await {
            poll_pause().await;
        }
    })
    .await;
    // The live session goes on meanwhile.
    live.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut live).await, "still here");
    let (code, _, stderr) = pool_command("release", "p", admin, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (_, banner) = within(LIMIT, "the held session to be served", waiting).await.unwrap();
    assert_eq!(banner, "b");
    // Refusals say why.
    let (code, _, stderr) = pool_command("hold", "nope", admin, &[]);
    assert!(code == 1 && stderr.contains("404"), "{stderr}");
    let (code, _, stderr) = pool_command("hold", "p", admin, &["--for", "2h"]);
    assert!(code == 1 && stderr.contains("400"), "{stderr}");
    // A switchover needs its section, and says so before touching anything.
    let (code, _, stderr) = pool_command("switchover", "p", admin, &["--to", "b"]);
    assert!(
        code == 1 && stderr.contains("409") && stderr.contains("switchovers are off"),
        "{stderr}"
    );
    drop(child);
}
