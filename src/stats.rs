//! Latency and size histograms for `/status` (hdrhistogram; microseconds for times).
//!
//! A [`Recorder`] is sharded: a session records into one of [`SHARDS`] small mutexes
//! picked at random, so concurrent sessions of one backend almost never meet on a
//! lock, and no lock is shared by all sessions. Recording happens once per session
//! (connect, end), never per byte. `/status` merges the shards into percentiles.
//!
//! The same values also go to Prometheus histograms (see [`crate::metrics`]); these
//! exact ones exist because Prometheus buckets cannot give a p99.9.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Shards per recorder.
pub const SHARDS: usize = 8;

/// Values above this are clamped (1 hour in µs, or 1 TiB as a byte count).
const HIGHEST: u64 = 1 << 40;

/// A sharded histogram.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, HIGHEST, 2).expect("static bounds are valid");
        Recorder {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram.clone())).collect(),
        }
    }
}

impl Recorder {
    /// Records one value (clamped to `1..=2^40`), into the first shard that is free.
    pub fn record(&self, value: u64) {
        let value = value.clamp(1, HIGHEST);
        let start = fastrand::usize(..SHARDS);
        // Take the first free shard; block only if all were busy at that instant.
        for i in 0..SHARDS {
            if let Ok(mut shard) = self.shards[(start + i) % SHARDS].try_lock() {
                shard.saturating_record(value);
                return;
            }
        }
        let mut shard = self.shards[start].lock().unwrap_or_else(|e| e.into_inner());
        shard.saturating_record(value);
    }

    /// Records a duration, in microseconds.
    pub fn record_duration(&self, duration: Duration) {
        self.record(duration.as_micros().min(u128::from(HIGHEST)) as u64);
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut total = Histogram::new_with_bounds(1, HIGHEST, 2).expect("static bounds are valid");
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let _ = total.add(&*shard);
        }
        total
    }

    /// The percentiles of all shards merged.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.merged())
    }
}

/// Percentiles of one histogram, as `/status` shows them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    /// How many values were recorded.
    pub count: u64,
    /// The median.
    pub p50: u64,
    /// The 90th percentile.
    pub p90: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The 99.9th percentile.
    pub p999: u64,
    /// The largest value recorded.
    pub max: u64,
}

impl Summary {
    /// The percentiles of `histogram`; all zero when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Summary {
        if histogram.is_empty() {
            return Summary::default();
        }
        Summary {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }

    /// Merges several recorders (a pool from its members).
    pub fn merge<'a>(recorders: impl IntoIterator<Item = &'a Recorder>) -> Summary {
        let mut total = Histogram::new_with_bounds(1, HIGHEST, 2).expect("static bounds are valid");
        for recorder in recorders {
            let _ = total.add(recorder.merged());
        }
        Summary::of(&total)
    }
}

/// The histograms of one pool member (a backend as one pool uses it).
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Connect latency to the backend, µs.
    pub connect: Recorder,
    /// Session duration, µs.
    pub duration: Recorder,
    /// Bytes per session, both directions together.
    pub bytes: Recorder,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let recorder = Recorder::default();
        for v in 1..=1000 {
            recorder.record(v);
        }
        let s = recorder.summary();
        assert_eq!(s.count, 1000);
        assert!((495..=505).contains(&s.p50), "{s:?}");
        assert!((985..=1000).contains(&s.p99), "{s:?}");
        assert!(s.max >= 999, "{s:?}");
    }

    #[test]
    fn empty_and_out_of_range_values_do_not_panic() {
        let recorder = Recorder::default();
        assert_eq!(recorder.summary(), Summary::default());
        recorder.record(0);
        recorder.record(u64::MAX);
        recorder.record_duration(Duration::from_secs(10 * 24 * 3600));
        assert_eq!(recorder.summary().count, 3);
    }

    #[test]
    fn merge_adds_recorders() {
        let (a, b) = (Recorder::default(), Recorder::default());
        a.record(10);
        b.record(1000);
        let s = Summary::merge([&a, &b]);
        assert_eq!(s.count, 2);
        assert!(s.max >= 999);
    }
}
