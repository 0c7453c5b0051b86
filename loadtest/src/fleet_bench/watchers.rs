//! Simulated fleet members: many watch streams on the verdict key (over a few etcd
//! connections, as sidecars would each hold one), each noting when the next verdict
//! arrived.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, WatchOptions};

/// Watchers per etcd connection.
const PER_CLIENT: usize = 50;

/// The running watchers.
pub struct Watching {
    arrivals: Arc<Mutex<Vec<u64>>>,
    count: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts `count` watchers of `key` from its next revision.
pub async fn start(endpoints: &[String], key: &str, count: usize) -> Result<Watching> {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut started = 0;
    while started < count {
        let endpoint = format!("http://{}", endpoints[(started / PER_CLIENT) % endpoints.len()]);
        let mut client = bounded(Client::connect([endpoint], None))
            .await
            .context("etcd connect")?;
        let revision = bounded(client.get(key, None))
            .await?
            .header()
            .map_or(0, |h| h.revision());
        for _ in 0..PER_CLIENT.min(count - started) {
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let mut stream = bounded(client.watch(key, Some(options))).await?;
            let arrivals = arrivals.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(response)) = stream.message().await {
                    if !response.events().is_empty() {
                        arrivals.lock().expect("arrivals").push(switchyard::timeline::now_ms());
                        return;
                    }
                }
            }));
            started += 1;
        }
    }
    Ok(Watching { arrivals, count, tasks })
}

/// An etcd request that fails after 5 s.
async fn bounded<T>(request: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .context("etcd did not answer within 5 s")?
        .context("etcd request")
}

impl Watching {
    /// Per watcher that saw the verdict within `limit`: its delay after `written_ms`.
    pub async fn delays(self, written_ms: u64, limit: Duration) -> Vec<u64> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.arrivals.lock().expect("arrivals").len() < self.count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in &self.tasks {
            task.abort();
        }
        let arrivals = self.arrivals.lock().expect("arrivals").clone();
        arrivals.iter().map(|at| at.saturating_sub(written_ms)).collect()
    }
}
