//! Hostile peers against the proxy as its own process: whatever a backend answers
//! costs that backend a failed check, never the process, and leaves no descriptor
//! behind. Each test ends with the proxy alive, still proxying another pool, and back
//! to the descriptors it held before the hostile rounds that followed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey};
use support::process::Spawned;
use support::*;
use switchyard_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const LIMIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "monitor-secret";

/// Writes one MySQL packet.
async fn packet(stream: &mut TcpStream, seq: u8, payload: &[u8]) {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    let _ = stream.write_all(&out).await;
}

/// Reads one MySQL packet's sequence id and payload (`None` at end of stream).
async fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.ok()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((header[3], payload))
}

const NONCE: &[u8; 20] = b"abcdefghijklmnopqrst";

/// A MySQL 8-like greeting offering `plugin`, with [`NONCE`].
fn greeting(plugin: &str) -> Vec<u8> {
    let mut g = vec![10];
    g.extend_from_slice(b"8.0.40-hostile\0");
    g.extend_from_slice(&7u32.to_le_bytes());
    g.extend_from_slice(&NONCE[..8]);
    g.push(0);
    g.extend_from_slice(&0xF7FFu16.to_le_bytes()); // 4.1, secure connection, no TLS
    g.push(0x21);
    g.extend_from_slice(&2u16.to_le_bytes());
    g.extend_from_slice(&0x000Fu16.to_le_bytes()); // multi statements/results, plugin auth
    g.push(21);
    g.extend_from_slice(&[0; 10]);
    g.extend_from_slice(&NONCE[8..]);
    g.push(0);
    g.extend_from_slice(plugin.as_bytes());
    g.push(0);
    g
}

fn ok_packet(status: u16) -> Vec<u8> {
    let mut ok = vec![0, 0, 0];
    ok.extend_from_slice(&status.to_le_bytes());
    ok.extend_from_slice(&[0, 0]);
    ok
}

fn column(name: &str) -> Vec<u8> {
    let mut def = Vec::new();
    for part in ["def", "", "", "", name, name] {
        def.push(part.len() as u8);
        def.extend_from_slice(part.as_bytes());
    }
    def.extend_from_slice(&[0x0c, 0x21, 0, 0x40, 0, 0, 0, 0xFD, 0, 0, 0, 0, 0]);
    def
}

/// Answers the monitor's query: writable, server id 7, and no replica status.
async fn answer_monitor_query(stream: &mut TcpStream) {
    let names = ["@@read_only", "@@server_id", "@@gtid_binlog_pos"];
    let mut seq = 1;
    let mut send = |payload: Vec<u8>| {
        let s = seq;
        seq += 1;
        (s, payload)
    };
    let mut out = vec![send(vec![names.len() as u8])];
    out.extend(names.iter().map(|n| send(column(n))));
    out.push(send(vec![0xFE, 0, 0, 0x02, 0]));
    out.push(send(vec![1, b'0', 1, b'7', 5, b'0', b'-', b'7', b'-', b'1']));
    out.push(send(vec![0xFE, 0, 0, 0x0A, 0])); // more results follow
    out.push(send(ok_packet(0x0002)));
    for (seq, payload) in out {
        packet(stream, seq, &payload).await;
    }
}

/// A scripted peer on a loopback port: `conversation` runs once per connection.
async fn peer<F, Fut>(conversation: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(conversation(stream));
        }
    });
    addr
}

