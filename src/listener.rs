//! The accept loop of one listener: a connection cap (a semaphore permit per
//! session), backoff on accept errors (EMFILE must not spin a core), and one task per
//! session, tracked so shutdown can wait for them.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::proxy::{self, SessionContext};

pub struct Listener {
    pub name: String,
    pub tcp: TcpListener,
    pub limit: Arc<Semaphore>,
    pub ctx: Arc<SessionContext>,
}

impl Listener {
    /// Accepts until `stop` is cancelled; sessions run on in `sessions`.
    pub async fn run(self, stop: CancellationToken, sessions: TaskTracker) {
        let mut backoff = Duration::from_millis(5);
        info!(listener = %self.name, address = ?self.tcp.local_addr().ok(), pool = %self.ctx.pool.name(), "listening");
        loop {
            let permit = tokio::select! {
                permit = self.limit.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = stop.cancelled() => return,
            };
            let accepted = tokio::select! {
                accepted = self.tcp.accept() => accepted,
                _ = stop.cancelled() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let ctx = self.ctx.clone();
                    sessions.spawn(async move {
                        proxy::serve(ctx, stream, peer).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    error!(listener = %self.name, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
