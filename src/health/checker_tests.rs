//! `Checker::run` under paused time, with a scripted check: when it checks (cadence,
//! fast interval, nudges, urgency) and that it stops on shutdown. Checks take no
//! time here, so the instant an observation arrives is the instant of its check.

use super::*;
use crate::health::Status;
use std::collections::VecDeque;

/// Outcomes in order (`+` passes, `-` fails, `!` panics, `m` fails with EMFILE, a
/// local failure, `h` hangs until its deadline and fails, as a probe of a hung
/// server does); once they run out, every further check hangs.
struct Script(VecDeque<char>, Arc<std::sync::atomic::AtomicUsize>);

impl Check for Script {
    fn check(&mut self, _: SocketAddr, deadline: Instant) -> impl Future<Output = Result<Report, CheckError>> + Send {
        let next = self.0.pop_front();
        async move {
            match next {
                Some('+') => Ok(Report::reachable()),
                Some('h') => {
                    tokio::time::sleep_until(deadline).await;
                    Err(CheckError::Connect("timed out (scripted)".into()))
                }
                Some('!') => panic!("a decoder met bytes it did not expect (scripted)"),
                Some('m') => Err(CheckError::connect(&std::io::Error::from_raw_os_error(libc::EMFILE))),
                Some(_) => Err(CheckError::Connect("refused (scripted)".into())),
                None => std::future::pending().await,
            }
        }
    }

    fn reset(&mut self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }
}

fn config() -> CheckConfig {
    crate::health::tests::check()
}

struct Running {
    events: mpsc::Receiver<Observation>,
    attention: Arc<Attention>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
    /// How often the checker reset its check.
    resets: Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts a checker on `script` (see [`Script`]).
fn start(script: &str) -> Running {
    start_with(script, &config())
}

/// [`start`] with the check timings of `config`.
fn start_with(script: &str, config: &CheckConfig) -> Running {
    let (tx, events) = mpsc::channel(16);
    let attention = Arc::new(Attention::default());
    let shutdown = CancellationToken::new();
    let outcomes = script.chars().collect();
    let address = "127.0.0.1:1".parse().unwrap();
    let resets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let script = Script(outcomes, resets.clone());
    let checker = Checker::new(7, "b", address, attention.clone(), script, config, tx);
    let task = tokio::spawn(checker.run(shutdown.clone()));
    Running {
        events,
        attention,
        shutdown,
        task,
        started: Instant::now(),
        resets,
    }
}

impl Running {
    /// The next observation and when (in ms since the start) its check ran.
    async fn next(&mut self) -> (u128, Observation) {
        let observation = self.events.recv().await.expect("the checker stopped");
        (self.started.elapsed().as_millis(), observation)
    }

