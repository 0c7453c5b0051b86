//! The `mysql` listener mode: TLS inside the MySQL protocol, on either leg.
//!
//! A MySQL client asks for TLS *after* the server's greeting, with an SSLRequest, so a
//! proxy that terminates TLS from the first byte cannot serve it. Here the proxy takes
//! part in the connection phase, and only in it:
//!
//! ```text
//! backend ──greeting──▶ proxy: CLIENT_SSL set (listener has TLS) or cleared ──▶ client
//! client ──SSLRequest──▶ proxy: TLS handshake with the client (listener's certificate)
//! client ──HandshakeResponse (over TLS)──▶ proxy
//!   backend TLS configured: proxy ──SSLRequest──▶ backend, TLS handshake, then the
//!   response over it; else the response in clear, CLIENT_SSL cleared
//! auth exchange (switch, more data, OK/ERR): relayed packet by packet, with the
//!   sequence ids shifted by the difference between the two legs
//! after the OK: a byte pipe, like any other session
//! ```
//!
//! The sequence ids differ because the SSLRequest takes id 1 on a leg that uses TLS:
//! the response is id 2 there and id 1 on a leg without. The shift is `client id −
//! backend id` of the response, the same for every packet until the OK (the command
//! phase restarts at 0 on both legs).
//!
//! A client that does not ask for TLS is refused with `ER_SECURE_TRANSPORT_REQUIRED`
//! when `require_tls` is set, else its login passes in clear.
//!
//! When only the client's leg is encrypted, auth plugins that send the password
//! itself because they trust the connection (`mysql_clear_password`, `dialog` for
//! PAM, `sha256_password`, caching_sha2's full authentication) would put it on the
//! plaintext backend leg: such a login is refused (1045) before the password is
//! forwarded, with a message that says to configure TLS to the backend. The native,
//! ed25519 and cached logins send only scrambles and pass. The whole connection
//! phase runs under the listener's `login_timeout` and at most `max_logins` run at
//! once (a client past them waits, before a backend connection is made for it); a
//! client that gives up early has the backend's half ended as a refused login, not a
//! dropped handshake (`abort_backend_login`). The client's TLS handshake runs under the
//! listener's handshake timeout.

mod guard;
mod packets;

use std::io;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn};

use super::{accept_tls, originate_tls, Ended, LoginEnd, SessionContext};
use crate::logs;
use crate::metrics as m;
use crate::pool::Member;
use crate::protocol::mysql::commands::Commands;
use crate::protocol::mysql::{self as wire, Packet};
use crate::stream::Stream;

pub use self::guard::login_slot;
use self::guard::{abort_backend_login, end_backend_auth, ABORT_TIMEOUT};
use self::packets::{read_exact_packet, refuse, Reader};

/// `ER_CONNECTION_KILLED`: what a client whose backend was fenced during its login gets.
const ER_CONNECTION_KILLED: u16 = 1927;
const FENCED_DURING_LOGIN: &str = "the backend left its pool during the login (switchyard); connect again";

