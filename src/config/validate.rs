//! Raw tree → typed [`Config`]. Each helper takes the dotted key it is checking so the
//! error can name it.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::time::Duration;

use super::raw::{RawCheck, RawConfig, RawListener, RawPool};
use super::*;
use crate::duration;
use crate::tls::load::FileError;

mod tls;

use tls::{backend_tls, listener_tls, mode_fits_pool};

/// The shortest check interval we accept: faster probing costs more than it buys.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, key: impl Into<String>, expected: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            key: key.into(),
            expected: expected.into(),
        }
    }

    /// A TLS file error under the table at `table` (e.g. `listeners.web.tls`).
    fn tls_file(&self, table: &str, e: FileError) -> ConfigError {
        ConfigError::TlsFile {
            file: self.file.to_string(),
            key: format!("{table}.{}", e.field),
            path: e.path,
            reason: e.reason,
        }
    }

    fn duration(&self, key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(text) => duration::parse(text).map_err(|e| self.invalid(key, e)),
        }
    }

    fn address(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        if let Ok(addr) = text.parse() {
            return Ok(addr);
        }
        // Host names are resolved once, here, so a typo fails at load time.
        let expected = || format!("an address like \"127.0.0.1:3306\" or \"db1:3306\", got \"{text}\"");
        let mut addrs = text.to_socket_addrs().map_err(|_| self.invalid(key, expected()))?;
        addrs.next().ok_or_else(|| self.invalid(key, expected()))
    }

    /// A secret given as `KEY` (inline), `KEY_env` (an environment variable) or
    /// `KEY_file` (a file; a trailing newline is dropped) — at most one of them.
    fn secret(&self, key: &str, [inline, env, file]: [&Option<String>; 3]) -> Result<Option<Secret>, ConfigError> {
        if [inline, env, file].iter().filter(|s| s.is_some()).count() > 1 {
            let base = key.rsplit('.').next().unwrap_or(key);
            return Err(self.invalid(key, format!("at most one of {base}, {base}_env, {base}_file")));
        }
        let value = if let Some(value) = inline {
            value.clone()
        } else if let Some(var) = env {
            std::env::var(var).map_err(|_| {
                self.invalid(
                    format!("{key}_env"),
                    format!("the name of a set environment variable, but ${var} is not set"),
                )
            })?
        } else if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| self.invalid(format!("{key}_file"), format!("a readable file, but \"{path}\": {e}")))?;
            text.trim_end_matches(['\r', '\n']).to_string()
        } else {
            return Ok(None);
        };
        if value.is_empty() {
            return Err(self.invalid(key, "a non-empty secret"));
        }
        Ok(Some(Secret::new(value)))
    }

    fn positive(&self, key: &str, value: Option<i64>, default: u32) -> Result<NonZeroU32, ConfigError> {
        let value = value.unwrap_or(default.into());
        u32::try_from(value)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| self.invalid(key, format!("a whole number of at least 1, got {value}")))
    }
}

