//! Planned primary moves against a real MariaDB GTID cluster (one per test binary),
//! through a `mode = "mysql"` listener with real `mysql_async` clients.
//!
//! Phases, in order, on one cluster:
//! 1. drain at idle points: `hold?drain=` closes an idle session at once, lets a
//!    transaction in flight finish (its statements and COMMIT succeed) and closes it
//!    right after, even past the admin listener's usual answer time; a new session
//!    waits for the release and is served then.
//! 2. an orchestrated switchover db1 → db2 under per-request and pre-ping clients:
//!    no client error, every acknowledged write on the new primary, the others
//!    replicating from it; and back db2 → db1.
//! 3. a switchover whose target cannot catch up (a lock holds its SQL thread): the
//!    demotion is undone, the old primary routed and writable again, the report names
//!    the step.

use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::mysql::{cluster_config, connect, insert, server_id};
use support::*;
use switchyard::app::Running;
use switchyard_lab::mariadb::{Cluster, ORCHESTRATOR_PASSWORD, ORCHESTRATOR_USER, REPL_PASSWORD, REPL_USER};
use switchyard_test_support as support;

const TOKEN: &str = "sw1tch";
const LIMIT: Duration = Duration::from_secs(30);

/// Cluster calls block (they run the `mariadb` client); keep the proxy's workers free.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// The shared config with an admin token and the writer listener in `mysql` mode.
fn config(cluster: &Cluster, writer_extra: &str) -> String {
    cluster_config(cluster, writer_extra, "")
        .replacen(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
            1,
        )
        .replacen("pool = \"writer\"\n", "pool = \"writer\"\nmode = \"mysql\"\n", 1)
}

fn switchover_section() -> String {
    format!(
        "[pools.writer.switchover]\nuser = \"{ORCHESTRATOR_USER}\"\npassword = \"{ORCHESTRATOR_PASSWORD}\"\n\
         replication_user = \"{REPL_USER}\"\nreplication_password = \"{REPL_PASSWORD}\"\n\
         drain = \"3s\"\ncatch_up_timeout = \"2s\"\n"
    )
}

async fn admin_post(proxy: &Running, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_post(proxy.admin().unwrap(), path, Some(TOKEN)).await;
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (code, json)
}

async fn await_sessions(proxy: &Running, n: usize) {
    let series = "switchyard_sessions_active{pool=\"writer\"}";
    within(
        LIMIT,
        &format!("{n} writer sessions"),
        await_metric_is(proxy, series, n as f64),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_moves() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(3))
        .await
        .unwrap()
        .expect("MariaDB cluster starts");
    let proxy = proxy(&config(&cluster, &switchover_section())).await;
    await_pool(&proxy, "writer", &["db1"]).await;
    let writer = proxy.listener("writer").unwrap();

    drain_at_idle_points(&proxy, &cluster, writer).await;
    switch_back_and_forth(&proxy, &cluster, writer).await;
    a_target_that_cannot_catch_up_is_rolled_back(&proxy, &cluster, writer).await;

    proxy.shutdown().await;
    blocking(|| drop(cluster));
}

async fn drain_at_idle_points(proxy: &Running, cluster: &Cluster, writer: SocketAddr) {
    let mut idle = connect(writer).await.unwrap();
    assert_eq!(server_id(&mut idle).await.unwrap(), 1);
    let mut busy = connect(writer).await.unwrap();
    busy.query_drop("BEGIN").await.unwrap();
    insert(&mut busy, "drain-in-tx-1").await.unwrap();
    await_sessions(proxy, 2).await;

    let admin = proxy.admin().unwrap();
    let hold = tokio::spawn(async move { http_post(admin, "/pools/writer/hold?for=60s&drain=40s", Some(TOKEN)).await });
    // The idle session goes at once; the one in a transaction stays and goes on, for
    // longer than an admin call may usually take (the drain's answer still comes).
    await_sessions(proxy, 1).await;
    tokio::time::sleep(switchyard::admin::serve::REQUEST_TIMEOUT + Duration::from_secs(1)).await;
    insert(&mut busy, "drain-in-tx-2")
        .await
        .expect("a transaction in flight is not cut");
    busy.query_drop("COMMIT").await.expect("its COMMIT succeeds");
    let (code, body) = within(LIMIT, "the drain's answer", hold).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["drained"],
        serde_json::json!([{ "backend": "db1", "sessions_left": 0 }]),
        "{body}"
    );
    let closed = "switchyard_sessions_closed_idle_total{pool=\"writer\",backend=\"db1\"}";
    assert_eq!(metric(proxy, closed).await, 2.0, "both closed at an idle point");
    // Their next use meets a closed connection, not a failed statement.
    assert!(idle.ping().await.is_err(), "the idle session was closed");
    assert!(
        busy.ping().await.is_err(),
        "the finished transaction's session was closed"
    );

    // A new session waits while the pool is held and is served after the release.
    let holds = metric(proxy, "switchyard_holds_total{pool=\"writer\"}").await;
    let fresh = tokio::spawn(async move {
        let mut conn = connect(writer).await?;
        let id = insert(&mut conn, "drain-after-release").await?;
        conn.disconnect().await?;
        Ok::<_, mysql_async::Error>(id)
    });
    within(
        LIMIT,
        "the new session to be held",
        await_metric(proxy, "switchyard_holds_total{pool=\"writer\"}", holds + 1.0),
    )
    .await;
    let (code, body) = admin_post(proxy, "/pools/writer/release").await;
    assert_eq!(code, 200, "{body}");
    let id = within(LIMIT, "the held session", fresh).await.unwrap().unwrap();
    assert_eq!(id, 1, "served by the primary after the release");

    let committed = blocking(|| {
        cluster.sql(
            0,
            "SELECT COUNT(*) FROM appdb.kv WHERE v IN ('drain-in-tx-1', 'drain-in-tx-2', 'drain-after-release')",
        )
    })
    .unwrap();
    assert_eq!(committed.trim(), "3", "every acknowledged write is there");
}

