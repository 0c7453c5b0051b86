//! What does recording a session's histograms cost, and does sharding help when
//! sessions end at the same time on several threads? Compares switchyard's sharded
//! `stats::Recorder` with one `Mutex<Histogram>` and with the Prometheus histogram
//! handle, single-threaded and with two threads recording into the same recorder.
//!
//! Run: `cargo bench --bench histogram_record`.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion};
use hdrhistogram::Histogram;
use switchyard::stats::Recorder;

const BATCH: u64 = 1000;

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record_1000_values");
    let sharded = Recorder::default();
    group.bench_function("sharded_recorder", |b| {
        b.iter(|| (0..BATCH).for_each(|v| sharded.record(black_box(v * 37 + 100))))
    });
    let single = Mutex::new(Histogram::<u64>::new_with_bounds(1, 1 << 40, 2).unwrap());
    group.bench_function("single_mutex", |b| {
        b.iter(|| (0..BATCH).for_each(|v| single.lock().unwrap().saturating_record(black_box(v * 37 + 100))))
    });
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        let prom = metrics::histogram!("bench_seconds");
        group.bench_function("prometheus_histogram", |b| {
            b.iter(|| (0..BATCH).for_each(|v| prom.record(black_box(v as f64 * 1e-6))))
        });
    });

    // Two threads at once into one recorder: the contended case a busy backend sees.
    let sharded = Arc::new(Recorder::default());
    group.bench_function("sharded_recorder_2_threads", |b| {
        b.iter(|| {
            let other = sharded.clone();
            let t = thread::spawn(move || (0..BATCH).for_each(|v| other.record(v + 1)));
            (0..BATCH).for_each(|v| sharded.record(black_box(v + 1)));
            t.join().unwrap();
        })
    });
    let single = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 1 << 40, 2).unwrap()));
    group.bench_function("single_mutex_2_threads", |b| {
        b.iter(|| {
            let other = single.clone();
            let t = thread::spawn(move || (0..BATCH).for_each(|v| other.lock().unwrap().saturating_record(v + 1)));
            (0..BATCH).for_each(|v| single.lock().unwrap().saturating_record(black_box(v + 1)));
            t.join().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