/// Validates the raw tree; the first mistake found is returned.
pub fn validate(raw: RawConfig, file: &str) -> Result<Config, ConfigError> {
    let ctx = Ctx { file };
    let admin = match raw.admin {
        None => None,
        Some(admin) => Some(AdminConfig {
            listen: ctx.address("admin.listen", &admin.listen)?,
            token: ctx.secret("admin.token", [&admin.token, &admin.token_env, &admin.token_file])?,
        }),
    };
    let grace = raw.shutdown.as_ref().and_then(|s| s.grace.as_deref());
    let shutdown_grace = ctx.duration("shutdown.grace", grace, Duration::from_secs(30))?;
    let workers = match raw.runtime.as_ref().and_then(|r| r.workers).unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n @ 1..=256 => n as usize,
        n => return Err(ctx.invalid("runtime.workers", format!("0 (one per core) to 256, got {n}"))),
    };

    let check_defaults = raw.check.unwrap_or_default();
    let mut backends = Vec::new();
    let mut backend_ids = HashMap::new();
    for (name, backend) in raw.backends {
        let key = format!("backends.{name}");
        let address = ctx.address(&format!("{key}.address"), &backend.address)?;
        let check = backend.check.unwrap_or_default().over(&check_defaults);
        let check = check_config(&ctx, &format!("{key}.check"), check)?;
        let tls = match backend.tls {
            Some(tls) => Some(backend_tls(&ctx, &format!("{key}.tls"), tls, &backend.address)?),
            None => None,
        };
        backend_ids.insert(name.clone(), backends.len());
        backends.push(BackendConfig {
            name,
            address,
            check,
            tls,
        });
    }

    let mut pools = Vec::new();
    let mut pool_ids = HashMap::new();
    for (name, pool) in raw.pools {
        let config = pool_config(&ctx, &name, pool, &backend_ids, &backends)?;
        pool_ids.insert(name, pools.len());
        pools.push(config);
    }

    let listeners = listeners(&ctx, raw.listeners, &pool_ids, &pools, &backends)?;
    Ok(Config {
        source: file.to_string(),
        admin,
        shutdown_grace,
        workers,
        backends,
        pools,
        listeners,
    })
}

fn check_config(ctx: &Ctx, key: &str, raw: RawCheck) -> Result<CheckConfig, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let interval = ctx.duration(&k("interval"), raw.interval.as_deref(), Duration::from_secs(1))?;
    let fast_interval = ctx.duration(
        &k("fast_interval"),
        raw.fast_interval.as_deref(),
        (interval / 4).max(MIN_INTERVAL),
    )?;
    let down_interval = ctx.duration(&k("down_interval"), raw.down_interval.as_deref(), interval)?;
    for (field, value) in [
        ("interval", interval),
        ("fast_interval", fast_interval),
        ("down_interval", down_interval),
    ] {
        if value < MIN_INTERVAL {
            return Err(ctx.invalid(k(field), format!("at least 100ms, got {}", duration::format(value))));
        }
    }
    let timeout = ctx.duration(&k("timeout"), raw.timeout.as_deref(), Duration::from_secs(1))?;
    if timeout.is_zero() {
        return Err(ctx.invalid(k("timeout"), "a duration above zero"));
    }
    let jitter = raw.jitter.unwrap_or(0.1);
    if !(0.0..=0.5).contains(&jitter) {
        return Err(ctx.invalid(k("jitter"), format!("a fraction from 0.0 to 0.5, got {jitter}")));
    }
    let probe = match raw.kind.as_deref().unwrap_or("tcp") {
        "tcp" => ProbeConfig::Tcp,
        "http" => ProbeConfig::Http(http_probe(ctx, key, &raw)?),
        "mysql" => ProbeConfig::Mysql(mysql_probe(ctx, key, &raw)?),
        "mongo" => ProbeConfig::Mongo(mongo_probe(ctx, key, &raw)?),
        other => {
            return Err(ctx.invalid(
                k("kind"),
                format!("one of \"tcp\", \"http\", \"mysql\", \"mongo\", got \"{other}\""),
            ))
        }
    };
    let http_only = [
        ("method", raw.method.is_some()),
        ("path", raw.path.is_some()),
        ("host", raw.host.is_some()),
        ("expect_status", raw.expect_status.is_some()),
        ("body_contains", raw.body_contains.is_some()),
    ];
    if !matches!(probe, ProbeConfig::Http(_)) {
        if let Some((field, _)) = http_only.iter().find(|(_, set)| *set) {
            return Err(ctx.invalid(k(field), "no HTTP setting on a check that is not `kind = \"http\"`"));
        }
    }
    if raw.auth_source.is_some() && !matches!(probe, ProbeConfig::Mongo(_)) {
        return Err(ctx.invalid(k("auth_source"), "it only on a `kind = \"mongo\"` check"));
    }
    let mysql_only = [
        ("user", raw.user.is_some()),
        ("password", raw.password.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
    ];
    if !matches!(probe, ProbeConfig::Mysql(_) | ProbeConfig::Mongo(_)) {
        if let Some((field, _)) = mysql_only.iter().find(|(_, set)| *set) {
            return Err(ctx.invalid(
                k(field),
                "no login setting on a check that is not `kind = \"mysql\"` or `kind = \"mongo\"`",
            ));
        }
    }
    Ok(CheckConfig {
        probe,
        interval,
        fast_interval,
        down_interval,
        timeout,
        rise: ctx.positive(&k("rise"), raw.rise, 2)?,
        fall: ctx.positive(&k("fall"), raw.fall, 2)?,
        jitter,
    })
}

