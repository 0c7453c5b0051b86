//! Restarting a checker task that died.
//!
//! A probe's panic is caught inside its check (one failed check at L7). Anything else
//! that ends a checker task with a panic would leave its backend's state frozen at the
//! last observation; [`supervised`] runs the task again, made afresh, after a backoff
//! that doubles from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`] (and starts over after a
//! task lived [`HEALTHY_RUN`]), and raises an alarm each time: an ERROR line,
//! `switchyard_checker_restarts_total{backend}` and an alarm event on the timeline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::metrics as m;
use crate::timeline::{EventKind, Timeline};

/// The wait before the first restart.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A task that ran this long before dying restarts after [`FIRST_BACKOFF`] again.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs `make()`'s task on `tracker` until it returns or `stop` is cancelled,
/// restarting it after a panic; see the module docs.
pub fn supervised<F, T>(
    tracker: &TaskTracker,
    backend: String,
    timeline: Arc<Timeline>,
    stop: CancellationToken,
    make: F,
) where
    F: Fn() -> T + Send + 'static,
    T: Future<Output = ()> + Send + 'static,
{
    tracker.spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let outcome = tokio::spawn(make()).await;
            let Err(e) = outcome else { return };
            if stop.is_cancelled() || e.is_cancelled() {
                return;
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff = FIRST_BACKOFF;
            }
            metrics::counter!(m::CHECKER_RESTARTS, "backend" => backend.clone()).increment(1);
            error!(%backend, error = %e, backoff_ms = backoff.as_millis() as u64, "ALARM: the checker task died; restarting it");
            let detail = format!("checker of {backend} died ({e}); restarting in {} ms", backoff.as_millis());
            timeline.push(EventKind::Alarm, None, Some(&backend), detail);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_dies_is_restarted_with_doubling_backoff_and_an_alarm_each_time() {
        let tracker = TaskTracker::new();
        let timeline = Arc::new(Timeline::default());
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let origin = Instant::now();
        let (r, s, stopped) = (runs.clone(), starts.clone(), stop.clone());
        supervised(&tracker, "db1".into(), timeline.clone(), stop.clone(), move || {
            let run = r.fetch_add(1, Ordering::SeqCst);
            s.lock().unwrap().push(origin.elapsed().as_millis());
            let stopped = stopped.clone();
            async move {
                if run < 4 {
                    panic!("checker bug (scripted)");
                }
                // Like a checker: runs until shutdown.
                stopped.cancelled().await
            }
        });
        while runs.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Four deaths, restarted after 100, 200, 400 and 800 ms.
        assert_eq!(*starts.lock().unwrap(), vec![0, 100, 300, 700, 1500]);
        let alarms: Vec<_> = timeline
            .events()
            .into_iter()
            .filter(|e| e.kind == EventKind::Alarm && e.backend.as_deref() == Some("db1"))
            .collect();
        assert_eq!(alarms.len(), 4, "{alarms:?}");
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_is_not_restarted() {
        let tracker = TaskTracker::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        supervised(
            &tracker,
            "db1".into(),
            Arc::default(),
            CancellationToken::new(),
            move || {
                r.fetch_add(1, Ordering::SeqCst);
                async {}
            },
        );
        tracker.close();
        tracker.wait().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
