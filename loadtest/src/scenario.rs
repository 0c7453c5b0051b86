//! A drill as a TOML file: what load, for how long, and which faults when.
//!
//! ```toml
//! name = "kill -9 of the primary, then a read_only switchover"
//! duration = "40s"
//! [workload]
//! writers = 4          # long-lived connections
//! short_lived = 2      # workers that open one connection per write (web frameworks)
//! rate = 200           # writes per second in all, open loop
//! [[fault]]
//! at = "10s"
//! action = "kill-primary"   # kill -9; the most advanced replica is promoted after `promote_after`
//! promote_after = "1s"
//! [[fault]]
//! at = "25s"
//! action = "switchover"     # read_only=1 on the primary, promote a replica, repoint the rest
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use switchyard::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    duration: String,
    workload: Workload,
    #[serde(default)]
    fault: Vec<RawFault>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: String,
    action: Action,
    promote_after: Option<String>,
    stop_for: Option<String>,
    stale_claim: Option<bool>,
}

/// Which clients, against which peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// `mysql_async` writes and reads against a 3-node MariaDB GTID cluster.
    #[default]
    Mysql,
    /// The official `mongodb` driver (inserts with ids, finds) against a scripted
    /// 3-member replica set.
    Mongo,
    /// The same against SecantusDB (a real single-node store that can step down).
    Secantus,
    /// Raw TCP echo exchanges against two echo servers.
    Tcp,
    /// HTTP/1.1 GETs against two small HTTP servers.
    Http,
}

/// The load.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub kind: WorkloadKind,
    /// Workers on one long-lived connection each (reconnecting after an error).
    pub writers: u32,
    /// Workers that connect, write and disconnect for every operation.
    #[serde(default)]
    pub short_lived: u32,
    /// Writes per second in all, spread over the workers, open loop.
    pub rate: u32,
    /// Long-lived workers open a new connection after this many operations, as
    /// per-request web applications do (0: only after an error).
    #[serde(default)]
    pub reconnect_every: u32,
    /// How long a client waits on one network exchange before it gives up and
    /// reconnects, like a web request's budget (default 5 s).
    #[serde(default, deserialize_with = "optional_duration")]
    pub op_timeout: Option<Duration>,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    duration::parse(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format_args!("op_timeout: expected {e}")))
}

/// What a fault step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `kill -9` of the primary; after `promote_after`, the most advanced replica is
    /// promoted and the others repointed to it.
    KillPrimary,
    /// `SET GLOBAL read_only=1` on the primary, then the most advanced replica is
    /// promoted and the others (the old primary included) repointed to it.
    Switchover,
    /// SIGSTOP of the primary for `stop_for`, then SIGCONT.
    StopPrimary,
    /// MongoDB: a scripted election moves the primary to the next member.
    Elect,
    /// SecantusDB: `replSetStepDown` (it steps up again by itself).
    Stepdown,
    /// TCP/HTTP: the first backend stops listening (connections are refused).
    Refuse,
    /// TCP/HTTP: the refused backend listens again on its address.
    Admit,
    /// MySQL and MongoDB: every node killed so far starts again and rejoins as a
    /// replica (MySQL: read-only, replicating from the current primary; MongoDB:
    /// caught up with the primary first, as a real member syncs).
    Rejoin,
    /// HA pair: `kill -9` of switchyard on the proxy host holding the VIP (it stays
    /// dead until `proxy-restart`).
    ProxyKill,
    /// HA pair: SIGSTOP of switchyard on the active proxy host for `stop_for`.
    ProxyHang,
    /// HA pair: the active proxy host cut off the network for `stop_for` (its link
    /// stays up: both sides may claim the VIP).
    ProxyPartition,
    /// HA pair: the active proxy host loses its route to the databases for
    /// `stop_for`.
    ProxyRouteLoss,
    /// HA pair: switchyard started again where it was killed (the old active
    /// returning), until it is ready.
    ProxyRestart,
    /// HA pair: `kill -9` of the active proxy and of the database primary at once;
    /// the most advanced replica is promoted after `promote_after`.
    ProxyKillWithPrimary,
    /// HA pair: both cores kept busy from the standby proxy host for `stop_for`.
    StandbyStress,
}

impl Action {
    /// The workload kinds this fault applies to.
    pub fn applies_to(self, kind: WorkloadKind) -> bool {
        use WorkloadKind::*;
        match self {
            Action::KillPrimary | Action::StopPrimary | Action::Rejoin => matches!(kind, Mysql | Mongo),
            Action::Switchover => kind == Mysql,
            Action::Elect => kind == Mongo,
            Action::Stepdown => kind == Secantus,
            Action::Refuse | Action::Admit => matches!(kind, Tcp | Http),
            action if action.is_proxy_tier() => kind == Mysql,
            _ => false,
        }
    }

