//! The figures of one target in one scenario, pure: from what the clients saw, what
//! the Sentinels said (sampled), and what the final master holds.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

/// One command as a client saw it.
#[derive(Debug, Clone)]
pub struct Op {
    /// The key it wrote (or the message number).
    pub key: String,
    pub started: Instant,
    pub ended: Instant,
    /// The port of the node that acknowledged it (`None` when the client cannot tell,
    /// as kombu cannot), or the error.
    pub result: Result<Option<u16>, String>,
}

/// What every Sentinel named at one moment (the master's port, per Sentinel).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub named: Vec<Option<u16>>,
}

/// How far around a command the Sentinels' word is looked for: the monitor asks the
/// three Sentinels in turn, then sleeps 10 ms, so samples are 10–30 ms apart; a proxy
/// that acts on the word the moment it changes may land a write before the next one.
const SLACK: Duration = Duration::from_millis(50);

/// An acknowledged command whose node no Sentinel named at any sample from its start
/// to its end (with [`SLACK`]): a write a non-master took. A lower bound: a Sentinel
/// that lags still names the old master, and that excuses writes to it (the lost
/// writes show them). No sample in the window: unknown, not counted.
pub fn by_non_master(op: &Op, samples: &[Sample]) -> bool {
    let Ok(Some(port)) = op.result else { return false };
    let (from, to) = (op.started.checked_sub(SLACK).unwrap_or(op.started), op.ended + SLACK);
    let mut around = samples.iter().filter(|s| s.at >= from && s.at <= to).peekable();
    around.peek().is_some() && !around.any(|s| s.named.contains(&Some(port)))
}

/// The longest time without a successful command, from `since` on: between two
/// successive acknowledgements (or from `since` to the first one, or from the last to
/// `until`).
pub fn outage(ops: &[Op], since: Instant, until: Instant) -> Duration {
    let mut ends: Vec<Instant> = ops
        .iter()
        .filter(|o| o.result.is_ok() && o.ended >= since && o.ended <= until)
        .map(|o| o.ended)
        .collect();
    ends.sort();
    let mut points = vec![since];
    points.extend(ends);
    points.push(until);
    points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// Acknowledged keys absent from `held`.
pub fn missing(ops: &[Op], held: &HashSet<String>) -> usize {
    ops.iter()
        .filter(|o| o.result.is_ok() && !held.contains(&o.key))
        .count()
}

/// When a Sentinel first named another port than `before`, from `since` on.
pub fn announced(samples: &[Sample], before: u16, since: Instant) -> Option<Instant> {
    samples
        .iter()
        .find(|s| s.at >= since && s.named.iter().flatten().any(|&p| p != before))
        .map(|s| s.at)
}

/// `later - earlier` in whole milliseconds, negative when `later` came first.
pub fn signed_ms(later: Instant, earlier: Instant) -> i128 {
    later.saturating_duration_since(earlier).as_millis() as i128
        - earlier.saturating_duration_since(later).as_millis() as i128
}

/// The first acknowledgement by `port` that ended after `after`.
pub fn first_on(ops: &[Op], port: u16, after: Instant) -> Option<Instant> {
    ops.iter()
        .filter(|o| o.ended >= after && matches!(o.result, Ok(Some(p)) if p == port))
        .map(|o| o.ended)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(start_ms: u64, end_ms: u64, port: Option<u16>, ok: bool, base: Instant) -> Op {
        Op {
            key: format!("k{start_ms}"),
            started: base + Duration::from_millis(start_ms),
            ended: base + Duration::from_millis(end_ms),
            result: if ok { Ok(port) } else { Err("e".into()) },
        }
    }

    #[test]
    fn a_write_counts_against_the_node_only_when_no_sentinel_named_it_around_it() {
        let base = Instant::now();
        let samples: Vec<Sample> = (0..100)
            .map(|i| Sample {
                at: base + Duration::from_millis(i * 10),
                named: if i < 50 {
                    vec![Some(1), Some(1)]
                } else {
                    vec![Some(2), Some(1)]
                },
            })
            .chain((100..200).map(|i| Sample {
                at: base + Duration::from_millis(i * 10),
                named: vec![Some(2), Some(2)],
            }))
            .collect();
        assert!(!by_non_master(&op(100, 101, Some(1), true, base), &samples));
        assert!(
            !by_non_master(&op(700, 701, Some(1), true, base), &samples),
            "one Sentinel still names it"
        );
        assert!(by_non_master(&op(1500, 1501, Some(1), true, base), &samples));
        assert!(
            !by_non_master(&op(1500, 1501, Some(1), false, base), &samples),
            "an error is no ack"
        );
        assert!(
            !by_non_master(&op(1500, 1501, None, true, base), &samples),
            "unknown node"
        );
        assert!(
            !by_non_master(&op(5000, 5001, Some(1), true, base), &samples),
            "no sample around it"
        );
        // Just after the word moved, within the slack.
        assert!(!by_non_master(&op(1030, 1031, Some(1), true, base), &samples));
        assert!(by_non_master(&op(1060, 1061, Some(1), true, base), &samples));
        assert_eq!(announced(&samples, 1, base), Some(base + Duration::from_millis(500)));
    }

    #[test]
    fn outage_is_the_longest_gap_between_acknowledgements() {
        let base = Instant::now();
        let ops = [
            op(0, 10, Some(1), true, base),
            op(10, 20, Some(1), true, base),
            op(20, 900, Some(1), false, base),
            op(900, 1500, Some(2), true, base),
            op(1500, 1510, Some(2), true, base),
        ];
        let until = base + Duration::from_millis(1600);
        assert_eq!(outage(&ops, base, until), Duration::from_millis(1480));
        assert_eq!(first_on(&ops, 2, base), Some(base + Duration::from_millis(1500)));
        assert_eq!(signed_ms(base, base + Duration::from_millis(7)), -7);
        let held: HashSet<String> = ["k0".to_string(), "k900".to_string()].into();
        assert_eq!(missing(&ops, &held), 2, "k10 and k1500 were acknowledged and are gone");
    }
}
