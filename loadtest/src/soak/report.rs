//! The soak's verdict from what [`super::drive`] brought back, and its text.

use std::fmt::Write;

use super::plan::{self, Group};
use super::{Driven, FaultLine, Flow, Settings, SoakReport};
use crate::fault::PrimaryTimeline;
use crate::measure;
use crate::peers::Peers;
use crate::workload::Op;

/// Memory may grow by at most this much after the warm-up.
const RSS_GROWTH: f64 = 0.05;

fn flow(name: &'static str, ops: &[Op], last_window_ms: f64) -> Flow {
    let ok = ops.iter().filter(|o| o.result.is_ok()).count() as u64;
    Flow {
        name,
        ok,
        failed: ops.len() as u64 - ok,
        errors: measure::errors_by_kind(ops),
        ok_in_last_window: ops
            .iter()
            .filter(|o| o.result.is_ok() && o.started_ms >= last_window_ms)
            .count() as u64,
        acked_by_non_primary: None,
        missing: None,
    }
}

/// Fills in who acknowledged what against `timeline`, and what is missing from the
/// final primary of `peers`.
async fn judge_writes(flow: &mut Flow, ops: &[Op], timeline: &PrimaryTimeline, peers: &Peers, primary: usize) {
    flow.acked_by_non_primary = Some(measure::acked_by_non_primary(ops, timeline).len());
    flow.missing = match peers.stored_ids(primary).await {
        Ok(Some(stored)) => Some(measure::missing_writes(ops, &stored).len()),
        // Unreadable: every acknowledged write counts as missing.
        _ => Some(ops.iter().filter(|o| o.result.is_ok()).count()),
    };
}

pub(super) async fn finish(
    settings: &Settings,
    stage: &super::setup::Stage,
    driven: Driven,
    proxy_exit: Option<String>,
) -> SoakReport {
    let (duration_s, every_s) = (settings.duration.as_secs_f64(), settings.every.as_secs_f64());
    let fault_times: Vec<f64> = plan::schedule(settings.duration, settings.every)
        .iter()
        .filter(|s| !s.repair)
        .map(|s| s.fault.at.as_secs_f64())
        .collect();
    let last_window_ms = fault_times.last().copied().unwrap_or(0.0) * 1000.0;
    let [mysql_ops, mongo_ops, tcp_ops, tls_ops] = &driven.ops;
    let mut flows = vec![
        flow("mysql", mysql_ops, last_window_ms),
        flow("mongo", mongo_ops, last_window_ms),
        flow("tcp", tcp_ops, last_window_ms),
        flow("tls", tls_ops, last_window_ms),
    ];
    let mut faults = Vec::new();
    for (group, records, timeline, primary) in &driven.faults {
        let (index, ops, peers) = match group {
            Group::Mysql => (0, mysql_ops, &stage.mysql),
            Group::Mongo => (1, mongo_ops, &stage.mongo),
            Group::Servers => (2, tcp_ops, &stage.servers),
        };
        if *group != Group::Servers {
            judge_writes(&mut flows[index], ops, timeline, peers, *primary).await;
        }
        faults.extend(records.iter().map(|record| FaultLine {
            group: *group,
            record: record.clone(),
        }));
    }
    faults.sort_by(|a, b| a.record.injected_ms.total_cmp(&b.record.injected_ms));
    let descriptors = plan::descriptors(&driven.samples, &fault_times, every_s, duration_s);
    let memory = plan::memory(&driven.samples, plan::warmup(settings.duration).as_secs_f64());
    let mut report = SoakReport {
        duration_s: settings.duration.as_secs(),
        every_s: settings.every.as_secs(),
        flows,
        faults,
        descriptors,
        idle_fds: driven.idle_fds,
        memory,
        samples: driven.samples,
        proxy_exit,
        failures: Vec::new(),
    };
    report.failures = failures(&report);
    report
}

/// Every criterion [`SoakReport`] fails, in words.
pub fn failures(report: &SoakReport) -> Vec<String> {
    let mut failed = Vec::new();
    if let Some(exit) = &report.proxy_exit {
        failed.push(format!("the proxy exited: {exit}"));
    }
    for line in report.faults.iter().filter(|l| l.record.error.is_some()) {
        let error = line.record.error.as_deref().unwrap_or_default();
        failed.push(format!("{:?} {:?} failed: {error}", line.group, line.record.action));
    }
    match &report.descriptors {
        None => failed.push("no descriptor samples for some window".into()),
        Some(d) => {
            for window in d.above_baseline() {
                failed.push(format!(
                    "descriptors after fault {} stayed above the baseline, at {} (baseline {})",
                    window + 1,
                    d.floors[window],
                    d.baseline
                ));
            }
        }
    }
    let (before, after) = report.idle_fds;
    if let Some(extra) = plan::idle_leak(before, after) {
        failed.push(format!(
            "{extra} descriptors more with no client than before the load ({after} vs {before})"
        ));
    }
    match &report.memory {
        None => failed.push("no memory samples around the end of the warm-up".into()),
        Some(m) if m.growth > RSS_GROWTH => failed.push(format!(
            "RSS grew {:.1} % after the warm-up ({} → {} KiB)",
            m.growth * 100.0,
            m.warm_kb,
            m.peak_kb
        )),
        Some(_) => {}
    }
    for flow in &report.flows {
        if flow.ok_in_last_window == 0 {
            failed.push(format!("{}: nothing served after the last fault", flow.name));
        }
        if let Some(n) = flow.acked_by_non_primary.filter(|n| *n > 0) {
            failed.push(format!("{}: {n} writes acknowledged by a non-primary", flow.name));
        }
        if let Some(n) = flow.missing.filter(|n| *n > 0) {
            failed.push(format!("{}: {n} acknowledged writes missing", flow.name));
        }
    }
    failed
}

/// The report as a few lines of text.
pub fn text(report: &SoakReport) -> String {
    let mut out = format!("soak: {} s, a fault every {} s\n", report.duration_s, report.every_s);
    for f in &report.flows {
        let _ = writeln!(
            out,
            "  {:<5} ok {:>8}  failed {:>6}  acked by non-primary {:<4} missing {:<4} errors {:?}",
            f.name,
            f.ok,
            f.failed,
            f.acked_by_non_primary.map_or("-".into(), |n| n.to_string()),
            f.missing.map_or("-".into(), |n| n.to_string()),
            f.errors
        );
    }
    let steps = report.faults.len();
    let errors = report.faults.iter().filter(|l| l.record.error.is_some()).count();
    let _ = writeln!(out, "  fault steps {steps} ({errors} failed)");
    if let Some(d) = &report.descriptors {
        let worst = d.floors.iter().max().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  descriptors: baseline {}, window floors {}..={} over {} windows; {} with no client before the load, {} after",
            d.baseline,
            d.floors.iter().min().copied().unwrap_or(0),
            worst,
            d.floors.len(),
            report.idle_fds.0,
            report.idle_fds.1
        );
    }
    if let Some(m) = &report.memory {
        let _ = writeln!(
            out,
            "  rss: {} KiB at the end of the warm-up, peak after {} KiB ({:+.2} %)",
            m.warm_kb,
            m.peak_kb,
            m.growth * 100.0
        );
    }
    match report.failures.as_slice() {
        [] => out.push_str("  PASS\n"),
        failed => {
            for f in failed {
                let _ = writeln!(out, "  FAIL: {f}");
            }
        }
    }
    out
}
