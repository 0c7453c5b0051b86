//! Config reload against real sockets on loopback: what a reload adds, removes and
//! changes, what it keeps (a backend's state and checker, live sessions), and that a
//! broken file changes nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use support::load::Load;
use support::*;
use switchyard::app::Running;
use switchyard::config::Config;
use switchyard::health::Status;
use switchyard_test_support as support;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "reload-token";
const LIMIT: Duration = Duration::from_secs(30);
const CHECK: &str = "interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 2";

/// A config file the test rewrites between reloads.
struct File(PathBuf);

impl File {
    fn new(name: &str, text: &str) -> File {
        let dir = std::env::temp_dir().join(unique(&format!("switchyard-reload-{name}-{}", std::process::id())));
        std::fs::create_dir_all(&dir).unwrap();
        let file = File(dir.join("switchyard.toml"));
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    async fn start(&self) -> Running {
        let config = Config::load(&self.0).unwrap_or_else(|e| panic!("test config: {e}"));
        switchyard::app::start(config).await.expect("proxy starts")
    }
}

/// The head of every config: admin with a token, a short grace, fast checks.
fn head(grace: &str) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[shutdown]\ngrace = \"{grace}\"\n\n[check]\n{CHECK}\n\n")
}

fn backend(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!("[backends.{name}]\naddress = \"{addr}\"\n{extra}\n\n")
}

fn pool(name: &str, members: &[&str], extra: &str) -> String {
    let members: Vec<_> = members.iter().map(|m| format!("\"{m}\"")).collect();
    format!("[pools.{name}]\nbackends = [{}]\n{extra}\n\n", members.join(", "))
}

fn listener(name: &str, listen: &str, pool: &str) -> String {
    format!("[listeners.{name}]\nlisten = \"{listen}\"\npool = \"{pool}\"\n\n")
}

/// POST /config/reload: the status and the body (JSON when 200).
async fn reload(proxy: &Running) -> (u16, String) {
    http_post(proxy.admin().unwrap(), "/config/reload", Some(TOKEN)).await
}

