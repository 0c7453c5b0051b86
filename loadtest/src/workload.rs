//! Open-loop clients (MySQL with `mysql_async`, MongoDB with the official driver, raw
//! TCP echo, HTTP/1.1). Each worker has a schedule (`rate` spread over the
//! workers); an operation that starts late because the previous one stalled counts
//! its wait as latency, so a stall shows up as latency, not as silence. Every loop
//! ends by the drill's duration, and every network wait is under [`OP_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use serde::Serialize;
use switchyard_lab::mariadb::{APP_PASSWORD, APP_USER};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};

use crate::scenario::{Workload, WorkloadKind};

/// Connect, write, or read: each under this limit.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

tokio::task_local! {
    /// A workload's own limit per network wait (its `op_timeout`), for its workers.
    static OP_LIMIT: Duration;
}

/// The limit of a network wait in this worker: its workload's `op_timeout`, else
/// [`OP_TIMEOUT`].
fn op_limit() -> Duration {
    OP_LIMIT.try_with(|limit| *limit).unwrap_or(OP_TIMEOUT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Write,
    Read,
}

/// One client operation as the client saw it. Times are milliseconds since the
/// drill started.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub kind: OpKind,
    /// The write's unique id (reads: the id they read back).
    pub id: u64,
    pub worker: u32,
    pub scheduled_ms: f64,
    pub started_ms: f64,
    pub ended_ms: f64,
    /// The `@@server_id` that acknowledged it, or the error's kind.
    pub result: Result<u32, String>,
    /// MySQL: the client address the server saw (through a proxy, the proxy's own),
    /// from `USER()`; which proxy of a pair carried the operation.
    pub via: Option<String>,
}

impl Op {
    /// Latency from the scheduled start (open loop).
    pub fn latency_ms(&self) -> f64 {
        self.ended_ms - self.scheduled_ms
    }
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// A MySQL client's options for the `app` user through `target` (never the unix socket).
pub fn opts(target: SocketAddr) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(target.ip().to_string())
        .tcp_port(target.port())
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some("appdb"))
        // Without this mysql_async reconnects over the server's unix socket and
        // bypasses the proxy under test.
        .prefer_socket(false)
}

/// The error's kind, short enough to count by: a server error code, or the class.
pub fn error_kind(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(e) => format!("mysql {}", e.code),
        mysql_async::Error::Io(_) => "connection lost".into(),
        mysql_async::Error::Driver(_) => "driver".into(),
        other => format!("{other}").chars().take(40).collect(),
    }
}

async fn bounded<T>(work: impl std::future::Future<Output = mysql_async::Result<T>>) -> Result<T, String> {
    match timeout(op_limit(), work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error_kind(&e)),
        Err(_) => Err("timeout".into()),
    }
}

/// One worker's connection, of the workload's kind; `None` inside = not connected.
enum Session {
    Mysql(Option<Conn>),
    Mongo(Option<mongodb::Client>),
    Tcp(Option<TcpSession>),
    Http(Option<BufReader<TcpStream>>),
}

/// A TCP echo session: its halves and the number of the backend it reached.
type TcpSession = (BufReader<OwnedReadHalf>, OwnedWriteHalf, u32);

fn io_kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
            "connection lost".into()
        }
        std::io::ErrorKind::ConnectionRefused => "refused".into(),
        kind => format!("io {kind:?}").to_lowercase(),
    }
}

async fn io_bounded<T>(work: impl std::future::Future<Output = std::io::Result<T>>) -> Result<T, String> {
    match timeout(op_limit(), work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(io_kind(&e)),
        Err(_) => Err("timeout".into()),
    }
}