    /// When (ms since the start) each of the next `n` checks ran.
    async fn times(&mut self, n: usize) -> Vec<u128> {
        let mut times = Vec::new();
        for _ in 0..n {
            times.push(self.next().await.0);
        }
        times
    }
}

#[tokio::test(start_paused = true)]
async fn rise_and_fall_set_the_cadence() {
    let mut checker = start("+---+++");
    let mut seen = Vec::new();
    for _ in 0..7 {
        let (at, observation) = checker.next().await;
        assert_eq!(observation.backend, 7);
        seen.push((at, observation.status, observation.flip.map(|f| f.to)));
    }
    use Status::{Down, Up};
    assert_eq!(
        seen,
        [
            (0, Up, Some(Up)), // unchecked: at once, and the first result decides
            (1000, Up, None),  // interval; the first failure of `fall = 2`
            (1250, Down, Some(Down)),
            (3250, Down, None), // down interval
            (5250, Down, None), // the first pass of `rise = 2`
            (7250, Up, Some(Up)),
            (8250, Up, None), // interval again
        ]
    );
    assert_eq!(
        seen.iter().filter(|(_, _, flip)| flip.is_some()).count(),
        3,
        "each flip reported once"
    );
}

/// A backend's check timings when the config gives none, jitter set aside so that the
/// worst case below is exact.
fn default_timings() -> CheckConfig {
    let text = "[backends.b]\naddress = \"127.0.0.1:1\"\n[pools.p]\nbackends = [\"b\"]\n\
                [listeners.l]\nlisten = \"127.0.0.1:0\"\npool = \"p\"\n";
    let mut check = crate::config::Config::parse(text, "t.toml").unwrap().backends[0]
        .check
        .clone();
    check.jitter = crate::config::Fraction::new(0.0).unwrap();
    check
}

/// The defaults' promise (README, "Fast detection by default"): with the fault just
/// after a passing check (the worst case, no traffic to nudge the checks), a refused
/// backend is down within 0.5 s and a hung one within 1.5 s.
#[tokio::test(start_paused = true)]
async fn the_default_timings_take_a_refused_backend_out_by_350_ms_and_a_hung_one_by_1350() {
    let down_at = |mut checker: Running| async move {
        loop {
            let (at, observation) = checker.next().await;
            if observation.flip.map(|f| f.to) == Some(Status::Down) {
                return at;
            }
        }
    };
    assert_eq!(
        down_at(start_with("+--", &default_timings())).await,
        350,
        "250 ms interval, 100 ms fast"
    );
    assert_eq!(
        down_at(start_with("+hh", &default_timings())).await,
        1350,
        "two 500 ms timeouts 100 ms apart, after the 250 ms interval"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_short_of_fall_switches_to_the_fast_interval_until_a_pass() {
    let mut checker = start("+-+++");
    assert_eq!(checker.times(5).await, [0, 1000, 1250, 2250, 3250]);
}

#[tokio::test(start_paused = true)]
async fn nudges_bring_the_next_check_forward_but_not_closer_than_the_gap() {
    let mut checker = start("++++");
    assert_eq!(checker.next().await.0, 0);
    for _ in 0..5 {
        checker.attention.nudge();
    }
    assert_eq!(checker.next().await.0, 20, "20 ms after the last check, not at once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    checker.attention.nudge();
    assert_eq!(checker.next().await.0, 520, "the gap has passed: at once");
    assert_eq!(checker.next().await.0, 1520, "then the interval again");
}

#[tokio::test(start_paused = true)]
async fn urgency_checks_a_down_backend_at_once_and_then_at_the_fast_interval() {
    let mut checker = start("------");
    assert_eq!(checker.next().await.1.status, Status::Down);
    tokio::time::sleep(Duration::from_millis(100)).await;
    checker.attention.set_urgent(true);
    assert_eq!(checker.times(3).await, [100, 350, 600]);
    checker.attention.set_urgent(false);
    assert_eq!(
        checker.times(2).await,
        [850, 2850],
        "the down interval once urgency ends"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_panics_fails_its_check_at_l7_and_the_checker_goes_on() {
    let mut checker = start("+!+");
    assert_eq!(checker.next().await.1.status, Status::Up);
    let (_, panicked) = checker.next().await;
    let error = panicked.result.expect_err("a panic is a failed check");
    assert_eq!(error.layer(), crate::health::Layer::L7);
    assert!(error.to_string().contains("panicked"), "{error}");
    assert_eq!(
        checker.resets.load(Ordering::Relaxed),
        1,
        "what the check kept is forgotten"
    );
    assert!(checker.next().await.1.result.is_ok(), "the next check runs as usual");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_waiting_checker_and_one_stuck_in_a_check() {
    let mut waiting = start("+");
    waiting.next().await;
    waiting.shutdown.cancel();
    waiting.task.await.unwrap();
    assert!(waiting.events.recv().await.is_none(), "no check after shutdown");

    let mut stuck = start("");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(stuck.events.try_recv().is_err(), "the check hangs");
    stuck.shutdown.cancel();
    stuck.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn local_failures_change_no_status_in_either_direction() {
    // Up after two passes; then EMFILE five times (more than `fall`): still up, no
    // flip; then down by real failures; then EMFILE again: still down, no flip.
    let mut running = start("++mmmmm---mmm");
    let mut seen = Vec::new();
    for _ in 0..13 {
        let (_, observation) = running.next().await;
        seen.push((
            observation.status,
            observation.flip.map(|f| f.to),
            observation.result.map(|_| ()).map_err(|e| e.layer()),
        ));
    }
    let statuses: Vec<Status> = seen.iter().map(|s| s.0).collect();
    assert_eq!(&statuses[2..7], &[Status::Up; 5], "{seen:?}");
    assert!(
        seen[2..7]
            .iter()
            .all(|s| s.1.is_none() && s.2 == Err(crate::health::Layer::Local)),
        "{seen:?}"
    );
    assert_eq!(statuses[9], Status::Down, "real failures still count: {seen:?}");
    assert_eq!(&statuses[10..], &[Status::Down; 3], "{seen:?}");
    assert!(seen[10..].iter().all(|s| s.1.is_none()), "{seen:?}");
    running.shutdown.cancel();
}
