//! `switchyard-drill record-corpus`: seeds for the fuzz targets, recorded from the real peers
//! the tests run — a lab MariaDB (greeting, login replies, the monitor query's
//! result sets, a refusal), the scripted MongoDB members and SecantusDB (`hello`
//! replies), Python's HTTP server (response heads), the lab CA's certificates
//! (DER) and HAProxy's PROXY protocol headers (v1, v2, v2 with TLVs, its checks'
//! LOCAL). Files are named by a hash of their bytes, as libFuzzer names its own.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard::protocol::mysql::{self, monitor, Packet};
use switchyard::protocol::Decode;
use switchyard_lab::mariadb::{Cluster, MONITOR_PASSWORD, MONITOR_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);
/// The monitor's query, as the probe sends it.
const QUERY: &str = "SELECT @@read_only, @@server_id, @@gtid_binlog_pos; SHOW SLAVE STATUS";

/// Records every target's seeds under `out/<target>/`; returns how many files.
pub async fn record(out: &Path) -> Result<usize> {
    let mut corpus = Corpus {
        out: out.to_path_buf(),
        written: 0,
    };
    mysql(&mut corpus).await.context("recording from MariaDB")?;
    mongo(&mut corpus).await.context("recording from the MongoDB peers")?;
    http(&mut corpus).await.context("recording from Python's HTTP server")?;
    der(&mut corpus).context("recording certificates")?;
    proxy_headers(&mut corpus).await.context("recording from HAProxy")?;
    Ok(corpus.written)
}

struct Corpus {
    out: PathBuf,
    written: usize,
}

impl Corpus {
    fn add(&mut self, target: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let path = dir.join(format!("{:016x}", hasher.finish()));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.written += 1;
        Ok(())
    }
}

/// Reads whatever arrives until the peer is quiet for 300 ms.
async fn read_quiet(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    all
}

/// Splits a stream of MySQL packets into payloads (the `mysql` listener's framing).
fn payloads(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Decode::Done((packet, used)) = mysql::decode(stream) {
        out.push(packet.payload);
        stream = &stream[used..];
    }
    out
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    Packet {
        seq,
        payload: payload.to_vec(),
    }
    .encode()
}

/// One monitor login and query against `addr` with `password`; every server byte is a
/// seed (the whole stream for the framing target, each payload for the decoders).
async fn mysql_session(corpus: &mut Corpus, addr: SocketAddr, password: &str) -> Result<()> {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
    let greeting_bytes = read_quiet(&mut stream).await;
    let Some(greeting) = payloads(&greeting_bytes).into_iter().next() else {
        bail!("no greeting from {addr}");
    };
    let nonce = match monitor::greeting(&greeting) {
        Ok(Ok(g)) => g.nonce,
        other => bail!("not a greeting from {addr}: {other:?}"),
    };
    let scramble = switchyard::protocol::mysql::scramble::scramble_native(&nonce, password.as_bytes());
    let response = monitor::handshake_response(MONITOR_USER, &scramble, "mysql_native_password", false);
    stream.write_all(&packet(1, &response)).await?;
    let login = read_quiet(&mut stream).await;
    stream.write_all(&packet(0, &monitor::com_query(QUERY))).await?;
    let results = read_quiet(&mut stream).await;
    for stream_bytes in [&greeting_bytes, &login, &results] {
        corpus.add("mysql_packets", stream_bytes)?;
        for payload in payloads(stream_bytes) {
            corpus.add("mysql_monitor", &payload)?;
        }
    }
    // What the `mysql` listener sees from a client: the response itself.
    corpus.add("mysql_packets", &packet(1, &response))?;
    Ok(())
}

async fn mysql(corpus: &mut Corpus) -> Result<()> {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(2)).await??;
    for node in cluster.nodes() {
        mysql_session(corpus, node.addr(), MONITOR_PASSWORD).await?;
    }
    // A refused login: the ERR packet.
    mysql_session(corpus, cluster.node(0).addr(), "wrong").await?;
    Ok(())
}

async fn hello(corpus: &mut Corpus, addr: SocketAddr) -> Result<()> {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
    let hello = bson::doc! { "hello": 1, "$db": "admin" };
    stream
        .write_all(&switchyard::protocol::mongo::encode_op_msg(1, &hello))
        .await?;
    let reply = read_quiet(&mut stream).await;
    if reply.is_empty() {
        bail!("no hello reply from {addr}");
    }
    corpus.add("mongo_op_msg", &reply)
}

