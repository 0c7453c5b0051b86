//! Hot binary upgrade with the real binary: `run --upgrade` and SIGUSR2 take the
//! listening sockets and the health state over while clients connect all along; a
//! failed upgrade leaves the old process serving.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::load::Load;
use support::*;
use switchyard_test_support as support;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "up-token";

/// A process stopped by its PID when dropped (also one a hot upgrade started).
struct Pid(u32);

impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-KILL").arg(self.0.to_string()).status();
    }
}

struct Proc(Child);

impl Proc {
    fn start(config: &std::path::Path, upgrade: bool, notify: Option<&std::path::Path>) -> Proc {
        let mut command = Command::new(BIN);
        command.arg("run").arg("--config").arg(config).stderr(Stdio::null());
        if upgrade {
            command.arg("--upgrade");
        }
        if let Some(socket) = notify {
            command.env("NOTIFY_SOCKET", socket);
        }
        Proc(command.spawn().expect("the binary starts"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    async fn exits(&mut self, what: &str) -> std::process::ExitStatus {
        within(LIMIT, what, async {
            loop {
                if let Some(status) = self.0.try_wait().unwrap() {
                    return status;
                }
                poll_pause().await;
            }
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One proxy's config: admin, an upgrade socket, a listener over `a` and `b`.
struct Setup {
    dir: std::path::PathBuf,
    admin: SocketAddr,
    listen: SocketAddr,
    config: std::path::PathBuf,
}

impl Setup {
    fn new(name: &str, a: SocketAddr, b: SocketAddr) -> Setup {
        let dir = std::env::temp_dir().join(unique(&format!("sy-upgrade-{name}-{}", std::process::id())));
        std::fs::create_dir_all(&dir).unwrap();
        let (admin, listen) = (refused_addr(), refused_addr());
        let setup = Setup {
            config: dir.join("switchyard.toml"),
            dir,
            admin,
            listen,
        };
        std::fs::write(&setup.config, setup.text(a, b, "")).unwrap();
        setup
    }

    fn text(&self, a: SocketAddr, b: SocketAddr, extra_listener: &str) -> String {
        format!(
            "[admin]\nlisten = \"{}\"\ntoken = \"{TOKEN}\"\n[shutdown]\ngrace = \"30s\"\n[runtime]\nworkers = 2\nupgrade_socket = \"{}\"\n\
             [check]\ninterval = \"100ms\"\nrise = 1\nfall = 2\n\
             [backends.a]\naddress = \"{a}\"\n[backends.b]\naddress = \"{b}\"\n\
             [pools.p]\nbackends = [\"a\", \"b\"]\npolicy = \"round-robin\"\n\
             [listeners.l]\nlisten = \"{}\"\npool = \"p\"\n{extra_listener}",
            self.admin,
            self.dir.join("upgrade.sock").display(),
            self.listen,
        )
    }

    /// `/status` of whichever process answers.
    async fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.admin, "/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the process with `pid` answers on the admin address, every backend
    /// checked (or taken over).
    async fn await_serving(&self, pid: u32) {
        within(LIMIT, "the process to serve", async {
            loop {
                // The admin socket moves between processes during a hand-over: a
                // request may meet neither, so each look may fail.
                if TcpStream::connect(self.admin).await.is_ok() && http_get(self.admin, "/health").await.0 == 200 {
                    let (code, body) = http_get(self.admin, "/status").await;
                    let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if code == 200 && status["pid"] == pid {
                        return;
                    }
                }
                poll_pause().await;
            }
        })
        .await
    }
}

#[tokio::test]
async fn upgrades_under_load_refuse_no_connection_and_carry_the_health_state() {
    let (a, b) = (
        Server::start(Behavior::Echo("a")).await,
        Server::start(Behavior::Echo("b")).await,
    );
    let setup = Setup::new("load", a.addr, b.addr);
    let mut old = Proc::start(&setup.config, false, None);
    setup.await_serving(old.pid()).await;
    // b drained by the operator: the new processes must know.
    let (code, body) = http_post(setup.admin, "/backends/b/drain", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let (mut session, banner) = connect_and_read_banner(setup.listen).await;
    assert_eq!(banner, "a");
    let load = Load::start(setup.listen);
    load.run_for(100).await;
    let mut previous = Vec::new();
    for round in 0..3 {
        let new = Proc::start(&setup.config, true, None);
        setup.await_serving(new.pid()).await;
        load.run_for(100).await;
        let status = setup.status().await;
        let b_state = status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "b")
            .cloned()
            .unwrap();
        assert_eq!(b_state["admin"], "draining", "round {round}: {status}");
        let flips: Vec<_> = status["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "health")
            .collect();
        assert!(
            flips.is_empty(),
            "round {round}: no backend flipped in the new process: {flips:?}"
        );
        previous.push(std::mem::replace(&mut old, new));
    }
    let (completed, failed) = load.finish().await;
    assert_eq!(
        failed,
        0,
        "{failed} of {} sessions failed across 3 upgrades",
        completed + failed
    );
    // The first process still serves its open session (its grace is 30 s), then exits
    // once it ends; the others had none and are gone.
    echo_line(&mut session, "still on the first process").await;
    for (n, process) in previous.iter_mut().enumerate().skip(1) {
        assert!(process.exits(&format!("process {n} to exit")).await.success());
    }
    drop(session);
    assert!(previous[0].exits("the first process to exit").await.success());
    let (_, banner) = connect_and_read_banner(setup.listen).await;
    assert_eq!(banner, "a", "the last process serves");
}

async fn echo_line(stream: &mut TcpStream, text: &str) {
    stream.write_all(format!("{text}\n").as_bytes()).await.unwrap();
    assert_eq!(read_line(stream).await, text);
}

#[tokio::test]
async fn a_failed_upgrade_leaves_the_old_process_serving() {
    let (a, b) = (
        Server::start(Behavior::Echo("a")).await,
        Server::start(Behavior::Echo("b")).await,
    );
    let setup = Setup::new("failed", a.addr, b.addr);
    // No process to take over from: 69.
    let mut orphan = Proc::start(&setup.config, true, None);
    assert_eq!(
        orphan.exits("an upgrade with nothing to take over").await.code(),
        Some(69)
    );
    let mut old = Proc::start(&setup.config, false, None);
    setup.await_serving(old.pid()).await;
    let load = Load::start(setup.listen);
    load.run_for(50).await;
    // An invalid config: 64 before it reaches the old process.
    let broken = setup.dir.join("broken.toml");
    std::fs::write(&broken, setup.text(a.addr, b.addr, "").replace("rise = 1", "rise = 0")).unwrap();
    let mut invalid = Proc::start(&broken, true, None);
    assert_eq!(invalid.exits("an upgrade with a broken config").await.code(), Some(64));
    // A new listener it cannot bind: it took the sockets, failed to start and never
    // said ready, so the old process serves on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let more = format!(
        "[listeners.more]\nlisten = \"{}\"\npool = \"p\"\n",
        taken.local_addr().unwrap()
    );
    let unbindable = setup.dir.join("unbindable.toml");
    std::fs::write(&unbindable, setup.text(a.addr, b.addr, &more)).unwrap();
    let mut failing = Proc::start(&unbindable, true, None);
    assert_eq!(failing.exits("an upgrade that cannot bind").await.code(), Some(69));
    load.run_for(50).await;
    assert_eq!(setup.status().await["pid"], old.pid(), "the old process answers");
    assert!(old.0.try_wait().unwrap().is_none(), "the old process runs on");
    // And a good upgrade still works afterwards.
    let new = Proc::start(&setup.config, true, None);
    setup.await_serving(new.pid()).await;
    assert!(old.exits("the old process after the good upgrade").await.success());
    let (completed, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {} sessions failed", completed + failed);
}

#[tokio::test]
async fn sigusr2_starts_the_new_process_which_tells_systemd_it_is_the_main_one() {
    let (a, b) = (
        Server::start(Behavior::Echo("a")).await,
        Server::start(Behavior::Echo("b")).await,
    );
    let setup = Setup::new("usr2", a.addr, b.addr);
    let socket_path = setup.dir.join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let mut old = Proc::start(&setup.config, false, Some(&socket_path));
    let next = || async {
        let mut buf = [0u8; 512];
        let n = within(LIMIT, "a notification", socket.recv(&mut buf)).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(next().await.starts_with("READY=1"));
    setup.await_serving(old.pid()).await;
    let status = Command::new("kill")
        .arg("-USR2")
        .arg(old.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let took_over = next().await;
    let pid: u32 = took_over
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("MAINPID first: {took_over:?}"));
    let _new = Pid(pid);
    assert_ne!(pid, old.pid());
    assert!(took_over.contains("\nREADY=1"), "{took_over:?}");
    assert!(old.exits("the old process to exit").await.success());
    setup.await_serving(pid).await;
    let (_, banner) = connect_and_read_banner(setup.listen).await;
    assert!(["a", "b"].contains(&banner.as_str()), "{banner}");
    let _ = std::fs::remove_file(&socket_path);
}
