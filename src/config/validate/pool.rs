//! A pool → [`PoolConfig`]: its members, the settings only some roles take, and the
//! fencing policy.

use std::collections::HashMap;

use super::Ctx;
use crate::config::defaults;
use crate::config::raw::{InitialState, OnLeave, RawPool, RawSentinel, RawSwitchover};
use crate::config::*;

pub(super) fn pool_config(
    ctx: &Ctx<'_>,
    name: &str,
    raw: RawPool,
    backend_ids: &HashMap<&str, Vec<BackendId>>,
    backends: &[BackendConfig],
) -> Result<PoolConfig, ConfigError> {
    let key = |field: &str| format!("pools.{name}.{field}");
    let members = members(ctx, &key("backends"), &raw.backends, backend_ids, backends)?;
    let role = raw.role.unwrap_or(defaults::ROLE);
    role_fits_members(ctx, name, &raw, role, &members, backends)?;
    let initial_state = raw.initial_state.unwrap_or(defaults::initial_state(role));
    let on_leave = match raw.on_leave.unwrap_or(defaults::on_leave(role)) {
        OnLeave::Close => LeavePolicy::Close,
        OnLeave::Drain => LeavePolicy::Drain(raw.drain_deadline.map_or(defaults::DRAIN_DEADLINE, |s| s.0)),
        OnLeave::Keep => LeavePolicy::Keep,
    };
    if raw.drain_deadline.is_some() && !matches!(on_leave, LeavePolicy::Drain(_)) {
        return Err(ctx.invalid(key("drain_deadline"), "it only with `on_leave = \"drain\"`"));
    }
    let galera = galera_members(ctx, name, &raw, &members, backends)?;
    let switchover = match raw.switchover {
        Some(switchover) => Some(switchover_config(ctx, name, switchover, role, &members, backends)?),
        None => None,
    };
    let sentinel = match raw.sentinel {
        Some(sentinel) => Some(sentinel_config(ctx, name, sentinel, role, &members, backends)?),
        None => None,
    };
    Ok(PoolConfig {
        name: name.to_string(),
        role,
        policy: raw.policy.unwrap_or(defaults::POLICY),
        members,
        initially_up: initial_state == InitialState::Up,
        on_leave,
        hold_timeout: raw.hold_timeout.map_or(defaults::HOLD_TIMEOUT, |s| s.0),
        connect_timeout: raw.connect_timeout.map_or(defaults::CONNECT_TIMEOUT, |t| t.0),
        idle_timeout: raw.idle_timeout.map_or(defaults::IDLE_TIMEOUT, |t| t.0),
        max_replication_lag: raw.max_replication_lag.map_or(defaults::MAX_REPLICATION_LAG, |s| s.0),
        max_replication_lag_bytes: raw
            .max_replication_lag_bytes
            .unwrap_or(defaults::MAX_REPLICATION_LAG_BYTES),
        fallback_to_primary: raw.fallback_to_primary.unwrap_or(defaults::FALLBACK_TO_PRIMARY),
        two_writers: raw.two_writers.unwrap_or(defaults::TWO_WRITERS),
        set_name: raw.set_name.filter(|n| !n.is_empty()),
        required: raw.required.unwrap_or(defaults::REQUIRED),
        on_store_lost: raw.on_store_lost.unwrap_or(defaults::ON_STORE_LOST),
        switchover,
        sentinel,
        galera,
        donor_ok: raw.donor_ok.unwrap_or(false),
    })
}

/// Whether the pool is a Galera pool: every member has a `kind = "galera"` check, or
/// none (a mix would judge some members by wsrep state and others not). `donor_ok`
/// only in a Galera pool.
fn galera_members(
    ctx: &Ctx<'_>,
    name: &str,
    raw: &RawPool,
    members: &[BackendId],
    backends: &[BackendConfig],
) -> Result<bool, ConfigError> {
    let is_galera = |id: &BackendId| matches!(backends[*id].check.probe, ProbeConfig::Galera(_));
    let galera = members.iter().filter(|id| is_galera(id)).count();
    if galera > 0 && galera < members.len() {
        let other = members.iter().find(|id| !is_galera(id)).map(|&id| &backends[id].name);
        return Err(ctx.invalid(
            format!("pools.{name}.backends"),
            format!(
                "members that all have `kind = \"galera\"` checks or none do; \"{}\" has not",
                other.map_or("", |n| n.as_str())
            ),
        ));
    }
    if raw.donor_ok.is_some() && galera == 0 {
        return Err(ctx.invalid(
            format!("pools.{name}.donor_ok"),
            "it only in a pool whose members have `kind = \"galera\"` checks",
        ));
    }
    Ok(galera > 0)
}

