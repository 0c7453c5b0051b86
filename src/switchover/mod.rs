//! An orchestrated MySQL/MariaDB switchover of a primary pool
//! (`POST /pools/NAME/switchover`, `switchyard switchover`): the primary's role moves
//! to a replica while new sessions wait, so no client meets a failed statement.
//!
//! ```text
//! check     admin logins; the pool routes the primary; the target replicates from it
//!           with both threads running and logs what it applies
//! hold      new sessions wait; the primary's sessions close at idle points (drain)
//! demote    primary: SET GLOBAL read_only=1                 undo: read_only=0
//! position  primary: @@gtid_binlog_pos
//! catch-up  target: MASTER_GTID_WAIT(position, catch_up_timeout)
//! promote   target: STOP SLAVE; read_only=0                 undo: read_only=1; START SLAVE
//! repoint   each other member: replicate from the target    undo: from the primary again
//! rejoin    old primary: replicate from the target          undo: STOP SLAVE; RESET SLAVE ALL
//! route     the router's decision names the target (checks nudged)
//! release   the hold ends: the waiting sessions go to the target
//! forget    target: RESET SLAVE ALL (only reported if it fails)
//! ```
//!
//! A step that fails undoes the steps before it, newest first, waits (bounded) until
//! the router names the old primary again, then releases the hold; the report names the
//! step and its cause, and any undo that failed. Every step lands on the timeline. One
//! switchover per pool at a time. Members whose check says down are left out (they
//! replicate from the old primary when they return, which replicates from the new one).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use self::nodes::{text, Node};
use self::sql::Replication;
use crate::config::SwitchoverConfig;
use crate::health::Status;
use crate::pool::Pool;
use crate::routing::{AdminAction, AdminCommand};
use crate::timeline::{EventKind, Timeline};
use crate::topology::Topology;

mod nodes;
pub mod sql;

/// Where the old primary and the target sit among the nodes.
const FROM: usize = 0;
const TO: usize = 1;

/// What a switchover reaches.
pub struct Context<'a> {
    /// What the process serves now.
    pub topology: &'a ArcSwap<Topology>,
    /// The router's command queue (hold, release).
    pub router: &'a mpsc::Sender<AdminCommand>,
    /// Where each step is recorded.
    pub timeline: &'a Timeline,
}

/// What happened, step by step.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The pool.
    pub pool: String,
    /// The primary before.
    pub from: Option<String>,
    /// The target.
    pub to: String,
    /// Whether the target is the primary now.
    pub ok: bool,
    /// How long new sessions were held, ms.
    pub held_ms: Option<u64>,
    /// The steps done, in order (undos included).
    pub steps: Vec<Step>,
    /// The step that failed, why, and what was undone.
    pub failed: Option<Failed>,
}

/// One step done.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Its name (see the module docs).
    pub step: &'static str,
    /// The backend it acted on.
    pub backend: Option<String>,
    /// How long it took, ms.
    pub ms: u64,
    /// What it found or did.
    pub detail: String,
}

/// The failure of a switchover.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    /// The step that failed.
    pub step: &'static str,
    /// Why.
    pub cause: String,
    /// The steps undone, newest first.
    pub undone: Vec<String>,
    /// Undos that failed themselves (the operator's to finish).
    pub undo_errors: Vec<String>,
}

/// A statement that undoes a step.
struct Undo {
    step: &'static str,
    node: usize,
    sql: String,
}

/// The pools with a switchover under way.
static RUNNING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Moves `pool`'s primary to the backend named `to`.
pub async fn run(ctx: &Context<'_>, pool: &str, to: &str) -> Report {
    let mut report = Report {
        pool: pool.to_string(),
        from: None,
        to: to.to_string(),
        ok: false,
        held_ms: None,
        steps: Vec::new(),
        failed: None,
    };
    let claimed = RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(pool.to_string());
    if !claimed {
        report.failed = Some(failed("check", "another switchover of this pool is under way".into()));
        return report;
    }
    // Released however this ends, a panic included.
    let _claim = Claim(pool.to_string());
    let mut run = match Run::prepare(ctx, pool, to, &mut report).await {
        Ok(run) => run,
        Err(cause) => {
            report.failed = Some(failed("check", cause));
            return report;
        }
    };
    run.execute(&mut report).await;
    report
}

