//! Planned primary moves against a real MariaDB GTID cluster (one per test binary),
//! through a `mode = "mysql"` listener with real `mysql_async` clients.
//!
//! Phases, in order, on one cluster:
//! 1. drain at idle points: `hold?drain=` closes an idle session at once, lets a
//!    transaction in flight finish (its statements and COMMIT succeed) and closes it
//!    right after, even past the admin listener's usual answer time; a new session
//!    waits for the release and is served then.

use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::mysql::{cluster_config, connect, insert, server_id};
use support::*;
use switchyard::app::Running;
use switchyard_lab::mariadb::Cluster;
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
    let proxy = proxy(&config(&cluster, "")).await;
    await_pool(&proxy, "writer", &["db1"]).await;
    let writer = proxy.listener("writer").unwrap();

    drain_at_idle_points(&proxy, &cluster, writer).await;

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