/// Why a login could not be carried through.
#[derive(Debug)]
enum LoginError {
    /// The client or the backend sent something this exchange cannot accept.
    Protocol(&'static str),
    Io(io::Error),
    /// Ended, and already counted and logged (refused, a handshake failed).
    Ended(Ended),
}

impl From<io::Error> for LoginError {
    fn from(e: io::Error) -> Self {
        LoginError::Io(e)
    }
}

/// Carries a client through the connection phase with `upstream`; returns both legs
/// ready for the byte pipe, and the tracker of the session's command phase.
pub async fn login(
    ctx: &SessionContext,
    member: &Arc<Member>,
    client: TcpStream,
    upstream: TcpStream,
    deadline: Instant,
) -> Result<(Stream, Stream, Box<Commands>), Ended> {
    // The exchange ends a client that stalls by `deadline` itself (and closes the
    // backend's half properly); this bound is for a backend that stalls.
    match timeout_at(
        deadline + ABORT_TIMEOUT,
        exchange(ctx, member, client, upstream, deadline),
    )
    .await
    {
        Ok(Ok(legs)) => Ok(legs),
        Ok(Err(LoginError::Ended(ended))) => Err(ended),
        Ok(Err(LoginError::Protocol(what))) => {
            failed(ctx, "protocol");
            if logs::kinds::LOGIN_FAILURES.allow() {
                warn!(
                    cause = what,
                    "MySQL login could not be carried through; closing the client"
                );
            }
            Err(Ended::Login(LoginEnd::Protocol))
        }
        Ok(Err(LoginError::Io(e))) => {
            failed(ctx, "io");
            debug!(error = %e, "connection lost during the MySQL login");
            Err(Ended::Login(LoginEnd::Lost))
        }
        Err(_) => {
            failed(ctx, "timeout");
            if logs::kinds::LOGIN_FAILURES.allow() {
                info!(timeout = ?ctx.login.timeout, "MySQL login did not finish in time; closing the client");
            }
            Err(Ended::Login(LoginEnd::Timeout))
        }
    }
}

fn failed(ctx: &SessionContext, reason: &'static str) {
    metrics::counter!(m::MYSQL_LOGIN_FAILURES, "listener" => ctx.listener.clone(), "reason" => reason).increment(1);
}

/// The connection phase, step by step: greeting, the client's login (over TLS when
/// it asks), the login to the backend (over its own TLS when configured), then the
/// authentication exchange until the backend's OK or ERR.
async fn exchange(
    ctx: &SessionContext,
    member: &Arc<Member>,
    mut client: TcpStream,
    mut upstream: TcpStream,
    deadline: Instant,
) -> Result<(Stream, Stream, Box<Commands>), LoginError> {
    let backend_tls = member.backend.tls.is_some();
    let backend_caps = match relay_greeting(ctx, backend_tls, &mut client, &mut upstream).await {
        Ok(caps) => caps,
        Err(e) => {
            abort_backend_login(&mut upstream).await;
            return Err(e);
        }
    };
    let (mut client, response) = match timeout_at(deadline, client_login(ctx, client)).await {
        Ok(Ok(login)) => login,
        failed => {
            abort_backend_login(&mut upstream).await;
            return match failed {
                Ok(Err(e)) => Err(e),
                _ => Err(LoginError::Io(io::ErrorKind::TimedOut.into())),
            };
        }
    };
    let legs = Legs {
        client_tls: matches!(client, Stream::Server(_)),
        backend_tls,
    };
    if legs.downgrade() {
        if let Some(plugin) = wire::response_plugin(&response.payload).filter(|p| wire::CLEARTEXT_PLUGINS.contains(p)) {
            let refused = cleartext_refused(ctx, &mut client, response.seq.wrapping_add(1), plugin).await;
            abort_backend_login(&mut upstream).await;
            return Err(refused);
        }
    }
    let commands = commands_after(backend_caps, &response.payload);
    let (mut upstream, shift) = backend_login(ctx, member, upstream, response).await?;
    relay_auth(ctx, member, &mut client, &mut upstream, shift, legs).await?;
    Ok((client, upstream, commands))
}

/// The command tracker for a session whose backend offered `backend_caps` and whose
/// client answered with `response`: the capabilities both have, and MariaDB's
/// extended ones (in the response's filler when the client clears `CLIENT_MYSQL`).
fn commands_after(backend_caps: u32, response: &[u8]) -> Box<Commands> {
    let client_caps = wire::client_capabilities(response).unwrap_or(0);
    let extended = match response.get(28..32) {
        Some(&[a, b, c, d]) if client_caps & 1 == 0 => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    };
    Box::new(Commands::new(backend_caps & client_caps, extended))
}

/// Step 1: the backend's greeting to the client, with CLIENT_SSL as this listener offers
/// it. A backend that must speak TLS but does not offer it is refused.
async fn relay_greeting(
    ctx: &SessionContext,
    backend_tls: bool,
    client: &mut TcpStream,
    upstream: &mut TcpStream,
) -> Result<u32, LoginError> {
    let mut greeting = read_exact_packet(upstream).await?;
    if greeting.is_err() {
        // The server refused us (too many connections, host blocked): the client
        // should read why.
        client.write_all(&greeting.encode()).await?;
        return Err(LoginError::Protocol(
            "the backend answered with an error instead of a greeting",
        ));
    }
    let backend_caps = wire::greeting_capabilities(&greeting.payload).map_err(LoginError::Protocol)?;
    if backend_tls && backend_caps & wire::CLIENT_SSL == 0 {
        // An ERR in place of the greeting, as a server refusing a connection sends.
        refuse(
            client,
            0,
            wire::ER_HANDSHAKE_ERROR,
            "08S01",
            "switchyard: the backend does not offer TLS, which its configuration requires",
        )
        .await;
        return Err(LoginError::Protocol(
            "the backend does not offer TLS but backends.*.tls is set",
        ));
    }
    wire::set_greeting_ssl(&mut greeting.payload, ctx.tls.is_some()).map_err(LoginError::Protocol)?;
    client.write_all(&greeting.encode()).await?;
    Ok(backend_caps)
}

/// Step 2: the client's first packet: an SSLRequest (then the TLS handshake and the login
/// inside it) or its login in clear, which `require_tls` refuses.
async fn client_login(ctx: &SessionContext, mut client: TcpStream) -> Result<(Stream, Packet), LoginError> {
    let first = read_exact_packet(&mut client).await?;
    let caps = wire::client_capabilities(&first.payload).ok_or(LoginError::Protocol("empty client packet"))?;
    if caps & wire::CLIENT_PROTOCOL_41 == 0 {
        return Err(LoginError::Protocol("a pre-4.1 client"));
    }
    let (client, response) = if wire::is_ssl_request(&first.payload) {
        let Some(tls) = &ctx.tls else {
            return Err(LoginError::Protocol("an SSLRequest, but this listener offered no TLS"));
        };
        let Some(mut stream) = accept_tls(tls, client).await else {
            return Err(LoginError::Ended(Ended::Handshake));
        };
        let response = read_exact_packet(&mut stream).await?;
        (Stream::Server(Box::new(stream)), response)
    } else {
        if ctx.tls.is_some() && ctx.require_tls {
            metrics::counter!(m::MYSQL_PLAINTEXT_REFUSED, "listener" => ctx.listener.clone()).increment(1);
            if logs::kinds::LOGIN_FAILURES.allow() {
                info!("MySQL client did not ask for TLS; refused (require_tls)");
            }
            refuse(
                &mut client,
                first.seq.wrapping_add(1),
                wire::ER_SECURE_TRANSPORT_REQUIRED,
                "HY000",
                "switchyard: connections using insecure transport are prohibited (require_tls)",
            )
            .await;
            return Err(LoginError::Ended(Ended::Login(LoginEnd::TlsRequired)));
        }
        (Stream::Plain(client), first)
    };
    if response.payload.len() <= wire::SSL_REQUEST_LEN {
        return Err(LoginError::Protocol(
            "a handshake response too short to hold a user name",
        ));
    }
    Ok((client, response))
}

/// Step 3: the client's login to the backend, after an SSLRequest and the TLS handshake
/// when the backend has TLS. Returns the backend leg and how far the client's
/// sequence ids are ahead of the backend's.
async fn backend_login(
    ctx: &SessionContext,
    member: &Arc<Member>,
    mut upstream: TcpStream,
    mut response: Packet,
) -> Result<(Stream, u8), LoginError> {
    let backend_tls = member.backend.tls.is_some();
    let (mut upstream, backend_seq) = if backend_tls {
        let request = wire::ssl_request_for(&response.payload).ok_or(LoginError::Protocol("short response"))?;
        upstream
            .write_all(
                &Packet {
                    seq: 1,
                    payload: request,
                }
                .encode(),
            )
            .await?;
        let Some(stream) = originate_tls(ctx, member, upstream).await else {
            return Err(LoginError::Ended(Ended::BackendTls));
        };
        (Stream::Client(Box::new(stream)), 2u8)
    } else {
        (Stream::Plain(upstream), 1u8)
    };
    let shift = response.seq.wrapping_sub(backend_seq);
    wire::set_client_ssl(&mut response.payload, backend_tls);
    response.seq = backend_seq;
    upstream.write_all(&response.encode()).await?;
    upstream.flush().await?;
    Ok((upstream, shift))
}

/// Which legs are encrypted.
#[derive(Debug, Clone, Copy)]
struct Legs {
    client_tls: bool,
    backend_tls: bool,
}

impl Legs {
    /// The client trusts its leg; the backend's is plaintext.
    fn downgrade(self) -> bool {
        self.client_tls && !self.backend_tls
    }
}

/// Refuses a login whose password would cross the plaintext backend leg in clear.
async fn cleartext_refused(ctx: &SessionContext, client: &mut Stream, seq: u8, plugin: &str) -> LoginError {
    failed(ctx, "cleartext");
    if logs::kinds::LOGIN_FAILURES.allow() {
        warn!(plugin = %logs::peer(plugin), "refused a MySQL login: its auth plugin sends the password in clear, and the backend leg is not encrypted; configure [backends.NAME.tls]");
    }
    let message = format!(
        "switchyard: auth plugin {plugin} would send the password in clear over the unencrypted backend connection; the backend needs TLS"
    );
    refuse(client, seq, wire::ER_ACCESS_DENIED_ERROR, "28000", &message).await;
    LoginError::Ended(Ended::Login(LoginEnd::Cleartext))
}

/// Relays packets both ways, shifting sequence ids, until the backend ends the login
/// (an ERR from the backend is passed on, and ends the session). Bytes read past the
/// last packet (there should be none: a client waits for the OK) are passed on
/// unchanged.
async fn relay_auth(
    ctx: &SessionContext,
    member: &Member,
    client: &mut Stream,
    upstream: &mut Stream,
    shift: u8,
    legs: Legs,
) -> Result<(), LoginError> {
    let (mut from_client, mut from_backend) = (Reader::default(), Reader::default());
    // The backend's last sequence id: a login the client leaves or that is refused
    // here is answered at the next one, so the backend ends it as a failed login.
    let mut backend_seq = 0u8;
    loop {
        let event = tokio::select! {
            packet = from_backend.next(upstream) => Side::Backend(packet?),
            packet = from_client.next(client) => match packet {
                Ok(packet) => Side::Client(packet),
                Err(e) => {
                    end_backend_auth(upstream, backend_seq.wrapping_add(1)).await;
                    return Err(e);
                }
            },
        };
        match event {
            Side::Backend(None) => {
                return Err(LoginError::Protocol(
                    "the backend closed the connection during the login",
                ))
            }
            Side::Client(None) => {
                end_backend_auth(upstream, backend_seq.wrapping_add(1)).await;
                return Err(LoginError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            Side::Backend(Some(mut packet)) => {
                backend_seq = packet.seq;
                let done = packet.ends_login();
                packet.seq = packet.seq.wrapping_add(shift);
                if legs.downgrade() {
                    let switch = wire::auth_switch_plugin(&packet.payload);
                    let refused = match switch.filter(|p| wire::CLEARTEXT_PLUGINS.contains(p)) {
                        Some(plugin) => Some(plugin),
                        None => wire::is_full_auth_request(&packet.payload).then_some("caching_sha2_password"),
                    };
                    if let Some(plugin) = refused {
                        let refused = cleartext_refused(ctx, client, packet.seq, plugin).await;
                        end_backend_auth(upstream, backend_seq.wrapping_add(1)).await;
                        return Err(refused);
                    }
                }
                let drained_at_idle = matches!(member.eviction_now(), crate::pool::Eviction::AtIdle(_));
                if done && !packet.is_err() && member.is_evicted() && !drained_at_idle {
                    // Fenced while the login was under way: the client must not get
                    // a session on a backend that left its pool. A member drained at
                    // idle points keeps it: the session ends at its first idle point.
                    refuse(client, packet.seq, ER_CONNECTION_KILLED, "70100", FENCED_DURING_LOGIN).await;
                    failed(ctx, "fenced");
                    return Err(LoginError::Ended(Ended::Fenced));
                }
                client.write_all(&packet.encode()).await?;
                client.flush().await?;
                if done {
                    if packet.is_err() {
                        debug!("the backend refused the login");
                        return Err(LoginError::Ended(Ended::Login(LoginEnd::BackendRefused)));
                    }
                    if !from_client.buf.is_empty() {
                        upstream.write_all(&from_client.buf).await?;
                    }
                    if !from_backend.buf.is_empty() {
                        client.write_all(&from_backend.buf).await?;
                    }
                    return Ok(());
                }
            }
            Side::Client(Some(mut packet)) => {
                packet.seq = packet.seq.wrapping_sub(shift);
                upstream.write_all(&packet.encode()).await?;
                upstream.flush().await?;
            }
        }
    }
}

enum Side {
    Client(Option<Packet>),
    Backend(Option<Packet>),
}
