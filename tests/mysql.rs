//! Role-aware MySQL routing and failover against a real MariaDB GTID cluster
//! (started per test by `switchyard_lab`), with real clients through the proxy.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::mysql::{cluster_config, connect, insert, server_id};
use support::*;
use switchyard::health::Status;
use switchyard::timeline::EventKind;
use switchyard_lab::mariadb::Cluster;
use switchyard_test_support as support;

/// Cluster calls block (they run the `mariadb` client); keep the proxy's workers free.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

async fn start_cluster() -> Cluster {
    tokio::task::spawn_blocking(|| Cluster::start(3))
        .await
        .unwrap()
        .expect("MariaDB cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_on_the_primary_and_reads_on_replicas() {
    let cluster = start_cluster().await;
    let proxy = proxy(&cluster_config(&cluster, "", "")).await;
    await_pool(&proxy, "writer", &["db1"]).await;
    await_pool(&proxy, "reader", &["db2", "db3"]).await;

    let mut writer = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(
        insert(&mut writer, "through-proxy").await.unwrap(),
        1,
        "writes land on the primary"
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut reader = connect(proxy.listener("reader").unwrap()).await.unwrap();
        seen.push(server_id(&mut reader).await.unwrap());
        let err = insert(&mut reader, "on-a-replica").await.unwrap_err();
        assert!(
            err.to_string().contains("1290") || err.to_string().contains("read-only"),
            "{err}"
        );
        reader.disconnect().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, [2, 2, 3, 3], "reads spread over the replicas");

    // A reload that changes both pools keeps the writer's primary: the very next table
    // routes to db1 (no check round first), and the open session writes on.
    let changed = cluster_config(&cluster, "connect_timeout = \"3s\"", "").replace(
        "[pools.reader]\nbackends = [\"db1\", \"db2\", \"db3\"]",
        "[pools.reader]\nbackends = [\"db2\"]",
    );
    let config = switchyard::config::Config::parse(&changed, "reloaded.toml").unwrap();
    let report = proxy.apply(config).await.expect("the reload applies");
    assert_eq!(report.pools.changed, ["reader", "writer"], "{report:?}");
    let table = proxy.routing().load();
    assert_eq!(table.generation, report.generation);
    assert_eq!(
        table.routable_names(proxy.pool("writer").unwrap()),
        ["db1"],
        "the primary is kept"
    );
    assert_eq!(table.routable_names(proxy.pool("reader").unwrap()), ["db2"]);
    assert_eq!(
        insert(&mut writer, "after-the-reload").await.unwrap(),
        1,
        "the open session writes on"
    );
    let mut fresh = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(
        server_id(&mut fresh).await.unwrap(),
        1,
        "a new session reaches the primary at once"
    );
    fresh.disconnect().await.unwrap();
    writer.disconnect().await.unwrap();
    proxy.shutdown().await;
    blocking(|| drop(cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_promotion_move_writes_to_the_new_primary_and_close_old_sessions() {
    let mut cluster = start_cluster().await;
    let proxy = proxy(&cluster_config(&cluster, "", "")).await;
    await_pool(&proxy, "writer", &["db1"]).await;
    let mut old_session = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(insert(&mut old_session, "before").await.unwrap(), 1);

    blocking(|| cluster.kill9(0)).unwrap();
    await_pool(&proxy, "writer", &[]).await;
    let new = blocking(|| {
        let new = cluster.most_advanced(&[1, 2]).unwrap();
        cluster.promote(new).unwrap();
        new
    });
    let promoted_at = Instant::now();
    let mut new_session = connect(proxy.listener("writer").unwrap()).await.unwrap();
    let took = insert(&mut new_session, "after").await.unwrap();
    eprintln!(
        "MEASURED promotion -> first write through the proxy: {:?}",
        promoted_at.elapsed()
    );
    assert_eq!(took, cluster.node(new).server_id());
    let other = if new == 1 { 2 } else { 1 };
    blocking(|| cluster.repoint(other, new)).unwrap();

    assert!(
        old_session.query_drop("SELECT 1").await.is_err(),
        "the session on the dead primary is gone"
    );
    let record = proxy.timeline().wait_for(|events| {
        events
            .iter()
            .find(|e| e.from.as_deref() == Some("db1") && e.first_session_ms.is_some())
            .cloned()
    });
    let event = within(Duration::from_secs(10), "the failover record", record).await;
    assert_eq!(event.to, Some(format!("db{}", new + 1)));
    assert!(event.fault_observed_ms <= event.old_removed_ms && event.old_removed_ms <= event.new_routed_ms);
    assert!(event.old_sessions_closed_ms.is_some());
    new_session.disconnect().await.unwrap();
    proxy.shutdown().await;
    blocking(|| drop(cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_primary_is_marked_down_by_the_timeout_and_returns_as_what_it_reports() {
    let cluster = start_cluster().await;
    let proxy = proxy(&cluster_config(&cluster, "", "")).await;
    await_pool(&proxy, "writer", &["db1"]).await;

    blocking(|| cluster.sigstop(0)).unwrap();
    let stopped_at = Instant::now();
    let view = await_status(&proxy, "db1", Status::Down).await;
    eprintln!("MEASURED SIGSTOP -> primary marked down: {:?}", stopped_at.elapsed());
    let last = view.last_check.unwrap();
    assert!(last.error.unwrap().contains("timed out"));
    assert_eq!(
        last.layer,
        Some(switchyard::health::Layer::L7),
        "TCP still connects; the login never answers"
    );
    await_pool(&proxy, "writer", &[]).await;

    blocking(|| cluster.sigcont(0)).unwrap();
    await_status(&proxy, "db1", Status::Up).await;
    // It still reports read_only=0 and nobody else is writable: primary again.
    await_pool(&proxy, "writer", &["db1"]).await;
    let mut session = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(insert(&mut session, "after-sigcont").await.unwrap(), 1);
    session.disconnect().await.unwrap();
    proxy.shutdown().await;
    blocking(|| drop(cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_demotion_closes_primary_sessions_and_no_later_write_reaches_it() {
    let cluster = start_cluster().await;
    let proxy = proxy(&cluster_config(&cluster, "", "")).await;
    await_pool(&proxy, "writer", &["db1"]).await;
    let mut old_session = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(insert(&mut old_session, "before").await.unwrap(), 1);

    blocking(|| cluster.sql(0, "SET GLOBAL read_only=1")).unwrap();
    await_pool(&proxy, "writer", &[]).await;
    // Fencing follows the routing swap at once; a read may still slip in between.
    within(Duration::from_secs(10), "the fenced session to close", async {
        while old_session.query_drop("SELECT 1").await.is_ok() {
            poll_pause().await;
        }
    })
    .await;
    blocking(|| {
        cluster.wait_caught_up(1, 0).unwrap();
        cluster.promote(1).unwrap();
        cluster.repoint(2, 1).unwrap();
    });
    await_pool(&proxy, "writer", &["db2"]).await;
    for i in 0..5 {
        let mut session = connect(proxy.listener("writer").unwrap()).await.unwrap();
        assert_eq!(insert(&mut session, &format!("after-{i}")).await.unwrap(), 2);
        session.disconnect().await.unwrap();
    }
    let on_old = blocking(|| {
        cluster.sql(
            1,
            "SELECT COUNT(*) FROM appdb.kv WHERE v LIKE 'after-%' AND server_id = 1",
        )
    })
    .unwrap();
    assert_eq!(on_old, "0", "no write after the demotion reached db1");
    proxy.shutdown().await;
    blocking(|| drop(cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_with_stopped_sql_thread_leaves_the_replica_pool_and_returns_after_catching_up() {
    let cluster = start_cluster().await;
    let proxy = proxy(&cluster_config(&cluster, "", "")).await;
    await_pool(&proxy, "reader", &["db2", "db3"]).await;
    blocking(|| cluster.sql(1, "STOP SLAVE SQL_THREAD")).unwrap();
    let mut writer = connect(proxy.listener("writer").unwrap()).await.unwrap();
    for i in 0..20 {
        insert(&mut writer, &format!("while-stopped-{i}")).await.unwrap();
    }
    await_pool(&proxy, "reader", &["db3"]).await;
    blocking(|| cluster.sql(1, "START SLAVE SQL_THREAD")).unwrap();
    await_pool(&proxy, "reader", &["db2", "db3"]).await;
    let count = blocking(|| {
        cluster.wait_caught_up(1, 0).unwrap();
        cluster.sql(1, "SELECT COUNT(*) FROM appdb.kv WHERE v LIKE 'while-stopped-%'")
    })
    .unwrap();
    assert_eq!(count, "20");
    writer.disconnect().await.unwrap();
    proxy.shutdown().await;
    blocking(|| drop(cluster));
}

/// Resolves once the writer pool's two-writers alarm was raised `n` times.
async fn alarms(proxy: &switchyard::app::Running, n: usize) {
    proxy
        .timeline()
        .wait_for_event(|events| {
            let raised = events
                .iter()
                .filter(|e| {
                    e.kind == EventKind::Alarm
                        && e.pool.as_deref() == Some("writer")
                        && e.detail.starts_with("two writable")
                })
                .count();
            (raised >= n).then_some(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writable_nodes_keep_the_single_writer_rule_and_raise_the_alarm() {
    let cluster = start_cluster().await;
    // Two writers before the proxy starts: no current primary, so nowhere.
    blocking(|| cluster.sql(1, "SET GLOBAL read_only=0")).unwrap();
    let proxy = proxy(&cluster_config(&cluster, "", "")).await;
    let admin = proxy.admin().unwrap();
    within(Duration::from_secs(20), "the alarm", alarms(&proxy, 1)).await;
    let writer = pool_status(&status_json(&proxy).await, "writer");
    assert!(writer["alarm"].is_string(), "{writer}");
    assert_eq!(writer["routable"], serde_json::json!([]), "fail closed: {writer}");
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("switchyard_alarm_active{pool=\"writer\"} 1"),
        "{metrics}"
    );

    // One writer again: it becomes the primary and the alarm clears.
    blocking(|| cluster.sql(1, "SET GLOBAL read_only=1")).unwrap();
    await_pool(&proxy, "writer", &["db1"]).await;
    // A second writer appears: the current primary stays, the alarm fires again.
    blocking(|| cluster.sql(2, "SET GLOBAL read_only=0")).unwrap();
    within(Duration::from_secs(20), "the second alarm", alarms(&proxy, 2)).await;
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("switchyard_alarm_active{pool=\"writer\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        proxy.routing().load().routable_names(proxy.pool("writer").unwrap()),
        ["db1"]
    );
    let mut session = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(insert(&mut session, "single-writer").await.unwrap(), 1);
    session.disconnect().await.unwrap();
    proxy.shutdown().await;
    blocking(|| drop(cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_and_sysbench_work_through_the_proxy() {
    switchyard_lab::system::ensure_packages(&[("sysbench", "sysbench")]).expect("sysbench installed");
    let cluster = start_cluster().await;
    let proxy = proxy(&cluster_config(&cluster, "", "")).await;
    await_pool(&proxy, "writer", &["db1"]).await;
    await_pool(&proxy, "reader", &["db2", "db3"]).await;
    let (writer, reader) = (proxy.listener("writer").unwrap(), proxy.listener("reader").unwrap());

    let cli = |port: u16, sql: &str| {
        blocking(|| {
            switchyard_lab::system::run(std::process::Command::new("mariadb").args([
                "--no-defaults",
                "--protocol=tcp",
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-uapp",
                "-papppass",
                "--batch",
                "--skip-column-names",
                "--connect-timeout=10",
                "-e",
                sql,
            ]))
        })
    };
    assert_eq!(cli(writer.port(), "SELECT @@server_id").unwrap().trim(), "1");
    assert_ne!(cli(reader.port(), "SELECT @@server_id").unwrap().trim(), "1");
    cli(
        writer.port(),
        "INSERT INTO appdb.kv (v, server_id) VALUES ('cli', @@server_id)",
    )
    .unwrap();

    let sysbench = |command: &str, extra: &[&str]| {
        let port = format!("--mysql-port={}", writer.port());
        let mut args = vec![
            "oltp_read_write",
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &port,
            "--mysql-user=app",
            "--mysql-password=apppass",
            "--mysql-db=sbtest",
            "--tables=2",
            "--table-size=1000",
        ];
        args.extend_from_slice(extra);
        args.push(command);
        blocking(|| switchyard_lab::system::run(std::process::Command::new("sysbench").args(&args)))
    };
    sysbench("prepare", &[]).unwrap();
    let out = sysbench("run", &["--threads=4", "--time=3", "--events=0"]).unwrap();
    let errors = out
        .lines()
        .find(|l| l.trim_start().starts_with("ignored errors:"))
        .unwrap_or_default()
        .to_string();
    let transactions = out
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .unwrap_or_default()
        .to_string();
    eprintln!("MEASURED sysbench through the proxy: {transactions} / {errors}");
    // `run` exited 0 (system::run checks); "ignored errors" are the deadlocks sysbench
    // retries by design, so only completed transactions are asserted.
    let done: u64 = transactions
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(done > 0, "{out}");
    proxy.shutdown().await;
    blocking(|| drop(cluster));
}
