//! The `mysql` mode's guards before the login: a login slot per connection phase
//! (`max_logins`), and a clean end of the backend's half for a client that gives up.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info};

use super::packets::read_exact_packet;
use super::{failed, SessionContext};
use crate::logs;
use crate::protocol::mysql::{monitor, Packet};
use crate::stream::Stream;

/// The longest the proxy spends ending a backend's connection phase for a client that
/// gave up ([`abort_backend_login`]).
pub(super) const ABORT_TIMEOUT: Duration = Duration::from_secs(1);
/// The user name of that ending: one no real account has (at most 32 characters,
/// what MySQL allows).
const ABORT_USER: &str = "switchyard-aborted-login";

/// A permit for one connection phase, waited for until `deadline`; `None` (counted and
/// logged at a limited rate) when none came in time.
pub async fn login_slot(ctx: &SessionContext, deadline: Instant) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match timeout_at(deadline, ctx.logins.clone().acquire_owned()).await {
        Ok(Ok(slot)) => Some(slot),
        _ => {
            failed(ctx, "login_cap");
            if logs::kinds::LOGIN_FAILURES.allow() {
                info!(
                    max_logins = ctx.login.concurrent,
                    "no login slot within the login timeout; closing the client"
                );
            }
            None
        }
    }
}

/// Ends the backend's connection phase for a client that went away (or sent
/// garbage, or stalled) before its HandshakeResponse: a well-formed login for a user
/// no account matches, which the backend refuses as an authentication failure. A
/// connection dropped in the middle of the handshake would count as a handshake
/// error toward the backend's `max_connect_errors`, and enough of those block the
/// proxy's address for every client, the monitor included.
pub(super) async fn abort_backend_login(upstream: &mut TcpStream) {
    let ended = tokio::time::timeout(ABORT_TIMEOUT, async {
        let response = monitor::handshake_response(ABORT_USER, &[], "mysql_native_password", false);
        upstream
            .write_all(
                &Packet {
                    seq: 1,
                    payload: response,
                }
                .encode(),
            )
            .await?;
        // An auth switch is answered with nothing; then OK or ERR.
        for _ in 0..3 {
            let packet = read_exact_packet(upstream)
                .await
                .map_err(|_| io::Error::other("bad packet"))?;
            if packet.ends_login() {
                break;
            }
            upstream
                .write_all(
                    &Packet {
                        seq: packet.seq.wrapping_add(1),
                        payload: Vec::new(),
                    }
                    .encode(),
                )
                .await?;
        }
        upstream.shutdown().await
    })
    .await;
    if !matches!(ended, Ok(Ok(()))) {
        debug!("the backend's connection phase could not be ended cleanly for a client that went away");
    }
}

/// Ends a backend's authentication exchange the client left (or that the proxy
/// refused) by answering its last request with nothing, at sequence id `seq`: the
/// backend refuses the login as an authentication failure, which does not count
/// toward `max_connect_errors` as a dropped handshake would.
pub(super) async fn end_backend_auth(upstream: &mut Stream, seq: u8) {
    let ended = tokio::time::timeout(ABORT_TIMEOUT, async {
        upstream
            .write_all(
                &Packet {
                    seq,
                    payload: Vec::new(),
                }
                .encode(),
            )
            .await?;
        upstream.flush().await?;
        read_exact_packet(upstream)
            .await
            .map_err(|_| io::Error::other("bad packet"))?;
        upstream.shutdown().await
    })
    .await;
    if !matches!(ended, Ok(Ok(()))) {
        debug!("the backend's authentication could not be ended cleanly for a client that went away");
    }
}