/// `[pools.NAME.sentinel]`: primary pools of Redis members; at least one Sentinel
/// address, each `host:port`; a master name.
fn sentinel_config(
    ctx: &Ctx<'_>,
    name: &str,
    raw: RawSentinel,
    role: PoolRole,
    members: &[BackendId],
    backends: &[BackendConfig],
) -> Result<SentinelConfig, ConfigError> {
    let key = |field: &str| format!("pools.{name}.sentinel.{field}");
    primary_of(ctx, &format!("pools.{name}.sentinel"), role, members, backends, "redis")?;
    if raw.sentinels.is_empty() {
        return Err(ctx.invalid(key("sentinels"), "at least one `host:port` address"));
    }
    if let Some(bad) = raw.sentinels.iter().find(|a| !super::host_port(a)) {
        return Err(ctx.invalid(key("sentinels"), format!("`host:port` addresses, got \"{bad}\"")));
    }
    let master_name = raw
        .master_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ctx.invalid(key("master_name"), "the name the Sentinels monitor the master by"))?;
    let password = ctx.secret(&key("password"), [&raw.password, &raw.password_env, &raw.password_file])?;
    if raw.user.is_some() && password.is_none() {
        return Err(ctx.invalid(key("user"), "it only with a password"));
    }
    Ok(SentinelConfig {
        sentinels: raw.sentinels,
        master_name,
        user: raw.user.filter(|u| !u.is_empty()),
        password,
        timeout: raw.timeout.map_or(defaults::SENTINEL_TIMEOUT, |t| t.0),
        interval: raw.interval.map_or(defaults::SENTINEL_INTERVAL, |i| i.0),
    })
}

/// `[pools.NAME.switchover]`: primary pools of MySQL members; both accounts named;
/// the whole switchover within the longest hold.
fn switchover_config(
    ctx: &Ctx<'_>,
    name: &str,
    raw: RawSwitchover,
    role: PoolRole,
    members: &[BackendId],
    backends: &[BackendConfig],
) -> Result<SwitchoverConfig, ConfigError> {
    let key = |field: &str| format!("pools.{name}.switchover.{field}");
    primary_of(
        ctx,
        &format!("pools.{name}.switchover"),
        role,
        members,
        backends,
        "mysql",
    )?;
    let named = |field: &str, value: Option<String>| {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ctx.invalid(key(field), "an account name"))
    };
    let config = SwitchoverConfig {
        user: named("user", raw.user)?,
        password: ctx.secret(&key("password"), [&raw.password, &raw.password_env, &raw.password_file])?,
        replication_user: named("replication_user", raw.replication_user)?,
        replication_password: ctx.secret(
            &key("replication_password"),
            [
                &raw.replication_password,
                &raw.replication_password_env,
                &raw.replication_password_file,
            ],
        )?,
        drain: raw.drain.map_or(defaults::SWITCHOVER_DRAIN, |t| t.0),
        catch_up_timeout: raw.catch_up_timeout.map_or(defaults::SWITCHOVER_CATCH_UP, |t| t.0),
        route_timeout: raw.route_timeout.map_or(defaults::SWITCHOVER_ROUTE, |t| t.0),
        statement_timeout: raw.statement_timeout.map_or(defaults::SWITCHOVER_STATEMENT, |t| t.0),
    };
    if config.hold() > MAX_HOLD {
        return Err(ctx.invalid(
            format!("pools.{name}.switchover"),
            format!(
                "drain + catch_up_timeout + route_timeout + 8 × statement_timeout at most {} (the longest hold), got {}",
                crate::duration::format(MAX_HOLD),
                crate::duration::format(config.hold())
            ),
        ));
    }
    Ok(config)
}

