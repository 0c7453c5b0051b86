//! The watchdog under paused time: idle sessions, fencing now and at a drain
//! deadline, shutdown, and the keepalive flag for the copy.

use std::sync::atomic::Ordering;

use super::*;

const IDLE: Duration = Duration::from_secs(4);

/// What a session's watchdog watches, and the handles a test moves them with.
struct Watched {
    traffic: Traffic,
    fence: watch::Sender<Eviction>,
    kill: CancellationToken,
    /// A session whose copy knows its idle points (`mongo` mode).
    gentle: bool,
}

impl Watched {
    fn new() -> Self {
        Watched {
            traffic: Traffic::default(),
            fence: watch::Sender::new(Eviction::Active),
            kill: CancellationToken::new(),
            gentle: false,
        }
    }

    /// Runs the watchdog alongside `meanwhile`; returns why it ended and when (since
    /// the start).
    async fn run(&self, meanwhile: impl std::future::Future<Output = ()>) -> (Ended, Duration) {
        let started = Instant::now();
        let watched = async {
            let ended = watchdog(&self.traffic, IDLE, self.fence.subscribe(), &self.kill, self.gentle).await;
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

    /// The member leaves its pool `after` from now; its sessions close `close_in` later.
    async fn leave(&self, after: Duration, close_in: Duration) {
        tokio::time::sleep(after).await;
        self.fence.send_replace(Eviction::CloseAt(Instant::now() + close_in));
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_session_ends_idle_after_the_idle_limit() {
    let session = Watched::new();
    assert_eq!(session.run(async {}).await, (Ended::Idle, IDLE));
    assert!(
        session.traffic.liveness_due.load(Ordering::Relaxed),
        "flagged for keepalive on the way"
    );
}

#[tokio::test(start_paused = true)]
async fn a_byte_either_way_restarts_the_idle_count() {
    let session = Watched::new();
    let talk = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        session.traffic.downstream.fetch_add(1, Ordering::Relaxed);
    };
    // Seen at the 3 s check, then four quiet quarters.
    assert_eq!(session.run(talk).await, (Ended::Idle, Duration::from_secs(7)));
}

/// A busy session whose member leaves its pool at 600 ms, to close `close_in` later:
/// why the watchdog ended it, and when.
async fn fenced_at(close_in: Duration) -> (Ended, Duration) {
    let session = Watched::new();
    let busy = async {
        // Traffic keeps the session from going idle meanwhile.
        for _ in 0..100 {
            session.traffic.upstream.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let meanwhile = async {
        tokio::join!(session.leave(Duration::from_millis(600), close_in), busy);
    };
    session.run(meanwhile).await
}

#[tokio::test(start_paused = true)]
async fn a_fenced_session_closes_at_once() {
    assert_eq!(
        fenced_at(Duration::ZERO).await,
        (Ended::Fenced, Duration::from_millis(600))
    );
}

#[tokio::test(start_paused = true)]
async fn a_drained_session_closes_at_the_drain_deadline() {
    assert_eq!(
        fenced_at(Duration::from_secs(2)).await,
        (Ended::Fenced, Duration::from_millis(2600))
    );
}

#[tokio::test(start_paused = true)]
async fn a_member_that_rejoins_before_its_drain_deadline_keeps_its_sessions() {
    let session = Watched::new();
    let flap = async {
        session.leave(Duration::ZERO, Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        session.fence.send_replace(Eviction::Active);
    };
    assert_eq!(session.run(flap).await, (Ended::Idle, IDLE), "not fenced at 2 s");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_session_first() {
    let session = Watched::new();
    let both = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        session.kill.cancel();
        session.fence.send_replace(Eviction::CloseAt(Instant::now()));
    };
    assert_eq!(session.run(both).await, (Ended::Shutdown, Duration::from_millis(300)));
}

#[tokio::test(start_paused = true)]
async fn a_drained_member_keeps_its_live_sessions() {
    let session = Watched::new();
    let drain = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        session.fence.send_replace(Eviction::Draining);
    };
    assert_eq!(session.run(drain).await, (Ended::Idle, IDLE), "never fenced, ends idle");
}

#[tokio::test(start_paused = true)]
async fn a_fenced_mongo_session_may_finish_its_operation_first() {
    let mut session = Watched::new();
    session.gentle = true;
    let leave = async {
        session.leave(Duration::from_millis(600), Duration::ZERO).await;
        // Busy past the fence: the copy is told to end at its next idle point.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            session.traffic.upstream.fetch_add(1, Ordering::Relaxed);
        }
        assert!(session.traffic.close_when_idle.load(Ordering::Relaxed));
    };
    // Never idle here: the grace ends it.
    assert_eq!(session.run(leave).await, (Ended::Fenced, Duration::from_millis(1600)));
    // Without a copy that knows its idle points, the fence is at once.
    let plain = Watched::new();
    let leave = plain.leave(Duration::from_millis(600), Duration::ZERO);
    assert_eq!(plain.run(leave).await, (Ended::Fenced, Duration::from_millis(600)));
}
