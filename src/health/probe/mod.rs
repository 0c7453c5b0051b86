//! The closed set of probes. Each is a straight-line async fn that checks one backend
//! once, every phase bounded by the same `deadline`, so a server that accepts TCP and
//! then says nothing (SIGSTOP, a wedged app) fails by the check timeout, at the layer
//! where it stalled.

mod http;
mod tcp;

use std::future::Future;
use std::net::SocketAddr;

use tokio::time::Instant;

use super::{CheckError, Phase, Report};
use crate::config::ProbeConfig;

pub use self::http::HttpProbe;

/// One probe, configured.
#[derive(Debug, Clone)]
pub enum Probe {
    Tcp,
    Http(HttpProbe),
}

impl Probe {
    pub fn new(config: &ProbeConfig) -> Probe {
        match config {
            ProbeConfig::Tcp => Probe::Tcp,
            ProbeConfig::Http(http) => Probe::Http(HttpProbe::new(http)),
        }
    }

    /// Checks `addr` once; fails with [`CheckError::Timeout`] at `deadline`.
    pub async fn check(&self, addr: SocketAddr, deadline: Instant) -> Result<Report, CheckError> {
        match self {
            Probe::Tcp => tcp::check(addr, deadline).await,
            Probe::Http(http) => http.check(addr, deadline).await,
        }
    }
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

/// Connects under the deadline; the L4 phase of every probe.
async fn connect(addr: SocketAddr, deadline: Instant) -> Result<tokio::net::TcpStream, CheckError> {
    phase(deadline, Phase::Connecting, async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| CheckError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    })
    .await
}
