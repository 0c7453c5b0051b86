//! A backend named by a host name that moves, as a managed database's endpoint does
//! at failover: a real DNS server (`dnsmasq`, TTL 1 s) that the test controls, in
//! front of a real MariaDB primary and replica listening on 127.0.0.2 and 127.0.0.3
//! (same port). The test fails the primary over as a managed service does (demote,
//! promote the replica, point the name at it) and checks that the proxy follows: the
//! new address is checked and takes the writes, the old address's session is closed,
//! the move is on the timeline. A name that stops resolving keeps its last address
//! (the failure counted); a name with two addresses is two members, and the role
//! check picks the writable one.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::mysql::{connect, insert};
use support::*;
use switchyard::app::Running;
use switchyard::timeline::EventKind;
use switchyard_lab::dns::DnsServer;
use switchyard_lab::mariadb::{Cluster, Placement, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_test_support as support;

const NAME: &str = "db.lab.test";

fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn config(dns: &DnsServer, port: u16) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\n\
         [dns]\nservers = [\"{}\"]\ntimeout = \"500ms\"\n\n\
         [check]\nkind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n\
         interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n\
         [backends.db]\naddress = \"{NAME}:{port}\"\n\n\
         [pools.writer]\nbackends = [\"db\"]\nrole = \"primary\"\nhold_timeout = \"20s\"\n\n\
         [listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n",
        dns.addr()
    )
}

/// Waits until the writer pool routes exactly one member, `name` at `address`.
async fn await_writer_at(proxy: &Running, name: &str, address: SocketAddr) {
    let id = proxy.pool("writer").unwrap();
    within(
        Duration::from_secs(30),
        &format!("the writer at {address}"),
        proxy.routing().wait_for(|t| {
            let members = t.routable(id);
            members.len() == 1 && members[0].backend.address == address && members[0].backend.name == name
        }),
    )
    .await;
}

async fn metric(proxy: &Running, series: &str) -> f64 {
    let (_, body) = http_get(proxy.admin().unwrap(), "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_host_name_moves_the_writer() {
    let (mut dns, cluster) = tokio::task::spawn_blocking(|| -> anyhow::Result<(DnsServer, Cluster)> {
        let mut dns = DnsServer::start(1)?;
        let placement = Placement {
            spread: vec![ip("127.0.0.2"), ip("127.0.0.3")],
            ..Placement::default()
        };
        let cluster = Cluster::start_placed(2, "", placement)?;
        dns.set(NAME, &[ip("127.0.0.2")])?;
        Ok((dns, cluster))
    })
    .await
    .unwrap()
    .expect("dnsmasq and MariaDB start");
    let (old_addr, new_addr) = (cluster.node(0).addr(), cluster.node(1).addr());
    assert_eq!(old_addr.port(), new_addr.port());
    let proxy = proxy(&config(&dns, old_addr.port())).await;
    await_writer_at(&proxy, "db", old_addr).await;
    let mut old = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(insert(&mut old, "before").await.unwrap(), 1);

    // The managed failover: demote, promote, then the name moves.
    blocking(|| -> anyhow::Result<()> {
        cluster.sql(0, "SET GLOBAL read_only=1")?;
        cluster.wait_caught_up(1, 0)?;
        cluster.promote(1)
    })
    .unwrap();
    await_pool(&proxy, "writer", &[]).await;
    blocking(|| dns.set(NAME, &[ip("127.0.0.3")])).unwrap();
    let moved = Instant::now();
    await_writer_at(&proxy, "db", new_addr).await;
    eprintln!(
        "MEASURED record moved -> writer routed at the new address: {:?}",
        moved.elapsed()
    );
    let mut new = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(insert(&mut new, "after").await.unwrap(), 2);
    within(Duration::from_secs(10), "the old address's session to close", async {
        while old.query_drop("SELECT 1").await.is_ok() {
            poll_pause().await;
        }
    })
    .await;
    let event = proxy
        .timeline()
        .wait_for_event(|events| events.iter().find(|e| e.kind == EventKind::Dns).cloned())
        .await;
    assert_eq!(event.backend.as_deref(), Some("db"));
    assert!(event.detail.contains(&new_addr.to_string()), "{}", event.detail);
    assert!(metric(&proxy, "switchyard_dns_changes_total{backend=\"db\"}").await >= 1.0);

    // The name stops resolving: the last address stays, the failures are counted.
    blocking(|| dns.set(NAME, &[])).unwrap();
    let errors = "switchyard_dns_lookups_total{backend=\"db\",outcome=\"error\"}";
    within(Duration::from_secs(20), "a failed lookup to be counted", async {
        while metric(&proxy, errors).await < 2.0 {
            poll_pause().await;
        }
    })
    .await;
    // The last answer is kept.
    await_writer_at(&proxy, "db", new_addr).await;
    assert_eq!(insert(&mut new, "while-unresolvable").await.unwrap(), 2);

    // Two addresses: two members; the role check routes the writable one only.
    blocking(|| dns.set(NAME, &[ip("127.0.0.2"), ip("127.0.0.3")])).unwrap();
    await_writer_at(&proxy, &format!("db@{new_addr}"), new_addr).await;
    let status = status_json(&proxy).await;
    let names: Vec<&str> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names, [format!("db@{old_addr}"), format!("db@{new_addr}")]);
    let mut fresh = connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(insert(&mut fresh, "two-records").await.unwrap(), 2);

    for conn in [new, fresh] {
        let _ = conn.disconnect().await;
    }
    proxy.shutdown().await;
    blocking(|| drop((dns, cluster)));
}
