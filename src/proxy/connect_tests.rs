//! `connect_routed` under paused time, with scripted connects: the next member after
//! a refusal, never a member fenced while its connect was in flight, holding until
//! a new routing generation, and the hold timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::backend::Backend;
use crate::config::LoginLimits;
use crate::config::{Config, ListenerMode, TcpOptions};
use crate::pool::{Eviction, Pool};
use crate::routing::{Routing, RoutingTable};
use crate::timeline::Timeline;

/// What the scripted connect does for one address.
#[derive(Clone, Copy)]
enum Answer {
    Refuse,
    /// Succeeds after this long.
    Accept(Duration),
}

type Script = Arc<Mutex<HashMap<SocketAddr, Answer>>>;

/// A pool `p` of `a` (127.0.0.1:1) and `b` (127.0.0.1:2) in that order, hold
/// timeout 5 s, and a session context whose connects follow `script`; a connect
/// "stream" is the address it reached.
fn context(script: &Script) -> SessionContext<impl Connect<Stream = SocketAddr>> {
    let config = Config::parse(
        r#"
[backends.a]
address = "127.0.0.1:1"
[backends.b]
address = "127.0.0.1:2"
[pools.p]
backends = ["a", "b"]
hold_timeout = "5s"
connect_timeout = "1s"
[listeners.l]
listen = "127.0.0.1:0"
pool = "p"
"#,
        "test",
    )
    .unwrap();
    let pool = Pool::all(&config, &Backend::all(&config)).remove(0);
    let script = script.clone();
    let connect = move |address: SocketAddr| {
        let answer = script.lock().unwrap().get(&address).copied();
        async move {
            match answer {
                Some(Answer::Accept(after)) => {
                    tokio::time::sleep(after).await;
                    Ok(address)
                }
                Some(Answer::Refuse) | None => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
            }
        }
    };
    SessionContext {
        listener: "l".into(),
        mode: ListenerMode::Tcp,
        tls: None,
        require_tls: false,
        routing: Arc::new(Routing::new(RoutingTable::new(1, vec![Vec::new()]))),
        pool,
        tcp: TcpOptions {
            keepalive: Duration::from_secs(30),
            user_timeout: Duration::from_secs(30),
        },
        kill: CancellationToken::new(),
        timeline: Arc::new(Timeline::default()),
        sessions_moved: metrics::Counter::noop(),
        connect,
        login: LoginLimits {
            timeout: Duration::from_secs(5),
            concurrent: 1,
        },
        logins: Arc::new(tokio::sync::Semaphore::new(1)),
        accept_proxy: None,
        sends_proxy: false,
    }
}

fn script(answers: &[(u16, Answer)]) -> Script {
    let answers = answers
        .iter()
        .map(|&(port, answer)| (SocketAddr::from(([127, 0, 0, 1], port)), answer));
    Arc::new(Mutex::new(answers.collect()))
}

/// Publishes generation `generation` with every member of the pool routable.
fn route_all<C: Connect>(ctx: &SessionContext<C>, generation: u64) {
    ctx.routing
        .publish(RoutingTable::new(generation, vec![ctx.pool.members.clone()]));
}

fn name<S>(connected: &Result<Connected<S>, Ended>) -> Option<&str> {
    connected.as_ref().ok().map(|c| c.member.backend.name.as_str())
}

#[tokio::test(start_paused = true)]
async fn a_refused_member_is_skipped_for_the_next_and_its_checker_nudged() {
    let script = script(&[(1, Answer::Refuse), (2, Answer::Accept(Duration::ZERO))]);
    let ctx = context(&script);
    route_all(&ctx, 2);
    let started = Instant::now();
    let connected = connect_routed(&ctx).await;
    assert_eq!(name(&connected), Some("b"));
    let connected = connected.unwrap();
    assert_eq!(connected.stream, SocketAddr::from(([127, 0, 0, 1], 2)));
    assert_eq!(connected.held, Duration::ZERO, "the refusal took no time");
    assert_eq!(started.elapsed(), Duration::ZERO, "no hold");
    assert_eq!(ctx.pool.hold.merged().len(), 0, "not counted as held");
    let a = &ctx.pool.members[0].backend;
    tokio::time::timeout(Duration::from_millis(1), a.attention.nudged())
        .await
        .expect("the refused backend's checker was nudged");
}

