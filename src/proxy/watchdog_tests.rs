//! The watchdog under paused time: idle sessions, fencing now and at a drain
//! deadline, shutdown, and the keepalive flag for the copy.

use std::sync::atomic::Ordering;

use super::*;

const IDLE: Duration = Duration::from_secs(4);

/// Runs the watchdog alongside `meanwhile`; returns why it ended and when (since
/// the start). `meanwhile` must not end the test before the watchdog does.
async fn watch_with(
    traffic: &Traffic,
    eviction: watch::Receiver<Eviction>,
    kill: &CancellationToken,
    meanwhile: impl std::future::Future<Output = ()>,
) -> (Ended, Duration) {
    let started = Instant::now();
    let watched = async {
        let ended = watchdog(traffic, IDLE, eviction, kill).await;
        (ended, started.elapsed())
    };
    tokio::pin!(watched);
    tokio::pin!(meanwhile);
    let mut meanwhile_done = false;
    loop {
        tokio::select! {
            result = &mut watched => return result,
            () = &mut meanwhile, if !meanwhile_done => meanwhile_done = true,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_session_ends_idle_after_the_idle_limit() {
    let traffic = Traffic::default();
    let (_fence, eviction) = watch::channel(Eviction::Active);
    let kill = CancellationToken::new();
    let (ended, after) = watch_with(&traffic, eviction, &kill, async {}).await;
    assert_eq!((ended, after), (Ended::Idle, IDLE));
    assert!(
        traffic.liveness_due.load(Ordering::Relaxed),
        "flagged for keepalive on the way"
    );
}

#[tokio::test(start_paused = true)]
async fn a_byte_either_way_restarts_the_idle_count() {
    let traffic = Traffic::default();
    let (_fence, eviction) = watch::channel(Eviction::Active);
    let kill = CancellationToken::new();
    let talk = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        traffic.downstream.fetch_add(1, Ordering::Relaxed);
    };
    let (ended, after) = watch_with(&traffic, eviction, &kill, talk).await;
    assert_eq!(ended, Ended::Idle);
    // Seen at the 3 s check, then four quiet quarters.
    assert_eq!(after, Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn fencing_closes_at_once_or_at_the_drain_deadline() {
    for (close_in, expected) in [
        (Duration::ZERO, Duration::from_millis(600)),
        (Duration::from_secs(2), Duration::from_millis(2600)),
    ] {
        let traffic = Traffic::default();
        let (fence, eviction) = watch::channel(Eviction::Active);
        let kill = CancellationToken::new();
        let leave = async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            fence.send_replace(Eviction::CloseAt(Instant::now() + close_in));
        };
        let busy = async {
            // Traffic keeps the session from going idle meanwhile.
            for _ in 0..100 {
                traffic.upstream.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let meanwhile = async { tokio::join!(leave, busy).0 };
        let (ended, after) = watch_with(&traffic, eviction, &kill, meanwhile).await;
        assert_eq!((ended, after), (Ended::Fenced, expected), "close in {close_in:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_member_that_rejoins_before_its_drain_deadline_keeps_its_sessions() {
    let traffic = Traffic::default();
    let (fence, eviction) = watch::channel(Eviction::Active);
    let kill = CancellationToken::new();
    let flap = async {
        fence.send_replace(Eviction::CloseAt(Instant::now() + Duration::from_secs(2)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        fence.send_replace(Eviction::Active);
    };
    let (ended, after) = watch_with(&traffic, eviction, &kill, flap).await;
    assert_eq!((ended, after), (Ended::Idle, IDLE), "not fenced at 2 s");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_session_first() {
    let traffic = Traffic::default();
    let (fence, eviction) = watch::channel(Eviction::Active);
    let kill = CancellationToken::new();
    let both = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill.cancel();
        fence.send_replace(Eviction::CloseAt(Instant::now()));
    };
    let (ended, after) = watch_with(&traffic, eviction, &kill, both).await;
    assert_eq!((ended, after), (Ended::Shutdown, Duration::from_millis(300)));
}
