//! `[log]` end to end, through the binary: the access log's line per session (its
//! cause, phase times and bytes, inside the session's span), JSON lines with the same
//! fields as the text, the level from the config, and a reload that turns the access
//! log off.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_test_support::process::Spawned;
use switchyard_test_support::{poll_pause, refused_addr, within, Behavior, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A proxy and the addresses of its listeners.
struct Lab {
    proxy: Spawned,
    /// An echo pool.
    echo: SocketAddr,
    /// A pool whose only member refuses connections and is down (hold_timeout 300 ms).
    dead: SocketAddr,
    /// A `mysql`-mode listener on the echo pool: its logins cannot succeed (login
    /// timeout 300 ms).
    mysql: SocketAddr,
    _backend: Server,
}

/// A [`Lab`] whose `[log]` body is `log`.
async fn proxy(name: &str, log: &str) -> Lab {
    let echo_backend = Server::start(Behavior::Echo("hi")).await;
    let (echo, dead, mysql) = (refused_addr(), refused_addr(), refused_addr());
    let config = format!(
        "[admin]\nlisten = \"{{admin}}\"\n[shutdown]\ngrace = \"1s\"\n[log]\n{log}\n\
         [backends.app]\naddress = \"{}\"\ncheck = {{ interval = \"100ms\" }}\n\
         [backends.gone]\naddress = \"{}\"\ncheck = {{ interval = \"100ms\" }}\n\
         [pools.echo]\nbackends = [\"app\"]\n\
         [pools.dead]\nbackends = [\"gone\"]\nhold_timeout = \"300ms\"\n\
         [listeners.echo]\nlisten = \"{echo}\"\npool = \"echo\"\n\
         [listeners.dead]\nlisten = \"{dead}\"\npool = \"dead\"\n\
         [listeners.mysql]\nlisten = \"{mysql}\"\npool = \"echo\"\nmode = \"mysql\"\nlogin_timeout = \"300ms\"\n",
        echo_backend.addr,
        refused_addr(),
    );
    let proxy = Spawned::start(BIN, name, &config).await;
    proxy.await_backend("app", "up").await;
    proxy.await_backend("gone", "down").await;
    Lab {
        proxy,
        echo,
        dead,
        mysql,
        _backend: echo_backend,
    }
}

/// One session through `addr`: reads the banner, sends `payload`, reads its echo,
/// closes first.
async fn exchange(addr: SocketAddr, payload: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut banner = [0u8; 3];
    stream.read_exact(&mut banner).await.unwrap();
    stream.write_all(payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    stream.read_exact(&mut echoed).await.unwrap();
}

/// The log's lines that contain `needle`, once at least `count` of them are there.
async fn await_lines(proxy: &Spawned, needle: &str, count: usize) -> Vec<String> {
    within(
        Duration::from_secs(10),
        &format!("{count} log lines with {needle}"),
        async {
            loop {
                let lines: Vec<String> = proxy
                    .log_text()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(String::from)
                    .collect();
                if lines.len() >= count {
                    return lines;
                }
                poll_pause().await;
            }
        },
    )
    .await
}

#[tokio::test]
async fn json_access_lines_carry_the_cause_phases_bytes_and_session_fields() {
    let Lab {
        proxy,
        echo,
        dead,
        mysql,
        _backend,
    } = proxy("json", "format = \"json\"").await;
    exchange(echo, b"twelve bytes").await;
    // Nothing answers in the dead pool: held, then closed.
    let mut refused = TcpStream::connect(dead).await.unwrap();
    let mut rest = Vec::new();
    let _ = refused.read_to_end(&mut rest).await;
    // A mysql-mode login that never gets a greeting it can read: cut at its timeout.
    let mut login = TcpStream::connect(mysql).await.unwrap();
    let _ = login.read_to_end(&mut Vec::new()).await;
    let lines = await_lines(&proxy, "switchyard::access", 3).await;
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let served = parsed
        .iter()
        .find(|v| v["cause"] == "client-closed")
        .expect("the echo session's line");
    assert_eq!(served["level"], "INFO");
    assert_eq!(served["message"], "session");
    assert_eq!(served["from_client"], 12, "{served}");
    assert_eq!(served["from_backend"], 15, "banner and echo: {served}");
    assert!(served["connect_ms"].as_f64().is_some(), "{served}");
    assert!(served["duration_ms"].as_f64().unwrap() >= served["connect_ms"].as_f64().unwrap());
    assert!(served.get("tls_ms").is_none(), "no TLS on this listener: {served}");
    let span = &served["spans"][0];
    assert_eq!(
        (&span["listener"], &span["pool"], &span["backend"]),
        (&"echo".into(), &"echo".into(), &"app".into()),
        "{served}"
    );
    let held = parsed
        .iter()
        .find(|v| v["cause"] == "no-backend-within-hold")
        .expect("the dead pool's line");
    assert_eq!(held["spans"][0]["pool"], "dead", "{held}");
    let login = parsed
        .iter()
        .find(|v| v["cause"] == "login-refused")
        .expect("the mysql listener's line");
    assert_eq!(
        login["reason"], "timeout",
        "an echo server never finishes a greeting: {login}"
    );
    assert!(login["login_ms"].as_f64().is_some_and(|ms| ms >= 300.0), "{login}");
    assert!(held.get("connect_ms").is_none(), "no connect succeeded: {held}");
    // Every other line is JSON too (start-up, checks).
    for line in proxy.log_text().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
}

#[tokio::test]
async fn the_config_level_filters_and_a_reload_turns_the_access_log_off() {
    let log = "level = \"warn,switchyard::access=info\"";
    let Lab {
        proxy,
        echo,
        dead,
        _backend,
        ..
    } = proxy("text", log).await;
    exchange(echo, b"one").await;
    let first = await_lines(&proxy, "switchyard::access", 1).await;
    assert!(first[0].contains("cause=client-closed"), "{}", first[0]);
    assert!(
        first[0].contains("listener=echo") && first[0].contains("backend=app"),
        "{}",
        first[0]
    );
    assert!(!first[0].contains('\u{1b}'), "no colour into a file: {}", first[0]);
    let text = proxy.log_text();
    let other_info: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" INFO ") && !l.contains("switchyard::access"))
        .collect();
    assert!(
        other_info.is_empty(),
        "INFO lines of other targets are filtered out: {other_info:?}"
    );

    let config = std::fs::read_to_string(proxy.config_path()).unwrap();
    proxy.reload_with(&config.replace(log, &format!("{log}\naccess = false")));
    within(Duration::from_secs(10), "the reload to be applied", async {
        while proxy
            .metric("switchyard_config_reloads_total{outcome=\"applied\"}")
            .await
            < 1.0
        {
            poll_pause().await;
        }
    })
    .await;
    exchange(echo, b"two").await;
    exchange(echo, b"three").await;
    await_idle(&proxy, "echo").await;
    // A barrier: the dead pool's session logs a warning 300 ms later, after the echo
    // sessions' lines would have been written.
    let mut held = TcpStream::connect(dead).await.unwrap();
    let _ = held.read_to_end(&mut Vec::new()).await;
    await_lines(&proxy, "no backend within the hold timeout", 1).await;
    let after = proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("switchyard::access"))
        .count();
    assert_eq!(
        after,
        1,
        "no access line once the reload turned it off:\n{}",
        proxy.log_text()
    );

    // A reload to level "info": the reload's own INFO line is written under it.
    assert!(!proxy.log_text().contains("config reloaded"), "filtered out at warn");
    proxy.reload_with(&config.replace(log, "level = \"info\""));
    await_lines(&proxy, "config reloaded", 1).await;
}

/// Waits until pool `pool` has no session open (its end, and its access line, done).
async fn await_idle(proxy: &Spawned, pool: &str) {
    let series = format!("switchyard_sessions_active{{pool=\"{pool}\"}}");
    within(Duration::from_secs(10), "the sessions to end", async {
        while proxy.metric(&series).await > 0.0 {
            poll_pause().await;
        }
    })
    .await;
}