/// Clients that write through the proxy until told to stop: per-request ones (a new
/// connection per write) and a pooled one that pings before each use and reconnects
/// when the ping fails. What each acknowledged, and every error a write met.
struct Writers {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<(Vec<String>, Vec<String>)>>,
}

impl Writers {
    fn start(writer: SocketAddr, tag: &str) -> Writers {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (stop, tag) = (stop.clone(), format!("{tag}-per-request-{i}"));
            tasks.push(tokio::spawn(async move {
                let (mut acked, mut errors) = (Vec::new(), Vec::new());
                for n in 0.. {
                    if stop.is_cancelled() || n == 5_000 {
                        break;
                    }
                    let row = format!("{tag}-{n}");
                    let attempt = async {
                        let mut conn = connect(writer).await?;
                        insert(&mut conn, &row).await?;
                        // Closing is the client's business: a close that meets a
                        // closed connection loses nothing.
                        let _ = conn.disconnect().await;
                        Ok::<_, mysql_async::Error>(())
                    };
                    match attempt.await {
                        Ok(()) => acked.push(row),
                        Err(e) => errors.push(format!("{row}: {e}")),
                    }
                }
                (acked, errors)
            }));
        }
        let (stop2, tag) = (stop.clone(), format!("{tag}-pre-ping"));
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut errors) = (Vec::new(), Vec::new());
            let mut conn: Option<mysql_async::Conn> = None;
            for n in 0..20_000 {
                if stop2.is_cancelled() {
                    break;
                }
                // The pool's pre-ping: a connection that fails it is replaced.
                let alive = match conn.as_mut() {
                    Some(c) => c.ping().await.is_ok(),
                    None => false,
                };
                if !alive {
                    conn = match connect(writer).await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            errors.push(format!("connect: {e}"));
                            continue;
                        }
                    };
                }
                let row = format!("{tag}-{n}");
                match insert(conn.as_mut().unwrap(), &row).await {
                    Ok(_) => acked.push(row),
                    Err(e) => {
                        errors.push(format!("{row}: {e}"));
                        conn = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, errors)
        }));
        Writers { stop, tasks }
    }

    async fn stop(self) -> (Vec<String>, Vec<String>) {
        self.stop.cancel();
        let (mut acked, mut errors) = (Vec::new(), Vec::new());
        for task in self.tasks {
            let (a, e) = within(LIMIT, "a writer to stop", task).await.unwrap();
            acked.extend(a);
            errors.extend(e);
        }
        (acked, errors)
    }
}

