//! What the clients saw, computed from the operation records (pure functions).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::fault::PrimaryTimeline;
use crate::workload::{Op, OpKind};

/// One second of the drill.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Second {
    pub t: u32,
    pub ok: u32,
    pub errors: u32,
    /// p99 latency of the operations that ended in this second, ms.
    pub p99_ms: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("static bounds are valid")
}

/// Operations bucketed by the second they ended in (`0..duration_s`, empty seconds
/// included, so a stall shows as zeros).
pub fn per_second(ops: &[Op], duration_s: u32) -> Vec<Second> {
    let mut histograms: Vec<Histogram<u64>> = (0..duration_s).map(|_| histogram()).collect();
    let mut seconds: Vec<Second> = (0..duration_s).map(|t| Second { t, ..Second::default() }).collect();
    for op in ops {
        let t = (op.ended_ms / 1000.0).floor().max(0.0) as usize;
        let Some(second) = seconds.get_mut(t) else { continue };
        match op.result {
            Ok(_) => second.ok += 1,
            Err(_) => second.errors += 1,
        }
        let _ = histograms[t].record((op.latency_ms() * 1000.0).max(1.0) as u64);
    }
    for (second, h) in seconds.iter_mut().zip(&histograms) {
        if !h.is_empty() {
            second.p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0;
        }
    }
    seconds
}

/// Latency percentiles of one kind of operation, ms.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub fn latency(ops: &[Op], kind: OpKind) -> Latency {
    let mut h = histogram();
    for op in ops.iter().filter(|o| o.kind == kind && o.result.is_ok()) {
        let _ = h.record((op.latency_ms() * 1000.0).max(1.0) as u64);
    }
    if h.is_empty() {
        return Latency::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// From `fault_ms` to the end of the first successful write that started after it
/// (what a client felt as the outage), or `None` if none succeeded.
pub fn outage_after(ops: &[Op], fault_ms: f64) -> Option<f64> {
    ops.iter()
        .filter(|o| o.kind == OpKind::Write && o.result.is_ok() && o.started_ms >= fault_ms)
        .map(|o| o.ended_ms - fault_ms)
        .min_by(f64::total_cmp)
}

/// The longest time without a successful write completion: between two of them, and
/// from the drill's start to the first and from the last to the drill's end.
pub fn longest_write_gap(ops: &[Op], duration_ms: f64) -> f64 {
    let mut ends: Vec<f64> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.result.is_ok())
        .map(|o| o.ended_ms)
        .collect();
    ends.sort_by(f64::total_cmp);
    let (Some(&first), Some(&last)) = (ends.first(), ends.last()) else {
        return duration_ms;
    };
    ends.windows(2)
        .map(|w| w[1] - w[0])
        .fold(first.max(duration_ms - last), f64::max)
}

/// Failed operations by kind of error.
pub fn errors_by_kind(ops: &[Op]) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    for op in ops {
        if let Err(kind) = &op.result {
            *kinds.entry(kind.clone()).or_insert(0) += 1;
        }
    }
    kinds
}

/// Writes acknowledged by a server that was not the primary of record at any
/// instant while the write was in flight. Must be empty.
pub fn acked_by_non_primary<'a>(ops: &'a [Op], timeline: &PrimaryTimeline) -> Vec<&'a Op> {
    ops.iter()
        .filter(|o| o.kind == OpKind::Write)
        .filter(|o| matches!(o.result, Ok(server) if !timeline.was_primary_during(server, o.started_ms, o.ended_ms)))
        .collect()
}

/// Acknowledged write ids that are not in `present` (read back from the final primary).
pub fn missing_writes(ops: &[Op], present: &std::collections::HashSet<u64>) -> Vec<u64> {
    let mut missing: Vec<u64> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.result.is_ok() && !present.contains(&o.id))
        .map(|o| o.id)
        .collect();
    missing.sort_unstable();
    missing
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn op(id: u64, start: f64, end: f64, result: Result<u32, &str>) -> Op {
        Op {
            kind: OpKind::Write,
            id,
            worker: 0,
            scheduled_ms: start,
            started_ms: start,
            ended_ms: end,
            result: result.map_err(str::to_string),
            via: None,
        }
    }

    fn drill() -> Vec<Op> {
        vec![
            op(1, 100.0, 110.0, Ok(1)),
            op(2, 900.0, 920.0, Ok(1)),
            op(3, 1000.0, 1100.0, Err("connection lost")),
            op(4, 1500.0, 1600.0, Err("mysql 1290")),
            op(5, 2100.0, 2150.0, Ok(2)),
            op(6, 2400.0, 3200.0, Ok(2)),
        ]
    }

    #[test]
    fn buckets_count_every_second_including_empty_ones() {
        let seconds = per_second(&drill(), 4);
        let counts: Vec<_> = seconds.iter().map(|s| (s.ok, s.errors)).collect();
        assert_eq!(counts, [(2, 0), (0, 2), (1, 0), (1, 0)]);
        assert!(
            seconds[3].p99_ms >= 790.0,
            "latency from the schedule: {:?}",
            seconds[3]
        );
    }

    #[test]
    fn outage_is_fault_to_first_success_started_after_it() {
        assert_eq!(outage_after(&drill(), 1000.0), Some(1150.0));
        assert_eq!(outage_after(&drill(), 5000.0), None);
    }

    #[test]
    fn longest_gap_between_successful_writes() {
        assert_eq!(longest_write_gap(&drill(), 3300.0), 2150.0 - 920.0);
        assert_eq!(
            longest_write_gap(&drill(), 9000.0),
            9000.0 - 3200.0,
            "a fault that never recovers"
        );
        assert_eq!(longest_write_gap(&[], 5000.0), 5000.0);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let kinds = errors_by_kind(&drill());
        assert_eq!(kinds["connection lost"], 1);
        assert_eq!(kinds["mysql 1290"], 1);
    }

    #[test]
    fn acks_from_a_non_primary_are_caught() {
        let timeline = PrimaryTimeline(vec![(0.0, Some(1)), (1000.0, None), (2000.0, Some(2))]);
        assert!(acked_by_non_primary(&drill(), &timeline).is_empty());
        let mut bad = drill();
        bad.push(op(7, 1200.0, 1300.0, Ok(1))); // the old primary acked during the gap
        bad.push(op(8, 2500.0, 2600.0, Ok(3))); // a replica acked
        let wrong: Vec<u64> = acked_by_non_primary(&bad, &timeline).iter().map(|o| o.id).collect();
        assert_eq!(wrong, [7, 8]);
    }

    #[test]
    fn missing_writes_are_acked_ids_not_read_back() {
        let present: HashSet<u64> = [1, 2, 5].into_iter().collect();
        assert_eq!(
            missing_writes(&drill(), &present),
            [6],
            "failed writes may be missing; acked ones not"
        );
    }
}