async fn mongo_bounded<T>(work: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>) -> Result<T, String> {
    match timeout(OP_TIMEOUT, work.into_future()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(match e.kind.as_ref() {
            mongodb::error::ErrorKind::Command(c) => format!("mongo {}", c.code),
            mongodb::error::ErrorKind::Write(_) => "mongo write error".into(),
            mongodb::error::ErrorKind::ServerSelection { .. } => "server selection".into(),
            mongodb::error::ErrorKind::Io(_) => "connection lost".into(),
            _ => "mongo other".into(),
        }),
        Err(_) => Err("timeout".into()),
    }
}

/// `backend N` → N.
fn backend_number(text: &str) -> Result<u32, String> {
    text.trim()
        .strip_prefix("backend ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unexpected reply {text:?}"))
}

impl Session {
    fn new(kind: WorkloadKind) -> Session {
        match kind {
            WorkloadKind::Mysql => Session::Mysql(None),
            WorkloadKind::Mongo | WorkloadKind::Secantus => Session::Mongo(None),
            WorkloadKind::Tcp => Session::Tcp(None),
            WorkloadKind::Http => Session::Http(None),
        }
    }

    fn reads(&self) -> bool {
        matches!(self, Session::Mysql(_) | Session::Mongo(_))
    }

    /// One operation; returns the identity of the server that answered (MySQL
    /// `@@server_id`, a scripted MongoDB member's number for writes, the backend's
    /// number; 0 when the server cannot tell).
    async fn op(
        &mut self,
        target: SocketAddr,
        kind: OpKind,
        id: u64,
        worker: u32,
        keep: bool,
    ) -> (Result<u32, String>, Option<String>) {
        match self {
            Session::Mysql(conn) => match mysql_op(conn, target, kind, id, worker).await {
                Ok((server, via)) => (Ok(server), Some(via)),
                Err(e) => (Err(e), None),
            },
            Session::Mongo(client) => (mongo_op(client, target, kind, id, worker).await, None),
            Session::Tcp(conn) => (tcp_op(conn, target, id).await, None),
            Session::Http(conn) => (http_op(conn, target, id, keep).await, None),
        }
    }

    async fn close(&mut self) {
        match self {
            Session::Mysql(conn) => {
                if let Some(c) = conn.take() {
                    // A clean goodbye when we can; a dead server needs none.
                    let _ = timeout(Duration::from_millis(200), c.disconnect()).await;
                }
            }
            Session::Mongo(client) => {
                if let Some(c) = client.take() {
                    let _ = timeout(Duration::from_millis(200), c.shutdown()).await;
                }
            }
            Session::Tcp(conn) => *conn = None,
            Session::Http(conn) => *conn = None,
        }
    }
}

/// Reads one HTTP response (head decoded by switchyard's own decoder) and its body.
async fn read_http_body(stream: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    use switchyard::protocol::http::decode_response_head;
    use switchyard::protocol::Decode;
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut buf = Vec::new();
    loop {
        match decode_response_head(&buf) {
            Decode::Done(head) => {
                let length = head.content_length.ok_or_else(|| invalid("no content-length"))?;
                while buf.len() < head.head_len + length {
                    let mut chunk = [0u8; 1024];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(String::from_utf8_lossy(&buf[head.head_len..head.head_len + length]).into_owned());
            }
            Decode::Invalid(reason) => return Err(invalid(reason)),
            Decode::Incomplete => {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.push(byte[0]);
            }
        }
    }
}

/// One operation through `target` with a fresh connection; true when it succeeded
/// (the target has found a backend that takes writes).
pub async fn ready(target: SocketAddr, kind: WorkloadKind) -> bool {
    let mut session = Session::new(kind);
    // A read of id 0 (never written by the workload) where reads exist, so a retry
    // never meets its own earlier write; an echo or a GET elsewhere.
    let op = if session.reads() { OpKind::Read } else { OpKind::Write };
    let ok = session.op(target, op, 0, 0, false).await.0.is_ok();
    session.close().await;
    ok
}

/// One worker's open-loop schedule: `rate` operations a second spread over
/// `workers`, this worker's offset into each round, until `t0 + duration`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    interval: Duration,
    end: Instant,
}

