//! TCP probe: the backend accepts a connection. It cannot see a wedged application
//! (the kernel completes the handshake for a SIGSTOPped process); use a protocol
//! probe where one exists.

use std::net::SocketAddr;

use tokio::time::Instant;

use crate::health::{CheckError, Report};

pub async fn check(addr: SocketAddr, deadline: Instant) -> Result<Report, CheckError> {
    let _stream = super::connect(addr, deadline).await?;
    Ok(Report::reachable())
}
