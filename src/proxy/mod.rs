//! One client session: (TLS handshake) → pick → (hold) → connect → (backend TLS, or
//! the MySQL login in `mysql` mode) → copy.
//!
//! 0. On a TLS listener in `tcp` mode the client's handshake comes first, under its
//!    own timeout, so a client that never finishes one costs no backend connection.
//!    In `mysql` mode TLS starts inside the protocol: see [`mysql`].
//! 1. Load the routing table (lock-free), order the pool's routable members by the
//!    pool's policy, and try them in turn with the connect timeout. Nothing has been
//!    read from the client yet, so trying the next one is always safe; every failure
//!    nudges that backend's checker.
//! 2. If nothing is routable or every connect failed, hold: wait for the next table
//!    generation, up to `hold_timeout`, then close cleanly. Steps 1 and 2 are
//!    `connect_routed` in `connect.rs`, over the [`Connect`] seam.
//! 3. Copy both ways with [`pipe::copy`] (a FIN in one direction is forwarded
//!    as a FIN and the other direction goes on; a buffer only while bytes are in
//!    flight), until both sides close, the session is idle too long, the member is
//!    fenced, or shutdown's grace runs out (the one timer for these: `watchdog.rs`).
//!    What the copy follows in the bytes is the listener mode's [`pipe::Follow`]:
//!    nothing (`tcp`), the MySQL command phase (`mysql`: a drain ends the session at
//!    an idle point), or the MongoDB replies (`mongo`: a "not primary" reply ends it
//!    instead of reaching the client, and keeps new sessions off that member).
//! 4. At its end the session writes one access line (`access.rs`): how it [`Ended`],
//!    the time of each phase above, and the bytes each way.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info, info_span, warn, Instrument, Span};

use crate::config::{AcceptProxy, ListenerMode, LoginLimits, TcpOptions};
use crate::metrics as m;
use crate::pipe::{self, Follow, Traffic};
use crate::pool::{Member, Pool};
use crate::routing::Routing;
use crate::stream::Stream;
use crate::tcp;
use crate::timeline::Timeline;
use crate::tls::ServerTls;

mod access;
mod connect;
pub mod mysql;
pub mod proxy_header;
mod watchdog;

use access::{Micros, Phases};
use connect::{connect_routed, Connected};
pub use connect::{Connect, TcpConnect};
use watchdog::watchdog;

/// How long a backend TLS handshake may take on the data path.
const BACKEND_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a session needs from its listener. `C` is how it connects to a backend
/// ([`TcpConnect`] but in tests).
#[derive(Debug)]
pub struct SessionContext<C: Connect = TcpConnect> {
    /// The listener's name, for metrics and logs.
    pub listener: String,
    /// What the listener understands of the bytes: `tcp` or `mysql`.
    pub mode: ListenerMode,
    /// TLS termination, when the listener has it.
    pub tls: Option<Arc<ServerTls>>,
    /// `mysql` mode: refuse clients that do not ask for TLS.
    pub require_tls: bool,
    /// The pool this listener routes to.
    pub pool: Arc<Pool>,
    /// The published routing table sessions pick a backend from.
    pub routing: Arc<Routing>,
    /// The listener's socket options, for both legs of a session.
    pub tcp: TcpOptions,
    /// Cancelled when shutdown's grace period is over.
    pub kill: CancellationToken,
    /// Where sessions record failover events (first session on a new primary, old
    /// sessions closed).
    pub timeline: Arc<Timeline>,
    /// `switchyard_sessions_moved_total` for this listener.
    pub sessions_moved: metrics::Counter,
    /// How a session connects to a backend.
    pub connect: C,
    /// `mysql` mode: the connection phase's timeout and concurrency.
    pub login: LoginLimits,
    /// `mysql` mode: one permit per connection phase under way ([`LoginLimits::concurrent`]).
    pub logins: Arc<tokio::sync::Semaphore>,
    /// The PROXY protocol header clients' balancer sends, if it does.
    pub accept_proxy: Option<AcceptProxy>,
    /// Some member of the pool is sent a PROXY header (`send_proxy`): sessions then
    /// need the address the client reached. Worked out once, not per session.
    pub sends_proxy: bool,
}

/// Where a session comes from: the client and the address it reached (the PROXY
/// header's, when the listener reads one; else the connection's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client.
    pub client: SocketAddr,
    /// The address the client connected to.
    pub reached: SocketAddr,
}