/// A section only a primary pool whose members all have `kind` checks takes.
fn primary_of(
    ctx: &Ctx<'_>,
    section: &str,
    role: PoolRole,
    members: &[BackendId],
    backends: &[BackendConfig],
    kind: &str,
) -> Result<(), ConfigError> {
    if role != PoolRole::Primary {
        return Err(ctx.invalid(section, "it only in a pool with `role = \"primary\"`"));
    }
    let fits = |probe: &ProbeConfig| match kind {
        "redis" => matches!(probe, ProbeConfig::Redis(_)),
        _ => matches!(probe, ProbeConfig::Mysql(_)),
    };
    match members.iter().find(|&&id| !fits(&backends[id].check.probe)) {
        Some(&id) => Err(ctx.invalid(
            section,
            format!(
                "it only when every member has `kind = \"{kind}\"` checks; \"{}\" has not",
                backends[id].name
            ),
        )),
        None => Ok(()),
    }
}

/// Backend names → [`Members`]: at least one, each known, each once. A host-named
/// backend brings all its members (one per address), in address order.
fn members(
    ctx: &Ctx<'_>,
    key: &str,
    names: &[String],
    backend_ids: &HashMap<&str, Vec<BackendId>>,
    backends: &[BackendConfig],
) -> Result<Members, ConfigError> {
    if names.is_empty() {
        return Err(ctx.invalid(key, "at least one backend name"));
    }
    let mut members: Vec<(String, BackendId)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let ids = backend_ids
            .get(name.as_str())
            .ok_or_else(|| ctx.invalid(key, format!("names of [backends.*] sections, got unknown \"{name}\"")))?;
        if names[..i].contains(name) {
            return Err(ctx.invalid(key, format!("each backend once, got \"{name}\" twice")));
        }
        members.extend(ids.iter().map(|&id| (backends[id].name.clone(), id)));
    }
    Ok(Members::new(members))
}

/// Role pools need role-aware checks; some settings belong to one role only;
/// `set_name` needs MongoDB checks.
fn role_fits_members(
    ctx: &Ctx<'_>,
    name: &str,
    raw: &RawPool,
    role: PoolRole,
    members: &[BackendId],
    backends: &[BackendConfig],
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("pools.{name}.{field}");
    if role != PoolRole::Any {
        if let Some(&id) = members.iter().find(|&&id| !backends[id].check.probe.knows_roles()) {
            return Err(ctx.invalid(
                key("role"),
                format!(
                    "\"any\" unless every member has a role-aware check (kind = \"mysql\", \"galera\", \"mongo\" or \"redis\"); \"{}\" has none",
                    backends[id].name
                ),
            ));
        }
    }
    let role_only = [
        (
            "max_replication_lag",
            raw.max_replication_lag.is_some() && role != PoolRole::Replica,
        ),
        (
            "max_replication_lag_bytes",
            raw.max_replication_lag_bytes.is_some() && role != PoolRole::Replica,
        ),
        (
            "fallback_to_primary",
            raw.fallback_to_primary.is_some() && role != PoolRole::Replica,
        ),
        ("two_writers", raw.two_writers.is_some() && role != PoolRole::Primary),
        (
            "on_store_lost",
            raw.on_store_lost.is_some() && role != PoolRole::Primary,
        ),
    ];
    if let Some((field, _)) = role_only.iter().find(|(_, misplaced)| *misplaced) {
        let wanted = if matches!(*field, "two_writers" | "on_store_lost") {
            "primary"
        } else {
            "replica"
        };
        return Err(ctx.invalid(key(field), format!("it only in a pool with `role = \"{wanted}\"`")));
    }
    if raw.set_name.is_some() {
        if let Some(&id) = members
            .iter()
            .find(|&&id| !matches!(backends[id].check.probe, ProbeConfig::Mongo(_)))
        {
            return Err(ctx.invalid(
                key("set_name"),
                format!(
                    "it only when every member has `kind = \"mongo\"` checks; \"{}\" has not",
                    backends[id].name
                ),
            ));
        }
    }
    Ok(())
}
