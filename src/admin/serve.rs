//! The admin listener's accept loop, with the limits a port that anyone on the
//! network may reach needs:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once; past that a new one is closed
//!   at once (counted, and logged at a limited rate), not queued;
//! - [`HEADER_TIMEOUT`] for a request's head, which is also how long a kept-alive
//!   connection may sit idle between requests (hyper's timer runs while it waits
//!   for the next head), so dripping or silent clients are closed;
//! - [`REQUEST_TIMEOUT`] for a handler's answer, [`MAX_LIFETIME`] for a whole
//!   connection (a client that never reads its answer); a call that waits on purpose
//!   (a hold with `drain=`, a switchover: see [`waits_on_purpose`]) has
//!   [`LONG_REQUEST_TIMEOUT`], and the connection lives while it runs;
//! - request heads of at most [`MAX_HEAD`] bytes, bodies of at most [`MAX_BODY`].
//!
//! It runs on a thread of its own (see `app`), so that a scrape flood is served
//! beside the checkers and the router, not in their way.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, warn};

use crate::logs;
use crate::metrics as m;

/// Admin connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest a request head may take to arrive, and a kept-alive connection may
/// wait for its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a handler may take to answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one connection may stay open.
pub const MAX_LIFETIME: Duration = Duration::from_secs(60);
/// The longest a call that waits on purpose may take: the longest hold, and a margin.
pub const LONG_REQUEST_TIMEOUT: Duration = Duration::from_secs(crate::config::MAX_HOLD.as_secs() + 30);
/// The largest request head (request line and headers), bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest request body, bytes (no route reads more than a few).
pub const MAX_BODY: usize = 4 * 1024;
/// How long shutdown waits for admin connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let app = app.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    let refused = metrics::counter!(m::ADMIN_REFUSED);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                backoff = Duration::from_millis(5);
                tcp
            }
            Err(e) => {
                if let Some(resource) = crate::local::classify(&e) {
                    crate::local::report(resource, "accept", "admin", &e.to_string());
                } else if logs::kinds::ACCEPT_ERRORS.allow() {
                    warn!(listener = "admin", error = %e, "accept failed; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            if logs::kinds::ADMIN_REFUSED.allow() {
                warn!(max = MAX_CONNECTIONS, "admin: too many connections; closing a new one");
            }
            continue;
        };
        connections.spawn(connection(tcp, app.clone(), slot, shutdown.clone()));
    }
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
}

/// One admin connection, under its limits.
async fn connection(tcp: TcpStream, app: Router, _slot: OwnedSemaphorePermit, shutdown: CancellationToken) {
    let _ = tcp.set_nodelay(true);
    let born = tokio::time::Instant::now();
    let (lifetime, mut close_at) = tokio::sync::watch::channel(born + MAX_LIFETIME);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut app = app.clone();
        let long = waits_on_purpose(&request);
        let lifetime = lifetime.clone();
        async move {
            let limit = if long {
                lifetime.send_replace(tokio::time::Instant::now() + LONG_REQUEST_TIMEOUT + SHUTDOWN_GRACE);
                LONG_REQUEST_TIMEOUT
            } else {
                REQUEST_TIMEOUT
            };
            let answer = tokio::time::timeout(limit, app.call(request.map(Body::new))).await;
            if long {
                // Past its lifetime by now, the connection closes once this answer is out.
                lifetime.send_replace(born + MAX_LIFETIME);
            }
            Ok::<_, std::convert::Infallible>(match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => timed_out(),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    loop {
        let until = *close_at.borrow_and_update();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "admin connection ended with an error");
                }
            }
            _ = tokio::time::sleep_until(until) => {
                // Finishes the answer under way, then closes.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                debug!("admin connection open too long; closed");
            }
            Ok(()) = close_at.changed() => continue,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
            }
        }
        break;
    }
}

/// Calls whose answer waits for something on purpose: `POST /pools/NAME/hold` with
/// `drain=` (until the drained sessions are gone) and `POST /pools/NAME/switchover`.
fn waits_on_purpose<B>(request: &Request<B>) -> bool {
    let uri = request.uri();
    let path = uri.path();
    request.method() == axum::http::Method::POST
        && path.starts_with("/pools/")
        && (path.ends_with("/switchover")
            || (path.ends_with("/hold")
                && uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("drain=")))))
}

fn timed_out() -> Response<Body> {
    let mut response = Response::new(Body::from("the answer took too long\n"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}