impl Schedule {
    pub fn new(t0: Instant, duration: Duration, workers: u32, rate: u32, worker: u32) -> Schedule {
        let interval = Duration::from_secs_f64(f64::from(workers) / f64::from(rate.max(1)));
        Schedule {
            start: t0 + interval.mul_f64(f64::from(worker) / f64::from(workers.max(1))),
            interval,
            end: t0 + duration,
        }
    }

    /// When operation `k` is due; `None` once that is past the end.
    pub fn due(&self, k: u32) -> Option<Instant> {
        Some(self.start + self.interval * k).filter(|at| *at < self.end)
    }
}

/// Runs the workload against `target` until `t0 + duration`; returns every operation.
pub async fn run(
    target: SocketAddr,
    workload: Workload,
    duration: Duration,
    t0: Instant,
    progress: Arc<Progress>,
) -> Vec<Op> {
    let workers = workload.writers + workload.short_lived;
    let ids = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let short_lived = worker >= workload.writers;
        let (ids, progress) = (ids.clone(), progress.clone());
        let schedule = Schedule::new(t0, duration, workers, workload.rate, worker);
        let limit = workload.op_timeout.unwrap_or(OP_TIMEOUT);
        tasks.spawn(OP_LIMIT.scope(limit, async move {
            let ms = |at: Instant| at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
            let mut session = Session::new(workload.kind);
            let mut ops = Vec::new();
            let mut last_id = 0;
            for k in 0u32.. {
                let Some(scheduled) = schedule.due(k) else { break };
                sleep_until(scheduled).await;
                let started = Instant::now();
                // Every fourth operation of a long-lived worker reads its last write back.
                let read = session.reads() && !short_lived && k % 4 == 3 && last_id > 0;
                let kind = if read { OpKind::Read } else { OpKind::Write };
                let id = if kind == OpKind::Write {
                    ids.fetch_add(1, Ordering::Relaxed)
                } else {
                    last_id
                };
                let (result, via) = session.op(target, kind, id, worker, !short_lived).await;
                let every = workload.reconnect_every;
                let due = every > 0 && k % every == every - 1;
                if result.is_err() || short_lived || due {
                    session.close().await;
                }
                if kind == OpKind::Write && result.is_ok() {
                    last_id = id;
                }
                let counter = if result.is_ok() { &progress.ok } else { &progress.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                ops.push(Op {
                    kind,
                    id,
                    worker,
                    scheduled_ms: ms(scheduled),
                    started_ms: ms(started),
                    ended_ms: ms(Instant::now()),
                    result,
                    via,
                });
            }
            session.close().await;
            ops
        }));
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap_or_default());
    }
    all.sort_by(|a, b| a.ended_ms.total_cmp(&b.ended_ms));
    all
}

/// A MySQL write (an insert with the id) or read (a select of it); the server that
/// answered and the client host it saw.
async fn mysql_op(
    conn: &mut Option<Conn>,
    target: SocketAddr,
    kind: OpKind,
    id: u64,
    worker: u32,
) -> Result<(u32, String), String> {
    if conn.is_none() {
        *conn = Some(bounded(Conn::new(opts(target))).await?);
    }
    let c = conn.as_mut().expect("connected above");
    // Which server this session is on, asked first: once the write is
    // acknowledged, a cut connection cannot turn it into a failure.
    let (server, via) =
        bounded(c.query_first::<(u32, String), _>("SELECT @@server_id, SUBSTRING_INDEX(USER(), '@', -1)"))
            .await?
            .ok_or("no server id")?;
    match kind {
        OpKind::Write => {
            let sql = "INSERT INTO drill (id, server_id, worker) VALUES (?, @@server_id, ?)";
            bounded(c.exec_drop(sql, (id, worker))).await?;
        }
        OpKind::Read => {
            let found = bounded(c.exec_first::<u64, _, _>("SELECT id FROM drill WHERE id = ?", (id,))).await?;
            if found != Some(id) && id != 0 {
                return Err("read: row missing".into());
            }
        }
    }
    Ok((server, via))
}

