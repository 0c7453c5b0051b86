//! The soak's plan and its verdict, pure: which fault when (a fixed rotation over
//! the peers, one per window, each repaired inside its window), and what the
//! samples of the proxy process say about descriptors and memory.

use std::time::Duration;

use serde::Serialize;

use crate::scenario::{Action, Fault};

/// Which peers a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// The 3-node MariaDB cluster behind the `mysql` listener.
    Mysql,
    /// The scripted 3-member replica set behind the `mongo` listener.
    Mongo,
    /// The two echo servers behind the `tcp` and `tls` listeners.
    Servers,
}

/// The rotation: what hits which peers, and what repairs it later in the window.
const ROTATION: [(Group, Action, Option<Action>); 7] = [
    (Group::Mysql, Action::KillPrimary, Some(Action::Rejoin)),
    (Group::Mongo, Action::Elect, None),
    (Group::Servers, Action::Refuse, Some(Action::Admit)),
    (Group::Mysql, Action::Switchover, None),
    (Group::Mongo, Action::KillPrimary, Some(Action::Rejoin)),
    (Group::Mysql, Action::StopPrimary, None),
    (Group::Mongo, Action::StopPrimary, None),
];

/// One step for one group's fault task.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub group: Group,
    pub fault: Fault,
    /// A repair (rejoin, admit), not a fault of its own.
    pub repair: bool,
}

/// Faults at `every`, `2·every`, … while a whole window of `every` follows each
/// before `duration` ends; a fault that needs a repair gets it `every·2/5` later,
/// and SIGSTOPs last `every/6`. Sorted by time.
pub fn schedule(duration: Duration, every: Duration) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut at = every;
    for (group, action, repair) in ROTATION.iter().copied().cycle() {
        if every.is_zero() || at + every > duration {
            break;
        }
        let fault = Fault {
            at,
            action,
            promote_after: Duration::from_secs(1),
            stop_for: every / 6,
            stale_claim: false,
        };
        steps.push(Step {
            group,
            fault,
            repair: false,
        });
        if let Some(repair) = repair {
            let fault = Fault {
                at: at + every * 2 / 5,
                action: repair,
                ..fault
            };
            steps.push(Step {
                group,
                fault,
                repair: true,
            });
        }
        at += every;
    }
    steps
}

/// One sample of the proxy process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the soak started.
    pub at_s: f64,
    /// Open descriptors (`/proc/PID/fd`).
    pub fds: usize,
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kb: u64,
}

/// Descriptors before the first fault and at the end of each fault's window.
#[derive(Debug, Clone, Serialize)]
pub struct Descriptors {
    /// The fewest open in the last quarter-window before the first fault.
    pub baseline: usize,
    /// Per fault: the fewest open in the last quarter of its window (client
    /// connections come and go; the floor is what the proxy itself still holds).
    pub floors: Vec<usize>,
}

impl Descriptors {
    /// The windows (0-based, by fault) after which the descriptors never came back to
    /// the baseline: a leaked descriptor stays, while a client connection that
    /// lingers past its window's end (a driver closing late) is gone by a later
    /// window's. The last window is judged by the idle count once the load is over
    /// ([`idle_leak`]).
    pub fn above_baseline(&self) -> Vec<usize> {
        let last = self.floors.len().saturating_sub(1);
        (0..last)
            .filter(|&i| self.floors[i..].iter().min().is_some_and(|&f| f > self.baseline))
            .collect()
    }
}

/// Descriptors the proxy holds once every client is gone, beyond what it held
/// before the first one came (`None`: none).
pub fn idle_leak(before: usize, after: usize) -> Option<usize> {
    (after > before).then(|| after - before)
}

fn fewest(samples: &[Sample], from_s: f64, to_s: f64) -> Option<usize> {
    samples
        .iter()
        .filter(|s| s.at_s >= from_s && s.at_s < to_s)
        .map(|s| s.fds)
        .min()
}

/// Reads [`Descriptors`] off `samples` for faults at `faults_s` (ascending), the
/// last window ending at `end_s`; `None` when a window holds no sample.
pub fn descriptors(samples: &[Sample], faults_s: &[f64], every_s: f64, end_s: f64) -> Option<Descriptors> {
    let settle = every_s / 4.0;
    let first = *faults_s.first()?;
    let baseline = fewest(samples, first - settle, first)?;
    let ends = faults_s.iter().skip(1).copied().chain([end_s]);
    let floors = ends
        .map(|end| fewest(samples, end - settle, end))
        .collect::<Option<Vec<_>>>()?;
    Some(Descriptors { baseline, floors })
}

/// Memory after the warm-up against memory at its end.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    /// The median RSS over the last 10 s of the warm-up, KiB.
    pub warm_kb: u64,
    /// The largest RSS after the warm-up, KiB.
    pub peak_kb: u64,
    /// `peak / warm - 1`.
    pub growth: f64,
}