/// How a session ended (its access line's `cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client ended its side first (the backend's end followed).
    ClientClosed,
    /// The backend ended its side first.
    BackendClosed,
    /// The copy failed (a reset, a broken pipe, a TLS error mid-session).
    Failed,
    /// No byte moved either way for the pool's `idle_timeout`.
    Idle,
    /// Its member left the pool under the `close` or `drain` policy, or a drain's
    /// deadline passed.
    Fenced,
    /// `mysql` mode: closed at an idle point (no command in flight, no transaction
    /// open) while its member was drained.
    IdlePoint,
    /// `mongo` mode: the server replied that it is no longer the primary; the reply
    /// was not forwarded.
    NotPrimary,
    /// Shutdown's grace period ran out.
    Shutdown,
    /// Nothing routable within `hold_timeout`.
    NoBackend,
    /// Members were routable in the last round but every connect to them failed
    /// within `hold_timeout` (or the PROXY header could not be sent).
    ConnectFailed,
    /// The proxy ran short of its own resources (descriptors, memory) connecting.
    LocalShortage,
    /// The client's TLS handshake failed.
    Handshake,
    /// The TLS handshake to the backend failed.
    BackendTls,
    /// `mysql` mode: the login could not be carried through, or a client without
    /// TLS was refused; why, in a word.
    Login(LoginEnd),
}

/// Why a `mysql`-mode connection phase ended before the command phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginEnd {
    /// No login slot within the login timeout (`max_logins` under way).
    NoSlot,
    /// The backend answered the login with an error (a wrong password, an unknown user).
    BackendRefused,
    /// A client without TLS on a `require_tls` listener.
    TlsRequired,
    /// An auth plugin that would send the password in clear to a plaintext backend.
    Cleartext,
    /// Bytes this exchange cannot accept, from the client or the backend.
    Protocol,
    /// A leg's connection was lost.
    Lost,
    /// The login did not finish within the login timeout.
    Timeout,
}

impl LoginEnd {
    /// The access log's word for it.
    pub fn reason(self) -> &'static str {
        match self {
            LoginEnd::NoSlot => "too-many-logins",
            LoginEnd::BackendRefused => "backend-refused",
            LoginEnd::TlsRequired => "tls-required",
            LoginEnd::Cleartext => "cleartext-password",
            LoginEnd::Protocol => "protocol",
            LoginEnd::Lost => "connection-lost",
            LoginEnd::Timeout => "timeout",
        }
    }
}

/// Serves one accepted client connection to its end: first its PROXY header, when
/// the listener reads one (a connection refused for it ends here, counted and
/// logged), then the session, in a span naming the client the header names.
pub async fn serve(ctx: Arc<SessionContext>, mut client: TcpStream, peer: SocketAddr) {
    let reached = if ctx.sends_proxy {
        client.local_addr().unwrap_or(peer)
    } else {
        peer
    };
    let origin = match &ctx.accept_proxy {
        None => Origin { client: peer, reached },
        Some(accept) => match proxy_header::read(&mut client, peer, accept).await {
            Ok(header) => header
                .addresses
                .map_or(Origin { client: peer, reached }, |(client, reached)| Origin {
                    client,
                    reached,
                }),
            Err(refused) => {
                metrics::counter!(m::PROXY_HEADERS_REFUSED, "listener" => ctx.listener.clone(), "reason" => refused.reason())
                    .increment(1);
                if crate::logs::kinds::PROXY_HEADERS.allow() {
                    warn!(listener = %ctx.listener, client = %peer, cause = %refused, "closing a client connection for its PROXY header");
                }
                return;
            }
        },
    };
    // On the access log's target: a filter that keeps the access log keeps the span
    // its lines take the listener, pool, client and backend from.
    let span = info_span!(
        target: "switchyard::access",
        "session",
        listener = %ctx.listener,
        pool = %ctx.pool.name(),
        client = %origin.client,
        via = field::Empty,
        backend = field::Empty,
        tls = field::Empty,
        sni = field::Empty
    );
    if origin.client != peer {
        span.record("via", field::display(peer));
    }
    async move {
        ctx.pool.sessions_active.increment(1.0);
        let mut phases = Phases::new();
        let ended = session(&ctx, client, origin, &mut phases).await;
        ctx.pool.sessions_active.decrement(1.0);
        access::write(&phases, ended);
    }
    .instrument(span)
    .await
}

