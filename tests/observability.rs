//! Histograms, Prometheus text, the event list, the status page in a real browser,
//! admin verbs and `switchyard status`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use switchyard::health::Status;
use switchyard_lab::system;
use switchyard_test_support as support;
use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "test-token-0123";

/// Pool `p` over `backends`, listener `front`, admin with a token.
fn config(backends: &[(&str, std::net::SocketAddr)], check: &str, pool_extra: &str) -> String {
    pool_config("p", backends, check, pool_extra)
}

/// [`config`] with the pool named `pool`.
fn pool_config(pool: &str, backends: &[(&str, std::net::SocketAddr)], check: &str, pool_extra: &str) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n[shutdown]\ngrace = \"1s\"\n\n[check]\n{check}\n\n"
    );
    for (name, addr) in backends {
        text += &format!("[backends.{name}]\naddress = \"{addr}\"\n\n");
    }
    let names: Vec<_> = backends.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    text += &format!("[pools.{pool}]\nbackends = [{}]\n{pool_extra}\n\n", names.join(", "));
    text + &format!("[listeners.front]\nlisten = \"127.0.0.1:0\"\npool = \"{pool}\"\n")
}

const FAST_TCP: &str = "interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1";

fn temp_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[tokio::test]
async fn check_percentiles_move_when_a_backend_is_slowed() {
    let delay = Arc::new(AtomicU64::new(0));
    let app = Server::start(Behavior::SlowHttp(delay.clone())).await;
    let check = "kind = \"http\"\ninterval = \"100ms\"\ntimeout = \"2s\"\nrise = 1\nfall = 3";
    let backend = unique("slowpoke");
    let proxy = proxy(&config(&[(&backend, app.addr)], check, "")).await;
    let checks = |status: &serde_json::Value| status["backends"][0]["check_us"].clone();
    within(LIMIT, "five fast checks", async {
        while checks(&status_json(&proxy).await)["count"].as_u64().unwrap_or(0) < 5 {
            poll_pause().await;
        }
    })
    .await;
    // Checks of 100 to 250 ms: the Prometheus buckets `le="0.25"` minus `le="0.1"`.
    let bucket = |le: &str| format!("switchyard_check_seconds_bucket{{backend=\"{backend}\",le=\"{le}\"}}");
    let between = || async { metric(&proxy, &bucket("0.25")).await - metric(&proxy, &bucket("0.1")).await };
    assert_eq!(between().await, 0.0, "no slow check yet");
    let before = checks(&status_json(&proxy).await);
    delay.store(150, Ordering::SeqCst);
    let after = within(LIMIT, "slow checks to dominate", async {
        loop {
            let now = checks(&status_json(&proxy).await);
            if now["count"].as_u64().unwrap() >= 2 * before["count"].as_u64().unwrap() + 2 {
                return now;
            }
            poll_pause().await;
        }
    })
    .await;
    // A check cannot finish before the server answers, so the slow half of the samples
    // puts p99 at or above the delay.
    assert!(
        after["p99"].as_u64().unwrap() >= 150_000,
        "before {before}, after {after}"
    );
    assert!(
        after["p99"].as_u64().unwrap() > before["p99"].as_u64().unwrap(),
        "before {before}, after {after}"
    );
    // The histogram on /metrics moves too (its buckets are folded every few seconds).
    within(LIMIT, "slow checks in the 0.1-0.25 s bucket", async {
        while between().await < 1.0 {
            poll_pause().await;
        }
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn promtool_accepts_a_scrape_taken_after_traffic_and_a_flip() {
    system::ensure_packages(&[("promtool", "prometheus")]).expect("promtool installed");
    let a = Server::start(Behavior::Echo("a")).await;
    let b = Server::start(Behavior::Echo("b")).await;
    let (pool, first, second) = (unique("scraped"), unique("a"), unique("b"));
    let backends = [(first.as_str(), a.addr), (second.as_str(), b.addr)];
    let proxy = proxy(&pool_config(&pool, &backends, FAST_TCP, "policy = \"first\"")).await;
    await_routable(&proxy, &[&first, &second]).await;
    let of_first = |name: &str| format!("switchyard_{name}{{pool=\"{pool}\",backend=\"{first}\"}}");
    for _ in 0..3 {
        let (mut s, _) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
        s.write_all(b"traffic\n").await.unwrap();
        assert_eq!(read_line(&mut s).await, "traffic");
    }
    // Three sessions, each connected and ended (histograms are folded every few seconds).
    await_metric_is(&proxy, &of_first("connect_seconds_count"), 3.0).await;
    await_metric_is(&proxy, &of_first("session_bytes_count"), 3.0).await;
    let flips = format!("switchyard_flips_total{{backend=\"{first}\"}}");
    let flips_before = metric(&proxy, &flips).await;
    a.stop().await;
    await_routable(&proxy, &[&second]).await;
    await_metric_is(&proxy, &flips, flips_before + 1.0).await;
    let (_, metrics) = http_get(proxy.admin().unwrap(), "/metrics").await;
    assert!(
        metrics.contains("# HELP switchyard_flips_total "),
        "described:\n{metrics}"
    );
    let path = temp_file("scrape.prom");
    std::fs::write(&path, &metrics).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", path.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn events_record_a_flip_with_its_cause() {
    let a = Server::start(Behavior::Echo("a")).await;
    let proxy = proxy(&config(&[("evented", a.addr)], FAST_TCP, "")).await;
    await_status(&proxy, "evented", Status::Up).await;
    a.stop().await;
    await_status(&proxy, "evented", Status::Down).await;
    let (code, body) = http_get(proxy.admin().unwrap(), "/events").await;
    assert_eq!(code, 200);
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    let flip = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["kind"] == "health"
                && e["backend"] == "evented"
                && e["detail"].as_str().unwrap().starts_with("up -> down")
        })
        .unwrap_or_else(|| panic!("no flip event in {events}"));
    assert!(flip["detail"].as_str().unwrap().contains("l4 connect failed"), "{flip}");
    assert_eq!(
        status_json(&proxy).await["events"],
        events,
        "/status carries the same list"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn admin_verbs_change_routing_and_need_the_token() {
    let healthy = Arc::new(AtomicBool::new(true));
    let a = Server::start(Behavior::App {
        banner: "a",
        healthy: healthy.clone(),
    })
    .await;
    let b = Server::start(Behavior::App { banner: "b", healthy }).await;
    let check = "kind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\nrise = 1\nfall = 1";
    let proxy = proxy(&config(
        &[("a", a.addr), ("b", b.addr)],
        check,
        "policy = \"first\"\non_leave = \"close\"",
    ))
    .await;
    let admin = proxy.admin().unwrap();
    await_routable(&proxy, &["a", "b"]).await;

    assert_eq!(http_post(admin, "/backends/a/drain", None).await.0, 401);
    assert_eq!(http_post(admin, "/backends/a/drain", Some("wrong")).await.0, 401);
    assert_eq!(http_post(admin, "/backends/nope/drain", Some(TOKEN)).await.0, 404);
    assert_eq!(
        proxy.routing().load().routable_names(0),
        ["a", "b"],
        "refused calls change nothing"
    );

    let (mut on_a, banner) = within(LIMIT, "a session", connect_app(proxy.listener("front").unwrap())).await;
    assert_eq!(banner, "a");
    let (code, body) = http_post(admin, "/backends/a/drain", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        proxy.routing().load().routable_names(0),
        ["b"],
        "the reply comes after the swap"
    );
    on_a.write_all(b"still\n").await.unwrap();
    assert_eq!(read_line(&mut on_a).await, "still", "draining keeps open sessions");
    let (_s, banner) = connect_app(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "b", "new sessions avoid a drained backend");

    assert_eq!(http_post(admin, "/backends/a/disable", Some(TOKEN)).await.0, 200);
    // disable closes sessions under on_leave = close
    closes(&mut on_a, "the disabled backend's session to close").await;

    assert_eq!(http_post(admin, "/backends/a/enable", Some(TOKEN)).await.0, 200);
    assert_eq!(proxy.routing().load().routable_names(0), ["a", "b"]);
    let status = status_json(&proxy).await;
    let admin_events: Vec<_> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "admin")
        .collect();
    assert_eq!(admin_events.len(), 3, "{status}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn switchyard_status_prints_a_table_of_a_running_proxy() {
    let a = Server::start(Behavior::Echo("a")).await;
    let proxy = proxy(&config(
        &[("tabled", a.addr), ("missing", refused_addr())],
        FAST_TCP,
        "",
    ))
    .await;
    await_routable(&proxy, &["tabled"]).await;
    let admin = proxy.admin().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["status", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
            .to_string()
    };
    assert!(line("p ").contains("tabled"), "{text}");
    assert!(line("tabled").contains(" up "), "{text}");
    assert!(
        line("missing").contains(" down ") && line("missing").contains("L4"),
        "{text}"
    );
    proxy.shutdown().await;

    let unreachable = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["status", "--admin", &refused_addr().to_string()])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(69));
}

/// Renders the page in headless Chromium (the page's own JavaScript fetches /status)
/// and returns the DOM after the scripts ran; a script error fails the test.
fn render_in_chromium(url: &str, screenshot: Option<&std::path::Path>) -> String {
    let rendered = switchyard_lab::chromium::render(url, screenshot).expect("chromium renders the page");
    assert!(
        rendered.script_errors.is_empty(),
        "script errors: {:?}",
        rendered.script_errors
    );
    rendered.dom
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_live_state_in_chromium_and_follows_a_flip() {
    system::ensure_packages(&[("chromium", "chromium")]).expect("chromium installed");
    let a = Server::start(Behavior::Echo("a")).await;
    let b = Server::start(Behavior::Echo("b")).await;
    let proxy = proxy(&config(&[("alpha", a.addr), ("bravo", b.addr)], FAST_TCP, "")).await;
    await_routable(&proxy, &["alpha", "bravo"]).await;
    await_status(&proxy, "bravo", Status::Up).await;
    let url = format!("http://{}/ui", proxy.admin().unwrap());

    let dom = tokio::task::block_in_place(|| render_in_chromium(&url, None));
    assert!(dom.contains(r#"data-backend="alpha" data-status="up""#), "{dom}");
    assert!(dom.contains(r#"data-backend="bravo" data-status="up""#), "{dom}");

    b.stop().await;
    await_status(&proxy, "bravo", Status::Down).await;
    let dom = tokio::task::block_in_place(|| render_in_chromium(&url, None));
    assert!(dom.contains(r#"data-backend="bravo" data-status="down""#), "{dom}");
    assert!(dom.contains("up -&gt; down"), "the flip is in the event list: {dom}");
    let shot = temp_file("status-page.png");
    tokio::task::block_in_place(|| render_in_chromium(&url, Some(&shot)));
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false));
    proxy.shutdown().await;
}