/// What a scripted MySQL server received after its request for full authentication.
type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// A caching_sha2 server that always asks for full authentication. Asked for its
/// key (0x02), it sends `offered`; the next packet, decrypted with `private` (when it
/// has one) and un-XORed, must be the password for the login to pass.
async fn full_auth_server(offered: Vec<u8>, private: Option<RsaPrivateKey>) -> (SocketAddr, Received) {
    let received = Received::default();
    let log = received.clone();
    let addr = peer(move |mut stream| {
        let (offered, private, log) = (offered.clone(), private.clone(), log.clone());
        async move {
            packet(&mut stream, 0, &greeting("caching_sha2_password")).await;
            let Some((seq, _response)) = read_packet(&mut stream).await else {
                return;
            };
            packet(&mut stream, seq + 1, &[0x01, 0x04]).await;
            let Some((mut seq, mut answer)) = read_packet(&mut stream).await else {
                return;
            };
            log.lock().unwrap().push(answer.clone());
            if answer == [0x02] {
                let mut key = vec![0x01];
                key.extend_from_slice(&offered);
                packet(&mut stream, seq + 1, &key).await;
                let Some(next) = read_packet(&mut stream).await else {
                    return;
                };
                (seq, answer) = next;
                log.lock().unwrap().push(answer.clone());
            }
            let password = private.and_then(|key| key.decrypt(Oaep::new::<sha1::Sha1>(), &answer).ok());
            let password: Option<Vec<u8>> =
                password.map(|p| p.iter().zip(NONCE.iter().cycle()).map(|(a, b)| a ^ b).collect());
            if password.as_deref() != Some(format!("{PASSWORD}\0").as_bytes()) {
                let mut err = vec![0xFF, 0x15, 0x04, b'#'];
                err.extend_from_slice(b"28000Access denied");
                packet(&mut stream, seq + 1, &err).await;
                return;
            }
            packet(&mut stream, seq + 1, &ok_packet(0x0002)).await;
            while read_packet(&mut stream).await.is_some() {
                answer_monitor_query(&mut stream).await;
            }
        }
    })
    .await;
    (addr, received)
}