/// Which member a session ends up on when member `a`'s connect (300 ms) is still in
/// flight as `a` gets `eviction` (at 100 ms); `b` answers at once.
async fn connected_when_a_gets(eviction: Eviction) -> Option<String> {
    let script = script(&[
        (1, Answer::Accept(Duration::from_millis(300))),
        (2, Answer::Accept(Duration::ZERO)),
    ]);
    let ctx = context(&script);
    route_all(&ctx, 2);
    let session = connect_routed(&ctx);
    let evict = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ctx.pool.members[0].set_eviction(eviction);
    };
    let (connected, ()) = tokio::join!(session, evict);
    name(&connected).map(str::to_string)
}

#[tokio::test(start_paused = true)]
async fn a_member_fenced_while_its_connect_was_in_flight_is_not_used() {
    let fenced = connected_when_a_gets(Eviction::CloseAt(Instant::now())).await;
    assert_eq!(fenced.as_deref(), Some("b"), "a's connect finished after it was fenced");
}

#[tokio::test(start_paused = true)]
async fn a_member_drained_while_its_connect_was_in_flight_takes_no_new_session() {
    let drained = connected_when_a_gets(Eviction::Draining).await;
    assert_eq!(
        drained.as_deref(),
        Some("b"),
        "a was drained before its connect finished"
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_is_held_until_a_generation_routes_a_member() {
    let script = script(&[(1, Answer::Accept(Duration::ZERO))]);
    let ctx = context(&script);
    let session = connect_routed(&ctx);
    let promote = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        route_all(&ctx, 2);
    };
    let started = Instant::now();
    let (connected, ()) = tokio::join!(session, promote);
    assert_eq!(name(&connected), Some("a"));
    assert_eq!(
        connected.unwrap().held,
        Duration::from_millis(1500),
        "the hold, for the access log"
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(1500),
        "held until the new generation"
    );
    assert_eq!(ctx.pool.hold.merged().len(), 1, "the hold is recorded");
}

#[tokio::test(start_paused = true)]
async fn a_held_session_gives_up_at_the_hold_timeout() {
    let script = script(&[(1, Answer::Refuse), (2, Answer::Refuse)]);
    let ctx = context(&script);
    route_all(&ctx, 2);
    let session = connect_routed(&ctx);
    let unrelated = async {
        // A new generation that still routes only refusing members: tried again, in vain.
        tokio::time::sleep(Duration::from_secs(2)).await;
        route_all(&ctx, 3);
    };
    let started = Instant::now();
    let (connected, ()) = tokio::join!(session, unrelated);
    assert_eq!(
        connected.err(),
        Some(Ended::ConnectFailed),
        "routable, but nobody answered"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5), "the pool's hold_timeout");
    assert_eq!(ctx.pool.hold.merged().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn refused_then_unrouted_ends_for_want_of_a_backend_not_a_failed_connect() {
    // A failover: the first connect is refused, then the checks route nothing.
    let script = script(&[(1, Answer::Refuse), (2, Answer::Refuse)]);
    let ctx = context(&script);
    route_all(&ctx, 2);
    let session = connect_routed(&ctx);
    let unroute = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ctx.routing.publish(RoutingTable::new(3, vec![Vec::new()]));
    };
    let (connected, ()) = tokio::join!(session, unroute);
    assert_eq!(
        connected.err(),
        Some(Ended::NoBackend),
        "the last round had nothing to try"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hold_with_nothing_routable_ends_for_want_of_a_backend() {
    let ctx = context(&script(&[]));
    let started = Instant::now();
    assert_eq!(connect_routed(&ctx).await.err(), Some(Ended::NoBackend));
    assert_eq!(started.elapsed(), Duration::from_secs(5), "the pool's hold_timeout");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_held_session() {
    let ctx = context(&script(&[]));
    let session = connect_routed(&ctx);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        ctx.kill.cancel();
    };
    let started = Instant::now();
    let (connected, ()) = tokio::join!(session, kill);
    assert_eq!(connected.err(), Some(Ended::Shutdown));
    assert_eq!(started.elapsed(), Duration::from_millis(700));
}