/// A MongoDB write (an insert command, whose reply from a scripted member names it)
/// or read (a find of the id).
async fn mongo_op(
    client: &mut Option<mongodb::Client>,
    target: SocketAddr,
    kind: OpKind,
    id: u64,
    worker: u32,
) -> Result<u32, String> {
    if client.is_none() {
        let uri = format!(
            "mongodb://{target}/?directConnection=true&serverSelectionTimeoutMS=5000&connectTimeoutMS=2000&heartbeatFrequencyMS=500&maxPoolSize=1"
        );
        *client = Some(mongo_bounded(mongodb::Client::with_uri_str(uri)).await?);
    }
    let db = client.as_ref().expect("created above").database("app");
    match kind {
        OpKind::Write => {
            // An insert command rather than `insert_one`, to read who acknowledged it:
            // the scripted members add `labMember` to every write reply (no retry
            // either: each failure counts).
            let insert = bson::doc! {
                "insert": "drill",
                "documents": [{ "_id": id as i64, "worker": worker }],
            };
            let reply = mongo_bounded(db.run_command(insert)).await?;
            if reply.get_i32("n").ok() != Some(1) || reply.contains_key("writeErrors") {
                return Err("mongo write error".into());
            }
            Ok(reply.get_i32("labMember").map_or(0, |n| n as u32))
        }
        OpKind::Read => {
            let coll = db.collection::<bson::Document>("drill");
            let found = mongo_bounded(coll.find_one(bson::doc! { "_id": id as i64 })).await?;
            if found.is_none() && id != 0 {
                return Err("read: document missing".into());
            }
            Ok(0)
        }
    }
}

/// One line echoed by a TCP echo server that said `backend N` first.
async fn tcp_op(conn: &mut Option<TcpSession>, target: SocketAddr, id: u64) -> Result<u32, String> {
    if conn.is_none() {
        let stream = io_bounded(TcpStream::connect(target)).await?;
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);
        let backend = read_banner(&mut read).await?;
        *conn = Some((read, write, backend));
    }
    let (read, write, backend) = conn.as_mut().expect("connected above");
    echo(read, write, id).await?;
    Ok(*backend)
}

/// Reads an echo server's `backend N` banner; returns N.
pub async fn read_banner(read: &mut (impl AsyncBufRead + Unpin)) -> Result<u32, String> {
    let mut banner = String::new();
    io_bounded(read.read_line(&mut banner)).await?;
    backend_number(&banner)
}

/// One echo exchange: `id` as a line out, the same line back.
pub async fn echo(
    read: &mut (impl AsyncBufRead + Unpin),
    write: &mut (impl AsyncWrite + Unpin),
    id: u64,
) -> Result<(), String> {
    io_bounded(write.write_all(format!("{id}\n").as_bytes())).await?;
    let mut echo = String::new();
    if io_bounded(read.read_line(&mut echo)).await? == 0 {
        return Err("connection lost".into());
    }
    if echo.trim() != id.to_string() {
        return Err(format!("echo mismatch: {echo:?}"));
    }
    Ok(())
}

/// One HTTP GET whose body names the backend.
async fn http_op(
    conn: &mut Option<BufReader<TcpStream>>,
    target: SocketAddr,
    id: u64,
    keep: bool,
) -> Result<u32, String> {
    if conn.is_none() {
        *conn = Some(BufReader::new(io_bounded(TcpStream::connect(target)).await?));
    }
    let stream = conn.as_mut().expect("connected above");
    let connection = if keep { "keep-alive" } else { "close" };
    let request = format!("GET /{id} HTTP/1.1\r\nHost: drill\r\nConnection: {connection}\r\n\r\n");
    io_bounded(stream.get_mut().write_all(request.as_bytes())).await?;
    let body = io_bounded(read_http_body(stream)).await?;
    backend_number(&body)
}
