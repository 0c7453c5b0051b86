//! `mysql` mode before the login, against a real MariaDB with `max_connect_errors =
//! 10`: a hundred garbage clients through the proxy must not get the proxy's address
//! host-blocked (MariaDB counts a handshake dropped half-way as a connection error,
//! and at ten it refuses that address to everyone, the monitor included).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::*;
use switchyard::health::Status;
use switchyard_lab::mariadb::{Cluster, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);

/// Connects to `to` from `from`, and returns the stream and the first packet's payload.
async fn first_packet(from: IpAddr, to: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = connect_from(from, to).await;
    let mut header = [0u8; 4];
    within(LIMIT, "a first packet", stream.read_exact(&mut header))
        .await
        .unwrap();
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    within(LIMIT, "a first packet", stream.read_exact(&mut payload))
        .await
        .unwrap();
    (stream, payload)
}

/// Whether MariaDB greets a connection from `from` (else it answers 1129, blocked).
async fn greeted(from: IpAddr, to: SocketAddr) -> bool {
    let (_, payload) = first_packet(from, to).await;
    match payload.first() {
        Some(10) => true,
        Some(0xFF) => {
            assert_eq!(u16::from_le_bytes([payload[1], payload[2]]), 1129, "{payload:?}");
            false
        }
        other => panic!("neither a greeting nor an ERR: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_garbage_clients_through_the_proxy_do_not_get_its_address_blocked() {
    let cluster = Cluster::start_with(1, "max_connect_errors = 10\nskip_name_resolve = OFF").expect("MariaDB starts");
    let db = cluster.node(0).addr();
    // MariaDB never blocks 127.0.0.1: the proxy connects from 127.0.0.2 (`source`),
    // the control from 127.0.0.3.
    let (proxy_ip, other): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
    let local: IpAddr = "127.0.0.1".parse().unwrap();

    // The control: twenty handshakes dropped half-way, straight from 127.0.0.3, get
    // that address blocked.
    for _ in 0..20 {
        drop(first_packet(other, db).await);
    }
    assert!(
        !greeted(other, db).await,
        "MariaDB blocks an address after max_connect_errors"
    );

    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\
         [backends.db1]\naddress = \"{db}\"\nsource = \"{proxy_ip}\"\n\
         check = {{ kind = \"mysql\", user = \"{MONITOR_USER}\", password = \"{MONITOR_PASSWORD}\", interval = \"100ms\" }}\n\
         [pools.writer]\nbackends = [\"db1\"]\nrole = \"primary\"\n\
         [listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\nmode = \"mysql\"\nlogin_timeout = \"2s\"\nmax_logins = 16\n"
    );
    let proxy = proxy(&config).await;
    await_status(&proxy, "db1", Status::Up).await;
    let listener = proxy.listener("writer").unwrap();
    // A hundred garbage clients: some close after the greeting, some send garbage,
    // some say nothing until the login timeout.
    let mut silent = Vec::new();
    for i in 0..100 {
        let (mut client, greeting) = first_packet(local, listener).await;
        assert_eq!(greeting.first(), Some(&10), "the proxy relays the greeting");
        match i % 3 {
            0 => drop(client),
            1 => {
                let _ = client.write_all(b"\x05\x00\x00\x01GET /").await;
                drop(client);
            }
            _ => silent.push(client),
        }
    }
    // The silent ones are closed by the login timeout.
    within(LIMIT, "the silent clients to be closed", async {
        for client in &mut silent {
            let mut buf = [0u8; 256];
            while !matches!(client.read(&mut buf).await, Ok(0) | Err(_)) {}
        }
    })
    .await;

    // MariaDB still greets the proxy's address, a real login passes, and the monitor
    // logs in afresh.
    assert!(greeted(proxy_ip, db).await, "the proxy's address is not blocked");
    let mut conn = within(LIMIT, "a login through the proxy", support::mysql::connect(listener))
        .await
        .expect("a real login through the proxy");
    let one: Option<u32> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    drop(conn);
    await_status(&proxy, "db1", Status::Up).await;
    proxy.shutdown().await;
}
