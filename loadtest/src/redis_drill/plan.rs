//! The Redis drill as a TOML file (`loadtest/scenarios/redis-sentinel.toml`): the
//! clients, and the faults, each run in a fresh lab.
//!
//! ```toml
//! name = "Redis + Sentinel under Celery-like load"
//! [workload]
//! kind = "redis"          # marks the file as a Redis drill for `switchyard-drill run`
//! writers = 4             # redis-crate clients per target, each on a kept connection
//! reconnect_every = 200   # a new connection after this many writes (0: only after an error)
//! pause = "5ms"           # between one client's writes
//! kombu = true            # a kombu producer and consumer per target
//! warmup = "2s"           # load before the fault
//! [[fault]]
//! action = "sigstop"      # kill9 | sentinel-failover | sigstop | restart-empty
//!                         # | replicaof-flip | client-pause
//! stop_for = "4s"         # sigstop only; client-pause takes pause_for
//! observe = "14s"         # how long the clients run from the fault on
//! ```

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use switchyard::duration;

/// The shipped plan, which `switchyard-drill redis` runs unless given another.
pub const SHIPPED: &str = include_str!("../../scenarios/redis-sentinel.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: String,
    workload: RawWorkload,
    #[serde(default)]
    fault: Vec<RawFault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    kind: String,
    writers: u32,
    #[serde(default)]
    reconnect_every: u32,
    pause: Option<String>,
    #[serde(default = "yes")]
    kombu: bool,
    warmup: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    action: Action,
    observe: Option<String>,
    stop_for: Option<String>,
    pause_for: Option<String>,
}

/// A Redis drill: its clients and its faults.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub workload: Workload,
    pub faults: Vec<Fault>,
}

/// The clients of each target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    pub writers: u32,
    pub reconnect_every: u32,
    pub pause: Duration,
    pub kombu: bool,
    pub warmup: Duration,
}

/// One fault, in a lab of its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub action: Action,
    /// How long the clients run from the fault on.
    pub observe: Duration,
    /// SIGSTOP's length, or `CLIENT PAUSE`'s.
    pub lasting: Duration,
}

/// What a fault does to the lab's master (node 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `kill -9`; the Sentinels fail over.
    Kill9,
    /// `SENTINEL FAILOVER` (planned).
    SentinelFailover,
    /// SIGSTOP for `stop_for`, then SIGCONT.
    Sigstop,
    /// `kill -9`, and once the Sentinels name another master, back as an empty master.
    RestartEmpty,
    /// `REPLICAOF NO ONE` on a replica by hand (the master is left alone).
    ReplicaofFlip,
    /// `CLIENT PAUSE <pause_for> WRITE` on the master.
    ClientPause,
}

impl Action {
    /// Every action, in the shipped plan's order.
    pub const ALL: [Action; 6] = [
        Action::Kill9,
        Action::SentinelFailover,
        Action::Sigstop,
        Action::RestartEmpty,
        Action::ReplicaofFlip,
        Action::ClientPause,
    ];

    /// The name in plans, on the command line and in the printed figures.
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill9 => "kill9",
            Action::SentinelFailover => "sentinel-failover",
            Action::Sigstop => "sigstop",
            Action::RestartEmpty => "restart-empty",
            Action::ReplicaofFlip => "replicaof-flip",
            Action::ClientPause => "client-pause",
        }
    }
}

/// Whether `text` is a Redis drill (its `[workload]` says `kind = "redis"`), so that
/// `switchyard-drill run` can hand it over. Text that is no TOML at all is not.
pub fn is_redis(text: &str) -> bool {
    let Ok(value) = text.parse::<toml::Table>() else {
        return false;
    };
    value
        .get("workload")
        .and_then(|w| w.get("kind"))
        .and_then(|k| k.as_str())
        == Some("redis")
}

impl Plan {
    pub fn parse(text: &str) -> Result<Plan> {
        let raw: RawPlan = toml::from_str(text)?;
        if raw.workload.kind != "redis" {
            bail!(
                "workload.kind: a Redis drill says \"redis\", got {:?}",
                raw.workload.kind
            );
        }
        if !(1..=64).contains(&raw.workload.writers) {
            bail!("workload.writers: 1 to 64, got {}", raw.workload.writers);
        }
        let pause = time(
            "workload.pause",
            raw.workload.pause.as_deref(),
            Duration::from_millis(5),
        )?;
        let warmup = time(
            "workload.warmup",
            raw.workload.warmup.as_deref(),
            Duration::from_secs(2),
        )?;
        if pause > Duration::from_secs(1) || warmup > Duration::from_secs(60) {
            bail!("workload: pause at most 1s and warmup at most 60s");
        }
        if raw.fault.is_empty() {
            bail!("no [[fault]]: a drill needs at least one");
        }
        let faults = raw
            .fault
            .iter()
            .enumerate()
            .map(|(i, f)| fault(f).with_context(|| format!("fault[{i}] ({})", f.action.name())))
            .collect::<Result<_>>()?;
        Ok(Plan {
            name: raw.name,
            workload: Workload {
                writers: raw.workload.writers,
                reconnect_every: raw.workload.reconnect_every,
                pause,
                kombu: raw.workload.kombu,
                warmup,
            },
            faults,
        })
    }

    /// The faults whose names are in `only` (all of them when `only` is empty); an
    /// unknown name is an error that lists the known ones.
    pub fn select(&self, only: &[String]) -> Result<Vec<Fault>> {
        if let Some(unknown) = only
            .iter()
            .find(|n| !Action::ALL.iter().any(|a| a.name() == n.as_str()))
        {
            let known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
            bail!("unknown scenario {unknown:?}; the scenarios are {}", known.join(", "));
        }
        Ok(self
            .faults
            .iter()
            .filter(|f| only.is_empty() || only.iter().any(|n| n == f.action.name()))
            .copied()
            .collect())
    }
}