async fn session(ctx: &SessionContext, client: TcpStream, origin: Origin, phases: &mut Phases) -> Ended {
    // On Linux the client socket came with the listener's options (see `tcp`).
    if !tcp::ACCEPTED_INHERIT_OPTIONS {
        if let Err(e) = tcp::tune(&client, &ctx.tcp) {
            if crate::logs::kinds::SOCKET_OPTIONS.allow() {
                warn!(error = %e, "cannot set keepalive/TCP_USER_TIMEOUT on the client socket; half-open sessions may linger");
            }
        }
    }
    match ctx.mode {
        ListenerMode::Tcp | ListenerMode::Mongo => {
            let client = match &ctx.tls {
                None => Stream::Plain(client),
                // Boxed, here and below: an async fn's state is as large as its largest
                // await point, so inline TLS and MySQL-login states would make every
                // session pay for them.
                Some(tls) => {
                    let started = Instant::now();
                    let accepted = Box::pin(accept_tls(tls, client)).await;
                    phases.tls = Micros::of(started.elapsed());
                    match accepted {
                        Some(stream) => Stream::Server(Box::new(stream)),
                        None => return Ended::Handshake,
                    }
                }
            };
            let (member, upstream) = match reach(ctx, origin, phases).await {
                Ok(reached) => reached,
                Err(ended) => return ended,
            };
            let upstream = match &member.backend.tls {
                None => Stream::Plain(upstream),
                Some(_) => {
                    let started = Instant::now();
                    let originated = Box::pin(originate_tls(ctx, &member, upstream)).await;
                    phases.backend_tls = Micros::of(started.elapsed());
                    match originated {
                        Some(stream) => Stream::Client(Box::new(stream)),
                        None => return Ended::BackendTls,
                    }
                }
            };
            let follow = match ctx.mode {
                ListenerMode::Mongo => Follow::Mongo(Box::default()),
                _ => Follow::Bytes,
            };
            carry(ctx, &member, client, upstream, follow, phases).await
        }
        ListenerMode::Mysql => {
            // A login slot before a backend connection is made for a client that has
            // not sent a byte yet: garbage clients get at most `max_logins` of them.
            let Some(slot) = mysql::login_slot(ctx, Instant::now() + ctx.login.timeout).await else {
                return Ended::Login(LoginEnd::NoSlot);
            };
            let (member, upstream) = match reach(ctx, origin, phases).await {
                Ok(reached) => reached,
                Err(ended) => return ended,
            };
            // The login's own time starts once a backend answered (a client may have
            // been held for it through a failover).
            let started = Instant::now();
            let deadline = started + ctx.login.timeout;
            let logged_in = Box::pin(mysql::login(ctx, &member, client, upstream, deadline)).await;
            phases.login = Micros::of(started.elapsed());
            drop(slot);
            match logged_in {
                Ok((client, upstream, commands)) => {
                    carry(ctx, &member, client, upstream, Follow::Mysql(commands), phases).await
                }
                Err(ended) => ended,
            }
        }
    }
}

/// Connects to a routed member (holding while there is none) and sends it the PROXY
/// header it wants; records the hold and connect times.
async fn reach(ctx: &SessionContext, origin: Origin, phases: &mut Phases) -> Result<(Arc<Member>, TcpStream), Ended> {
    let Connected {
        member,
        stream,
        held,
        connect,
    } = connect_routed(ctx).await?;
    (phases.hold, phases.connect) = (Micros::of(held), Micros::of(connect));
    match announce(ctx, &member, stream, origin).await {
        Some(stream) => Ok((member, stream)),
        None => Err(Ended::ConnectFailed),
    }
}

/// Sends the backend our PROXY header when it wants one (before any other byte);
/// `None` when that failed (the backend's checker is nudged).
async fn announce(ctx: &SessionContext, member: &Member, mut upstream: TcpStream, origin: Origin) -> Option<TcpStream> {
    let Some(version) = member.backend.send_proxy else {
        return Some(upstream);
    };
    let addresses = (origin.client, origin.reached);
    match proxy_header::send(&mut upstream, version, addresses, ctx.pool.config.connect_timeout).await {
        Ok(()) => Some(upstream),
        Err(e) => {
            if crate::logs::kinds::CONNECT_FAILURES.allow() {
                warn!(cause = %e, "cannot send the PROXY header to the backend; closing the client");
            }
            member.backend.nudge();
            None
        }
    }
}

/// The server side of a client's TLS handshake; records version and SNI on the span.
async fn accept_tls(tls: &ServerTls, client: TcpStream) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tls.accept(client).await {
        Ok(accepted) => {
            let span = Span::current();
            span.record("tls", accepted.version);
            if let Some(sni) = &accepted.sni {
                span.record("sni", crate::logs::peer(sni).as_str());
            }
            Some(accepted.stream)
        }
        Err(e @ crate::tls::HandshakeFailure::Rejected(_)) if tls.log_rejection() => {
            info!(cause = %e, "client TLS handshake failed");
            None
        }
        Err(e) => {
            debug!(cause = %e, "client TLS handshake failed");
            None
        }
    }
}