fn http_probe(ctx: &Ctx, key: &str, raw: &RawCheck) -> Result<HttpProbeConfig, ConfigError> {
    let method = raw.method.clone().unwrap_or_else(|| "GET".into());
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ctx.invalid(
            format!("{key}.method"),
            format!("an HTTP method like \"GET\", got \"{method}\""),
        ));
    }
    let path = raw.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(ctx.invalid(
            format!("{key}.path"),
            format!("a path starting with \"/\" and without spaces, got \"{path}\""),
        ));
    }
    if let Some(host) = &raw.host {
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(ctx.invalid(
                format!("{key}.host"),
                format!("a host name without spaces, got \"{host}\""),
            ));
        }
    }
    let status_text = raw.expect_status.as_deref().unwrap_or("200-399");
    let expect_status = status_range(status_text).ok_or_else(|| {
        ctx.invalid(
            format!("{key}.expect_status"),
            format!("a status like \"200\" or a range like \"200-399\" within 100-599, got \"{status_text}\""),
        )
    })?;
    Ok(HttpProbeConfig {
        method,
        path,
        host: raw.host.clone(),
        expect_status,
        body_contains: raw.body_contains.clone(),
    })
}

fn mysql_probe(ctx: &Ctx, key: &str, raw: &RawCheck) -> Result<MysqlProbeConfig, ConfigError> {
    let user = raw.user.clone().filter(|u| !u.is_empty()).ok_or_else(|| {
        ctx.invalid(
            format!("{key}.user"),
            "the monitor user name (a `kind = \"mysql\"` check logs in)",
        )
    })?;
    let password = ctx.secret(
        &format!("{key}.password"),
        [&raw.password, &raw.password_env, &raw.password_file],
    )?;
    Ok(MysqlProbeConfig { user, password })
}

fn mongo_probe(ctx: &Ctx, key: &str, raw: &RawCheck) -> Result<MongoProbeConfig, ConfigError> {
    let password = ctx.secret(
        &format!("{key}.password"),
        [&raw.password, &raw.password_env, &raw.password_file],
    )?;
    match (&raw.user, &password) {
        (Some(_), None) => return Err(ctx.invalid(format!("{key}.password"), "a password with `user` (SCRAM-SHA-256)")),
        (None, Some(_)) => return Err(ctx.invalid(format!("{key}.user"), "a user name with the password")),
        _ => {}
    }
    // SASLprep is the identity for ASCII; we do not implement the rest of it.
    if raw.user.as_deref().is_some_and(|u| u.is_empty() || !u.is_ascii()) {
        return Err(ctx.invalid(format!("{key}.user"), "a non-empty ASCII user name"));
    }
    if password.as_ref().is_some_and(|p| !p.expose().is_ascii()) {
        return Err(ctx.invalid(
            format!("{key}.password"),
            "an ASCII password (SASLprep of other text is not supported)",
        ));
    }
    Ok(MongoProbeConfig {
        user: raw.user.clone(),
        password,
        auth_source: raw.auth_source.clone().unwrap_or_else(|| "admin".into()),
    })
}

fn status_range(text: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high): (u16, u16) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    (100 <= low && low <= high && high <= 599).then_some(low..=high)
}

