//! The closed set of probes. Each is a straight-line async fn that checks one backend
//! once, every phase bounded by the same `deadline`, so a server that accepts TCP and
//! then says nothing (SIGSTOP, a wedged app) fails by the check timeout, at the layer
//! where it stalled.

mod http;
mod mongo;
mod mysql;
pub mod scram;
mod tcp;

use std::future::Future;
use std::net::SocketAddr;

use tokio::time::Instant;

use super::{CheckError, Phase, Report};
use crate::config::ProbeConfig;
use crate::stream::Stream;
use crate::tls::ClientTls;

pub use self::http::HttpProbe;
pub use self::mongo::MongoProbe;
pub use self::mysql::MysqlProbe;

/// One probe, configured. Owned by its checker, so a probe may keep a connection.
#[derive(Debug)]
pub enum Probe {
    /// A connect, and a TLS handshake when the backend has TLS: passes when reachable.
    Tcp(Option<ClientTls>),
    /// An HTTP request, checked against the expected status and, optionally, the body.
    Http(HttpProbe),
    /// A MySQL login and one query for role and replication state.
    Mysql(MysqlProbe),
    /// A MongoDB `hello` for the member's role.
    Mongo(MongoProbe),
}

impl Probe {
    /// `tls`: the backend's TLS, which its probe uses too (from the first byte, or
    /// inside the MySQL protocol for the MySQL probe).
    pub fn new(config: &ProbeConfig, tls: Option<&ClientTls>) -> Probe {
        let client = tls.cloned();
        match config {
            ProbeConfig::Tcp => Probe::Tcp(client),
            ProbeConfig::Http(http) => Probe::Http(HttpProbe::new(http, client)),
            ProbeConfig::Mysql(mysql) => Probe::Mysql(MysqlProbe::new(mysql, client)),
            ProbeConfig::Mongo(mongo) => Probe::Mongo(MongoProbe::new(mongo, client)),
        }
    }

    /// Drops the connection a probe keeps, so the next check starts afresh (after a
    /// check that panicked, the kept connection is in an unknown state).
    pub fn forget_connection(&mut self) {
        match self {
            Probe::Tcp(_) | Probe::Http(_) => {}
            Probe::Mysql(mysql) => mysql.forget_connection(),
            Probe::Mongo(mongo) => mongo.forget_connection(),
        }
    }

    /// Checks `addr` once; fails with [`CheckError::Timeout`] at `deadline`.
    pub async fn check(&mut self, addr: SocketAddr, deadline: Instant) -> Result<Report, CheckError> {
        match self {
            Probe::Tcp(tls) => tcp::check(addr, tls.as_ref(), deadline).await,
            Probe::Http(http) => http.check(addr, deadline).await,
            Probe::Mysql(mysql) => mysql.check(addr, deadline).await,
            Probe::Mongo(mongo) => mongo.check(addr, deadline).await,
        }
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
async fn connect(addr: SocketAddr, tls: Option<&ClientTls>, deadline: Instant) -> Result<Stream, CheckError> {
    let stream = phase(deadline, Phase::Connecting, async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| CheckError::connect(&e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    })
    .await?;
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
