//! The data path and its health-following, against real sockets on loopback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use switchyard::health::Status;
use switchyard_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);

/// Pool `pool` over `backends` (with `pool_extra`), listener `front`, checks `check`.
fn config(pool: &str, backends: &[(&str, std::net::SocketAddr)], pool_extra: &str, check: &str) -> String {
    let mut text = String::from("[admin]\nlisten = \"127.0.0.1:0\"\n\n[shutdown]\ngrace = \"1s\"\n\n");
    text += &format!("[check]\n{check}\n\n");
    for (name, addr) in backends {
        text += &format!("[backends.{name}]\naddress = \"{addr}\"\n\n");
    }
    let names: Vec<_> = backends.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    text += &format!("[pools.{pool}]\nbackends = [{}]\n{pool_extra}\n\n", names.join(", "));
    text += &format!("[listeners.front]\nlisten = \"127.0.0.1:0\"\npool = \"{pool}\"\n");
    text
}

const FAST_TCP: &str = "interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 2";

const APP_CHECK: &str =
    "kind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfall = 1\nrise = 1";

/// An application server behind an HTTP-checked pool (`pool_extra` added to it), and
/// one session through the proxy; the returned flag turns the server's health off.
/// The pool's label is `pool`.
async fn app_session(pool: &str, pool_extra: &str) -> (Arc<AtomicBool>, Server, switchyard::app::Running, TcpStream) {
    let healthy = Arc::new(AtomicBool::new(true));
    let app = Server::start(Behavior::App {
        banner: "app",
        healthy: healthy.clone(),
    })
    .await;
    let proxy = proxy(&config(pool, &[("app", app.addr)], pool_extra, APP_CHECK)).await;
    await_routable(&proxy, &["app"]).await;
    let (session, banner) = within(LIMIT, "a session", connect_app(proxy.listener("front").unwrap())).await;
    assert_eq!(banner, "app");
    (healthy, app, proxy, session)
}