/// Reads [`Memory`] off `samples`; `None` without samples on both sides of
/// `warmup_s`.
pub fn memory(samples: &[Sample], warmup_s: f64) -> Option<Memory> {
    let mut warm: Vec<u64> = samples
        .iter()
        .filter(|s| s.at_s >= warmup_s - 10.0 && s.at_s < warmup_s)
        .map(|s| s.rss_kb)
        .collect();
    warm.sort_unstable();
    let warm_kb = *warm.get(warm.len() / 2)?;
    let peak_kb = samples.iter().filter(|s| s.at_s >= warmup_s).map(|s| s.rss_kb).max()?;
    Some(Memory {
        warm_kb,
        peak_kb,
        growth: peak_kb as f64 / warm_kb.max(1) as f64 - 1.0,
    })
}

/// The warm-up after which memory must stay flat: 5 minutes, or half of a shorter soak.
pub fn warmup(duration: Duration) -> Duration {
    (duration / 2).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(fds: &[usize], rss: &[u64]) -> Vec<Sample> {
        fds.iter()
            .zip(rss)
            .enumerate()
            .map(|(i, (&fds, &rss_kb))| Sample {
                at_s: i as f64,
                fds,
                rss_kb,
            })
            .collect()
    }

    #[test]
    fn faults_rotate_over_the_peers_with_repairs_inside_their_window() {
        let steps = schedule(Duration::from_secs(120), Duration::from_secs(20));
        let faults: Vec<_> = steps.iter().filter(|s| !s.repair).collect();
        assert_eq!(faults.len(), 5, "20, 40, 60, 80, 100 s: each with a whole window");
        assert_eq!(faults[0].fault.action, Action::KillPrimary);
        assert_eq!(faults[0].group, Group::Mysql);
        assert_eq!(faults[2].fault.action, Action::Refuse);
        let repairs: Vec<_> = steps.iter().filter(|s| s.repair).collect();
        assert_eq!(repairs.len(), 3, "both kills and the refusal");
        assert_eq!(repairs[0].fault.at, Duration::from_secs(28));
        assert_eq!(repairs[0].fault.action, Action::Rejoin);
        assert!(steps.windows(2).all(|w| w[0].fault.at <= w[1].fault.at));
        let long = schedule(Duration::from_secs(1800), Duration::from_secs(30));
        assert_eq!(long.iter().filter(|s| !s.repair).count(), 59);
        assert_eq!(long[0].fault.stop_for, Duration::from_secs(5));
        assert!(schedule(Duration::from_secs(10), Duration::ZERO).is_empty());
    }

    #[test]
    fn descriptor_floors_are_the_fewest_at_each_window_end() {
        // Faults at 4 and 8 (windows of 4 s: the last second of each counts), end at 12.
        let s = samples(&[10, 11, 12, 10, 30, 25, 20, 11, 40, 12, 13, 14], &[0; 12]);
        let d = descriptors(&s, &[4.0, 8.0], 4.0, 12.0).unwrap();
        assert_eq!(d.baseline, 10);
        assert_eq!(d.floors, vec![11, 14]);
        assert_eq!(d.above_baseline(), vec![0], "the last window is the idle check's");
        let back_later = Descriptors {
            baseline: 10,
            floors: vec![12, 10, 13, 11, 10],
        };
        assert_eq!(back_later.above_baseline(), Vec::<usize>::new(), "each came back later");
        let leak = Descriptors {
            baseline: 10,
            floors: vec![10, 11, 11, 12, 12],
        };
        assert_eq!(leak.above_baseline(), vec![1, 2, 3]);
        assert_eq!(
            (idle_leak(38, 38), idle_leak(38, 36), idle_leak(38, 40)),
            (None, None, Some(2))
        );
        let flat = samples(&[10, 10, 10, 10, 12, 12, 12, 10, 12, 12, 12, 9], &[0; 12]);
        let d = descriptors(&flat, &[4.0, 8.0], 4.0, 12.0).unwrap();
        assert!(d.above_baseline().is_empty(), "{d:?}");
        assert!(descriptors(&flat, &[], 4.0, 12.0).is_none());
        assert!(descriptors(&flat, &[4.0], 4.0, 40.0).is_none(), "no sample at the end");
    }

    #[test]
    fn memory_growth_is_the_peak_after_warm_up_over_its_end() {
        let mut rss = vec![1000u64; 30];
        rss[25] = 1040;
        rss[5] = 5000; // during warm-up: not counted
        let m = memory(&samples(&[0; 30], &rss), 20.0).unwrap();
        assert_eq!((m.warm_kb, m.peak_kb), (1000, 1040));
        assert!((m.growth - 0.04).abs() < 1e-9);
        assert!(memory(&samples(&[0; 5], &[1; 5]), 20.0).is_none());
        assert_eq!(warmup(Duration::from_secs(120)), Duration::from_secs(60));
        assert_eq!(warmup(Duration::from_secs(1800)), Duration::from_secs(300));
    }
}