async fn reload_ok(proxy: &Running) -> serde_json::Value {
    let (code, body) = reload(proxy).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn echo(stream: &mut TcpStream, text: &str) {
    stream.write_all(format!("{text}\n").as_bytes()).await.unwrap();
    assert_eq!(read_line(stream).await, text, "the session echoes");
}

#[tokio::test]
async fn a_reload_adds_removes_and_changes_in_one_generation_and_keeps_what_stays() {
    let (a, b, c) = (
        Server::start(Behavior::Echo("a")).await,
        Server::start(Behavior::Echo("b")).await,
        Server::start(Behavior::Echo("c")).await,
    );
    let first = head("5s")
        + &backend("a", a.addr, "")
        + &backend("b", b.addr, "")
        + &pool("main", &["a", "b"], "policy = \"first\"\non_leave = \"close\"")
        + &listener("front", "127.0.0.1:0", "main");
    let file = File::new("all", &first);
    let proxy = file.start().await;
    await_pool(&proxy, "main", &["a", "b"]).await;
    let (kept_a, kept_b) = (proxy.backend("a").unwrap(), proxy.backend("b").unwrap());
    let (mut session, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "a");
    let generation = proxy.routing().load().generation;

    // b's check timings change (its state stays), c is new, `main` drops b and takes
    // c, a new pool and listener serve b.
    let second = head("5s")
        + &backend("a", a.addr, "")
        + &backend("b", b.addr, "check = { interval = \"200ms\" }")
        + &backend("c", c.addr, "")
        + &pool("main", &["a", "c"], "policy = \"first\"\non_leave = \"close\"")
        + &pool("side", &["b"], "")
        + &listener("front", "127.0.0.1:0", "main")
        + &listener("side", "127.0.0.1:0", "side");
    file.write(&second);
    let report = reload_ok(&proxy).await;
    assert_eq!(report["backends"]["added"], serde_json::json!(["c"]), "{report}");
    assert_eq!(report["backends"]["changed"], serde_json::json!(["b"]), "{report}");
    assert_eq!(report["pools"]["added"], serde_json::json!(["side"]), "{report}");
    assert_eq!(report["pools"]["changed"], serde_json::json!(["main"]), "{report}");
    assert_eq!(report["listeners"]["added"], serde_json::json!(["side"]), "{report}");
    assert_eq!(report["generation"], generation + 1, "one generation: {report}");

    // What stayed kept its state: no flip to unknown, the session through a goes on.
    assert!(
        Arc::ptr_eq(&kept_a, &proxy.backend("a").unwrap()),
        "a is the same backend"
    );
    assert!(Arc::ptr_eq(&kept_b, &proxy.backend("b").unwrap()), "b keeps its state");
    assert_eq!(kept_a.view().status, Status::Up);
    assert_eq!(kept_b.view().status, Status::Up);
    let main = proxy.pool("main").unwrap();
    let routable = proxy.routing().load().routable_names(main);
    assert_eq!(
        routable.first().map(String::as_str),
        Some("a"),
        "a routed at once: {routable:?}"
    );
    echo(&mut session, "through the reload").await;
    await_pool(&proxy, "main", &["a", "c"]).await;
    let (_, banner) = connect_and_read_banner(proxy.listener("side").unwrap()).await;
    assert_eq!(banner, "b", "the new listener routes to its pool");

    // Removing a from `main` fences its session (on_leave = close); the reload is on
    // /status and /events, and counted.
    file.write(
        &(head("5s")
            + &backend("c", c.addr, "")
            + &pool("main", &["c"], "on_leave = \"close\"")
            + &listener("front", "127.0.0.1:0", "main")),
    );
    let report = reload_ok(&proxy).await;
    assert_eq!(report["backends"]["removed"], serde_json::json!(["a", "b"]), "{report}");
    assert_eq!(report["pools"]["removed"], serde_json::json!(["side"]), "{report}");
    assert_eq!(report["listeners"]["removed"], serde_json::json!(["side"]), "{report}");
    closes(&mut session, "the session of a member the reload removed").await;
    let (_, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "c");
    let status = status_json(&proxy).await;
    let reloads: Vec<_> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "reload")
        .collect();
    assert_eq!(reloads.len(), 2, "{status}");
    assert!(
        reloads[1]["detail"].as_str().unwrap().contains("backends -a -b"),
        "{status}"
    );
    assert_eq!(status["backends"].as_array().unwrap().len(), 1, "{status}");
    // At least: the other tests of this binary share the process's metrics.
    await_metric(&proxy, "switchyard_config_reloads_total{outcome=\"applied\"}", 2.0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_gets_the_check_config_error() {
    let a = Server::start(Behavior::Echo("a")).await;
    let good =
        head("1s") + &backend("a", a.addr, "") + &pool("main", &["a"], "") + &listener("front", "127.0.0.1:0", "main");
    let file = File::new("broken", &good);
    let proxy = file.start().await;
    await_pool(&proxy, "main", &["a"]).await;
    let generation = proxy.routing().load().generation;
    let broken = good.replace("rise = 1", "rise = 0") + &listener("more", "127.0.0.1:0", "main");
    file.write(&broken);
    let (code, body) = reload(&proxy).await;
    assert_eq!(code, 422, "{body}");
    let expected = Config::load(&file.0).unwrap_err().to_string();
    assert_eq!(body.trim_end(), expected, "the same text check-config prints");
    assert_eq!(proxy.routing().load().generation, generation, "no new table");
    assert!(
        proxy.listener("more").is_none(),
        "nothing of the broken file was applied"
    );
    let (_, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "a");
    // Without the token, no reload at all.
    let (code, _) = http_post(proxy.admin().unwrap(), "/config/reload", None).await;
    assert_eq!(code, 401);
    await_metric(&proxy, "switchyard_config_reloads_total{outcome=\"rejected\"}", 1.0).await;
    let events = status_json(&proxy).await["events"].clone();
    assert!(
        events.as_array().unwrap().iter().any(|e| e["kind"] == "reload"
            && e["detail"].as_str().unwrap().starts_with("rejected: ")
            && e["detail"].as_str().unwrap().contains("rise")),
        "{events}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_removed_listener_stops_accepting_and_its_sessions_get_the_grace() {
    let a = Server::start(Behavior::Echo("a")).await;
    let (kept, leaving) = (refused_addr(), refused_addr());
    let both = head("2s")
        + &backend("a", a.addr, "")
        + &pool("main", &["a"], "")
        + &listener("kept", &kept.to_string(), "main")
        + &listener("leaving", &leaving.to_string(), "main");
    let file = File::new("listener", &both);
    let proxy = file.start().await;
    await_pool(&proxy, "main", &["a"]).await;
    let (mut session, _) = connect_and_read_banner(leaving).await;
    file.write(
        &(head("2s")
            + &backend("a", a.addr, "")
            + &pool("main", &["a"], "")
            + &listener("kept", &kept.to_string(), "main")),
    );
    let report = reload_ok(&proxy).await;
    assert_eq!(
        report["listeners"]["removed"],
        serde_json::json!(["leaving"]),
        "{report}"
    );
    within(LIMIT, "the removed listener to refuse", async {
        while TcpStream::connect(leaving).await.is_ok() {
            poll_pause().await;
        }
    })
    .await;
    echo(&mut session, "in the grace period").await;
    closes(&mut session, "the session once the grace period is over").await;
    let (_, banner) = connect_and_read_banner(kept).await;
    assert_eq!(banner, "a", "the kept listener serves on");
    proxy.shutdown().await;
}

/// Clients open, use and close sessions back to back while the config alternates
/// between two versions; every session must complete.
#[tokio::test]
async fn reloads_under_load_lose_no_session() {
    let (a, b) = (
        Server::start(Behavior::Echo("a")).await,
        Server::start(Behavior::Echo("b")).await,
    );
    let front = refused_addr();
    let version = |n: usize| {
        let extra = if n.is_multiple_of(2) {
            ""
        } else {
            "check = { interval = \"150ms\" }"
        };
        let members: &[&str] = if n.is_multiple_of(2) { &["a", "b"] } else { &["a"] };
        head("5s")
            + &backend("a", a.addr, "")
            + &backend("b", b.addr, extra)
            + &pool(
                "main",
                members,
                &format!("policy = \"round-robin\"\nconnect_timeout = \"{}ms\"", 1000 + n),
            )
            + &listener("front", &front.to_string(), "main")
    };
    let file = File::new("load", &version(0));
    let proxy = file.start().await;
    await_pool(&proxy, "main", &["a", "b"]).await;
    let load = Load::start(front);
    for n in 1..=20 {
        // Members leave under `keep` (the default): a client mid-session is not cut.
        file.write(&version(n));
        let report = reload_ok(&proxy).await;
        assert!(report["generation"].as_u64().is_some(), "{report}");
        // Sessions of this version run before the next reload.
        load.run_for(50).await;
    }
    let (completed, failed) = load.finish().await;
    assert!(completed > 0, "the clients ran");
    assert_eq!(
        failed,
        0,
        "{failed} of {} sessions failed across 20 reloads",
        completed + failed
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_drained_member_a_reload_removes_keeps_its_sessions() {
    let (a, b) = (
        Server::start(Behavior::Echo("a")).await,
        Server::start(Behavior::Echo("b")).await,
    );
    let both = |members: &[&str]| {
        head("1s")
            + &backend("a", a.addr, "")
            + &backend("b", b.addr, "")
            + &pool("main", members, "policy = \"first\"\non_leave = \"close\"")
            + &listener("front", "127.0.0.1:0", "main")
    };
    let file = File::new("drained", &both(&["a", "b"]));
    let proxy = file.start().await;
    await_pool(&proxy, "main", &["a", "b"]).await;
    let (mut session, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "a");
    let (code, body) = http_post(proxy.admin().unwrap(), "/backends/a/drain", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    file.write(&both(&["b"]));
    reload_ok(&proxy).await;
    // The operator's drain wins over `on_leave = "close"`: the session goes on.
    echo(&mut session, "drained, then removed").await;
    let (_, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "b");
    proxy.shutdown().await;
}
