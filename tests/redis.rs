//! Role-aware Redis checks against real `redis-server` nodes (a master and two
//! replicas, started once for this binary): the primary pool routes the master, the
//! replica pool the replicas; a promoted replica supersedes the master whose history
//! it continued (the pool moves at once, the old master's sessions close, the alarm
//! is raised until the old one is a replica); `AUTH` with the right password passes, a wrong one fails at L7.
//! With Sentinels (a second set, three `redis-server --sentinel`): the pool routes the
//! master they name (on `/status` too), never a replica promoted by hand; after a planned
//! `SENTINEL FAILOVER` it routes to no master from the start of the failover, then to the promoted node,
//! and closes the old master's sessions; after a `kill -9` and the old master's return
//! as an empty standalone master, the pool keeps the master the Sentinels name. Over TLS
//! (a TLS-only node): the check and the sessions go through; another CA fails at L6.

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use switchyard::app::Running;
use switchyard::health::Status;
use switchyard_lab::redis::RedisSet;
use switchyard_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

fn config(set: &RedisSet, check_extra: &str) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\n[check]\nkind = \"redis\"\n{check_extra}\
         interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n"
    );
    let mut names = Vec::new();
    for i in 0..3 {
        text += &format!("[backends.r{}]\naddress = \"{}\"\n\n", i + 1, set.addr(i));
        names.push(format!("\"r{}\"", i + 1));
    }
    let names = names.join(", ");
    text += &format!("[pools.writer]\nbackends = [{names}]\nrole = \"primary\"\nhold_timeout = \"10s\"\n\n");
    text += &format!(
        "[pools.reader]\nbackends = [{names}]\nrole = \"replica\"\npolicy = \"round-robin\"\n\
         max_replication_lag_bytes = 4096\n\n"
    );
    text += "[listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n\n\
             [listeners.reader]\nlisten = \"127.0.0.1:0\"\npool = \"reader\"\n";
    text
}

