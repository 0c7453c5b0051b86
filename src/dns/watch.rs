//! The watcher: one task that follows every `resolve = "ttl"` backend's host name.
//!
//! Each round it reads the running config (a reload may have added, removed or
//! re-resolved names), looks up the names that are due, and schedules each name's
//! next lookup by its answer's TTL within `resolve_min` and `resolve_max` (a failed
//! lookup: `resolve_min`, the last answer kept). A name whose pool routes nothing
//! (its primary was demoted or vanished: a managed failover is under way, and the
//! record is about to move) is due again `resolve_min` after its last lookup,
//! whatever the TTL. When some name's addresses changed,
//! the running config's text is parsed again with every host-named backend's current
//! addresses and the new ones ([`Config::parse_resolved`]), so nothing else is looked
//! up again and an edited but unreloaded file is not picked up, and the result goes to
//! the reloader like any reload.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Lookup;
use crate::admin::AdminState;
use crate::app::ReloadRequest;
use crate::config::{Config, DnsConfig, Resolve, ResolveMode, Resolved};
use crate::metrics as m;
use crate::timeline::EventKind;

/// How often the watcher looks at the config when it follows no name.
const IDLE: Duration = Duration::from_secs(5);
/// The longest the watcher waits for the reloader to apply a moved name.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it looks at the pools of the names it follows (whether one starves).
const LOOK: Duration = Duration::from_millis(250);

/// The names a config follows by TTL: how, and the addresses its members have now.
fn followed(config: &Config) -> BTreeMap<String, (Resolve, Vec<SocketAddr>)> {
    let resolved = config.resolved();
    config
        .backends
        .iter()
        .filter_map(|b| b.resolve.clone())
        .filter(|r| r.mode == ResolveMode::Ttl)
        .map(|r| {
            let addresses = resolved.get(&r.configured).cloned().unwrap_or_default();
            (r.configured.clone(), (r, addresses))
        })
        .collect()
}

/// When a name is looked up next: after its answer's TTL, within its bounds.
pub fn next_wait(ttl: Duration, resolve: &Resolve) -> Duration {
    ttl.clamp(resolve.min, resolve.max)
}