async fn switchover(proxy: &Running, to: &str) -> (u16, serde_json::Value) {
    let path = "/pools/writer/switchover";
    let admin = proxy.admin().unwrap();
    let body = format!("{{\"to\": \"{to}\"}}");
    let (code, text) = within(LIMIT, "the switchover", http_post_body(admin, path, Some(TOKEN), &body)).await;
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Rows of `tags` on node `index` (0-based).
fn present(cluster: &Cluster, index: usize, tags: &[String]) -> usize {
    let mut found = 0;
    for chunk in tags.chunks(500) {
        let list = chunk.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(",");
        let sql = format!("SELECT COUNT(*) FROM appdb.kv WHERE v IN ({list})");
        found += blocking(|| cluster.sql(index, &sql))
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap();
    }
    found
}

fn source_of(cluster: &Cluster, index: usize) -> String {
    let status = blocking(|| cluster.slave_status(index)).unwrap();
    format!(
        "{}:{} io={} sql={}",
        status.get("Master_Host").map_or("", |s| s),
        status.get("Master_Port").map_or("", |s| s),
        status.get("Slave_IO_Running").map_or("", |s| s),
        status.get("Slave_SQL_Running").map_or("", |s| s),
    )
}

async fn switch_back_and_forth(proxy: &Running, cluster: &Cluster, writer: SocketAddr) {
    let port = |i: usize| cluster.node(i).addr().port();
    for (round, (from, to, to_index)) in [("db1", "db2", 1usize), ("db2", "db1", 0)].into_iter().enumerate() {
        let writers = Writers::start(writer, &format!("switch-{round}"));
        // Let every kind of client be mid-stream when the switchover begins.
        within(LIMIT, "writes before the switchover", async {
            while metric(proxy, "switchyard_sessions_total{pool=\"writer\",backend=\"db1\"}").await < 5.0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let (code, report) = switchover(proxy, to).await;
        assert_eq!(code, 200, "{report:#}");
        assert_eq!(report["from"], from, "{report:#}");
        assert_eq!(report["ok"], true, "{report:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (acked, errors) = writers.stop().await;
        assert!(errors.is_empty(), "no client error: {errors:#?}\n{report:#}");
        assert!(acked.len() > 10, "the writers wrote: {}", acked.len());
        let id = connect(writer)
            .await
            .map(|mut c| async move { server_id(&mut c).await });
        assert_eq!(
            id.unwrap().await.unwrap(),
            to_index as u32 + 1,
            "new sessions reach {to}"
        );
        assert_eq!(
            present(cluster, to_index, &acked),
            acked.len(),
            "every acknowledged write is on {to}"
        );
        // The others replicate from the new primary, both threads running.
        for other in (0..3).filter(|&i| i != to_index) {
            let source = source_of(cluster, other);
            assert_eq!(
                source,
                format!("127.0.0.1:{} io=Yes sql=Yes", port(to_index)),
                "db{}",
                other + 1
            );
        }
        let status = blocking(|| cluster.slave_status(to_index)).unwrap();
        assert!(status.is_empty(), "{to} replicates from nobody: {status:?}\n{report:#}");
        let steps: Vec<_> = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap().to_string())
            .collect();
        for expected in [
            "check", "hold", "demote", "position", "catch-up", "promote", "repoint", "rejoin", "route", "release",
            "forget",
        ] {
            assert!(steps.iter().any(|s| s == expected), "{expected} in {steps:?}");
        }
        let recorded = proxy
            .timeline()
            .events()
            .into_iter()
            .filter(|e| e.kind == switchyard::timeline::EventKind::Switchover)
            .count();
        assert!(recorded >= steps.len(), "every step is on the timeline");
        println!(
            "switchover scenario=test-{from}-to-{to} acked={} errors={} held_ms={}",
            acked.len(),
            errors.len(),
            report["held_ms"]
        );
    }
}

async fn a_target_that_cannot_catch_up_is_rolled_back(proxy: &Running, cluster: &Cluster, writer: SocketAddr) {
    // db3's SQL thread waits behind a global read lock.
    let mut blocker = direct(cluster, 2).await;
    blocker.query_drop("FLUSH TABLES WITH READ LOCK").await.unwrap();
    let mut conn = connect(writer).await.unwrap();
    assert_eq!(insert(&mut conn, "before-a-failed-switchover").await.unwrap(), 1);
    conn.disconnect().await.unwrap();

    let (code, report) = switchover(proxy, "db3").await;
    assert_eq!(code, 500, "{report:#}");
    assert_eq!(report["failed"]["step"], "catch-up", "{report:#}");
    assert_eq!(
        report["failed"]["undone"],
        serde_json::json!(["demote on db1"]),
        "{report:#}"
    );
    assert_eq!(report["failed"]["undo_errors"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["ok"], false);
    // The old primary takes writes again, through the proxy, at once.
    let mut conn = connect(writer).await.unwrap();
    assert_eq!(
        insert(&mut conn, "after-the-rollback").await.unwrap(),
        1,
        "db1 is the primary again"
    );
    conn.disconnect().await.unwrap();
    blocker.query_drop("UNLOCK TABLES").await.unwrap();
    drop(blocker);
    blocking(|| cluster.wait_caught_up(2, 0)).unwrap();
    assert_eq!(
        source_of(cluster, 2),
        format!("127.0.0.1:{} io=Yes sql=Yes", cluster.node(0).addr().port())
    );
}

/// A connection straight to node `index` as the orchestrator (not through the proxy).
async fn direct(cluster: &Cluster, index: usize) -> mysql_async::Conn {
    let addr = cluster.node(index).addr();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(ORCHESTRATOR_USER))
        .pass(Some(ORCHESTRATOR_PASSWORD))
        .prefer_socket(false);
    within(LIMIT, "a direct connection", mysql_async::Conn::new(opts))
        .await
        .unwrap()
}