    /// A fault of the proxy tier (an HA pair's target only).
    pub fn is_proxy_tier(self) -> bool {
        matches!(
            self,
            Action::ProxyKill
                | Action::ProxyHang
                | Action::ProxyPartition
                | Action::ProxyRouteLoss
                | Action::ProxyRestart
                | Action::ProxyKillWithPrimary
                | Action::StandbyStress
        )
    }
}

/// One timed fault.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fault {
    pub at: Duration,
    pub action: Action,
    pub promote_after: Duration,
    pub stop_for: Duration,
    /// MongoDB `kill-primary`: while the set has no primary (until `promote_after`),
    /// a secondary claims primary with the dead primary's older term, as a stale
    /// primary coming back would. Writes it acknowledges are its own (not replicated).
    pub stale_claim: bool,
}

/// A parsed scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub duration: Duration,
    pub workload: Workload,
    pub faults: Vec<Fault>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Scenario::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Scenario> {
        let raw: RawScenario = toml::from_str(text)?;
        let time = |key: &str, value: &str| duration::parse(value).map_err(|e| anyhow::anyhow!("{key}: expected {e}"));
        let total = time("duration", &raw.duration)?;
        if total > Duration::from_secs(600) {
            bail!("duration: at most 10m, got {}", raw.duration);
        }
        if raw.workload.rate == 0 || raw.workload.writers + raw.workload.short_lived == 0 {
            bail!("workload: rate and at least one worker are required");
        }
        let mut faults = Vec::new();
        for (i, f) in raw.fault.iter().enumerate() {
            let at = time(&format!("fault[{i}].at"), &f.at)?;
            if at >= total {
                bail!("fault[{i}].at: {} is not before the end ({})", f.at, raw.duration);
            }
            let promote_after = match &f.promote_after {
                Some(v) => time(&format!("fault[{i}].promote_after"), v)?,
                None => Duration::from_secs(1),
            };
            let stop_for = match &f.stop_for {
                Some(v) => time(&format!("fault[{i}].stop_for"), v)?,
                None => Duration::from_secs(5),
            };
            let stale_claim = f.stale_claim.unwrap_or(false);
            if stale_claim && (f.action != Action::KillPrimary || raw.workload.kind != WorkloadKind::Mongo) {
                bail!("fault[{i}].stale_claim: only on a kill-primary fault of a mongo workload");
            }
            if !f.action.applies_to(raw.workload.kind) {
                bail!(
                    "fault[{i}].action: {:?} does not apply to a {:?} workload",
                    f.action,
                    raw.workload.kind
                );
            }
            faults.push(Fault {
                at,
                action: f.action,
                promote_after,
                stop_for,
                stale_claim,
            });
        }
        faults.sort_by_key(|f| f.at);
        Ok(Scenario {
            name: raw.name,
            duration: total,
            workload: raw.workload,
            faults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed = match crate::redis_drill::plan::is_redis(&text) {
                true => crate::redis_drill::plan::Plan::parse(&text).map(drop),
                false => Scenario::parse(&text).map(drop),
            };
            parsed.unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        }
    }

    #[test]
    fn mistakes_are_named() {
        let base = "name = \"x\"\nduration = \"10s\"\n[workload]\nwriters = 1\nrate = 10\n";
        assert!(
            Scenario::parse(&format!("{base}[[fault]]\nat = \"20s\"\naction = \"switchover\"\n"))
                .unwrap_err()
                .to_string()
                .contains("fault[0].at")
        );
        assert!(Scenario::parse(&format!("{base}[[fault]]\nat = \"2s\"\naction = \"explode\"\n")).is_err());
        assert!(Scenario::parse(&base.replace("10s", "2h")).is_err());
        assert!(Scenario::parse(&base.replace("rate = 10", "rate = 0")).is_err());
        let tcp = base.replace("[workload]\n", "[workload]\nkind = \"tcp\"\n");
        assert!(
            Scenario::parse(&format!("{tcp}[[fault]]\nat = \"2s\"\naction = \"switchover\"\n"))
                .unwrap_err()
                .to_string()
                .contains("does not apply")
        );
        Scenario::parse(&format!("{tcp}[[fault]]\nat = \"2s\"\naction = \"refuse\"\n")).unwrap();
    }
}