/// Follows the host names of the running config until `stop`.
pub async fn run(state: Arc<AdminState>, stop: CancellationToken) {
    let mut lookup: Option<(DnsConfig, Lookup)> = None;
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut looked: HashMap<String, Instant> = HashMap::new();
    loop {
        let config = state.topology.load().config.clone();
        let names = followed(&config);
        due.retain(|name, _| names.contains_key(name));
        let now = Instant::now();
        for (name, (resolve, _)) in &names {
            due.entry(name.clone()).or_insert(now + resolve.min);
        }
        for name in starving(&state) {
            if let (Some(at), Some(last), Some((resolve, _))) =
                (due.get_mut(&name), looked.get(&name), names.get(&name))
            {
                *at = (*at).min(*last + resolve.min);
            }
        }
        if !names.is_empty() && config.text.0.is_empty() {
            warn!("host names given on the command line are resolved once only");
            due.clear();
        }
        let mut changed = Resolved::new();
        for (name, (resolve, current)) in &names {
            if due.get(name).is_none_or(|&at| at > now) {
                continue;
            }
            let resolver = match &lookup {
                Some((dns, resolver)) if *dns == config.dns => resolver.clone(),
                _ => match Lookup::new(&config.dns) {
                    Ok(resolver) => lookup.insert((config.dns.clone(), resolver)).1.clone(),
                    Err(e) => {
                        warn!(backend = %name, error = %e, "cannot build the DNS resolver; addresses kept");
                        due.insert(name.clone(), now + resolve.min);
                        continue;
                    }
                },
            };
            looked.insert(name.clone(), now);
            let outcome = resolver.lookup(&resolve.host, resolve.port).await;
            let label = if outcome.is_ok() { "ok" } else { "error" };
            metrics::counter!(m::DNS_LOOKUPS, "backend" => name.clone(), "outcome" => label).increment(1);
            match outcome {
                Ok(answer) => {
                    due.insert(name.clone(), Instant::now() + next_wait(answer.ttl, resolve));
                    if answer.addresses != *current {
                        changed.insert(name.clone(), answer.addresses);
                    }
                }
                Err(e) => {
                    warn!(backend = %name, host = %resolve.host, error = %e, "DNS lookup failed; the last addresses stay");
                    due.insert(name.clone(), Instant::now() + resolve.min);
                }
            }
        }
        if !changed.is_empty() {
            if let Err(e) = apply(&state, &config, &names, &changed).await {
                warn!(error = %e, "a moved host name could not be applied; retrying");
                for name in changed.keys() {
                    due.insert(name.clone(), Instant::now() + names[name].0.min);
                }
            }
            continue;
        }
        let look = if names.is_empty() { IDLE } else { LOOK };
        let next = due.values().min().copied().unwrap_or(now + look).min(now + look);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The host names (as written in the file) with a member in a pool that routes
/// nothing now.
fn starving(state: &AdminState) -> Vec<String> {
    let topology = state.topology.load();
    let table = state.routing.load();
    let mut names = Vec::new();
    for (pool, config) in topology.pools.iter().zip(&topology.config.pools) {
        if !table.routable(pool.id).is_empty() {
            continue;
        }
        for &member in config.members.iter() {
            if let Some(resolve) = &topology.config.backends[member].resolve {
                names.push(resolve.configured.clone());
            }
        }
    }
    names
}

/// Parses the running config again with `changed`'s addresses and reloads it.
async fn apply(
    state: &AdminState,
    config: &Config,
    names: &BTreeMap<String, (Resolve, Vec<SocketAddr>)>,
    changed: &Resolved,
) -> Result<(), String> {
    let mut resolved = config.resolved();
    resolved.extend(changed.clone());
    let (text, source) = (config.text.0.clone(), config.source.clone());
    let parsed = tokio::task::spawn_blocking(move || Config::parse_resolved(&text, &source, &resolved))
        .await
        .map_err(|_| "stopping".to_string())?
        .map_err(|e| e.to_string())?;
    let (reply, outcome) = oneshot::channel();
    let request = ReloadRequest {
        config: Some(parsed),
        reply,
    };
    // Bounded: a reloader busy with a hand-over must not stall the watcher for good.
    let applied = async {
        state.reloads.send(request).await.map_err(|_| "stopping".to_string())?;
        outcome
            .await
            .map_err(|_| "stopping".to_string())?
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(APPLY_TIMEOUT, applied)
        .await
        .map_err(|_| format!("the reload took over {}", crate::duration::format(APPLY_TIMEOUT)))??;
    for (name, addresses) in changed {
        let before = names.get(name).map(|(_, a)| list(a)).unwrap_or_default();
        let detail = format!("{} moved: {before} → {}", names[name].0.host, list(addresses));
        info!(backend = %name, change = %detail, "host name re-resolved; members follow");
        metrics::counter!(m::DNS_CHANGES, "backend" => name.clone()).increment(1);
        state.timeline.push(EventKind::Dns, None, Some(name), detail);
    }
    Ok(())
}

fn list(addresses: &[SocketAddr]) -> String {
    let texts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    texts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(min: u64, max: u64) -> Resolve {
        Resolve {
            configured: "db".into(),
            host: "db.lab.test".into(),
            port: 3306,
            mode: ResolveMode::Ttl,
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
        }
    }

    #[test]
    fn the_next_lookup_follows_the_ttl_within_its_bounds() {
        let r = resolve(1, 60);
        assert_eq!(next_wait(Duration::from_secs(5), &r), Duration::from_secs(5));
        assert_eq!(
            next_wait(Duration::ZERO, &r),
            Duration::from_secs(1),
            "TTL 0: resolve_min"
        );
        assert_eq!(next_wait(Duration::from_secs(86_400), &r), Duration::from_secs(60));
    }

    #[test]
    fn only_ttl_names_are_followed_with_all_their_addresses() {
        let text = "[dns]\nservers = [\"127.0.0.1:1\"]\n\
                    [backends.db]\naddress = \"db.lab.test:3306\"\n\
                    [backends.fixed]\naddress = \"db.lab.test:3307\"\nresolve = \"once\"\n\
                    [backends.ip]\naddress = \"127.0.0.9:3306\"\n\
                    [pools.p]\nbackends = [\"db\", \"fixed\", \"ip\"]\n\
                    [listeners.l]\nlisten = \"127.0.0.1:0\"\npool = \"p\"\n";
        let a: SocketAddr = "127.0.0.2:3306".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:3306".parse().unwrap();
        let c: SocketAddr = "127.0.0.4:3307".parse().unwrap();
        let resolved = Resolved::from([("db".into(), vec![b, a]), ("fixed".into(), vec![c])]);
        let config = Config::parse_resolved(text, "t.toml", &resolved).unwrap();
        let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["db@127.0.0.2:3306", "db@127.0.0.3:3306", "fixed", "ip"]);
        assert_eq!(
            config.pools[0].members.names(),
            names,
            "a host-named backend brings every member"
        );
        let followed = followed(&config);
        assert_eq!(followed.keys().collect::<Vec<_>>(), ["db"]);
        assert_eq!(followed["db"].1, [a, b]);
        assert_eq!(config.resolved()["fixed"], [c]);
    }
}
