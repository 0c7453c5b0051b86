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

#[tokio::test]
async fn at_the_descriptor_limit_checks_fail_locally_and_no_backend_is_blamed() {
    let backend = Server::start(Behavior::Echo("db")).await;
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
    // Wait, without a descriptor of our own, for three local failures.
    let local = within(LIMIT, "three local failures", async {
        loop {
            if let Some(alarm) = switchyard::local::alarm().filter(|a| a.count >= 3) {
                return alarm;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(fillers);
    setrlimit(Resource::Nofile, saved).unwrap();

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
    backend.stop().await;
}
