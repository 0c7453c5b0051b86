//! A fleet of switchyard processes sharing verdicts and checks through a real
//! 3-member etcd cluster, in front of a real 3-node MariaDB GTID cluster, with drill
//! writers through every proxy. One test, in phases, so both clusters start once:
//!
//! 0. etcd with TLS (client certificates required) and users: a proxy with the right
//!    password writes its verdict; one with a wrong password holds and says why;
//! 1. checker election: one epoch, one checker per backend, one monitor login per node;
//! 2. the checker of a backend killed: another takes its check over;
//! 3. a failover seen by every proxy at once: one new epoch, every proxy swaps to it;
//! 4. one etcd member killed, then all of etcd down: routing goes on;
//! 5. one proxy cut off from etcd (its only member SIGSTOPped) while the primary fails
//!    over and the old primary returns writable: it never adopts a writer alone;
//! 6. a restarted proxy adopts the current epoch before it routes;
//! 7. a reload removes a backend from the proxy that checks it: it gives the check up.
//!
//! Across all of it, no write is acknowledged by a node outside its time as the
//! primary of record. It prints the `fleet ...` line.

use std::time::Duration;

use support::fleet::{await_one_checker_each, await_routed, proxy_config, Ack, Proxy, Writers};
use support::{poll_pause, within};
use switchyard::timeline::now_ms;
use switchyard_lab::{etcd, mariadb};
use switchyard_test_support as support;

const BINARY: &str = env!("CARGO_BIN_EXE_switchyard");
const LIMIT: Duration = Duration::from_secs(40);
/// The check interval of `support::mysql::cluster_config`.
const INTERVAL_MS: u64 = 100;

fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// When a node was the primary of record: from its promotion to its death.
struct Term {
    server_id: u32,
    from_ms: u64,
    until_ms: u64,
}

/// Acknowledgements by a node outside its term (its death is given 200 ms for acks
/// already on their way).
fn wrong_node_acks(acks: &[Ack], terms: &[Term]) -> Vec<Ack> {
    acks.iter()
        .filter(|a| {
            !terms.iter().any(|t| {
                t.server_id == a.server_id && a.at_ms >= t.from_ms && a.at_ms <= t.until_ms.saturating_add(200)
            })
        })
        .cloned()
        .collect()
}

async fn sum(proxies: &[&Proxy], series: &str) -> f64 {
    let mut total = 0.0;
    for proxy in proxies.iter().filter(|p| p.process.is_some()) {
        total += proxy.metric(series).await;
    }
    total
}

async fn await_store(proxy: &Proxy, up: bool) {
    within(
        LIMIT,
        &format!("{} to see etcd {}", proxy.name, if up { "up" } else { "down" }),
        async {
            while proxy.status().await["fleet"]["store_up"] != up {
                poll_pause().await;
            }
        },
    )
    .await
}

/// The verdict etcd holds for the writer pool (JSON).
fn verdict(etcd: &etcd::Cluster, prefix: &str) -> serde_json::Value {
    let out = etcd
        .ctl(&["get", &format!("{prefix}/pools/writer/primary"), "--print-value-only"])
        .expect("etcdctl get");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("verdict {out:?}: {e}"))
}

