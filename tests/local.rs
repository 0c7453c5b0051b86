//! The proxy's own descriptor shortage is a local fault: with every descriptor taken,
//! checks fail with EMFILE, and yet no backend flips, no session is closed and no
//! failover is recorded; `/status` shows the local alarm. One test in its own binary:
//! it lowers this process's RLIMIT_NOFILE.

use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource};
use support::*;
use switchyard::health::Status;
use switchyard_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// An echo server in a process of its own (one in this process would run out of
/// descriptors with the proxy and stop accepting): a banner line, then an echo.
struct EchoProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl EchoProcess {
    async fn start() -> EchoProcess {
        let addr = refused_addr();
        let script = "import socket,sys,threading\n\
            s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(64)\n\
            def serve(c):\n    c.sendall(b'db\\n')\n    while True:\n        d=c.recv(4096)\n        if not d: break\n        c.sendall(d)\n    c.close()\n\
            while True:\n    c,_=s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()\n";
        let child = std::process::Command::new("python3")
            .args(["-c", script, &addr.port().to_string()])
            .spawn()
            .expect("python3 runs");
        within(LIMIT, "the echo process to listen", async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                poll_pause().await;
            }
        })
        .await;
        EchoProcess { child, addr }
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn at_the_descriptor_limit_checks_fail_locally_and_no_backend_is_blamed() {
    let backend = EchoProcess::start().await;
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\
         [backends.db]\naddress = \"{}\"\ncheck = {{ interval = \"100ms\", rise = 1, fall = 1 }}\n\
         [pools.app]\nbackends = [\"db\"]\n\
         [listeners.app]\nlisten = \"127.0.0.1:0\"\npool = \"app\"\n",
        backend.addr
    );
    let proxy = proxy(&text).await;
    await_status(&proxy, "db", Status::Up).await;
    let (mut session, banner) = within(
        LIMIT,
        "a session",
        connect_and_read_banner(proxy.listener("app").unwrap()),
    )
    .await;
    assert_eq!(banner, "db");
    let flips = metric(&proxy, "switchyard_flips_total{backend=\"db\"}").await;

    // Take every descriptor: lower the soft limit to what is open, plus a few that
    // files then fill.
    let saved = getrlimit(Resource::Nofile);
    let mut lowered = saved;
    lowered.current = Some(open_descriptors() + 4);
    setrlimit(Resource::Nofile, lowered).unwrap();
    let mut fillers = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        fillers.push(file);
    }
    // Wait, without a descriptor of our own, for three local failures; a descriptor
    // freed meanwhile (a check's socket that was open while the fillers ran) is taken
    // too.
    let waited = tokio::time::timeout(LIMIT, async {
        loop {
            if let Some(alarm) = switchyard::local::alarm().filter(|a| a.count >= 3) {
                return alarm;
            }
            while let Ok(file) = std::fs::File::open("/dev/null") {
                fillers.push(file);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let spare = fillers.len();
    drop(fillers);
    setrlimit(Resource::Nofile, saved).unwrap();
    let Ok(local) = waited else {
        let status = status_json(&proxy).await;
        panic!("no three local failures in {LIMIT:?} ({spare} fillers); /status: {status}");
    };

    assert_eq!(local.resource, switchyard::local::Resource::Descriptors);
    assert_eq!(local.site, "check");
    let status = status_json(&proxy).await;
    assert_eq!(status["local_alarm"]["resource"], "descriptors", "{status}");
    let db = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "db")
        .unwrap()
        .clone();
    assert_eq!(db["status"], "up", "never blamed: {db}");
    assert_eq!(
        metric(&proxy, "switchyard_flips_total{backend=\"db\"}").await,
        flips,
        "no flip"
    );
    assert!(
        metric(
            &proxy,
            "switchyard_local_failures_total{resource=\"descriptors\",site=\"check\"}"
        )
        .await
            >= 3.0
    );
    assert!(status["failovers"].as_array().unwrap().is_empty(), "{status}");
    // The session opened before lives on.
    session.write_all(b"still here\n").await.unwrap();
    let mut echoed = vec![0u8; 11];
    within(LIMIT, "the echo", session.read_exact(&mut echoed))
        .await
        .unwrap();
    assert_eq!(echoed, b"still here\n");
    proxy.shutdown().await;
    drop(backend);
}