async fn mongo(corpus: &mut Corpus) -> Result<()> {
    let set = tokio::task::spawn_blocking(|| switchyard_lab::mongo::ReplicaSet::start(3, "rs0")).await??;
    for i in 0..set.len() {
        hello(corpus, set.addr(i)).await?;
    }
    let secantus = tokio::task::spawn_blocking(switchyard_lab::mongo::Secantus::start).await??;
    hello(corpus, secantus.addr()).await
}

async fn http(corpus: &mut Corpus) -> Result<()> {
    let port = switchyard_lab::system::free_port()?;
    let python = switchyard_lab::python::python()?;
    let dir = switchyard_lab::system::temp_dir("sy-corpus-http")?;
    std::fs::write(dir.join("index.html"), "<p>ok</p>\n")?;
    let mut server = tokio::process::Command::new(python)
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + WAIT;
    for path in ["/", "/missing", "/index.html"] {
        let mut stream = loop {
            match TcpStream::connect(addr).await {
                Ok(stream) => break stream,
                Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(e).context("Python's HTTP server did not start"),
            }
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        corpus.add("http_head", &read_quiet(&mut stream).await)?;
    }
    server.kill().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn der(corpus: &mut Corpus) -> Result<()> {
    let ca = switchyard_lab::tls::Ca::new("corpus CA")?;
    let server = ca.server(&["db1.internal", "127.0.0.1"])?;
    let client = ca.client("monitor")?;
    for pem in [&ca.pem, &server.cert_pem, &client.cert_pem] {
        corpus.add("der", &pem_to_der(pem)?)?;
    }
    Ok(())
}

/// The first PEM block's bytes.
fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

/// What HAProxy sends a server before the client's bytes: `send-proxy`,
/// `send-proxy-v2`, v2 with the CRC32C and unique-id TLVs, v1 over IPv6, and the v2
/// LOCAL header of its checks; and the headers switchyard itself encodes.
async fn proxy_headers(corpus: &mut Corpus) -> Result<()> {
    use switchyard::protocol::proxy_header::{encode, Version};
    let capture = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target = capture.local_addr()?;
    let port = || switchyard_lab::system::free_port();
    let fronts: Vec<SocketAddr> = vec![
        SocketAddr::from(([127, 0, 0, 1], port()?)),
        SocketAddr::from(([127, 0, 0, 1], port()?)),
        SocketAddr::from(([127, 0, 0, 1], port()?)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port()?)),
    ];
    let config = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n\
         listen v1\n    bind {}\n    server s {target} send-proxy\n\
         listen v2\n    bind {}\n    server s {target} send-proxy-v2 check check-send-proxy inter 500ms\n\
         listen v2tlv\n    bind {}\n    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt\n\
         \x20   server s {target} send-proxy-v2 proxy-v2-options crc32c,unique-id\n\
         listen v1six\n    bind {}\n    server s {target} send-proxy\n",
        fronts[0], fronts[1], fronts[2], fronts[3]
    );
    let ready = fronts[0];
    let haproxy =
        tokio::task::spawn_blocking(move || switchyard_lab::daemon::Daemon::haproxy(&config, ready)).await??;
    // Three seconds of connections: the four clients' and a few checks' (every 500 ms).
    let collector = tokio::spawn(async move {
        let (mut seen, until) = (Vec::new(), tokio::time::Instant::now() + Duration::from_secs(3));
        while let Ok(Ok((mut stream, _))) = tokio::time::timeout_at(until, capture.accept()).await {
            seen.push(read_quiet(&mut stream).await);
        }
        seen
    });
    let mut clients = Vec::new();
    for front in &fronts {
        let mut client = tokio::time::timeout(WAIT, TcpStream::connect(front)).await??;
        client.write_all(b"hello\r\n").await?;
        clients.push(client);
    }
    let seen = collector.await?;
    drop(clients);
    drop(haproxy);
    if seen.len() < fronts.len() {
        bail!("HAProxy forwarded {} of {} connections", seen.len(), fronts.len());
    }
    for bytes in &seen {
        corpus.add("proxy_header", bytes)?;
    }
    let ours = Some((
        SocketAddr::from(([192, 0, 2, 7], 50000)),
        SocketAddr::from(([198, 51, 100, 1], 3306)),
    ));
    for version in [Version::V1, Version::V2] {
        corpus.add("proxy_header", &encode(version, ours))?;
        corpus.add("proxy_header", &encode(version, None))?;
    }
    Ok(())
}