/// A server that logs anyone in, then answers every query with a result set of
/// 2^64 - 1 columns (mysql_async once tried to allocate them, and panicked).
async fn huge_column_count_server() -> SocketAddr {
    peer(|mut stream| async move {
        packet(&mut stream, 0, &greeting("mysql_native_password")).await;
        read_packet(&mut stream).await;
        packet(&mut stream, 2, &ok_packet(0x0002)).await;
        while read_packet(&mut stream).await.is_some() {
            packet(&mut stream, 1, &[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).await;
        }
    })
    .await
}

/// A MongoDB member that answers every message with a document nested 12,000 deep
/// (bson's recursive parser once overflowed the stack on it).
async fn deep_hello_member() -> SocketAddr {
    peer(|mut stream| async move {
        loop {
            let mut len = [0u8; 4];
            if stream.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut rest = vec![0u8; (u32::from_le_bytes(len) as usize).saturating_sub(4)];
            if stream.read_exact(&mut rest).await.is_err() {
                return;
            }
            let request_id = i32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let body = nested(12_000);
            let mut reply = Vec::new();
            reply.extend_from_slice(&((16 + 5 + body.len()) as u32).to_le_bytes());
            reply.extend_from_slice(&1i32.to_le_bytes());
            reply.extend_from_slice(&request_id.to_le_bytes());
            reply.extend_from_slice(&2013i32.to_le_bytes());
            reply.extend_from_slice(&0u32.to_le_bytes());
            reply.push(0);
            reply.extend_from_slice(&body);
            if stream.write_all(&reply).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// `{"a": {"a": ... {} ...}}`, `depth` levels, as BSON bytes.
fn nested(depth: usize) -> Vec<u8> {
    let mut doc = vec![5, 0, 0, 0, 0];
    for _ in 1..depth {
        let mut outer = vec![0, 0, 0, 0, 3, b'a', 0];
        outer.extend_from_slice(&doc);
        outer.push(0);
        let len = outer.len() as u32;
        outer[..4].copy_from_slice(&len.to_le_bytes());
        doc = outer;
    }
    doc
}

/// A proxy with the hostile backend `bad` (its check table `check`) in a pool of its
/// own, beside an echo pool whose sessions must go on.
async fn proxy_beside(name: &str, bad: SocketAddr, check: &str) -> (Spawned, SocketAddr, Server) {
    let good = Server::start(Behavior::Echo("good")).await;
    let echo = refused_addr();
    let config = format!(
        "[admin]\nlisten = \"{{admin}}\"\n[shutdown]\ngrace = \"1s\"\n\
         [backends.bad]\naddress = \"{bad}\"\ncheck = {{ {check}, interval = \"100ms\", timeout = \"2s\" }}\n\
         [backends.good]\naddress = \"{}\"\ncheck = {{ interval = \"100ms\" }}\n\
         [pools.hostile]\nbackends = [\"bad\"]\n[pools.echo]\nbackends = [\"good\"]\n\
         [listeners.hostile]\nlisten = \"127.0.0.1:0\"\npool = \"hostile\"\n\
         [listeners.echo]\nlisten = \"{}\"\npool = \"echo\"\n",
        good.addr, echo,
    );
    (Spawned::start(BIN, name, &config).await, echo, good)
}

/// The hostile backend is down at L7 with an error containing `says`; then, after
/// five more hostile rounds, the process is alive, holds no more descriptors than
/// before them, and an echo session still passes.
async fn down_at_l7_and_serving(proxy: &mut Spawned, says: &str, echo: SocketAddr) {
    let bad = proxy.await_backend("bad", "down").await;
    assert_eq!(bad["last_check"]["layer"], "L7", "{bad}");
    let error = bad["last_check"]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(says), "the error {error:?} should say {says:?}");
    let baseline = proxy.descriptors();
    let checks = "switchyard_checks_total{backend=\"bad\"}";
    let before = proxy.metric(checks).await;
    within(LIMIT, "five more hostile rounds", async {
        while proxy.metric(checks).await < before + 5.0 {
            poll_pause().await;
        }
    })
    .await;
    assert!(proxy.alive(), "the proxy died:\n{}", proxy.log_text());
    // A probe of each backend (the hostile one and the good one) may be open at the
    // moment of counting, here or when the baseline was taken.
    proxy.await_descriptors_at_most(baseline, 2).await;
    let (session, banner) = within(LIMIT, "an echo session", connect_and_read_banner(echo)).await;
    assert_eq!(banner, "good");
    drop(session);
}

#[tokio::test]
async fn a_mysql_backend_answering_with_2_64_columns_is_down_at_l7_and_the_proxy_serves_on() {
    let hostile = huge_column_count_server().await;
    let check = "kind = \"mysql\", user = \"monitor\", password = \"x\"";
    let (mut proxy, echo, _good) = proxy_beside("columns", hostile, check).await;
    down_at_l7_and_serving(&mut proxy, "column count out of range", echo).await;
}

#[tokio::test]
async fn a_mongo_member_answering_hello_nested_12000_deep_is_down_at_l7_and_the_proxy_serves_on() {
    let hostile = deep_hello_member().await;
    let (mut proxy, echo, _good) = proxy_beside("nested", hostile, "kind = \"mongo\"").await;
    down_at_l7_and_serving(&mut proxy, "nested", echo).await;
}

#[tokio::test]
async fn without_a_pinned_key_full_authentication_over_plaintext_fails_naming_the_option_and_sends_nothing() {
    // The server would answer a key request with garbage (a mysql_common panic once).
    let (hostile, received) = full_auth_server(b"-----BEGIN PUBLIC KEY-----\n!!!\n".to_vec(), None).await;
    let check = format!("kind = \"mysql\", user = \"monitor\", password = \"{PASSWORD}\"");
    let (mut proxy, echo, _good) = proxy_beside("unpinned", hostile, &check).await;
    down_at_l7_and_serving(&mut proxy, "server_public_key", echo).await;
    assert!(
        received.lock().unwrap().is_empty(),
        "after the full-auth request the monitor sent nothing: no key request, no password"
    );
}

#[tokio::test]
async fn with_a_pinned_key_the_password_goes_only_to_the_server_holding_it() {
    let genuine = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let impostor = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = |key: &RsaPrivateKey| key.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let dir = std::env::temp_dir().join(unique(&format!("switchyard-pinned-{}", std::process::id())));
    std::fs::create_dir_all(&dir).unwrap();
    let pinned = dir.join("server.pem");
    std::fs::write(&pinned, pem(&genuine)).unwrap();

    // The impostor offers its own key and holds the matching private key.
    let (fake, received) = full_auth_server(pem(&impostor).into_bytes(), Some(impostor)).await;
    let check = format!(
        "kind = \"mysql\", user = \"monitor\", password = \"{PASSWORD}\", server_public_key = \"{}\"",
        pinned.display()
    );
    let (mut proxy, echo, _good) = proxy_beside("impostor", fake, &check).await;
    down_at_l7_and_serving(&mut proxy, "Access denied", echo).await;
    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty());
    for answer in &received {
        assert_ne!(answer.as_slice(), [0x02], "the monitor never asks for the server's key");
        assert_eq!(
            answer.len(),
            256,
            "ciphertext for the pinned 2048-bit key, nothing else"
        );
    }
    drop(proxy);

    // The genuine server decrypts it, and the backend comes up as the primary.
    let (real, _) = full_auth_server(pem(&genuine).into_bytes(), Some(genuine)).await;
    let (proxy, _, _good) = proxy_beside("genuine", real, &check).await;
    let up = proxy.await_backend("bad", "up").await;
    assert_eq!(up["role"], "primary", "{up}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn three_hundred_clients_under_a_low_descriptor_limit_leave_the_checks_their_reserve() {
    let (backend, good) = (
        Server::start(Behavior::Echo("db")).await,
        Server::start(Behavior::Echo("good")).await,
    );
    let (listen, echo) = (refused_addr(), refused_addr());
    let config = format!(
        "[admin]\nlisten = \"{{admin}}\"\n[shutdown]\ngrace = \"1s\"\n[runtime]\nworkers = 1\n\
         [backends.bad]\naddress = \"{}\"\ncheck = {{ interval = \"100ms\", rise = 1, fall = 1 }}\n\
         [backends.good]\naddress = \"{}\"\ncheck = {{ interval = \"100ms\" }}\n\
         [pools.hostile]\nbackends = [\"bad\"]\n[pools.echo]\nbackends = [\"good\"]\n\
         [listeners.hostile]\nlisten = \"{listen}\"\npool = \"hostile\"\n\
         [listeners.echo]\nlisten = \"{echo}\"\npool = \"echo\"\n",
        backend.addr, good.addr,
    );
    // 300 descriptors: a budget of about 50 sessions after the base and the reserve.
    let mut proxy = Spawned::start_with(BIN, &["prlimit", "--nofile=300:300"], "reserve", &config).await;
    proxy.await_backend("bad", "up").await;
    let flips = proxy.metric("switchyard_flips_total{backend=\"bad\"}").await;
    let baseline = proxy.descriptors();
    let mut clients = Vec::new();
    for _ in 0..300 {
        if let Ok(client) = TcpStream::connect(listen).await {
            clients.push(client);
        }
    }
    let checks = proxy.metric("switchyard_checks_total{backend=\"bad\"}").await;
    within(LIMIT, "ten checks with 300 clients connected", async {
        while proxy.metric("switchyard_checks_total{backend=\"bad\"}").await < checks + 10.0 {
            poll_pause().await;
        }
    })
    .await;
    let held = proxy.descriptors();
    assert!(held < 300, "{held} descriptors");
    let bad = proxy.backend("bad").await;
    assert_eq!(bad["status"], "up", "{bad}");
    assert_eq!(proxy.metric("switchyard_flips_total{backend=\"bad\"}").await, flips);
    assert_eq!(
        proxy
            .metric("switchyard_local_failures_total{resource=\"descriptors\",site=\"check\"}")
            .await,
        0.0
    );
    drop(clients);
    assert!(proxy.alive());
    proxy.await_descriptors_at_most(baseline, 1).await;
    echo_passes(&proxy, echo).await;
}

/// An echo session through the proxy's echo listener passes.
async fn echo_passes(_proxy: &Spawned, echo: SocketAddr) {
    let (session, banner) = within(LIMIT, "an echo session", connect_and_read_banner(echo)).await;
    assert_eq!(banner, "good");
    drop(session);
}

/// Whether the server closed `stream` (EOF or reset), reading whatever it sent first.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn the_admin_port_closes_silent_dripping_and_oversized_clients_and_caps_its_connections() {
    let good = Server::start(Behavior::Echo("good")).await;
    let echo = refused_addr();
    let config = format!(
        "[admin]\nlisten = \"{{admin}}\"\n[shutdown]\ngrace = \"1s\"\n\
         [backends.good]\naddress = \"{}\"\ncheck = {{ interval = \"100ms\" }}\n\
         [pools.echo]\nbackends = [\"good\"]\n[listeners.echo]\nlisten = \"{echo}\"\npool = \"echo\"\n",
        good.addr
    );
    let mut proxy = Spawned::start(BIN, "admin-limits", &config).await;
    let baseline = proxy.descriptors();
    // 150 silent clients, 150 that drip a request head a byte a second.
    let mut silent = Vec::new();
    for _ in 0..150 {
        silent.push(TcpStream::connect(proxy.admin).await.unwrap());
    }
    let mut drippers = Vec::new();
    for _ in 0..150 {
        let mut stream = TcpStream::connect(proxy.admin).await.unwrap();
        stream.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        drippers.push(stream);
    }
    // Each dripper until the server closes it (a write then fails) or 40 bytes.
    let drip = tokio::spawn(async move {
        for _ in 0..40 {
            let mut open = 0;
            for stream in &mut drippers {
                if stream.write_all(b"X").await.is_ok() {
                    open += 1;
                }
            }
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        drippers
    });
    // Every silent client is closed by the server, without a byte from it.
    within(LIMIT, "the silent clients to be closed", async {
        for stream in &mut silent {
            assert!(closed_by_server(stream).await);
        }
    })
    .await;
    let drippers = within(LIMIT, "the drippers", drip).await.unwrap_or_default();
    drop(drippers);
    // Past the cap (64), the rest were closed at once.
    let refused = proxy.metric("switchyard_admin_refused_total").await;
    assert!(refused >= 200.0, "{refused} connections refused past the cap");
    // An oversized head is refused, not buffered.
    let mut big = TcpStream::connect(proxy.admin).await.unwrap();
    let head = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = within(LIMIT, "the oversized request's answer", big.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    drop((silent, big));
    assert!(proxy.alive());
    proxy.await_descriptors_at_most(baseline, 1).await;
    assert_eq!(proxy.backend("good").await["status"], "up");
    echo_passes(&proxy, echo).await;
}

/// A MySQL server whose OK to a login waits for `release`: a login kept under way.
/// `arrived` is notified when a login's handshake response reached it.
async fn slow_login_server(release: Arc<tokio::sync::Notify>, arrived: Arc<tokio::sync::Notify>) -> SocketAddr {
    peer(move |mut stream| {
        let (release, arrived) = (release.clone(), arrived.clone());
        async move {
            packet(&mut stream, 0, &greeting("mysql_native_password")).await;
            let Some((seq, _)) = read_packet(&mut stream).await else {
                return;
            };
            arrived.notify_one();
            release.notified().await;
            packet(&mut stream, seq + 1, &ok_packet(0x0002)).await;
            while read_packet(&mut stream).await.is_some() {}
        }
    })
    .await
}

#[tokio::test]
async fn a_member_fenced_while_a_mysql_login_is_under_way_never_gives_that_client_a_session() {
    let (release, arrived) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let backend = slow_login_server(release.clone(), arrived.clone()).await;
    let listen = refused_addr();
    let config = format!(
        "[admin]\nlisten = \"{{admin}}\"\ntoken = \"t0ken\"\n[shutdown]\ngrace = \"1s\"\n\
         [backends.db]\naddress = \"{backend}\"\ncheck = {{ interval = \"100ms\" }}\n\
         [pools.app]\nbackends = [\"db\"]\non_leave = \"close\"\n\
         [listeners.app]\nlisten = \"{listen}\"\npool = \"app\"\nmode = \"mysql\"\nlogin_timeout = \"20s\"\n"
    );
    let proxy = Spawned::start(BIN, "fenced-login", &config).await;
    proxy.await_backend("db", "up").await;
    let mut client = TcpStream::connect(listen).await.unwrap();
    let greeting = within(LIMIT, "the greeting", read_packet(&mut client)).await.unwrap();
    assert_eq!(greeting.1.first(), Some(&10));
    let response =
        switchyard::protocol::mysql::monitor::handshake_response("app", &[1; 20], "mysql_native_password", false);
    packet(&mut client, 1, &response).await;
    // The login is under way on the backend; the operator disables it meanwhile.
    within(LIMIT, "the login to reach the backend", arrived.notified()).await;
    let mut disabled = (0, String::new());
    within(LIMIT, "the disable", async {
        while disabled.0 != 200 {
            disabled = http_post(proxy.admin, "/backends/db/disable", Some("t0ken")).await;
        }
    })
    .await;
    release.notify_one(); // kept as a permit if the server is not waiting yet
    let (_, answer) = within(LIMIT, "the login's answer", read_packet(&mut client))
        .await
        .unwrap();
    assert_eq!(answer.first(), Some(&0xFF), "an ERR, not the backend's OK: {answer:?}");
    assert_eq!(u16::from_le_bytes([answer[1], answer[2]]), 1927);
    assert!(closed_by_server(&mut client).await);
}
