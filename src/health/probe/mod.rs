//! The closed set of probes. Each is a straight-line async fn that checks one backend
//! once, every phase bounded by the same `deadline`, so a server that accepts TCP and
//! then says nothing (SIGSTOP, a wedged app) fails by the check timeout, at the layer
//! where it stalled.

mod http;
mod mongo;
pub(crate) mod mysql;
mod redis;
pub mod scram;
mod tcp;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use tokio::time::Instant;

use super::{CheckError, Phase, Report};
use crate::config::ProbeConfig;
use crate::protocol::proxy_header::Version;
use crate::stream::Stream;
use crate::tls::ClientTls;

pub use self::http::HttpProbe;
pub use self::mongo::MongoProbe;
pub use self::mysql::galera::GaleraState;
pub use self::mysql::MysqlProbe;
pub use self::redis::{classify as classify_redis, RedisInfo, RedisProbe};

/// Where a probe connects: the backend's address, from its `source` when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The backend's address.
    pub addr: SocketAddr,
    /// The local address to connect from.
    pub source: Option<IpAddr>,
    /// A PROXY protocol header (LOCAL: the proxy's own connection) before any byte.
    pub send_proxy: Option<Version>,
}

/// Connects to `to` (L4), then sends it the PROXY header it wants, if any: the TCP
/// connection of every probe.
pub(super) async fn open(to: Endpoint) -> Result<tokio::net::TcpStream, CheckError> {
    let mut stream = crate::tcp::connect(to.addr, to.source)
        .await
        .map_err(|e| CheckError::connect(&e))?;
    if let Some(version) = to.send_proxy {
        use tokio::io::AsyncWriteExt;
        let header = crate::protocol::proxy_header::encode(version, None);
        stream.write_all(&header).await.map_err(|e| CheckError::connect(&e))?;
    }
    Ok(stream)
}

/// One probe, configured. Owned by its checker, so a probe may keep a connection.
#[derive(Debug)]
pub struct Probe {
    kind: Kind,
    source: Option<IpAddr>,
    send_proxy: Option<Version>,
}

#[derive(Debug)]
enum Kind {
    /// A connect, and a TLS handshake when the backend has TLS: passes when reachable.
    Tcp(Option<ClientTls>),
    /// An HTTP request, checked against the expected status and, optionally, the body.
    Http(HttpProbe),
    /// A MySQL login and one query for role and replication state (or, for Galera,
    /// wsrep state).
    Mysql(MysqlProbe),
    /// A MongoDB `hello` for the member's role.
    Mongo(MongoProbe),
    /// Redis `INFO replication` and `INFO persistence` for the node's role.
    Redis(RedisProbe),
}

impl Probe {
    /// `tls`: the backend's TLS, which its probe uses too (from the first byte, or
    /// inside the MySQL protocol for the MySQL probe); `source`: the local address to
    /// connect from.
    pub fn new(config: &ProbeConfig, tls: Option<&ClientTls>, source: Option<IpAddr>) -> Probe {
        let client = tls.cloned();
        let kind = match config {
            ProbeConfig::Tcp => Kind::Tcp(client),
            ProbeConfig::Http(http) => Kind::Http(HttpProbe::new(http, client)),
            ProbeConfig::Mysql(mysql) => Kind::Mysql(MysqlProbe::new(mysql, client)),
            ProbeConfig::Galera(mysql) => Kind::Mysql(MysqlProbe::galera(mysql, client)),
            ProbeConfig::Mongo(mongo) => Kind::Mongo(MongoProbe::new(mongo, client)),
            ProbeConfig::Redis(redis) => Kind::Redis(RedisProbe::new(redis, client)),
        };
        Probe {
            kind,
            source,
            send_proxy: None,
        }
    }

    /// The probe sends `version`'s LOCAL header first on every connection (for a
    /// backend with `send_proxy`, which expects one).
    pub fn announcing(mut self, version: Option<Version>) -> Probe {
        self.send_proxy = version;
        self
    }