fn pool_config(
    ctx: &Ctx,
    name: &str,
    raw: RawPool,
    backend_ids: &HashMap<String, BackendId>,
    backends: &[BackendConfig],
) -> Result<PoolConfig, ConfigError> {
    let key = |field: &str| format!("pools.{name}.{field}");
    if raw.backends.is_empty() {
        return Err(ctx.invalid(key("backends"), "at least one backend name"));
    }
    let mut members = Vec::new();
    for backend in &raw.backends {
        let id = *backend_ids.get(backend).ok_or_else(|| {
            ctx.invalid(
                key("backends"),
                format!("names of [backends.*] sections, got unknown \"{backend}\""),
            )
        })?;
        if members.contains(&id) {
            return Err(ctx.invalid(key("backends"), format!("each backend once, got \"{backend}\" twice")));
        }
        members.push(id);
    }
    let role = match raw.role.as_deref().unwrap_or("any") {
        "any" => PoolRole::Any,
        "primary" => PoolRole::Primary,
        "replica" | "secondary" => PoolRole::Replica,
        other => {
            return Err(ctx.invalid(
                key("role"),
                format!("one of \"any\", \"primary\", \"replica\" (or \"secondary\"), got \"{other}\""),
            ))
        }
    };
    if role != PoolRole::Any {
        if let Some(&id) = members.iter().find(|&&id| !backends[id].check.probe.knows_roles()) {
            return Err(ctx.invalid(
                key("role"),
                format!(
                    "\"any\" unless every member has a role-aware check (kind = \"mysql\" or \"mongo\"); \"{}\" has none",
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
            "fallback_to_primary",
            raw.fallback_to_primary.is_some() && role != PoolRole::Replica,
        ),
        ("two_writers", raw.two_writers.is_some() && role != PoolRole::Primary),
    ];
    if let Some((field, _)) = role_only.iter().find(|(_, misplaced)| *misplaced) {
        let wanted = if *field == "two_writers" { "primary" } else { "replica" };
        return Err(ctx.invalid(key(field), format!("it only in a pool with `role = \"{wanted}\"`")));
    }
    let two_writers = match raw.two_writers.as_deref().unwrap_or("keep-current") {
        "keep-current" => TwoWriters::KeepCurrent,
        "fail-closed" => TwoWriters::FailClosed,
        other => {
            return Err(ctx.invalid(
                key("two_writers"),
                format!("\"keep-current\" or \"fail-closed\", got \"{other}\""),
            ))
        }
    };
    let max_replication_lag = ctx.duration(
        &key("max_replication_lag"),
        raw.max_replication_lag.as_deref(),
        Duration::from_secs(10),
    )?;
    let is_primary = role == PoolRole::Primary;
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
    let policy = match raw.policy.as_deref().unwrap_or("first") {
        "first" => Policy::First,
        "round-robin" => Policy::RoundRobin,
        "least-connections" => Policy::LeastConnections,
        "power-of-two" => Policy::PowerOfTwo,
        other => {
            return Err(ctx.invalid(
                key("policy"),
                format!("one of \"first\", \"round-robin\", \"least-connections\", \"power-of-two\", got \"{other}\""),
            ))
        }
    };
    let initially_up = match raw
        .initial_state
        .as_deref()
        .unwrap_or(if is_primary { "down" } else { "up" })
    {
        "up" => true,
        "down" => false,
        other => return Err(ctx.invalid(key("initial_state"), format!("\"up\" or \"down\", got \"{other}\""))),
    };
    let drain_deadline = ctx.duration(
        &key("drain_deadline"),
        raw.drain_deadline.as_deref(),
        Duration::from_secs(30),
    )?;
    let on_leave = match raw
        .on_leave
        .as_deref()
        .unwrap_or(if is_primary { "close" } else { "keep" })
    {
        "close" => LeavePolicy::Close,
        "drain" => LeavePolicy::Drain(drain_deadline),
        "keep" => LeavePolicy::Keep,
        other => {
            return Err(ctx.invalid(
                key("on_leave"),
                format!("one of \"close\", \"drain\", \"keep\", got \"{other}\""),
            ))
        }
    };
    if raw.drain_deadline.is_some() && !matches!(on_leave, LeavePolicy::Drain(_)) {
        return Err(ctx.invalid(key("drain_deadline"), "it only with `on_leave = \"drain\"`"));
    }
    let connect_timeout = ctx.duration(
        &key("connect_timeout"),
        raw.connect_timeout.as_deref(),
        Duration::from_secs(2),
    )?;
    if connect_timeout.is_zero() {
        return Err(ctx.invalid(key("connect_timeout"), "a duration above zero"));
    }
    let idle_timeout = ctx.duration(
        &key("idle_timeout"),
        raw.idle_timeout.as_deref(),
        Duration::from_secs(3600),
    )?;
    if idle_timeout.is_zero() {
        return Err(ctx.invalid(key("idle_timeout"), "a duration above zero"));
    }
    Ok(PoolConfig {
        name: name.to_string(),
        role,
        policy,
        members,
        initially_up,
        on_leave,
        hold_timeout: ctx.duration(
            &key("hold_timeout"),
            raw.hold_timeout.as_deref(),
            Duration::from_secs(5),
        )?,
        connect_timeout,
        idle_timeout,
        max_replication_lag,
        fallback_to_primary: raw.fallback_to_primary.unwrap_or(false),
        two_writers,
        set_name: raw.set_name.filter(|n| !n.is_empty()),
    })
}

fn listeners(
    ctx: &Ctx,
    raw: BTreeMap<String, RawListener>,
    pool_ids: &HashMap<String, PoolId>,
    pools: &[PoolConfig],
    backends: &[BackendConfig],
) -> Result<Vec<ListenerConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ctx.invalid("listeners", "at least one [listeners.NAME] section"));
    }
    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for (name, listener) in raw {
        let key = |field: &str| format!("listeners.{name}.{field}");
        let listen = ctx.address(&key("listen"), &listener.listen)?;
        if listen.port() != 0 {
            if let Some(other) = listeners.iter().find(|l| l.listen == listen) {
                return Err(ctx.invalid(
                    key("listen"),
                    format!("an address no other listener uses, but \"{}\" has {listen}", other.name),
                ));
            }
        }
        let pool = *pool_ids.get(&listener.pool).ok_or_else(|| {
            ctx.invalid(
                key("pool"),
                format!("the name of a [pools.*] section, got unknown \"{}\"", listener.pool),
            )
        })?;
        let max = listener.max_connections.unwrap_or(10_000);
        let max_connections = usize::try_from(max)
            .ok()
            .filter(|m| (1..=1_000_000).contains(m))
            .ok_or_else(|| ctx.invalid(key("max_connections"), format!("a number from 1 to 1000000, got {max}")))?;
        let tcp = TcpOptions {
            keepalive: ctx.duration(
                &key("keepalive"),
                listener.keepalive.as_deref(),
                Duration::from_secs(30),
            )?,
            user_timeout: ctx.duration(
                &key("user_timeout"),
                listener.user_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
        };
        if tcp.keepalive < Duration::from_secs(1) {
            return Err(ctx.invalid(key("keepalive"), "at least 1s"));
        }
        let mode = match listener.mode.as_deref() {
            None | Some("tcp") => ListenerMode::Tcp,
            Some("mysql") => ListenerMode::Mysql,
            Some(other) => return Err(ctx.invalid(key("mode"), format!("\"tcp\" or \"mysql\", got \"{other}\""))),
        };
        mode_fits_pool(ctx, &name, mode, listener.tls.is_some(), &pools[pool], backends)?;
        let tls = match listener.tls {
            Some(tls) => Some(listener_tls(ctx, &key("tls"), tls, mode)?),
            None => None,
        };
        listeners.push(ListenerConfig {
            name,
            listen,
            pool,
            max_connections,
            tcp,
            mode,
            tls,
        });
    }
    Ok(listeners)
}
