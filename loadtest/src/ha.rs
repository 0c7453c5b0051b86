//! The HA pair's figures per fault, pure: from the operations (each MySQL one knows
//! which proxy carried it: the client address the server saw), the faults and the
//! VIP's moves, one line per fault:
//!
//! `ha scenario=NAME takeover_ms=N errors=N wrong_node_acks=N missing_acked=N vip_moves=N vip_moved_after_ms=N`
//!
//! A fault's window runs from its injection to the next fault's (the last: to the
//! end). `takeover_ms`: from the last acknowledged write through the proxy that
//! carried writes before the fault to the first one through the other proxy, when
//! the window has both (else `-`); it includes the clients' own reaction (a SYN sent
//! to the old host just as the VIP left it is answered by nobody, and Linux sends the
//! next one a second later). `vip_moves`: keepalived transitions to MASTER in the
//! window; `vip_moved_after_ms`: from the fault to the first of them, the proxy
//! tier's own part.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

use crate::fault::{FaultRecord, PrimaryTimeline};
use crate::measure;
use crate::workload::{Op, OpKind};

/// The VIP taken by a proxy host, ms since the drill started.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VipMove {
    /// When keepalived there became MASTER.
    pub at_ms: f64,
    /// `px1` or `px2`.
    pub to: String,
}

/// One fault's line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HaFigures {
    /// The fault's action, as in the scenario file.
    pub scenario: String,
    /// Last ack through the old proxy → first ack through the new one.
    pub takeover_ms: Option<f64>,
    /// Failed operations in the window.
    pub errors: usize,
    /// Writes acknowledged by a database that was not the primary then.
    pub wrong_node_acks: usize,
    /// Acknowledged writes missing from the final primary.
    pub missing_acked: usize,
    /// VIP moves in the window.
    pub vip_moves: usize,
    /// From the fault to the first VIP move in the window.
    pub vip_moved_after_ms: Option<f64>,
}

impl fmt::Display for HaFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |t| format!("{t:.0}"));
        write!(
            f,
            "ha scenario={} takeover_ms={} errors={} wrong_node_acks={} missing_acked={} vip_moves={} vip_moved_after_ms={}",
            self.scenario,
            ms(self.takeover_ms),
            self.errors,
            self.wrong_node_acks,
            self.missing_acked,
            self.vip_moves,
            ms(self.vip_moved_after_ms)
        )
    }
}

/// The figures of every fault (see the module docs). `ops` sorted by end time.
pub fn figures(
    ops: &[Op],
    faults: &[FaultRecord],
    moves: &[VipMove],
    timeline: &PrimaryTimeline,
    present: &HashSet<u64>,
    duration_ms: f64,
) -> Vec<HaFigures> {
    let wrong: HashSet<u64> = measure::acked_by_non_primary(ops, timeline)
        .iter()
        .map(|o| o.id)
        .collect();
    let missing: HashSet<u64> = measure::missing_writes(ops, present).into_iter().collect();
    faults
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let from = fault.injected_ms;
            let to = faults.get(i + 1).map_or(duration_ms, |next| next.injected_ms);
            let window: Vec<&Op> = ops.iter().filter(|o| o.ended_ms >= from && o.ended_ms < to).collect();
            let acked = |o: &&&Op| o.kind == OpKind::Write && o.result.is_ok();
            HaFigures {
                scenario: kebab(&format!("{:?}", fault.action)),
                takeover_ms: takeover(ops, from, to),
                errors: window.iter().filter(|o| o.result.is_err()).count(),
                wrong_node_acks: window.iter().filter(acked).filter(|o| wrong.contains(&o.id)).count(),
                missing_acked: window.iter().filter(acked).filter(|o| missing.contains(&o.id)).count(),
                vip_moves: moves.iter().filter(|m| m.at_ms >= from && m.at_ms < to).count(),
                vip_moved_after_ms: moves
                    .iter()
                    .find(|m| m.at_ms >= from && m.at_ms < to)
                    .map(|m| m.at_ms - from),
            }
        })
        .collect()
}

/// Last ack through the proxy that carried the last write acknowledged before `from`,
/// to the first ack after it through another, both before `to`.
fn takeover(ops: &[Op], from: f64, to: f64) -> Option<f64> {
    let acks = || {
        ops.iter()
            .filter(|o| o.kind == OpKind::Write && o.result.is_ok() && o.via.is_some())
    };
    let old = acks().rfind(|o| o.ended_ms < from)?.via.clone();
    let first_new = acks().find(|o| o.ended_ms >= from && o.ended_ms < to && o.via != old)?;
    let last_old = acks().rfind(|o| o.via == old && o.ended_ms < first_new.ended_ms)?;
    Some(first_new.ended_ms - last_old.ended_ms)
}

/// `ProxyKill` → `proxy-kill`.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Action;

    fn write(id: u64, end: f64, via: &str, ok: bool) -> Op {
        Op {
            kind: OpKind::Write,
            id,
            worker: 0,
            scheduled_ms: end - 5.0,
            started_ms: end - 5.0,
            ended_ms: end,
            result: if ok { Ok(1) } else { Err("connection lost".into()) },
            via: ok.then(|| via.to_string()),
        }
    }

    fn fault(action: Action, at: f64) -> FaultRecord {
        FaultRecord {
            action,
            injected_ms: at,
            effective_ms: None,
            promoted_ms: None,
            new_primary: None,
            error: None,
        }
    }

    #[test]
    fn each_fault_gets_its_takeover_errors_and_vip_moves() {
        let ops = vec![
            write(1, 900.0, "px1", true),
            write(2, 1000.0, "px1", true), // the kill lands at 1000
            write(3, 1200.0, "px1", false),
            write(4, 1700.0, "px2", true),
            write(5, 5200.0, "px2", true), // after the restart at 5000: still px2
        ];
        let faults = [fault(Action::ProxyKill, 1000.0), fault(Action::ProxyRestart, 5000.0)];
        let moves = [VipMove {
            at_ms: 1400.0,
            to: "px2".into(),
        }];
        let timeline = PrimaryTimeline(vec![(0.0, Some(1))]);
        let present: HashSet<u64> = [1, 2, 4].into();
        let lines = figures(&ops, &faults, &moves, &timeline, &present, 8000.0);
        assert_eq!(
            lines[0].to_string(),
            "ha scenario=proxy-kill takeover_ms=700 errors=1 wrong_node_acks=0 missing_acked=0 vip_moves=1 vip_moved_after_ms=400"
        );
        assert_eq!(
            lines[1].to_string(),
            "ha scenario=proxy-restart takeover_ms=- errors=0 wrong_node_acks=0 missing_acked=1 vip_moves=0 vip_moved_after_ms=-"
        );
    }
}