    /// Drops the connection a probe keeps, so the next check starts afresh (after a
    /// check that panicked, the kept connection is in an unknown state).
    pub fn forget_connection(&mut self) {
        match &mut self.kind {
            Kind::Tcp(_) | Kind::Http(_) => {}
            Kind::Mysql(mysql) => mysql.forget_connection(),
            Kind::Mongo(mongo) => mongo.forget_connection(),
            Kind::Redis(redis) => redis.forget_connection(),
        }
    }

    /// Checks `addr` once; fails with [`CheckError::Timeout`] at `deadline`.
    pub async fn check(&mut self, addr: SocketAddr, deadline: Instant) -> Result<Report, CheckError> {
        let to = Endpoint {
            addr,
            source: self.source,
            send_proxy: self.send_proxy,
        };
        // Each kind's future boxed: inline, every check's future would be as large as
        // the largest kind's (a MySQL login over TLS), and moving it (into the
        // checker's panic guard, into timeouts) was three quarters of a TCP check's
        // instructions (callgrind, 200 TCP backends).
        match &mut self.kind {
            Kind::Tcp(tls) => Box::pin(tcp::check(to, tls.as_ref(), deadline)).await,
            Kind::Http(http) => Box::pin(http.check(to, deadline)).await,
            Kind::Mysql(mysql) => Box::pin(mysql.check(to, deadline)).await,
            Kind::Mongo(mongo) => Box::pin(mongo.check(to, deadline)).await,
            Kind::Redis(redis) => Box::pin(redis.check(to, deadline)).await,
        }
    }
}

/// Reads from `stream` into `buf` until `decode` finds a whole reply at its start
/// (drained from `buf`), buffering at most `max` bytes; `what` names the reply in
/// errors. The caller bounds it with the check's deadline.
pub(crate) async fn read_decoded<T, S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
    what: &str,
    decode: impl Fn(&[u8]) -> crate::protocol::Decode<(T, usize)>,
) -> Result<T, CheckError> {
    use crate::protocol::Decode;
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    loop {
        match decode(buf) {
            Decode::Done((value, used)) => {
                buf.drain(..used);
                return Ok(value);
            }
            Decode::Invalid(reason) => return Err(CheckError::Protocol(reason.into())),
            Decode::Incomplete if buf.len() > max => return Err(CheckError::Protocol(format!("{what} too large"))),
            Decode::Incomplete => {}
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| CheckError::Protocol(format!("reading {what}: {e}")))?;
        if n == 0 {
            return Err(CheckError::Protocol(format!("connection closed before {what}")));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A failed or timed-out exchange leaves a kept connection in an unknown state: it is
/// dropped, and the next check connects (and logs in) afresh.
fn drop_on_error<C, T>(conn: &mut Option<C>, result: Result<T, CheckError>) -> Result<T, CheckError> {
    if result.is_err() {
        *conn = None;
    }
    result
}

/// Runs one phase of a check under the shared deadline.
async fn phase<T>(
    deadline: Instant,
    phase: Phase,
    work: impl Future<Output = Result<T, CheckError>>,
) -> Result<T, CheckError> {
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or(Err(CheckError::Timeout(phase)))
}

/// Connects under the deadline (L4), then, with `tls`, handshakes (L6): the first
/// phases of every probe but MySQL's.
async fn connect(to: Endpoint, tls: Option<&ClientTls>, deadline: Instant) -> Result<Stream, CheckError> {
    let stream = phase(deadline, Phase::Connecting, open(to)).await?;
    let Some(tls) = tls else {
        return Ok(Stream::Plain(stream));
    };
    phase(deadline, Phase::Handshaking, async {
        tls.connect(stream)
            .await
            .map(|s| Stream::Client(Box::new(s)))
            .map_err(|e| CheckError::Tls(e.to_string()))
    })
    .await
}
