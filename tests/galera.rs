//! Galera pools against a real 3-node MariaDB Galera cluster (started once for this
//! binary by `switchyard_lab::galera`), with real clients through the proxy:
//!
//! - the writer pool pins one node although all three are writable, the reader pool
//!   spreads over the other two;
//! - `wsrep_desync=ON` on the writer moves the writer (a failover: its sessions are
//!   closed); when the node is `Synced` again it serves reads and the writer stays;
//! - `wsrep_reject_queries=ALL` takes a reader out at once;
//! - `kill -9` of the writer moves writes to the next node in the pool's order, and
//!   the killed node rejoins by IST and serves reads again;
//! - a node cut off into a non-Primary component (the other two SIGSTOPped) takes
//!   nothing, not even the writer's place it held; after SIGCONT the cluster forms
//!   again and writes resume.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::mysql::{connect, insert, server_id};
use support::*;
use switchyard_lab::galera::Galera;
use switchyard_lab::mariadb::{MONITOR_PASSWORD, MONITOR_USER};
use switchyard_test_support as support;

/// Cluster calls block (they run the `mariadb` client); keep the proxy's workers free.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

fn config(galera: &Galera) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\n\
         [check]\nkind = \"galera\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n\
         interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n"
    );
    let names: Vec<String> = (0..galera.len()).map(|i| format!("\"g{}\"", i + 1)).collect();
    for i in 0..galera.len() {
        text += &format!("[backends.g{}]\naddress = \"{}\"\n\n", i + 1, galera.addr(i));
    }
    let names = names.join(", ");
    text += &format!("[pools.writer]\nbackends = [{names}]\nrole = \"primary\"\nhold_timeout = \"20s\"\n\n");
    text += &format!("[pools.reader]\nbackends = [{names}]\nrole = \"replica\"\npolicy = \"round-robin\"\n\n");
    text += "[listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n\n\
             [listeners.reader]\nlisten = \"127.0.0.1:0\"\npool = \"reader\"\n";
    text
}

fn galera_state(status: &serde_json::Value, backend: &str) -> serde_json::Value {
    status["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["name"] == backend)
        .map(|b| b["report"]["galera"].clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galera_pools_pin_one_writer_and_follow_wsrep_state() {
    let mut galera = tokio::task::spawn_blocking(|| Galera::start(3))
        .await
        .unwrap()
        .expect("the Galera cluster starts");
    let proxy = proxy(&config(&galera)).await;
    let (writer, reader) = (proxy.listener("writer").unwrap(), proxy.listener("reader").unwrap());

    // One writer although every node is writable; reads on the other two.
    await_pool(&proxy, "writer", &["g1"]).await;
    await_pool(&proxy, "reader", &["g2", "g3"]).await;
    let mut old = connect(writer).await.unwrap();
    assert_eq!(insert(&mut old, "first").await.unwrap(), 1);
    let state = galera_state(&status_json(&proxy).await, "g1");
    assert_eq!(state["local_state"], 4, "{state}");
    assert_eq!(state["cluster_status"], "Primary", "{state}");
    assert_eq!(state["cluster_size"], 3, "{state}");
    let writer_status = pool_status(&status_json(&proxy).await, "writer");
    assert!(
        writer_status["alarm"].is_null(),
        "no two-writers alarm: {writer_status}"
    );

    // Desynced: out of both pools at once, the writer moves and its session closes.
    blocking(|| galera.sql(0, "SET GLOBAL wsrep_desync=ON")).unwrap();
    await_pool(&proxy, "writer", &["g2"]).await;
    await_pool(&proxy, "reader", &["g3"]).await;
    // Fenced: the session closes soon after the table moved (its task notices).
    within(Duration::from_secs(10), "the old writer's session to close", async {
        while old.query_drop("SELECT 1").await.is_ok() {
            poll_pause().await;
        }
    })
    .await;
    let mut new = connect(writer).await.unwrap();
    assert_eq!(insert(&mut new, "after-desync").await.unwrap(), 2);
    proxy
        .timeline()
        .wait_for(|events| {
            events
                .iter()
                .find(|e| e.from.as_deref() == Some("g1") && e.to.as_deref() == Some("g2"))
                .map(|_| ())
        })
        .await;
    // Synced again: it serves reads, and the writer stays where it is.
    blocking(|| galera.sql(0, "SET GLOBAL wsrep_desync=OFF")).unwrap();
    await_pool(&proxy, "reader", &["g1", "g3"]).await;
    assert_eq!(table_names(&proxy, "writer"), ["g2"], "no move back");

    // Rejecting queries: out at once, back when it stops.
    blocking(|| galera.sql(2, "SET GLOBAL wsrep_reject_queries=ALL")).unwrap();
    await_pool(&proxy, "reader", &["g1"]).await;
    blocking(|| galera.sql(2, "SET GLOBAL wsrep_reject_queries=NONE")).unwrap();
    await_pool(&proxy, "reader", &["g1", "g3"]).await;

    // kill -9 of the writer: writes move to the first node in the pool's order; the
    // killed node rejoins (IST) and serves reads.
    blocking(|| galera.kill9(1)).unwrap();
    await_pool(&proxy, "writer", &["g1"]).await;
    await_pool(&proxy, "reader", &["g3"]).await;
    let mut after_kill = connect(writer).await.unwrap();
    assert_eq!(insert(&mut after_kill, "after-kill").await.unwrap(), 1);
    blocking(|| -> anyhow::Result<()> {
        galera.rejoin(1, false)?;
        galera.wait_synced(1, 3)
    })
    .unwrap();
    await_pool(&proxy, "reader", &["g2", "g3"]).await;
    let mut read = connect(reader).await.unwrap();
    assert!(matches!(server_id(&mut read).await.unwrap(), 2 | 3));
    read.disconnect().await.unwrap();

    // The writer alone in a non-Primary component: it takes nothing; once the
    // others resume the cluster forms again and writes go on.
    blocking(|| -> anyhow::Result<()> {
        galera.signal(1, "STOP")?;
        galera.signal(2, "STOP")
    })
    .unwrap();
    await_pool(&proxy, "writer", &[]).await;
    let cut = within(Duration::from_secs(30), "g1 to report non-Primary", async {
        loop {
            let state = galera_state(&status_json(&proxy).await, "g1");
            if state["cluster_status"] != "Primary" && !state.is_null() {
                return state;
            }
            poll_pause().await;
        }
    })
    .await;
    assert_eq!(cut["ready"], false, "{cut}");
    assert!(table_names(&proxy, "reader").is_empty());
    blocking(|| -> anyhow::Result<()> {
        galera.signal(1, "CONT")?;
        galera.signal(2, "CONT")?;
        for i in 0..3 {
            galera.wait_synced(i, 3)?;
        }
        Ok(())
    })
    .unwrap();
    let mut resumed = connect(writer).await.unwrap();
    let took = insert(&mut resumed, "after-the-partition").await.unwrap();
    assert!((1..=3).contains(&took));
    let rows: Vec<String> = resumed.query("SELECT v FROM kv ORDER BY id").await.unwrap();
    assert_eq!(
        rows,
        ["hello", "first", "after-desync", "after-kill", "after-the-partition"]
    );

    for conn in [new, after_kill, resumed] {
        let _ = conn.disconnect().await;
    }
    proxy.shutdown().await;
    blocking(|| drop(galera));
}

fn table_names(proxy: &switchyard::app::Running, pool: &str) -> Vec<String> {
    proxy.routing().load().routable_names(proxy.pool(pool).unwrap())
}