/// A pool's place in [`RUNNING`], given back on drop.
struct Claim(String);

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(running) = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            running.remove(&self.0);
        }
    }
}

fn failed(step: &'static str, cause: String) -> Failed {
    Failed {
        step,
        cause,
        undone: Vec::new(),
        undo_errors: Vec::new(),
    }
}

/// One switchover under way.
struct Run<'a> {
    ctx: &'a Context<'a>,
    pool: Arc<Pool>,
    config: SwitchoverConfig,
    /// The old primary, the target, then the other members that are up.
    nodes: Vec<Node>,
    undo: Vec<Undo>,
    held_at: Option<Instant>,
}

impl<'a> Run<'a> {
    /// The `check` step: nothing is changed yet, so a failure here needs no undo.
    async fn prepare(ctx: &'a Context<'a>, name: &str, to: &str, report: &mut Report) -> Result<Run<'a>, String> {
        let started = Instant::now();
        let topology = ctx.topology.load();
        let pool = topology
            .pool(name)
            .cloned()
            .ok_or_else(|| format!("no pool named {name:?}"))?;
        let config =
            pool.config.switchover.clone().ok_or_else(|| {
                format!("pool {name:?} has no [pools.{name}.switchover] section: switchovers are off")
            })?;
        let decided = pool.decided();
        let [primary] = decided.as_slice() else {
            return Err(format!(
                "the pool routes {} members now, not one primary",
                decided.len()
            ));
        };
        let member = |id| {
            pool.members
                .iter()
                .find(|m| m.backend.id == id)
                .map(|m| m.backend.clone())
        };
        let from = member(*primary).ok_or("the pool's primary is not among its members")?;
        report.from = Some(from.name.clone());
        let target = pool
            .members
            .iter()
            .find(|m| m.backend.name == to)
            .map(|m| m.backend.clone())
            .ok_or_else(|| format!("{to:?} is not a member of pool {name:?}"))?;
        if target.id == from.id {
            return Err(format!("{to:?} is the primary already"));
        }
        let probe = |b: &crate::backend::Backend| {
            topology
                .config
                .backends
                .iter()
                .find(|c| c.name == b.name)
                .map(|c| c.check.probe.clone())
                .unwrap_or(crate::config::ProbeConfig::Tcp)
        };
        let mut nodes = vec![
            Node::new(from.clone(), &probe(&from)),
            Node::new(target.clone(), &probe(&target)),
        ];
        for m in pool
            .members
            .iter()
            .filter(|m| m.backend.id != from.id && m.backend.id != target.id)
        {
            if m.backend.view().status == Status::Down {
                report.steps.push(step(
                    "check",
                    Some(&m.backend.name),
                    started,
                    "left out: its check says down".into(),
                ));
                continue;
            }
            nodes.push(Node::new(m.backend.clone(), &probe(&m.backend)));
        }
        drop(topology);
        let limit = config.statement_timeout;
        for node in &mut nodes {
            node.run(&config, "DO 1", limit).await?;
        }
        let (variables, slave) = nodes[TO].rows(&config, sql::TARGET_STATE, limit).await?;
        sql::fit_to_lead(&variables, slave.as_ref(), from.address).map_err(|why| format!("{to} cannot lead: {why}"))?;
        let detail = format!(
            "{} logins; {to} follows {} and logs what it applies",
            nodes.len(),
            from.name
        );
        let run = Run {
            ctx,
            pool,
            config,
            nodes,
            undo: Vec::new(),
            held_at: None,
        };
        run.record(report, step("check", None, started, detail));
        Ok(run)
    }

    async fn execute(&mut self, report: &mut Report) {
        match self.forward(report).await {
            Ok(()) => {
                report.ok = true;
                self.release(report, "released: new sessions go to the new primary")
                    .await;
                // The target's old replication source is only clutter now.
                let started = Instant::now();
                let detail = match self.nodes[TO]
                    .run(&self.config, sql::FORGET_SOURCE, self.config.statement_timeout)
                    .await
                {
                    Ok(_) => "its old replication source forgotten".to_string(),
                    Err(e) => format!("could not forget its old replication source (harmless): {e}"),
                };
                let name = self.nodes[TO].name().to_string();
                self.record(report, step("forget", Some(&name), started, detail));
            }
            Err((at, cause)) => {
                warn!(pool = %self.pool.name(), step = at, %cause, "switchover failed; undoing it");
                let mut failure = failed(at, cause);
                self.rollback(report, &mut failure).await;
                report.failed = Some(failure);
            }
        }
    }

    async fn forward(&mut self, report: &mut Report) -> Result<(), (&'static str, String)> {
        self.hold(report).await.map_err(|e| ("hold", e))?;
        let (from, to) = (self.nodes[FROM].backend.address, self.nodes[TO].backend.address);
        self.exec(report, "demote", FROM, sql::DEMOTE, Some(sql::UNDEMOTE))
            .await?;
        let position = self.position(report).await.map_err(|e| ("position", e))?;
        self.catch_up(report, &position).await.map_err(|e| ("catch-up", e))?;
        self.exec(report, "promote", TO, sql::PROMOTE, Some(sql::UNPROMOTE))
            .await?;
        self.nodes[FROM].backend.nudge();
        self.nodes[TO].backend.nudge();
        let password = self
            .config
            .replication_password
            .as_ref()
            .map_or("", |p| p.expose())
            .to_string();
        let account = Replication {
            user: &self.config.replication_user.clone(),
            password: &password,
        };
        for other in 2..self.nodes.len() {
            let there = sql::replicate_from(to, account, false);
            let back = sql::replicate_from(from, account, false);
            self.exec(report, "repoint", other, &there, Some(&back)).await?;
        }
        let rejoin = sql::replicate_from(to, account, true);
        self.exec(report, "rejoin", FROM, &rejoin, Some(sql::FORGET_SOURCE))
            .await?;
        let target = self.nodes[TO].backend.id;
        self.route(report, target).await.map_err(|e| ("route", e))
    }

    /// Holds new sessions and drains the primary's at idle points.
    async fn hold(&mut self, report: &mut Report) -> Result<(), String> {
        let started = Instant::now();
        let action = AdminAction::Hold {
            pool: self.pool.id,
            deadline: self.config.hold(),
            drain: Some(self.config.drain),
        };
        // Set first: a router that applied the hold but answered late still gets its
        // release (which is harmless if the hold never began).
        self.held_at = Some(started);
        AdminCommand::send(self.ctx.router, action).await?;
        let left = self.pool.drained(started + self.config.drain).await;
        let left: usize = left.iter().map(|(_, n)| n).sum();
        let detail = match left {
            0 => "new sessions wait; the primary's sessions closed at idle points".to_string(),
            n => format!("new sessions wait; {n} sessions were still busy at the drain's end and were closed"),
        };
        self.record(report, step("hold", None, started, detail));
        Ok(())
    }

    async fn position(&mut self, report: &mut Report) -> Result<String, String> {
        let started = Instant::now();
        let (row, _) = self.nodes[FROM]
            .rows(&self.config, sql::POSITION, self.config.statement_timeout)
            .await?;
        let position = sql::gtid(&text(&row, "pos"))
            .map(str::to_string)
            .ok_or_else(|| format!("the primary reported a GTID position of an unknown shape: {row:?}"))?;
        let name = self.nodes[FROM].name().to_string();
        self.record(
            report,
            step("position", Some(&name), started, format!("gtid_binlog_pos {position}")),
        );
        Ok(position)
    }

    async fn catch_up(&mut self, report: &mut Report, position: &str) -> Result<(), String> {
        let started = Instant::now();
        let within = self.config.catch_up_timeout;
        let limit = within + self.config.statement_timeout;
        let (row, _) = self.nodes[TO]
            .rows(&self.config, &sql::wait_for(position, within), limit)
            .await?;
        match text(&row, "waited").as_str() {
            "0" => {
                let name = self.nodes[TO].name().to_string();
                self.record(
                    report,
                    step("catch-up", Some(&name), started, format!("applied {position}")),
                );
                Ok(())
            }
            "-1" => Err(format!(
                "{} did not apply {position} within {}",
                self.nodes[TO].name(),
                crate::duration::format(within)
            )),
            other => Err(format!("MASTER_GTID_WAIT answered {other:?}")),
        }
    }

    /// Renews the hold (best effort): the steps, and a rollback after them, may take
    /// longer than the hold's first deadline.
    async fn renew(&self) {
        if self.held_at.is_some() {
            let action = AdminAction::Hold {
                pool: self.pool.id,
                deadline: self.config.hold(),
                drain: None,
            };
            let _ = AdminCommand::send(self.ctx.router, action).await;
        }
    }

    /// An error text without the replication password (a server's syntax error may
    /// quote the statement).
    fn scrub(&self, text: String) -> String {
        match self.config.replication_password.as_ref().map(|p| p.expose()) {
            Some(p) if !p.is_empty() => text.replace(p, "***"),
            _ => text,
        }
    }

    /// Runs a step's statement on one node; its undo is kept for a rollback.
    async fn exec(
        &mut self,
        report: &mut Report,
        name: &'static str,
        node: usize,
        statement: &str,
        undo: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        self.renew().await;
        let started = Instant::now();
        let result = self.nodes[node]
            .run(&self.config, statement, self.config.statement_timeout)
            .await
            .map_err(|e| self.scrub(e));
        // A statement that failed midway may have done part of its work: undo it too.
        if let Some(undo) = undo {
            self.undo.push(Undo {
                step: name,
                node,
                sql: undo.to_string(),
            });
        }
        result.map_err(|e| (name, e))?;
        let backend = self.nodes[node].name().to_string();
        self.record(report, step(name, Some(&backend), started, redacted(statement)));
        Ok(())
    }

    /// Waits until the router's decision names exactly `target`.
    async fn route(&mut self, report: &mut Report, target: crate::config::BackendId) -> Result<(), String> {
        let started = Instant::now();
        let name = self.nodes[TO].name().to_string();
        if !self.await_decision(target, self.config.route_timeout).await {
            return Err(format!(
                "the checks did not see {name} as the only primary within {}",
                crate::duration::format(self.config.route_timeout)
            ));
        }
        self.record(
            report,
            step("route", Some(&name), started, "the router names it the primary".into()),
        );
        Ok(())
    }

    /// Whether the decision of this pool (as the topology has it now: a reload may
    /// have replaced it) names exactly `backend` within `limit`.
    async fn await_decision(&self, backend: crate::config::BackendId, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            let pool = self.ctx.topology.load().pool(self.pool.name()).cloned();
            if pool.is_some_and(|p| p.decided() == [backend]) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Undoes what was done, newest first; waits for the old primary to be routed
    /// again; releases the hold.
    async fn rollback(&mut self, report: &mut Report, failure: &mut Failed) {
        self.renew().await;
        let undid_demote = self.undo.iter().any(|u| u.step == "demote");
        let undid_promote = self.undo.iter().any(|u| u.step == "promote");
        while let Some(undo) = self.undo.pop() {
            let started = Instant::now();
            let name = self.nodes[undo.node].name().to_string();
            match self.nodes[undo.node]
                .run(&self.config, &undo.sql, self.config.statement_timeout)
                .await
            {
                Ok(_) => {
                    failure.undone.push(format!("{} on {name}", undo.step));
                    let detail = format!("undone: {}", redacted(&undo.sql));
                    self.record(report, step(undo.step, Some(&name), started, detail));
                }
                Err(e) => {
                    let e = self.scrub(e);
                    failure.undo_errors.push(format!("{} on {name}: {e}", undo.step));
                }
            }
        }
        // A statement that timed out on our side may still have run on the server
        // after its undo: read the roles back, and set them once more if so.
        for (undone, node, want) in [(undid_demote, FROM, "0"), (undid_promote, TO, "1")] {
            if undone {
                self.confirm_read_only(node, want, failure).await;
            }
        }
        if self.held_at.is_some() {
            self.nodes[FROM].backend.nudge();
            self.nodes[TO].backend.nudge();
            let from = self.nodes[FROM].backend.id;
            if !self.await_decision(from, self.config.route_timeout).await {
                failure
                    .undo_errors
                    .push("the router did not name the old primary again in time".into());
            }
            self.release(report, "released after the rollback").await;
        }
    }

    /// Makes sure node `node` has `@@read_only` = `want` after a rollback.
    async fn confirm_read_only(&mut self, node: usize, want: &str, failure: &mut Failed) {
        let limit = self.config.statement_timeout;
        let name = self.nodes[node].name().to_string();
        let read = self.nodes[node]
            .rows(&self.config, "SELECT @@read_only AS ro", limit)
            .await;
        if read.as_ref().is_ok_and(|(row, _)| text(row, "ro") == want) {
            return;
        }
        let fix = format!("SET GLOBAL read_only={want}");
        if let Err(e) = self.nodes[node].run(&self.config, &fix, limit).await {
            failure
                .undo_errors
                .push(format!("{name} should have read_only={want}: {e}"));
        }
    }

    async fn release(&mut self, report: &mut Report, why: &str) {
        let Some(held_at) = self.held_at.take() else {
            return;
        };
        let started = Instant::now();
        let detail = match AdminCommand::send(self.ctx.router, AdminAction::Release { pool: self.pool.id }).await {
            Ok(_) => why.to_string(),
            Err(e) => format!("{e}; the hold ends at its deadline"),
        };
        report.held_ms = Some(held_at.elapsed().as_millis() as u64);
        self.record(report, step("release", None, started, detail));
    }

    /// Adds a step to the report, the timeline and the log.
    fn record(&self, report: &mut Report, step: Step) {
        let pool = self.pool.name();
        info!(pool, step = step.step, backend = step.backend.as_deref().unwrap_or(""), detail = %step.detail, "switchover");
        let detail = format!("switchover {}: {}", step.step, step.detail);
        self.ctx
            .timeline
            .push(EventKind::Switchover, Some(pool), step.backend.as_deref(), detail);
        report.steps.push(step);
    }
}

fn step(step: &'static str, backend: Option<&str>, started: Instant, detail: String) -> Step {
    Step {
        step,
        backend: backend.map(str::to_string),
        ms: started.elapsed().as_millis() as u64,
        detail,
    }
}

/// A statement as reports show it: a password never.
fn redacted(statement: &str) -> String {
    match statement.find("MASTER_PASSWORD=") {
        Some(at) => {
            let rest = &statement[at..];
            // The last: the password may contain these words, but only inside its quotes.
            let end = rest.rfind(", MASTER_USE_GTID=").map_or(statement.len(), |e| at + e);
            format!("{}MASTER_PASSWORD=***{}", &statement[..at], &statement[end..])
        }
        None => statement.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_never_show_the_replication_password() {
        let account = Replication {
            user: "repl",
            password: "s3cret, MASTER_USE_GTID",
        };
        let statement = sql::replicate_from("127.0.0.1:3307".parse().unwrap(), account, false);
        let shown = redacted(&statement);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("MASTER_PASSWORD=***"), "{shown}");
        assert!(shown.ends_with("START SLAVE"), "{shown}");
        assert_eq!(redacted(sql::DEMOTE), sql::DEMOTE);
    }
}