/// The client side of a TLS handshake with a session's backend, under
/// [`BACKEND_HANDSHAKE_TIMEOUT`]. A failure nudges the backend's checker.
async fn originate_tls(
    ctx: &SessionContext,
    member: &Member,
    upstream: TcpStream,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tls = member.backend.tls.as_ref()?;
    let cause = match tokio::time::timeout(BACKEND_HANDSHAKE_TIMEOUT, tls.connect(upstream)).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "handshake timed out".to_string(),
    };
    if crate::logs::kinds::TLS_FAILURES.allow() {
        warn!(cause = %cause, "TLS handshake with the backend failed; closing the client");
    }
    metrics::counter!(m::BACKEND_TLS_FAILURES, "pool" => ctx.pool.name().to_string(), "backend" => member.backend.name.clone())
        .increment(1);
    member.backend.nudge();
    None
}

/// Copies a connected session to its end and records what it did. `follow`: what the
/// copy follows in the bytes (a `mysql`-mode session's tracker, a `mongo`-mode
/// session's reply watch).
async fn carry(
    ctx: &SessionContext,
    member: &Arc<Member>,
    client: Stream,
    upstream: Stream,
    follow: Follow,
    phases: &mut Phases,
) -> Ended {
    let counted = member.enter();
    if ctx.pool.awaits_first_session() && ctx.timeline.first_session(ctx.pool.id, &member.backend.name) {
        ctx.pool.first_session_seen();
    }
    let started = Instant::now();
    let ended = copy_to_end(client, upstream, member, ctx, follow, phases).await;
    let bytes = phases.from_client + phases.from_backend;
    drop(counted);
    let duration = started.elapsed();
    member.stats.duration.record_duration(duration);
    member.session_seconds.record(duration.as_secs_f64());
    member.stats.bytes.record(bytes);
    member.session_bytes.record(bytes as f64);
    match ended {
        Ended::Fenced => member.fenced.increment(1),
        Ended::IdlePoint => member.closed_idle.increment(1),
        _ => {}
    }
    if member.is_evicted() && member.active() == 0 {
        ctx.timeline.old_sessions_closed(ctx.pool.id, &member.backend.name);
    }
    ended
}

/// How long a member whose reply said "not primary" gets no new session, unless the
/// checks route it again sooner (they are nudged at once).
const SUSPECT_FOR: Duration = Duration::from_secs(2);

/// Copies both ways until the session ends for one of the reasons in [`Ended`];
/// returns the reason, with the bytes moved each way in `phases`.
async fn copy_to_end(
    client: Stream,
    upstream: Stream,
    member: &Member,
    ctx: &SessionContext,
    follow: Follow,
    phases: &mut Phases,
) -> Ended {
    // Only a `mysql`-mode tracker reads replies that could say the node cannot serve.
    let traffic = Traffic {
        attention: matches!(follow, Follow::Mysql(_)).then(|| member.backend.attention.clone()),
        ..Traffic::default()
    };
    let gentle = matches!(follow, Follow::Mongo(_));
    // Biased: once fenced or killed, not one more byte is copied.
    let ended = tokio::select! {
        biased;
        ended = watchdog(&traffic, ctx.pool.config.idle_timeout, member.eviction(), &ctx.kill, gentle) => ended,
        result = pipe::copy(client, upstream, &traffic, &ctx.tcp, follow) => {
            if let Err(e) = result {
                debug!(error = %e, "session error");
                phases.error = Some(e.kind());
                Ended::Failed
            } else if traffic.closed_idle.load(Ordering::Relaxed) {
                // A fenced `mongo` session that finished its operation first.
                if matches!(member.eviction_now(), crate::pool::Eviction::CloseAt(_)) {
                    Ended::Fenced
                } else {
                    Ended::IdlePoint
                }
            } else if traffic.not_primary.load(Ordering::Relaxed) {
                // No new session goes there until the checks have had their say; every
                // member is checked at once (the new primary is among them).
                member.suspect(SUSPECT_FOR);
                for m in &ctx.pool.members {
                    m.backend.nudge();
                }
                Ended::NotPrimary
            } else if traffic.first_end.load(Ordering::Relaxed) == pipe::BACKEND_FIRST {
                Ended::BackendClosed
            } else {
                Ended::ClientClosed
            }
        }
    };
    let (up, down) = (
        traffic.upstream.load(Ordering::Relaxed),
        traffic.downstream.load(Ordering::Relaxed),
    );
    member.bytes_upstream.increment(up);
    member.bytes_downstream.increment(down);
    member.bytes_spliced.increment(traffic.spliced.load(Ordering::Relaxed));
    (phases.from_client, phases.from_backend) = (up, down);
    ended
}