#[tokio::test]
async fn half_close_is_forwarded() {
    let backend = Server::start(Behavior::Digest).await;
    let proxy = proxy(&config("p", &[("a", backend.addr)], "", FAST_TCP)).await;
    let mut client = TcpStream::connect(proxy.listener("front").unwrap()).await.unwrap();
    client.write_all(b"hello, half-closed world").await.unwrap();
    // Our FIN must reach the backend, and its answer must still come back to us.
    client.shutdown().await.unwrap();
    let line = read_line(&mut client).await;
    assert!(line.starts_with("got 24 bytes"), "{line}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn large_payload_arrives_intact() {
    const SIZE: usize = 100 * 1024 * 1024;
    let backend = Server::start(Behavior::Digest).await;
    // Its own pool label: the recorder is shared by this file's tests.
    let pool = unique("bulk");
    let proxy = proxy(&config(&pool, &[("bulk", backend.addr)], "", FAST_TCP)).await;
    let mut client = TcpStream::connect(proxy.listener("front").unwrap()).await.unwrap();
    let mut sent = Digest::default();
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut state = 0x2545f4914f6cdd1du64;
    for _ in 0..SIZE / chunk.len() {
        for byte in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        sent.update(&chunk);
        client.write_all(&chunk).await.unwrap();
    }
    client.shutdown().await.unwrap();
    let line = read_line(&mut client).await;
    assert_eq!(line, format!("got {} bytes, hash {:x}", sent.len, sent.value));
    drop(client);
    let series = |name: &str| format!("switchyard_{name}_total{{pool=\"{pool}\",backend=\"bulk\"}}");
    await_metric(&proxy, &series("bytes_upstream"), SIZE as f64).await;
    if cfg!(target_os = "linux") {
        // Bulk goes through splice(2): most of it, not just some.
        assert!(metric(&proxy, &series("bytes_spliced")).await > SIZE as f64 / 2.0);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn connect_timeout_then_next_candidate() {
    let hole = blackhole();
    let good = Server::start(Behavior::Echo("good")).await;
    // Long check timeout: the checker must not mark the black hole down first, so
    // the session itself meets the connect timeout.
    let check = "interval = \"10s\"\ntimeout = \"10s\"";
    let pool = unique("timeout_next");
    let text = config(
        &pool,
        &[("hole", hole.addr), ("good", good.addr)],
        "policy = \"first\"\nconnect_timeout = \"200ms\"",
        check,
    );
    let proxy = proxy(&text).await;
    assert_eq!(
        proxy.routing().load().routable_names(0),
        ["hole", "good"],
        "both routable before any check ends"
    );
    let (_client, banner) = within(
        LIMIT,
        "a session",
        connect_and_read_banner(proxy.listener("front").unwrap()),
    )
    .await;
    assert_eq!(banner, "good");
    let failures = format!("switchyard_connect_failures_total{{pool=\"{pool}\",backend=\"hole\",layer=\"L4\"}}");
    assert!(
        await_metric(&proxy, &failures, 1.0).await >= 1.0,
        "the timed-out connect is counted"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn killed_backend_moves_new_sessions_to_the_next_after_fall_checks() {
    let a = Server::start(Behavior::Echo("a")).await;
    let b = Server::start(Behavior::Echo("b")).await;
    let proxy = proxy(&config(
        "p",
        &[("a", a.addr), ("b", b.addr)],
        "policy = \"first\"",
        FAST_TCP,
    ))
    .await;
    await_routable(&proxy, &["a", "b"]).await;
    let (_s, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "a");
    a.stop().await;
    await_routable(&proxy, &["b"]).await;
    let (_s, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "b");
    proxy.shutdown().await;
}

#[tokio::test]
async fn stalled_http_backend_is_marked_down_by_the_timeout() {
    let stalled = Server::start(Behavior::Stalled).await;
    let healthy = Arc::new(AtomicBool::new(true));
    let app = Server::start(Behavior::App { banner: "app", healthy }).await;
    let check = "kind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"300ms\"\nfall = 1\nrise = 1";
    let proxy = proxy(&config(
        "p",
        &[("app", app.addr), ("stalled", stalled.addr)],
        "initial_state = \"down\"",
        check,
    ))
    .await;
    await_routable(&proxy, &["app"]).await;
    await_status(&proxy, "stalled", Status::Down).await;
    let (status, body) = http_get(proxy.admin().unwrap(), "/status").await;
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stalled = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "stalled")
        .unwrap()
        .clone();
    assert_eq!(stalled["status"], "down", "{stalled}");
    assert_eq!(stalled["last_check"]["layer"], "L7", "{stalled}");
    assert!(
        stalled["last_check"]["error"].as_str().unwrap().contains("timed out"),
        "{stalled}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn held_session_succeeds_once_a_backend_comes_up() {
    let addr = refused_addr();
    let pool = unique("held");
    let text = config(&pool, &[("late", addr)], "hold_timeout = \"20s\"", FAST_TCP);
    let proxy = proxy(&text).await;
    await_routable(&proxy, &[]).await;
    let holds = format!("switchyard_holds_total{{pool=\"{pool}\"}}");
    assert_eq!(metric(&proxy, &holds).await, 0.0);
    let front = proxy.listener("front").unwrap();
    let client = tokio::spawn(async move { connect_and_read_banner(front).await });
    // The proxy counts the client as held before the backend exists...
    assert_eq!(await_metric(&proxy, &holds, 1.0).await, 1.0);
    assert!(!client.is_finished(), "the held client got no answer yet");
    // ...and serves it once the backend appears.
    let server = Server::start_on(addr, Behavior::Echo("late")).await;
    let (_stream, banner) = within(LIMIT, "the held session", client).await.unwrap();
    assert_eq!(banner, "late");
    let timeouts = format!("switchyard_hold_timeouts_total{{pool=\"{pool}\"}}");
    assert_eq!(metric(&proxy, &timeouts).await, 0.0, "served, not timed out");
    proxy.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn held_session_is_closed_after_hold_timeout() {
    let pool = unique("timeout");
    let text = config(&pool, &[("dead", refused_addr())], "hold_timeout = \"300ms\"", FAST_TCP);
    let proxy = proxy(&text).await;
    let timeouts = format!("switchyard_hold_timeouts_total{{pool=\"{pool}\"}}");
    assert_eq!(metric(&proxy, &timeouts).await, 0.0);
    let mut client = TcpStream::connect(proxy.listener("front").unwrap()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = within(LIMIT, "the close", client.read(&mut buf)).await;
    assert!(matches!(read, Ok(0)), "a clean close, got {read:?}");
    assert_eq!(await_metric(&proxy, &timeouts, 1.0).await, 1.0, "one hold timed out");
    proxy.shutdown().await;
}

#[tokio::test]
async fn close_policy_cuts_live_sessions_of_a_backend_that_goes_down() {
    let pool = unique("close");
    let (healthy, _app, proxy, mut session) = app_session(&pool, "on_leave = \"close\"").await;
    let fenced = format!("switchyard_fenced_sessions_total{{pool=\"{pool}\",backend=\"app\"}}");
    assert_eq!(metric(&proxy, &fenced).await, 0.0);
    session.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line(&mut session).await, "ping", "the session works");
    healthy.store(false, Ordering::SeqCst);
    // The application server is still there and would echo forever; only fencing
    // closes this session.
    closes(&mut session, "the fenced close").await;
    // Counted as the session ends, on its own thread: a moment after the close.
    assert_eq!(await_metric(&proxy, &fenced, 1.0).await, 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn keep_policy_leaves_live_sessions_alone() {
    let (healthy, _app, proxy, mut session) = app_session("p", "on_leave = \"keep\"").await;
    healthy.store(false, Ordering::SeqCst);
    await_routable(&proxy, &[]).await;
    session.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut session).await, "still here");
    proxy.shutdown().await;
}

#[tokio::test]
async fn status_and_metrics_reflect_a_flip() {
    let a = Server::start(Behavior::Echo("a")).await;
    let (pool, backend) = (unique("flip"), unique("flipper"));
    let proxy = proxy(&config(&pool, &[(&backend, a.addr)], "", FAST_TCP)).await;
    await_routable(&proxy, &[&backend]).await;
    let series = [
        format!("switchyard_flips_total{{backend=\"{backend}\"}}"),
        format!("switchyard_backend_up{{backend=\"{backend}\"}}"),
        format!("switchyard_routable_backends{{pool=\"{pool}\"}}"),
        format!("switchyard_check_failures_total{{backend=\"{backend}\",layer=\"L4\"}}"),
    ];
    let [flips, up, routable, l4_failures] = &series;
    await_metric_is(&proxy, up, 1.0).await;
    await_metric_is(&proxy, routable, 1.0).await;
    assert_eq!(metric(&proxy, l4_failures).await, 0.0);
    let flips_before = metric(&proxy, flips).await;

    let before = proxy.routing().load().generation;
    a.stop().await;
    await_routable(&proxy, &[]).await;
    let admin = proxy.admin().unwrap();
    let (_, body) = http_get(admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(status["generation"].as_u64().unwrap() > before);
    assert_eq!(status["backends"][0]["status"], "down");
    assert_eq!(status["backends"][0]["last_check"]["layer"], "L4");
    assert_eq!(status["pools"][0]["routable"], serde_json::json!([]));
    // One flip, up -> down.
    await_metric_is(&proxy, flips, flips_before + 1.0).await;
    await_metric_is(&proxy, up, 0.0).await;
    await_metric_is(&proxy, routable, 0.0).await;
    assert!(metric(&proxy, l4_failures).await >= 1.0);
    let (health, _) = http_get(admin, "/health").await;
    assert_eq!(health, 200, "every backend has been checked");
    proxy.shutdown().await;
}

#[tokio::test]
async fn round_robin_spreads_sessions() {
    let a = Server::start(Behavior::Echo("a")).await;
    let b = Server::start(Behavior::Echo("b")).await;
    let proxy = proxy(&config(
        "p",
        &[("a", a.addr), ("b", b.addr)],
        "policy = \"round-robin\"",
        FAST_TCP,
    ))
    .await;
    await_routable(&proxy, &["a", "b"]).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (_s, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
        seen.push(banner);
    }
    assert_eq!(seen, ["a", "b", "a", "b"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn idle_sessions_are_closed_after_idle_timeout() {
    let backend = Server::start(Behavior::Echo("quiet")).await;
    let proxy = proxy(&config(
        "p",
        &[("a", backend.addr)],
        "idle_timeout = \"200ms\"",
        FAST_TCP,
    ))
    .await;
    let (mut session, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "quiet");
    // Activity keeps it open...
    session.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut session).await, "still here");
    // ...silence closes it.
    closes(&mut session, "the idle close").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn drain_policy_closes_sessions_only_after_the_deadline() {
    let (healthy, _app, proxy, mut session) = app_session("p", "on_leave = \"drain\"\ndrain_deadline = \"3s\"").await;
    healthy.store(false, Ordering::SeqCst);
    await_routable(&proxy, &[]).await;
    // Within the drain deadline the session still works...
    session.write_all(b"draining\n").await.unwrap();
    assert_eq!(read_line(&mut session).await, "draining");
    // ...and after it, the proxy closes it.
    closes(&mut session, "the drain deadline").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_failed_start_is_an_error_not_a_panic() {
    // The admin port is taken after the listeners bound: start must unwind cleanly.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "[admin]\nlisten = \"{}\"\n[backends.a]\naddress = \"127.0.0.1:9\"\n[pools.p]\nbackends = [\"a\"]\n\
         [listeners.front]\nlisten = \"127.0.0.1:0\"\npool = \"p\"\n",
        taken.local_addr().unwrap()
    );
    let config = switchyard::config::Config::parse(&text, "test.toml").unwrap();
    let error = switchyard::app::start(config)
        .await
        .err()
        .expect("the admin bind fails");
    assert!(error.to_string().contains("cannot bind admin"), "{error}");
}

/// A proxy with two data-plane threads, one listener (`name`, with `listener_extra`)
/// to one backend `a` at `backend`; returns once `a` is routable.
async fn two_threads(backend: std::net::SocketAddr, name: &str, listener_extra: &str) -> switchyard::app::Running {
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n[runtime]\nworkers = 2\n[check]\ninterval = \"100ms\"\n\
         [backends.a]\naddress = \"{backend}\"\n[pools.p]\nbackends = [\"a\"]\n\
         [listeners.{name}]\nlisten = \"127.0.0.1:0\"\npool = \"p\"\n{listener_extra}\n"
    );
    let proxy = proxy(&text).await;
    await_routable(&proxy, &["a"]).await;
    proxy
}

#[tokio::test]
async fn the_connection_cap_holds_across_data_plane_threads() {
    // One session at a time, two data-plane threads (two sockets on one port): a
    // client that waits for the cap is served as soon as the session before it ends,
    // whichever thread's socket the kernel gave it to.
    let server = Server::start(Behavior::Echo("capped")).await;
    let proxy = two_threads(server.addr, "front", "max_connections = 1").await;
    let front = proxy.listener("front").unwrap();
    let (mut current, banner) = connect_and_read_banner(front).await;
    assert_eq!(banner, "capped");
    for round in 0..6 {
        let waiting = tokio::spawn(async move { connect_and_read_banner(front).await });
        // The waiting client gets nothing while the cap is taken...
        current.write_all(b"still mine\n").await.unwrap();
        assert_eq!(read_line(&mut current).await, "still mine");
        // ... and its session as soon as the current one ends.
        drop(current);
        let (next, banner) = within(LIMIT, "the waiting client to be served", waiting).await.unwrap();
        assert_eq!(banner, "capped", "round {round}");
        current = next;
    }
    proxy.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn sessions_are_spread_evenly_over_data_plane_threads() {
    // SO_REUSEPORT hashes each connection to one of the two threads' sockets; however
    // it split these, the sessions end up nearly even, and those handed to the other
    // thread work like the rest.
    const CLIENTS: usize = 200;
    let server = Server::start(Behavior::Echo("spread")).await;
    let proxy = two_threads(server.addr, "spread", "").await;
    let front = proxy.listener("spread").unwrap();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, banner) = within(LIMIT, "a session", connect_and_read_banner(front)).await;
        assert_eq!(banner, "spread");
        clients.push(client);
    }
    let counts = proxy.thread_sessions();
    assert_eq!(counts.iter().sum::<usize>(), CLIENTS, "{counts:?}");
    let (most, least) = (*counts.iter().max().unwrap(), *counts.iter().min().unwrap());
    assert!(most <= least + 2 + least / 8, "uneven: {counts:?}");
    // A random split of 200 strays past that margin almost surely, so some moved.
    assert!(metric(&proxy, "switchyard_sessions_moved_total{listener=\"spread\"}").await > 0.0);
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(format!("client {i}\n").as_bytes()).await.unwrap();
        assert_eq!(read_line(client).await, format!("client {i}"));
    }
    drop(clients);
    within(LIMIT, "every session to end and be uncounted", async {
        while proxy.thread_sessions().iter().sum::<usize>() > 0 {
            poll_pause().await;
        }
    })
    .await;
    proxy.shutdown().await;
    server.stop().await;
}

/// Whether a socket connected to `port` on loopback has its keepalive timer armed:
/// in `/proc/net/tcp` such a row has remote port `port`, state 01 (established) and
/// timer kind 2 (keepalive).
#[cfg(target_os = "linux")]
fn keepalive_armed_towards(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let remote_port = fields[2]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        remote_port == Some(port) && fields[3] == "01" && fields[5].starts_with("02:")
    })
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_lasting_session_gets_keepalive_on_its_backend_socket() {
    // Set only once a session has lived a moment (short ones never need it): this
    // one stays open and idle, and its backend socket gets the keepalive timer.
    let backend = Server::start(Behavior::Echo("lasting")).await;
    let proxy = proxy(&config("p", &[("a", backend.addr)], "", FAST_TCP)).await;
    await_routable(&proxy, &["a"]).await;
    let (mut session, banner) = connect_and_read_banner(proxy.listener("front").unwrap()).await;
    assert_eq!(banner, "lasting");
    within(LIMIT, "the backend socket's keepalive timer", async {
        while !keepalive_armed_towards(backend.addr.port()) {
            poll_pause().await;
        }
    })
    .await;
    // And the session still works.
    session.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut session).await, "still here");
    proxy.shutdown().await;
    backend.stop().await;
}