/// One command on `stream`; the reply's first line.
async fn ask(stream: &mut TcpStream, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request += &format!("${}\r\n{a}\r\n", a.len());
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within(LIMIT, "a Redis reply", stream.read(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// The port of the node a new session through `listener` reaches.
async fn who(listener: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(listener).await.unwrap();
    stream.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n").await.unwrap();
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 8192];
    while !String::from_utf8_lossy(&reply).contains("tcp_port:") {
        let n = within(LIMIT, "INFO server", stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed");
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let port = text
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("tcp_port:"))
        .unwrap()
        .to_string();
    (stream, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_roles_failover_and_auth() {
    let set = tokio::task::spawn_blocking(|| RedisSet::start(3))
        .await
        .unwrap()
        .expect("redis nodes start");
    let proxy = proxy(&config(&set, "")).await;
    roles_and_a_replicaof_flip(&proxy, &set).await;
    proxy.shutdown().await;
    auth(&set).await;
    blocking(|| drop(set));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_name_the_master() {
    let mut set = tokio::task::spawn_blocking(|| -> anyhow::Result<RedisSet> {
        let mut set = RedisSet::start(3)?;
        set.start_sentinels(3)?;
        Ok(set)
    })
    .await
    .unwrap()
    .expect("redis nodes and sentinels start");
    let sentinels: Vec<String> = (0..3).map(|j| format!("\"{}\"", set.sentinel_addr(j))).collect();
    let text = config(&set, "").replacen(
        "\n[pools.reader]",
        &format!(
            "[pools.writer.sentinel]\nsentinels = [{}]\nmaster_name = \"{}\"\n\n[pools.reader]",
            sentinels.join(", "),
            switchyard_lab::redis::MASTER_NAME
        ),
        1,
    );
    let proxy = proxy(&text).await;
    await_pool(&proxy, "writer", &["r1"]).await;
    let word = pool_status(&status_json(&proxy).await, "writer")["sentinel"].clone();
    assert_eq!(word["master"], serde_json::json!(set.addr(0).to_string()), "{word}");
    let writer = proxy.listener("writer").unwrap();
    let (mut old, _) = who(writer).await;
    assert_eq!(ask(&mut old, &["SET", "k", "1"]).await, "+OK");

    // A replica promoted by hand continues r1's history, so r1 is superseded; but the
    // Sentinels do not name r2: no master at all until r2 is a replica again.
    blocking(|| set.promote(1)).unwrap();
    await_pool(&proxy, "writer", &[]).await;
    assert_eq!(
        await_status(&proxy, "r2", Status::Up).await.role,
        switchyard::health::Role::Primary
    );
    blocking(|| set.replicate(1, 0)).unwrap();
    await_pool(&proxy, "writer", &["r1"]).await;
    let (mut old, _) = who(writer).await;

    // Planned: the pool follows the Sentinels to the promoted node; the old master's
    // session is closed (it stays a writable master for seconds).
    blocking(|| set.sentinel_cli(0, &["SENTINEL", "FAILOVER", switchyard_lab::redis::MASTER_NAME])).unwrap();
    let named = within(LIMIT, "the Sentinels to name another master", async {
        loop {
            match blocking(|| set.sentinel_master()) {
                Ok(i) if i != 0 => return i,
                _ => poll_pause().await,
            }
        }
    })
    .await;
    let name = format!("r{}", named + 1);
    await_pool(&proxy, "writer", &[&name]).await;
    closes(&mut old, "the old master's session to be closed").await;
    let (mut new, port) = who(writer).await;
    assert_eq!(port, set.addr(named).port().to_string());
    assert_eq!(ask(&mut new, &["SET", "k", "2"]).await, "+OK");
    let (_, events) = http_get(proxy.admin().unwrap(), "/events").await;
    assert!(
        events.contains("the Sentinels name"),
        "a sentinel event on the timeline: {events}"
    );
    // From the start of the failover until the promotion the pool had no master.
    assert!(
        events.contains("started a failover"),
        "the failover on the timeline: {events}"
    );

    // kill -9 of that master: the Sentinels fail over; then it comes back empty,
    // claiming master with a history of its own: the pool keeps the named master.
    blocking(|| set.kill9(named)).unwrap();
    let next = within(LIMIT, "a failover after the kill", async {
        loop {
            match blocking(|| set.sentinel_master()) {
                Ok(i) if i != named => return i,
                _ => poll_pause().await,
            }
        }
    })
    .await;
    await_pool(&proxy, "writer", &[&format!("r{}", next + 1)]).await;
    blocking(|| set.restart_empty(named)).unwrap();
    let back = format!("r{}", named + 1);
    within(LIMIT, "the returned node to claim master", async {
        while await_status(&proxy, &back, Status::Up).await.role != switchyard::health::Role::Primary {
            poll_pause().await;
        }
    })
    .await;
    let id = proxy.pool("writer").unwrap();
    assert_eq!(
        proxy.routing().load().routable_names(id),
        [format!("r{}", next + 1)],
        "the named master stays"
    );
    proxy.shutdown().await;
    blocking(|| drop(set));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_node_for_checks_and_sessions() {
    let dir = switchyard_lab::system::temp_dir("sy-redis-tls-certs").unwrap();
    let ca = switchyard_lab::tls::Ca::new("lab redis CA").unwrap();
    let ca_file = ca.write(&dir, "ca.pem").unwrap();
    let server = ca.server(&["localhost"]).unwrap().write(&dir, "redis").unwrap();
    let (cert, key) = (server.cert.clone(), server.key.clone());
    let set = tokio::task::spawn_blocking(move || RedisSet::start_tls(&ca_file, &cert, &key))
        .await
        .unwrap()
        .expect("a TLS redis node starts");
    let other = switchyard_lab::tls::Ca::new("another CA")
        .unwrap()
        .write(&dir, "other.pem")
        .unwrap();
    let text = |ca: &std::path::Path| {
        format!(
            "[shutdown]\ngrace = \"1s\"\n[check]\nkind = \"redis\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n\n\
             [backends.r1]\naddress = \"{}\"\n[backends.r1.tls]\nca = \"{}\"\nserver_name = \"localhost\"\n\n\
             [pools.writer]\nbackends = [\"r1\"]\nrole = \"primary\"\n\n\
             [listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n",
            set.addr(0),
            ca.display()
        )
    };
    let proxy = proxy(&text(&dir.join("ca.pem"))).await;
    let view = await_status(&proxy, "r1", Status::Up).await;
    assert_eq!(view.role, switchyard::health::Role::Primary);
    await_pool(&proxy, "writer", &["r1"]).await;
    // A plain client; the proxy speaks TLS to the node.
    let mut client = TcpStream::connect(proxy.listener("writer").unwrap()).await.unwrap();
    assert_eq!(ask(&mut client, &["SET", "k", "tls"]).await, "+OK");
    assert_eq!(blocking(|| set.cli(0, &["GET", "k"])).unwrap(), "tls");
    proxy.shutdown().await;
    // A node whose certificate another CA signed fails its check at the TLS layer.
    let wrong = support::proxy(&text(&other)).await;
    let down = await_status(&wrong, "r1", Status::Down).await;
    let check = down.last_check.expect("a check ran");
    assert_eq!(check.layer, Some(switchyard::health::Layer::L6), "{:?}", check.error);
    wrong.shutdown().await;
    blocking(|| drop(set));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn roles_and_a_replicaof_flip(proxy: &Running, set: &RedisSet) {
    await_pool(proxy, "writer", &["r1"]).await;
    await_pool(proxy, "reader", &["r2", "r3"]).await;
    let writer = proxy.listener("writer").unwrap();
    let reader = proxy.listener("reader").unwrap();
    let (mut old, port) = who(writer).await;
    assert_eq!(port, set.addr(0).port().to_string(), "writes reach the master");
    assert_eq!(ask(&mut old, &["SET", "k", "1"]).await, "+OK");
    let (mut replica, _) = who(reader).await;
    assert!(ask(&mut replica, &["SET", "k", "2"]).await.starts_with("-READONLY"));

    // r3 cut off from its master (pointed at a port nobody listens on) while the
    // master takes 16 KB: more than 4 KB behind, it leaves the reader pool; linked
    // again, it catches up and returns.
    let nowhere = blocking(switchyard_lab::system::free_port).unwrap();
    blocking(|| set.cli(2, &["REPLICAOF", "127.0.0.1", &nowhere.to_string()])).unwrap();
    let big = "x".repeat(16 * 1024);
    assert_eq!(ask(&mut old, &["SET", "big", &big]).await, "+OK");
    await_pool(proxy, "reader", &["r2"]).await;
    blocking(|| set.replicate(2, 0)).unwrap();
    await_pool(proxy, "reader", &["r2", "r3"]).await;

    // A planned move, as Sentinel makes it: r2 becomes master first; r1 still says
    // master (and takes writes) until it is told. r2 continued r1's history, so r1 is
    // superseded at once: the pool moves and r1's sessions close, with the alarm.
    blocking(|| set.promote(1)).unwrap();
    await_pool(proxy, "writer", &["r2"]).await;
    closes(&mut old, "the superseded master's session to be fenced").await;
    let alarm = pool_status(&status_json(proxy).await, "writer")["alarm"].clone();
    assert!(
        alarm.as_str().is_some_and(|a| a.contains("r1") && a.contains("r2")),
        "{alarm}"
    );
    blocking(|| set.replicate(0, 1)).unwrap();
    blocking(|| set.replicate(2, 1)).unwrap();
    await_pool(proxy, "reader", &["r1", "r3"]).await;
    within(LIMIT, "the alarm to clear", async {
        while !pool_status(&status_json(proxy).await, "writer")["alarm"].is_null() {
            poll_pause().await;
        }
    })
    .await;
    let (mut new, port) = who(writer).await;
    assert_eq!(port, set.addr(1).port().to_string(), "writes reach the new master");
    assert_eq!(ask(&mut new, &["SET", "k", "3"]).await, "+OK");
    let view = await_status(proxy, "r1", Status::Up).await;
    assert_eq!(
        view.report.and_then(|r| r.redis).map(|r| r.replid.len()),
        Some(40),
        "replid reported"
    );
}

async fn auth(set: &RedisSet) {
    blocking(|| set.cli(2, &["CONFIG", "SET", "requirepass", "s3cret"])).unwrap();
    let proxy = proxy(&config(set, "password = \"s3cret\"\n")).await;
    let view = await_status(&proxy, "r3", Status::Up).await;
    assert_eq!(view.role, switchyard::health::Role::Replica);
    let down = await_status(&proxy, "r1", Status::Down).await;
    let error = down.last_check.and_then(|c| c.error).unwrap_or_default();
    assert!(error.contains("authentication failed"), "{error}");
    proxy.shutdown().await;
    let wrong = support::proxy(&config(set, "password = \"wrong\"\n")).await;
    let down = await_status(&wrong, "r3", Status::Down).await;
    let error = down.last_check.and_then(|c| c.error).unwrap_or_default();
    assert!(
        error.contains("authentication failed") && !error.contains("wrong"),
        "{error}"
    );
    wrong.shutdown().await;
}
