//! The PROXY protocol against real peers. In: HAProxy with `send-proxy-v2` in front
//! of a listener with `accept_proxy`, and what the listener does with untrusted,
//! malformed and late headers. Out: `send_proxy` v1 and v2 to a real MariaDB with
//! `proxy_protocol_networks` (it then sees the real client: `USER()` names it, and
//! handshakes a client drops no longer count against the proxy's address), in `tcp`
//! and `mysql` mode, and to nginx with `listen … proxy_protocol` for HTTP. The
//! checks of those backends send LOCAL (v2) and UNKNOWN (v1) headers, which both
//! servers accept. Clients bind their own loopback addresses (127.0.0.5 and up) so
//! the address the far end reports tells them apart from the proxy's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::*;
use switchyard::health::Status;
use switchyard::protocol::proxy_header::{encode, Version};
use switchyard_lab::daemon::Daemon;
use switchyard_lab::mariadb::{Cluster, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_lab::system;
use switchyard_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// `SELECT USER()` through `to`, from the loopback address `from`: mysql_async
/// cannot choose its source address, so it talks to a one-connection relay that
/// connects to `to` from `from`.
async fn user_seen(from: &str, to: SocketAddr) -> String {
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let from = ip(from);
    tokio::spawn(async move {
        let (mut client, _) = relay.accept().await.unwrap();
        let mut upstream = connect_from(from, to).await;
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    let seen = async {
        let mut conn = support::mysql::connect(relay_addr).await?;
        let user: Option<String> = conn.query_first("SELECT USER()").await?;
        let _ = conn.disconnect().await;
        mysql_async::Result::Ok(user.unwrap_or_default())
    };
    within(LIMIT, "SELECT USER() through the proxy", seen)
        .await
        .unwrap_or_else(|e| format!("error: {e}"))
}

/// Connects from `from`, reads MariaDB's first packet (relayed by a `tcp` listener)
/// and drops the connection: a handshake left half-way, a connection error.
async fn garbage_handshake(from: IpAddr, to: SocketAddr) -> Vec<u8> {
    let mut stream = connect_from(from, to).await;
    let mut first = vec![0u8; 4];
    within(LIMIT, "a greeting", stream.read_exact(&mut first))
        .await
        .unwrap();
    let len = u32::from_le_bytes([first[0], first[1], first[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    within(LIMIT, "a greeting", stream.read_exact(&mut payload))
        .await
        .unwrap();
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_and_haproxy_see_the_real_client_through_the_proxy() {
    // The proxy connects from 127.0.0.2 (MariaDB never blocks 127.0.0.1), the only
    // address allowed to send headers.
    let extra = "max_connect_errors = 10\nskip_name_resolve = OFF\nproxy_protocol_networks = 127.0.0.2";
    let cluster = Cluster::start_with(1, extra).expect("MariaDB starts");
    let db = cluster.node(0).addr();
    let check = format!(
        "{{ kind = \"mysql\", user = \"{MONITOR_USER}\", password = \"{MONITOR_PASSWORD}\", interval = \"100ms\" }}"
    );
    let edge_port = system::free_port().unwrap();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\
         [backends.v1]\naddress = \"{db}\"\nsource = \"127.0.0.2\"\nsend_proxy = \"v1\"\ncheck = {check}\n\
         [backends.v2]\naddress = \"{db}\"\nsource = \"127.0.0.2\"\nsend_proxy = \"v2\"\ncheck = {check}\n\
         [backends.plain]\naddress = \"{db}\"\nsource = \"127.0.0.3\"\ncheck = {check}\n\
         [pools.p1]\nbackends = [\"v1\"]\n[pools.p2]\nbackends = [\"v2\"]\n[pools.p3]\nbackends = [\"plain\"]\n\
         [listeners.tcp1]\nlisten = \"127.0.0.1:0\"\npool = \"p1\"\n\
         [listeners.tcp3]\nlisten = \"127.0.0.1:0\"\npool = \"p3\"\n\
         [listeners.mysql2]\nlisten = \"127.0.0.1:0\"\npool = \"p2\"\nmode = \"mysql\"\n\
         [listeners.edge]\nlisten = \"127.0.0.1:{edge_port}\"\npool = \"p1\"\nmode = \"mysql\"\n\
         accept_proxy = \"v2\"\ntrusted_sources = [\"127.0.0.1/32\"]\n"
    );
    let proxy = proxy(&config).await;
    // The checks' LOCAL and UNKNOWN headers pass: both backends come up.
    await_status(&proxy, "v1", Status::Up).await;
    await_status(&proxy, "v2", Status::Up).await;
    let (tcp1, mysql2) = (proxy.listener("tcp1").unwrap(), proxy.listener("mysql2").unwrap());
    assert_eq!(user_seen("127.0.0.5", tcp1).await, "app@127.0.0.5", "v1, tcp mode");
    assert_eq!(
        user_seen("127.0.0.6", mysql2).await,
        "app@127.0.0.6",
        "v2 before the greeting, mysql mode"
    );

    let haproxy_port = system::free_port().unwrap();
    let haproxy_addr: SocketAddr = format!("127.0.0.1:{haproxy_port}").parse().unwrap();
    let haproxy = tokio::task::spawn_blocking(move || {
        let cfg = format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             listen edge\n    bind {haproxy_addr}\n    server sy 127.0.0.1:{edge_port} send-proxy-v2\n"
        );
        Daemon::haproxy(&cfg, haproxy_addr).expect("HAProxy starts")
    })
    .await
    .unwrap();
    assert_eq!(
        user_seen("127.0.0.8", haproxy_addr).await,
        "app@127.0.0.8",
        "HAProxy's v2 header in, ours out: {}",
        haproxy.log()
    );

    // Thirty handshakes dropped half-way from 127.0.0.9, through each tcp listener:
    // without a header (from 127.0.0.3) they are the proxy's own connection errors and
    // MariaDB blocks the proxy's address for every client (1129); with one they are
    // not, and the proxy's address keeps working for everyone else.
    let tcp3 = proxy.listener("tcp3").unwrap();
    for listener in [tcp1, tcp3] {
        for _ in 0..30 {
            garbage_handshake(ip("127.0.0.9"), listener).await;
        }
    }
    let control = garbage_handshake(ip("127.0.0.5"), tcp3).await;
    assert_eq!(
        control.first(),
        Some(&0xff),
        "without a header the proxy's address is blocked: {control:?}"
    );
    assert_eq!(u16::from_le_bytes([control[1], control[2]]), 1129);
    assert_eq!(
        garbage_handshake(ip("127.0.0.5"), tcp1).await.first(),
        Some(&10),
        "greeted"
    );
    assert_eq!(
        user_seen("127.0.0.5", tcp1).await,
        "app@127.0.0.5",
        "others still log in"
    );
    // A check that started after the flood still logs in.
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let mut view = proxy.backend("v1").unwrap().watch_view();
    let fresh = within(LIMIT, "a check after the flood", async {
        view.wait_for(|v| v.last_check.as_ref().is_some_and(|c| c.at_unix_ms > after + 100))
            .await
            .unwrap()
            .clone()
    })
    .await;
    assert!(
        fresh.last_check.as_ref().is_some_and(|c| c.ok),
        "the monitor still logs in: {fresh:?}"
    );
    drop(haproxy);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sees_the_real_client_in_both_versions() {
    let port = system::free_port().unwrap();
    let nginx_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let nginx = tokio::task::spawn_blocking(move || {
        let http = format!(
            "server {{\n listen {nginx_addr} proxy_protocol;\n location / {{ return 200 \"$proxy_protocol_addr\"; }}\n}}"
        );
        Daemon::nginx(&http, nginx_addr).expect("nginx starts")
    })
    .await
    .unwrap();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[check]\nkind = \"http\"\ninterval = \"100ms\"\n\
         [backends.v1]\naddress = \"{nginx_addr}\"\nsend_proxy = \"v1\"\n\
         [backends.v2]\naddress = \"{nginx_addr}\"\nsend_proxy = \"v2\"\n\
         [pools.p1]\nbackends = [\"v1\"]\n[pools.p2]\nbackends = [\"v2\"]\n\
         [listeners.l1]\nlisten = \"127.0.0.1:0\"\npool = \"p1\"\n\
         [listeners.l2]\nlisten = \"127.0.0.1:0\"\npool = \"p2\"\n"
    );
    let proxy = proxy(&config).await;
    await_status(&proxy, "v1", Status::Up).await;
    await_status(&proxy, "v2", Status::Up).await;
    for (listener, from) in [("l1", "127.0.0.6"), ("l2", "127.0.0.7")] {
        let mut stream = connect_from(ip(from), proxy.listener(listener).unwrap()).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        within(LIMIT, "nginx's answer", stream.read_to_string(&mut response))
            .await
            .unwrap();
        assert!(response.ends_with(from), "{listener}: {response:?}\n{}", nginx.log());
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn untrusted_malformed_and_late_headers_close_the_connection_and_are_counted() {
    let echo = Server::start(Behavior::Echo("backend")).await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[backends.b]\naddress = \"{}\"\n[pools.p]\nbackends = [\"b\"]\n\
         [listeners.l]\nlisten = \"127.0.0.1:0\"\npool = \"p\"\naccept_proxy = \"any\"\n\
         trusted_sources = [\"127.0.0.1\", \"10.0.0.0/8\"]\nproxy_timeout = \"300ms\"\n",
        echo.addr
    );
    let proxy = proxy(&config).await;
    await_status(&proxy, "b", Status::Up).await;
    let listener = proxy.listener("l").unwrap();

    let mut untrusted = connect_from(ip("127.0.0.9"), listener).await;
    // The proxy may close before this arrives: the write's outcome is not the point.
    let _ = untrusted.write_all(&encode(Version::V1, None)).await;
    closes(&mut untrusted, "a client outside trusted_sources").await;
    let mut garbage = TcpStream::connect(listener).await.unwrap();
    let _ = garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    closes(&mut garbage, "a client without a header").await;
    let mut silent = TcpStream::connect(listener).await.unwrap();
    closes(&mut silent, "a client whose header never comes").await;
    for reason in ["untrusted", "malformed", "timeout"] {
        let series = format!("switchyard_proxy_headers_refused_total{{listener=\"l\",reason=\"{reason}\"}}");
        await_metric(&proxy, &series, 1.0).await;
    }

    // A v2 header split over writes, then the client's bytes: served.
    let header = encode(
        Version::V2,
        Some(("192.0.2.7:4000".parse().unwrap(), "198.51.100.1:80".parse().unwrap())),
    );
    let mut client = TcpStream::connect(listener).await.unwrap();
    client.write_all(&header[..7]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.write_all(&header[7..]).await.unwrap();
    assert_eq!(read_line(&mut client).await, "backend");
    client.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line(&mut client).await, "ping");
    drop(client);
    proxy.shutdown().await;
}
