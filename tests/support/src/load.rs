//! Client load for the tests that change a running proxy (reloads, hot upgrades)
//! and count what clients saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::{poll_pause, read_line, within};

const LIMIT: Duration = Duration::from_secs(30);

/// Eight clients that open, use and close sessions (banner, one echoed line) back to
/// back through `target` until [`Load::finish`], counting those that completed and
/// those that failed.
pub struct Load {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(target: SocketAddr) -> Load {
        let (stop, completed, failed) = (
            Arc::default(),
            Arc::<AtomicUsize>::default(),
            Arc::<AtomicUsize>::default(),
        );
        let tasks = (0..8)
            .map(|_| {
                let (stop, completed, failed): (Arc<AtomicBool>, _, _) =
                    (Arc::clone(&stop), completed.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let session = async {
                            let mut stream = TcpStream::connect(target).await.ok()?;
                            let banner = read_line(&mut stream).await;
                            stream.write_all(b"ping\n").await.ok()?;
                            (read_line(&mut stream).await == "ping" && !banner.is_empty()).then_some(())
                        };
                        match session.await {
                            Some(()) => completed.fetch_add(1, Ordering::Relaxed),
                            None => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            completed,
            failed,
            tasks,
        }
    }

    /// Waits for `more` sessions to complete.
    pub async fn run_for(&self, more: usize) {
        let target = self.completed.load(Ordering::Relaxed) + more;
        within(LIMIT, "sessions under load", async {
            while self.completed.load(Ordering::Relaxed) < target {
                poll_pause().await;
            }
        })
        .await
    }

    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        (
            self.completed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
