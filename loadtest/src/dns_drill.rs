//! A managed database's endpoint that moves: `switchyard-drill dns`.
//!
//! Per TTL a fresh lab: `dnsmasq` serving `db.lab.test` with that TTL, and a MariaDB
//! primary and replica on 127.0.0.2 and 127.0.0.3 (one port). Two proxies take the
//! same clients at once:
//!
//! ```text
//! switchyard  a primary pool over the host name (resolve = "ttl"), mysql checks
//!             every 250 ms
//! haproxy     the same name with a `resolvers` section on the same server
//!             (hold valid = the TTL), `check` on a mysql-check login
//! clients     4 writers per target, kept connections (a new one after an error),
//!             each write a transaction on the target's own rows
//! fault       the managed failover: the primary demoted (read_only=1), the replica
//!             promoted once it caught up, then the record moved to it
//! ```
//!
//! Per target it prints `dns scenario=move target=T ttl_s=N recovery_ms=N errors=N
//! acked=N`: from the move of the record to the first write committed after it, and
//! the writes that failed from the demotion on.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use switchyard_lab::dns::DnsServer;
use switchyard_lab::mariadb::{Cluster, Placement, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_lab::system;
use tokio::time::Instant;

use crate::galera_drill::{Write, Writers};

const NAME: &str = "db.lab.test";
const TARGETS: [&str; 2] = ["switchyard", "haproxy"];
/// How long the clients run after the record moved.
const OBSERVE: Duration = Duration::from_secs(10);

/// Runs the move once per TTL of `ttls` (seconds), each in a fresh lab.
pub async fn run(ttls: &[u32], switchyard: &Path) -> Result<()> {
    crate::sysbench::preflight(&[("haproxy", "haproxy")], switchyard, &[], &[])?;
    for &ttl in ttls {
        scenario(ttl, switchyard).await.with_context(|| format!("ttl {ttl}"))?;
    }
    Ok(())
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a literal address")
}

async fn scenario(ttl: u32, switchyard: &Path) -> Result<()> {
    let (dns, cluster) = tokio::task::spawn_blocking(move || -> Result<(DnsServer, Cluster)> {
        let mut dns = DnsServer::start(ttl)?;
        let placement = Placement {
            spread: vec![ip("127.0.0.2"), ip("127.0.0.3")],
            ..Placement::default()
        };
        let cluster = Cluster::start_placed(2, "", placement)?;
        cluster.sql(
            0,
            "CREATE TABLE appdb.hot (id INT PRIMARY KEY, n BIGINT NOT NULL);
             INSERT INTO appdb.hot SELECT seq, 0 FROM test.seq_0_to_15",
        )?;
        cluster.wait_caught_up(1, 0)?;
        dns.set(NAME, &[ip("127.0.0.2")])?;
        Ok((dns, cluster))
    })
    .await??;
    let lab = Arc::new(Mutex::new((dns, cluster)));
    let dir = system::temp_dir("sy-dns-drill")?;
    let fronts = [system::free_port()?, system::free_port()?].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let (sy_conf, ha_conf) = {
        let lab = lab.lock().unwrap();
        let (server, port) = (lab.0.addr(), lab.1.node(0).port);
        (
            switchyard_config(server, port, fronts[0]),
            haproxy_config(server, port, ttl, fronts[1]),
        )
    };
    let _proxies = crate::sysbench::spawn_side_by_side(&dir, switchyard, &sy_conf, &ha_conf)?;
    let writers = Writers::start(&fronts).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let demoted = Instant::now();
    let moved = {
        let lab = lab.clone();
        tokio::task::spawn_blocking(move || -> Result<Instant> {
            let mut lab = lab.lock().unwrap();
            lab.1.sql(0, "SET GLOBAL read_only=1")?;
            lab.1.wait_caught_up(1, 0)?;
            lab.1.promote(1)?;
            let moved = Instant::now();
            lab.0.set(NAME, &[ip("127.0.0.3")])?;
            Ok(moved)
        })
        .await??
    };
    tokio::time::sleep(OBSERVE).await;
    let writes = writers.finish().await;
    for (t, target) in TARGETS.iter().enumerate() {
        let mine: Vec<&Write> = writes.iter().filter(|(i, _)| *i == t).map(|(_, w)| w).collect();
        let first = mine
            .iter()
            .filter(|w| w.op.result.is_ok() && w.op.ended >= moved)
            .map(|w| w.op.ended)
            .min();
        let errors = mine
            .iter()
            .filter(|w| w.op.result.is_err() && w.op.ended >= demoted)
            .count();
        let acked = mine.iter().filter(|w| w.op.result.is_ok()).count();
        println!(
            "dns scenario=move target={target} ttl_s={ttl} recovery_ms={} errors={errors} acked={acked}",
            first.map_or("-".into(), |f| (f - moved).as_millis().to_string())
        );
    }
    drop(lab);
    crate::sysbench::remove_drill_dir(&dir);
    Ok(())
}

fn switchyard_config(server: SocketAddr, port: u16, front: SocketAddr) -> String {
    format!(
        "[shutdown]\ngrace = \"1s\"\n[dns]\nservers = [\"{server}\"]\n\n[check]\nkind = \"mysql\"\n\
         user = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\ninterval = \"250ms\"\n\
         fast_interval = \"100ms\"\ndown_interval = \"250ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 2\n\n\
         [backends.db]\naddress = \"{NAME}:{port}\"\n\n\
         [pools.writer]\nbackends = [\"db\"]\nrole = \"primary\"\nhold_timeout = \"10s\"\n\n\
         [listeners.writer]\nlisten = \"{front}\"\npool = \"writer\"\nmode = \"mysql\"\n"
    )
}

fn haproxy_config(server: SocketAddr, port: u16, ttl: u32, front: SocketAddr) -> String {
    format!(
        "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         resolvers lab\n  nameserver ns1 {server}\n  hold valid {ttl}s\n  hold obsolete 0s\n  resolve_retries 1\n  timeout retry 500ms\n\
         listen db\n  bind {front}\n  option mysql-check user haproxy post-41\n\
         \x20 server db {NAME}:{port} check inter 250ms fall 2 rise 1 resolvers lab init-addr last,libc,none\n"
    )
}
