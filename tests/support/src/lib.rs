//! Test support: small real servers on loopback port-0 addresses, a proxy builder,
//! and a few client helpers. Servers are real sockets; nothing here mocks the proxy.

pub mod fleet;
pub mod load;
pub mod mongo;
pub mod mysql;
pub mod process;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard::app::{self, Running};
use switchyard::backend::BackendView;
use switchyard::config::Config;
use switchyard::health::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// `name` with a suffix no other call in this process returned. The metrics
/// recorder is one per process and its series are keyed by label, so a test that
/// reads a series names its pools, backends and listeners with this, apart from the
/// tests running beside it.
pub fn unique(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    format!("{name}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// How long one exchange with a test server, the proxy or its admin listener may
/// take in the helpers below before the test fails (a hang guard, not a timing).
const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

/// Fails the test if `work` takes longer than `limit`: a safety net against hangs,
/// not a timing assertion.
pub async fn within<T>(limit: Duration, what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// What a test server does with each connection.
#[derive(Clone)]
pub enum Behavior {
    /// Writes `banner\n`, then echoes everything until EOF, then closes.
    Echo(&'static str),
    /// Reads until EOF, then writes `got N bytes, hash H\n` and closes.
    Digest,
    /// Answers `GET /health` with 200 or 503 (by the flag); a client that sends
    /// anything else first gets the banner line, then an echo of all it sends.
    App {
        banner: &'static str,
        healthy: Arc<AtomicBool>,
    },
    /// Accepts and reads, never writes (a wedged application).
    Stalled,
    /// Answers any request with 200 after the given delay (milliseconds, adjustable
    /// while running): a slow application.
    SlowHttp(Arc<std::sync::atomic::AtomicU64>),
}

/// A server on a loopback port; `stop` closes the listener and every connection.
pub struct Server {
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Server {
    pub async fn start(behavior: Behavior) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), behavior).await
    }

    pub async fn start_on(addr: SocketAddr, behavior: Behavior) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind test server");
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            // Dropping this task (stop) drops `connections`, which aborts them all.
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(handle(stream, behavior.clone()));
            }
        });
        Server { addr, tasks }
    }

    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn handle(mut stream: TcpStream, behavior: Behavior) {
    match behavior {
        Behavior::Echo(banner) => {
            let _ = stream.write_all(format!("{banner}\n").as_bytes()).await;
            echo(stream).await;
        }
        Behavior::Digest => {
            let mut hash = Digest::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => hash.update(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(format!("got {} bytes, hash {:x}\n", hash.len, hash.value).as_bytes())
                .await;
        }
        Behavior::App { banner, healthy } => {
            let mut first = [0u8; 4];
            if stream.read_exact(&mut first).await.is_err() {
                return;
            }
            if &first == b"GET " {
                let response: &[u8] = if healthy.load(Ordering::SeqCst) {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsick"
                };
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(response).await;
            } else {
                let _ = stream.write_all(format!("{banner}\n").as_bytes()).await;
                let _ = stream.write_all(&first).await;
                echo(stream).await;
            }
        }
        Behavior::SlowHttp(delay) => {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            tokio::time::sleep(Duration::from_millis(delay.load(Ordering::SeqCst))).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        }
        Behavior::Stalled => {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let (mut read, mut write) = stream.split();
    let _ = tokio::io::copy(&mut read, &mut write).await;
    let _ = write.shutdown().await;
}

/// FNV-1a over a byte stream, with its length.
#[derive(Default)]
pub struct Digest {
    pub len: u64,
    pub value: u64,
}

impl Digest {
    pub fn update(&mut self, bytes: &[u8]) {
        if self.len == 0 {
            self.value = 0xcbf29ce484222325;
        }
        for &b in bytes {
            self.value = (self.value ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        self.len += bytes.len() as u64;
    }
}

/// A loopback address whose accept queue is full, so a new connect hangs (the
/// kernel drops the SYN) instead of being refused. Keep the returned value alive.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

pub fn blackhole() -> Blackhole {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // Backlog 0 still queues one connection (or two); fill it with non-blocking
    // connects until one no longer completes at once.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(stream);
        }
    }
    Blackhole {
        addr,
        _listener: listener,
        _fillers: fillers,
    }
}

/// A loopback address where nothing listens (connects are refused). Its port is below
/// the ephemeral range, so no outgoing connection takes it before a test binds it.
pub fn refused_addr() -> SocketAddr {
    let port = switchyard_lab::system::free_port().expect("a free loopback port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts a proxy from TOML text.
pub async fn proxy(toml: &str) -> Running {
    let config = Config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
    app::start(config).await.expect("proxy starts")
}

/// Connects and reads the first line (a server banner).
pub async fn connect_and_read_banner(addr: SocketAddr) -> (TcpStream, String) {
    let connect = TcpStream::connect(addr);
    let mut stream = within(EXCHANGE_LIMIT, "a connect to the proxy", connect)
        .await
        .expect("connect to proxy");
    let line = read_line(&mut stream).await;
    (stream, line)
}

/// Sends `hello\n` (for [`Behavior::App`], which waits for the client), then reads
/// the banner and the echoed hello.
pub async fn connect_app(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream.write_all(b"hello\n").await.unwrap();
    let banner = read_line(&mut stream).await;
    assert_eq!(read_line(&mut stream).await, "hello");
    (stream, banner)
}

/// A minimal HTTP POST with an optional bearer token; returns the status and body.
pub async fn http_post(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    http_request(addr, "POST", path, token, "").await
}

/// [`http_post`] with a JSON body.
pub async fn http_post_body(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    http_request(addr, "POST", path, token, body).await
}

/// `/status` as JSON.
pub async fn status_json(proxy: &Running) -> serde_json::Value {
    let (code, body) = http_get(proxy.admin().expect("admin listener"), "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status is JSON")
}

/// Waits until backend `name` has `status`.
pub async fn await_status(proxy: &Running, name: &str, status: Status) -> BackendView {
    let mut view = proxy.backend(name).expect("backend exists").watch_view();
    let what = format!("{name} to be {status:?}");
    within(Duration::from_secs(20), &what, async {
        view.wait_for(|v| v.status == status)
            .await
            .expect("router alive")
            .clone()
    })
    .await
}

/// Reads up to and excluding `\n`; an empty string on EOF.
pub async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    within(EXCHANGE_LIMIT, "a line", async {
        while let Ok(1) = stream.read(&mut byte).await {
            if byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
    })
    .await;
    String::from_utf8_lossy(&line).into_owned()
}

/// A minimal HTTP GET; returns the status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, "").await
}

/// A minimal HTTP request (no body) with an optional bearer token; returns the
/// status and body.
async fn http_request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let what = format!("{method} {path} on {addr}");
    let response = within(EXCHANGE_LIMIT, &what, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to admin");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    })
    .await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until the routable backends of pool 0 are exactly `names`.
pub async fn await_routable(proxy: &Running, names: &[&str]) {
    let what = format!("routable = {names:?}");
    within(
        Duration::from_secs(20),
        &what,
        proxy.routing().wait_for(|t| t.routable_names(0) == names),
    )
    .await;
}

/// Waits until the routable backends of the pool named `pool` are exactly `names`.
pub async fn await_pool(proxy: &Running, pool: &str, names: &[&str]) {
    let id = proxy.pool(pool).expect("pool exists");
    let what = format!("pool {pool} routable = {names:?}");
    within(
        Duration::from_secs(30),
        &what,
        proxy.routing().wait_for(|t| t.routable_names(id) == names),
    )
    .await;
}

/// The pause between two looks at state that sends no notification (a child
/// process's port, an HTTP endpoint, a client's retry): polling readiness, not
/// sleeping for a result.
const POLL: Duration = Duration::from_millis(10);

pub async fn poll_pause() {
    tokio::time::sleep(POLL).await;
}

/// Asserts that the peer closes `stream` (EOF or reset) within 30 s.
pub async fn closes(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    let read = within(Duration::from_secs(30), what, stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{what}: {read:?}");
}

/// One pool of a `/status` document, by name.
pub fn pool_status(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_default()
}

/// The value of the sample whose line starts with `series` (name and labels as
/// rendered), or 0 when absent.
pub async fn metric(proxy: &Running, series: &str) -> f64 {
    let (_, text) = http_get(proxy.admin().expect("admin"), "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the sample of `series` is `value` (a gauge or counter the router sets
/// a moment around the routing swap the test awaited).
pub async fn await_metric_is(proxy: &Running, series: &str, value: f64) {
    let what = format!("{series} == {value}");
    within(std::time::Duration::from_secs(20), &what, async {
        while metric(proxy, series).await != value {
            poll_pause().await;
        }
    })
    .await
}

/// Waits until the sample of `series` reaches `at_least` (a counter may be bumped a
/// moment after the connection it counts was closed, on another thread).
pub async fn await_metric(proxy: &Running, series: &str, at_least: f64) -> f64 {
    let what = format!("{series} >= {at_least}");
    within(std::time::Duration::from_secs(20), &what, async {
        loop {
            let value = metric(proxy, series).await;
            if value >= at_least {
                return value;
            }
            poll_pause().await;
        }
    })
    .await
}

/// Connects to `to` from the local address `from` (a loopback address of its own, so
/// the far end tells this client apart from others).
pub async fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    within(Duration::from_secs(30), "a connect", socket.connect(to))
        .await
        .unwrap()
}
