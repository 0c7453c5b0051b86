//! TCP probe: the backend accepts a connection. It cannot see a wedged application
//! (the kernel completes the handshake for a SIGSTOPped process); use a protocol
//! probe where one exists. With TLS configured it also completes a handshake, so a
//! certificate the backend's CA does not vouch for fails at L6.

use tokio::time::Instant;

use crate::health::probe::Endpoint;
use crate::health::{CheckError, Report};
use crate::tls::ClientTls;

pub async fn check(to: Endpoint, tls: Option<&ClientTls>, deadline: Instant) -> Result<Report, CheckError> {
    let _stream = super::connect(to, tls, deadline).await?;
    Ok(Report::reachable())
}
