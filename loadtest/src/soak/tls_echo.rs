//! TLS clients for the soak: open-loop echo exchanges through a TLS-terminating
//! listener in front of the echo [`crate::servers`]. Long-lived workers keep one
//! TLS session (reconnecting after an error); short-lived ones handshake for every
//! exchange. Every network wait is under [`crate::workload::OP_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::workload::{self, Op, OpKind, Progress, OP_TIMEOUT};

/// How many workers of each kind, and the exchanges a second over all of them.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub long_lived: u32,
    pub short_lived: u32,
    pub rate: u32,
}

/// A connected TLS session (its halves) and the backend it reached.
type Session = (
    BufReader<ReadHalf<TlsStream<TcpStream>>>,
    WriteHalf<TlsStream<TcpStream>>,
    u32,
);

fn tls_error(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused".into(),
        std::io::ErrorKind::InvalidData => "tls".into(),
        _ => "connection lost".into(),
    }
}

async fn connect(target: SocketAddr, connector: &TlsConnector) -> Result<Session, String> {
    let handshake = async {
        let tcp = TcpStream::connect(target).await?;
        let name = ServerName::try_from("localhost").expect("a valid name");
        connector.connect(name, tcp).await
    };
    let tls = match timeout(OP_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(tls_error(e)),
        Err(_) => return Err("timeout".into()),
    };
    let (read, write) = tokio::io::split(tls);
    let mut read = BufReader::new(read);
    let backend = workload::read_banner(&mut read).await?;
    Ok((read, write, backend))
}

async fn exchange(
    session: &mut Option<Session>,
    target: SocketAddr,
    connector: &TlsConnector,
    id: u64,
) -> Result<u32, String> {
    if session.is_none() {
        *session = Some(connect(target, connector).await?);
    }
    let (read, write, backend) = session.as_mut().expect("connected above");
    workload::echo(read, write, id).await?;
    Ok(*backend)
}

/// Runs `load` against `target` until `t0 + duration`; returns every exchange
/// (as writes: the echo of a unique id).
pub async fn run(
    target: SocketAddr,
    connector: TlsConnector,
    load: Load,
    duration: Duration,
    t0: Instant,
    progress: Arc<Progress>,
) -> Vec<Op> {
    let workers = load.long_lived + load.short_lived;
    let ids = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (ids, progress, connector) = (ids.clone(), progress.clone(), connector.clone());
        let short_lived = worker >= load.long_lived;
        let schedule = workload::Schedule::new(t0, duration, workers, load.rate, worker);
        tasks.spawn(async move {
            let ms = |at: Instant| at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
            let (mut session, mut ops) = (None, Vec::new());
            for k in 0u32.. {
                let Some(scheduled) = schedule.due(k) else { break };
                sleep_until(scheduled).await;
                let started = Instant::now();
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let result = exchange(&mut session, target, &connector, id).await;
                if result.is_err() || short_lived {
                    session = None;
                }
                let counter = if result.is_ok() { &progress.ok } else { &progress.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                ops.push(Op {
                    kind: OpKind::Write,
                    id,
                    worker,
                    scheduled_ms: ms(scheduled),
                    started_ms: ms(started),
                    ended_ms: ms(Instant::now()),
                    result,
                    via: None,
                });
            }
            ops
        });
    }
    let mut ops = Vec::new();
    while let Some(done) = tasks.join_next().await {
        ops.extend(done.unwrap_or_default());
    }
    ops
}