/// Per proxy, how long after the verdict's writing its table routed `backend`.
async fn propagation_ms(proxies: &[&Proxy], backend: &str, written_ms: u64) -> Vec<u64> {
    let mut delays = Vec::new();
    for proxy in proxies {
        let status = proxy.status().await;
        let routed = status["failovers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["pool"] == "writer" && f["to"] == backend)
            .inspect(|f| assert!(f["epoch"].is_i64(), "the failover names its epoch: {f}"))
            .filter_map(|f| f["new_routed_ms"].as_u64())
            .max()
            .unwrap_or_else(|| panic!("{} has no failover to {backend}: {status}", proxy.name));
        delays.push(routed.saturating_sub(written_ms));
    }
    delays
}

async fn writer_targets(proxies: &[&Proxy]) -> Vec<(String, std::net::SocketAddr)> {
    let mut targets = Vec::new();
    for proxy in proxies {
        targets.push((proxy.name.clone(), proxy.listener("writer").await));
    }
    targets
}

fn monitor_selects(db: &mariadb::Cluster, node: usize) -> u64 {
    let out = db
        .sql(
            node,
            "SELECT COALESCE(SUM(SELECT_COMMANDS), 0) FROM information_schema.USER_STATISTICS WHERE USER = 'monitor'",
        )
        .expect("USER_STATISTICS");
    out.trim().parse().unwrap_or(0)
}

fn monitor_logins(db: &mariadb::Cluster, node: usize) -> usize {
    let out = db
        .sql(
            node,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'monitor'",
        )
        .expect("PROCESSLIST");
    out.trim().parse().unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_agrees_on_one_primary_through_etcd() {
    let (etcd, secured, db) = tokio::join!(
        tokio::task::spawn_blocking(|| etcd::Cluster::start(3)),
        tokio::task::spawn_blocking(|| etcd::Cluster::start_secured(1)),
        tokio::task::spawn_blocking(|| mariadb::Cluster::start(3)),
    );
    let (mut etcd, mut db) = (
        etcd.unwrap().expect("etcd starts"),
        db.unwrap().expect("MariaDB starts"),
    );
    secure_etcd(secured.unwrap().expect("a TLS etcd starts"), &db).await;
    for node in 0..3 {
        blocking(|| db.sql(node, "SET GLOBAL userstat = 1")).unwrap();
    }
    let prefix = format!("/sy-test-{}", std::process::id());
    // The proxies a, b and c talk to two members; d (started later) to the third only.
    let leader = blocking(|| etcd.leader()).expect("an etcd leader");
    let lonely = (leader + 1) % 3;
    let shared: Vec<String> = (0..3)
        .filter(|&i| i != lonely)
        .map(|i| etcd.endpoint(i).to_string())
        .collect();
    let mut proxies = Vec::new();
    for name in ["a", "b", "c"] {
        proxies.push(Proxy::start(BINARY, name, proxy_config(&db, name, &shared, &prefix, "")).await);
    }

    // 1. Election: one epoch, written once; one checker per backend, one login per node.
    let first = await_routed(&all(&proxies), "writer", "db1").await;
    assert_eq!(verdict(&etcd, &prefix)["backend"], "db1");
    assert_eq!(
        sum(
            &all(&proxies),
            "switchyard_fleet_verdict_writes_total{pool=\"writer\",outcome=\"won\"}"
        )
        .await,
        1.0
    );
    let held = await_one_checker_each(&all(&proxies), &["db1", "db2", "db3"]).await;
    within(LIMIT, "one monitor login per node", async {
        while (0..3).any(|n| blocking(|| monitor_logins(&db, n)) != 1) {
            poll_pause().await;
        }
    })
    .await;
    let before: Vec<u64> = (0..3).map(|n| blocking(|| monitor_selects(&db, n))).collect();
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await; // a measuring window, not a wait for a result
    let intervals = window.as_millis() as f64 / INTERVAL_MS as f64;
    let probes = (0..3)
        .map(|n| (blocking(|| monitor_selects(&db, n)) - before[n]) as f64 / intervals)
        .fold(0.0, f64::max);
    // One checker per backend: one full probe per interval (the goal is at most 3
    // whatever the fleet size; here it is exactly the checker's).
    assert!(probes <= 1.5, "{probes} probes per backend per interval");

    // 2. The checker of db1 dies: another proxy takes its check over.
    let checker = held["db1"][0].clone();
    let index = proxies.iter().position(|p| p.name == checker).unwrap();
    proxies[index].kill();
    let killed = std::time::Instant::now();
    let others: Vec<&Proxy> = proxies.iter().filter(|p| p.process.is_some()).collect();
    let after = await_one_checker_each(&others, &["db1", "db2", "db3"]).await;
    let takeover_ms = killed.elapsed().as_millis();
    assert_ne!(after["db1"], vec![checker.clone()]);
    proxies[index].restart().await;
    await_routed(&all(&proxies), "writer", "db1").await;

    // 3. A failover all proxies see at once: one new epoch, every proxy swaps to it.
    let writers = Writers::start(writer_targets(&all(&proxies)).await);
    let mut terms = vec![Term {
        server_id: 1,
        from_ms: 0,
        until_ms: u64::MAX,
    }];
    let won_before = sum(
        &all(&proxies),
        "switchyard_fleet_verdict_writes_total{pool=\"writer\",outcome=\"won\"}",
    )
    .await;
    blocking(|| db.kill9(0)).unwrap();
    terms[0].until_ms = now_ms();
    let promoted = now_ms();
    blocking(|| {
        db.promote(1)?;
        db.repoint(2, 1)
    })
    .unwrap();
    terms.push(Term {
        server_id: 2,
        from_ms: promoted,
        until_ms: u64::MAX,
    });
    let second = await_routed(&all(&proxies), "writer", "db2").await;
    assert!(second > first, "a new epoch: {second} after {first}");
    let won = sum(
        &all(&proxies),
        "switchyard_fleet_verdict_writes_total{pool=\"writer\",outcome=\"won\"}",
    )
    .await;
    if won - won_before != 1.0 {
        for proxy in &proxies {
            eprintln!("--- {}:\n{}", proxy.name, proxy.fleet_log());
        }
    }
    assert_eq!(won - won_before, 1.0, "one epoch for one failover");
    let written = verdict(&etcd, &prefix)["at_ms"].as_u64().unwrap();
    let mut delays = propagation_ms(&all(&proxies), "db2", written).await;
    blocking(|| db.restart_as_replica(0, 1)).unwrap();

    // 4. One etcd member killed (the leader), then all of etcd down: routing goes on.
    let leader = blocking(|| etcd.leader()).unwrap();
    blocking(|| etcd.kill9(leader)).unwrap();
    let killed = now_ms();
    await_acks_after(&writers, &all(&proxies), killed).await;
    blocking(|| etcd.restart(leader)).unwrap();
    blocking(|| etcd.stop_all());
    for proxy in &proxies {
        await_store(proxy, false).await;
    }
    let down = now_ms();
    await_acks_after(&writers, &all(&proxies), down).await;
    for proxy in &proxies {
        assert_eq!(
            proxy.pool("writer").await["routable"],
            serde_json::json!(["db2"]),
            "{}",
            proxy.name
        );
    }
    blocking(|| etcd.start_all()).unwrap();
    for proxy in &proxies {
        await_store(proxy, true).await;
    }

    // 5. Proxy d knows only the third etcd member, a follower; it is cut off while
    //    the primary fails over, and the old primary comes back writable.
    blocking(|| etcd.make_follower(lonely)).unwrap();
    let only = vec![etcd.endpoint(lonely).to_string()];
    proxies.push(Proxy::start(BINARY, "d", proxy_config(&db, "d", &only, &prefix, "")).await);
    await_routed(&all(&proxies), "writer", "db2").await;
    let writers_d = Writers::start(writer_targets(&[&proxies[3]]).await);
    blocking(|| etcd.sigstop(lonely)).unwrap();
    await_store(&proxies[3], false).await;
    blocking(|| db.kill9(1)).unwrap();
    terms[1].until_ms = now_ms();
    let promoted = now_ms();
    blocking(|| {
        db.promote(2)?;
        db.repoint(0, 2)
    })
    .unwrap();
    terms.push(Term {
        server_id: 3,
        from_ms: promoted,
        until_ms: u64::MAX,
    });
    let connected: Vec<&Proxy> = proxies[..3].iter().collect();
    await_routed(&connected, "writer", "db3").await;
    let written = verdict(&etcd, &prefix)["at_ms"].as_u64().unwrap();
    delays.extend(propagation_ms(&connected, "db3", written).await);
    blocking(|| db.restart(1, false)).unwrap(); // the old primary, writable again
    let d = &proxies[3];
    within(LIMIT, "d to see db2 writable again", async {
        loop {
            let status = d.status().await;
            let db2 = status["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["name"] == "db2")
                .cloned()
                .unwrap();
            if db2["status"] == "up" && db2["role"] == "primary" {
                return;
            }
            poll_pause().await;
        }
    })
    .await;
    let pool = d.pool("writer").await;
    assert_eq!(
        pool["routable"],
        serde_json::json!([]),
        "cut off, d adopts no writer: {pool}"
    );
    assert!(pool["fleet"]["alarm"].is_string(), "and says why: {pool}");
    await_routed(&connected, "writer", "db3").await;
    blocking(|| etcd.sigcont(lonely)).unwrap();
    await_store(d, true).await;
    let third = await_routed(&all(&proxies), "writer", "db3").await;
    blocking(|| db.rejoin_as_replica(1, 2)).unwrap();

    // 6. A restarted proxy adopts the current epoch before it routes.
    proxies[1].restart().await;
    assert_eq!(await_routed(&all(&proxies), "writer", "db3").await, third);
    let events = proxies[1].status().await["events"].clone();
    let first_of = |kind: &str| {
        events
            .as_array()
            .unwrap()
            .iter()
            .position(|e| e["kind"] == kind && e["pool"] == "writer")
    };
    let (epoch, routed) = (first_of("epoch"), first_of("failover"));
    assert!(epoch.is_some() && epoch < routed, "epoch first, then routing: {events}");
    let written = proxies[1]
        .metric("switchyard_fleet_verdict_writes_total{pool=\"writer\"")
        .await;
    assert_eq!(
        written, 0.0,
        "the restarted proxy proposed no verdict: it adopted the epoch"
    );

    // 7. A reload removes db1 from the proxy that checks it: another takes the check.
    let held = await_one_checker_each(&all(&proxies), &["db1"]).await;
    let index = proxies.iter().position(|p| p.name == held["db1"][0]).unwrap();
    let without = proxies[index].config().replace("\"db1\", ", "").replacen(
        &format!("[backends.db1]\naddress = \"{}\"\n", db.node(0).addr()),
        "",
        1,
    );
    assert!(!without.contains("db1"), "{without}");
    let (errors_before, reloaded) = (writers.errors(), std::time::Instant::now());
    proxies[index].reload(without);
    within(LIMIT, "db1's check to move to another proxy", async {
        loop {
            let held = support::fleet::holders(&all(&proxies)).await;
            if held
                .get("db1")
                .is_some_and(|h| h.len() == 1 && h[0] != proxies[index].name)
            {
                return;
            }
            poll_pause().await;
        }
    })
    .await;
    eprintln!(
        "phase 7: {:?}, writer errors {} -> {}",
        reloaded.elapsed(),
        errors_before,
        writers.errors()
    );

    let (mut acks, errors) = writers.stop().await;
    let (acks_d, errors_d) = writers_d.stop().await;
    acks.extend(acks_d);
    let wrong = wrong_node_acks(&acks, &terms);
    eprintln!("propagation per proxy (ms): {delays:?}");
    delays.sort();
    let p99 = delays[(delays.len() * 99).div_ceil(100) - 1];
    println!(
        "fleet proxies={} probes_per_backend_per_interval={probes:.2} propagation_p99_ms={p99} wrong_node_acks={} acks={} errors={} checker_takeover_ms={takeover_ms}",
        proxies.len(),
        wrong.len(),
        acks.len(),
        errors + errors_d
    );
    assert!(
        wrong.is_empty(),
        "writes acknowledged outside the primary's term: {wrong:?}"
    );
    assert!(
        acks.iter().any(|a| a.server_id == 3),
        "writes went on after the last failover"
    );
    drop(db);
    drop(etcd);
}

fn all(proxies: &[Proxy]) -> Vec<&Proxy> {
    proxies.iter().collect()
}

/// Phase 0: TLS and authentication to etcd.
async fn secure_etcd(mut etcd: etcd::Cluster, db: &mariadb::Cluster) {
    blocking(|| etcd.enable_auth("rootpw", "switchyard", "fleetpw", "/secure/")).expect("auth on");
    let client = etcd.client_files("switchyard").unwrap();
    let ca = etcd.ca_file().unwrap().display().to_string();
    let tls = |password: &str| {
        format!(
            "user = \"switchyard\"\npassword = \"{password}\"\n\
             tls = {{ ca = \"{ca}\", server_name = \"localhost\", cert = \"{}\", key = \"{}\" }}\n",
            client.cert.display(),
            client.key.display()
        )
    };
    let endpoints = etcd.endpoints();
    let good = Proxy::start(
        BINARY,
        "s",
        proxy_config(db, "s", &endpoints, "/secure", &tls("fleetpw")),
    )
    .await;
    let epoch = await_routed(&[&good], "writer", "db1").await;
    assert!(epoch > 0);
    let bad = Proxy::start(BINARY, "w", proxy_config(db, "w", &endpoints, "/secure", &tls("wrong"))).await;
    await_store(&bad, false).await;
    let pool = within(LIMIT, "w's fleet alarm", async {
        loop {
            let pool = bad.pool("writer").await;
            if pool["fleet"]["alarm"].is_string() {
                return pool;
            }
            poll_pause().await;
        }
    })
    .await;
    assert_eq!(pool["routable"], serde_json::json!([]), "holds: {pool}");
    let log = bad.log();
    assert!(
        log.contains("authentication failed"),
        "the log says why: {}",
        bad.fleet_log()
    );
    assert!(
        !log.contains("fleetpw") && !log.contains("wrong\""),
        "no password in the log"
    );
}

/// Waits until every proxy's writer has written through it after `since_ms`.
async fn await_acks_after(writers: &Writers, proxies: &[&Proxy], since_ms: u64) {
    within(LIMIT, "writes through every proxy", async {
        loop {
            let acks = writers.acks();
            if proxies
                .iter()
                .all(|p| acks.iter().any(|a| a.proxy == p.name && a.at_ms > since_ms))
            {
                return;
            }
            poll_pause().await;
        }
    })
    .await
}