fn fault(raw: &RawFault) -> Result<Fault> {
    let action = raw.action;
    let (lasting, key) = match (action, &raw.stop_for, &raw.pause_for) {
        (Action::Sigstop, stop_for, None) => (
            time("stop_for", stop_for.as_deref(), Duration::from_secs(4))?,
            "stop_for",
        ),
        (Action::ClientPause, None, pause_for) => (
            time("pause_for", pause_for.as_deref(), Duration::from_secs(3))?,
            "pause_for",
        ),
        (_, None, None) => (Duration::ZERO, ""),
        (_, Some(_), _) => bail!("stop_for: only a sigstop fault takes it"),
        (_, _, Some(_)) => bail!("pause_for: only a client-pause fault takes it"),
    };
    // Sentinel corrects a replica promoted by hand after about 10 s; the clients watch
    // past that.
    let default_observe = match action {
        Action::ReplicaofFlip => Duration::from_secs(20),
        _ => Duration::from_secs(14),
    };
    let observe = time("observe", raw.observe.as_deref(), default_observe)?;
    if observe > Duration::from_secs(120) || observe <= lasting {
        bail!("observe: longer than {key} and at most 120s, got {observe:?}");
    }
    if lasting > Duration::from_secs(30) || (key == "pause_for" && lasting < Duration::from_millis(1)) {
        bail!("{key}: 1ms to 30s, got {lasting:?}");
    }
    Ok(Fault {
        action,
        observe,
        lasting,
    })
}

fn time(key: &str, value: Option<&str>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(text) => duration::parse(text).map_err(|e| anyhow::anyhow!("{key}: expected {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"m\"\n[workload]\nkind = \"redis\"\nwriters = 2\n";

    #[test]
    fn the_shipped_plan_runs_every_fault_once_with_its_lengths() {
        let plan = Plan::parse(SHIPPED).expect("the shipped plan parses");
        let actions: Vec<Action> = plan.faults.iter().map(|f| f.action).collect();
        assert_eq!(actions, Action::ALL);
        assert!(is_redis(SHIPPED));
        assert_eq!(plan.workload.writers, 4);
        assert_eq!(plan.workload.reconnect_every, 200);
        let sigstop = plan.faults[2];
        assert_eq!(sigstop.lasting, Duration::from_secs(4));
        assert_eq!(plan.faults[4].observe, Duration::from_secs(20));
        assert_eq!(plan.faults[5].lasting, Duration::from_secs(3));
    }

    #[test]
    fn defaults_fill_what_a_plan_leaves_out() {
        let plan = Plan::parse(&format!("{MINIMAL}[[fault]]\naction = \"sigstop\"\n")).unwrap();
        assert_eq!(plan.workload.pause, Duration::from_millis(5));
        assert_eq!(plan.workload.warmup, Duration::from_secs(2));
        assert!(plan.workload.kombu);
        assert_eq!(plan.faults[0].lasting, Duration::from_secs(4));
        assert_eq!(plan.faults[0].observe, Duration::from_secs(14));
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            (
                "[[fault]]\naction = \"kill9\"\nstop_for = \"1s\"\n",
                "stop_for: only a sigstop",
            ),
            (
                "[[fault]]\naction = \"sigstop\"\npause_for = \"1s\"\n",
                "pause_for: only a client-pause",
            ),
            (
                "[[fault]]\naction = \"sigstop\"\nstop_for = \"5s\"\nobserve = \"4s\"\n",
                "observe: longer than stop_for",
            ),
            (
                "[[fault]]\naction = \"client-pause\"\npause_for = \"1m\"\nobserve = \"2m\"\n",
                "pause_for: 1ms to 30s",
            ),
            (
                "[[fault]]\naction = \"kill9\"\nobserve = \"soon\"\n",
                "observe: expected",
            ),
            ("", "no [[fault]]"),
        ];
        for (extra, expected) in cases {
            let err = format!("{:#}", Plan::parse(&format!("{MINIMAL}{extra}")).unwrap_err());
            assert!(err.contains(expected), "{extra:?}: {err}");
        }
        let err = Plan::parse(&MINIMAL.replace("kind = \"redis\"", "kind = \"mysql\"")).unwrap_err();
        assert!(err.to_string().contains("workload.kind"), "{err}");
        let err = Plan::parse(&format!("{MINIMAL}[[fault]]\naction = \"reboot\"\n")).unwrap_err();
        assert!(err.to_string().contains("unknown variant `reboot`"), "{err}");
    }

    #[test]
    fn select_keeps_the_named_faults_and_refuses_unknown_names() {
        let plan = Plan::parse(SHIPPED).unwrap();
        assert_eq!(plan.select(&[]).unwrap().len(), 6);
        let two = plan.select(&["client-pause".into(), "kill9".into()]).unwrap();
        let names: Vec<&str> = two.iter().map(|f| f.action.name()).collect();
        assert_eq!(names, ["kill9", "client-pause"]);
        let err = plan.select(&["reboot".into()]).unwrap_err().to_string();
        assert!(err.contains("\"reboot\"") && err.contains("sentinel-failover"), "{err}");
    }

    #[test]
    fn only_a_redis_workload_is_handed_to_the_redis_drill() {
        assert!(!is_redis(include_str!("../../scenarios/sigstop.toml")));
        assert!(!is_redis("not = [toml"));
        assert!(is_redis(MINIMAL));
    }
}
