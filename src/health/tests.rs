use std::num::NonZeroU32;

use super::*;
use crate::config::{Fraction, ProbeConfig};

fn run(h: &mut Hysteresis, results: &str) -> Vec<Status> {
    results
        .chars()
        .map(|c| {
            h.observe(c == '+');
            h.status()
        })
        .collect()
}

#[test]
fn first_observation_decides_at_once() {
    assert_eq!(
        Hysteresis::new(3, 3).observe(true),
        Some(Flip {
            from: Status::Unknown,
            to: Status::Up
        })
    );
    assert_eq!(
        Hysteresis::new(3, 3).observe(false),
        Some(Flip {
            from: Status::Unknown,
            to: Status::Down
        })
    );
}

#[test]
fn fall_consecutive_failures_take_it_down() {
    use Status::*;
    let mut h = Hysteresis::new(2, 3);
    assert_eq!(run(&mut h, "+--+---"), [Up, Up, Up, Up, Up, Up, Down]);
}

#[test]
fn rise_consecutive_passes_bring_it_up() {
    use Status::*;
    let mut h = Hysteresis::new(2, 1);
    assert_eq!(run(&mut h, "-+-++"), [Down, Down, Down, Down, Up]);
}

#[test]
fn flapping_never_flips_with_rise_and_fall_above_one() {
    let mut h = Hysteresis::new(2, 2);
    h.observe(true);
    let flips = (0..100).filter_map(|i| h.observe(i % 2 == 0)).count();
    assert_eq!(flips, 0);
    assert_eq!(h.status(), Status::Up);
}

#[test]
fn each_flip_is_reported_once() {
    let mut h = Hysteresis::new(1, 1);
    let flips: Vec<_> = "++--++".chars().map(|c| h.observe(c == '+')).collect();
    assert_eq!(flips.iter().filter(|f| f.is_some()).count(), 3);
}

/// A TCP check: interval 1 s, fast 250 ms, down 2 s, timeout 1 s, rise and fall 2, no
/// jitter (also the checker's paused-time tests' config).
pub(super) fn check() -> CheckConfig {
    CheckConfig {
        probe: ProbeConfig::Tcp,
        interval: Duration::from_secs(1),
        fast_interval: Duration::from_millis(250),
        down_interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        rise: NonZeroU32::new(2).unwrap(),
        fall: NonZeroU32::new(2).unwrap(),
        jitter: Fraction::new(0.0).unwrap(),
    }
}

#[test]
fn cadence_follows_state() {
    let c = check();
    let mut h = Hysteresis::new(2, 2);
    assert_eq!(cadence(&h, &c, false), Duration::ZERO, "first check at once");
    h.observe(true);
    assert_eq!(cadence(&h, &c, false), c.interval);
    assert_eq!(cadence(&h, &c, true), c.fast_interval, "urgent");
    h.observe(false);
    assert_eq!(cadence(&h, &c, false), c.fast_interval, "failing but still up");
    h.observe(false);
    assert_eq!(h.status(), Status::Down);
    assert_eq!(cadence(&h, &c, false), c.down_interval);
    assert_eq!(cadence(&h, &c, true), c.fast_interval, "urgent while down");
}

#[test]
fn jitter_stays_within_bounds() {
    let wait = Duration::from_secs(1);
    assert_eq!(jittered(wait, 0.2, 0.0), Duration::from_millis(800));
    assert_eq!(jittered(wait, 0.2, 1.0), Duration::from_millis(1200));
    assert_eq!(jittered(wait, 0.0, 0.7), wait);
}

#[test]
fn timeouts_know_their_layer() {
    assert_eq!(CheckError::Timeout(Phase::Connecting).layer(), Layer::L4);
    assert_eq!(CheckError::Timeout(Phase::Reading).layer(), Layer::L7);
    assert_eq!(CheckError::Connect("refused".into()).layer(), Layer::L4);
    assert_eq!(CheckError::Response("status 500".into()).layer(), Layer::L7);
}

#[test]
fn a_resumed_hysteresis_needs_fall_failures_not_one() {
    let mut up = Hysteresis::resume(2, 2, Status::Up);
    assert_eq!(
        up.observe(false),
        None,
        "one failure of a resumed up backend is not enough"
    );
    assert_eq!(up.observe(false).map(|f| f.to), Some(Status::Down));
    let mut down = Hysteresis::resume(2, 2, Status::Down);
    assert_eq!(down.observe(true), None);
    assert_eq!(down.observe(true).map(|f| f.to), Some(Status::Up));
    assert_eq!(
        Hysteresis::resume(2, 2, Status::Unknown).observe(true).map(|f| f.to),
        Some(Status::Up)
    );
}

#[test]
fn a_forced_status_is_taken_as_it_is_and_hysteresis_goes_on_from_it() {
    let mut h = Hysteresis::new(2, 2);
    assert_eq!(
        h.force(Status::Up),
        Some(Flip {
            from: Status::Unknown,
            to: Status::Up
        })
    );
    assert_eq!(h.force(Status::Up), None);
    assert_eq!(
        h.force(Status::Down),
        Some(Flip {
            from: Status::Up,
            to: Status::Down
        })
    );
    // Back to own checks: `rise` passes bring it up, as after any down.
    assert_eq!(h.observe(true), None);
    assert_eq!(
        h.observe(true),
        Some(Flip {
            from: Status::Down,
            to: Status::Up
        })
    );
}
