//! The listeners → [`ListenerConfig`]s: addresses (each used once), pools, limits,
//! socket options, mode and TLS.

use std::collections::BTreeMap;

use super::tls::{listener_tls, mode_fits_pool};
use super::Ctx;
use crate::config::defaults;
use crate::config::raw::{ProxyAccept, RawListener};
use crate::config::*;

pub(super) fn listeners(
    ctx: &Ctx<'_>,
    raw: BTreeMap<String, RawListener>,
    pools: &[PoolConfig],
    backends: &[BackendConfig],
) -> Result<Vec<ListenerConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ctx.invalid("listeners", "at least one [listeners.NAME] section"));
    }
    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for (name, listener) in raw {
        let config = listener_config(ctx, name, listener, pools, backends)?;
        if config.listen.port() != 0 {
            if let Some(other) = listeners.iter().find(|l| l.listen == config.listen) {
                return Err(ctx.invalid(
                    format!("listeners.{}.listen", config.name),
                    format!(
                        "an address no other listener uses, but \"{}\" has {}",
                        other.name, config.listen
                    ),
                ));
            }
        }
        listeners.push(config);
    }
    Ok(listeners)
}

fn listener_config(
    ctx: &Ctx<'_>,
    name: String,
    raw: RawListener,
    pools: &[PoolConfig],
    backends: &[BackendConfig],
) -> Result<ListenerConfig, ConfigError> {
    let key = |field: &str| format!("listeners.{name}.{field}");
    let listen = ctx.address(&key("listen"), &raw.listen)?;
    let id = pools.iter().position(|p| p.name == raw.pool).ok_or_else(|| {
        ctx.invalid(
            key("pool"),
            format!("the name of a [pools.*] section, got unknown \"{}\"", raw.pool),
        )
    })?;
    let max_connections = raw.max_connections.map_or(defaults::MAX_CONNECTIONS, |m| m.0);
    let tcp = TcpOptions {
        keepalive: raw.keepalive.map_or(defaults::KEEPALIVE, |k| k.0),
        user_timeout: raw.user_timeout.map_or(defaults::USER_TIMEOUT, |d| d.0),
    };
    let mode = raw.mode.unwrap_or(defaults::MODE);
    mode_fits_pool(ctx, &name, mode, raw.tls.is_some(), &pools[id], backends)?;
    if mode != ListenerMode::Mysql {
        if let Some(field) = [
            ("login_timeout", raw.login_timeout.is_some()),
            ("max_logins", raw.max_logins.is_some()),
        ]
        .iter()
        .find_map(|(field, set)| set.then_some(*field))
        {
            return Err(ctx.invalid(key(field), "it only on a `mode = \"mysql\"` listener"));
        }
    }
    let login = LoginLimits {
        timeout: raw.login_timeout.map_or(defaults::LOGIN_TIMEOUT, |t| t.0),
        concurrent: raw.max_logins.map_or(defaults::MAX_LOGINS, |m| m.0),
    };
    let accept_proxy = accept_proxy(ctx, &name, raw.accept_proxy, raw.trusted_sources, raw.proxy_timeout)?;
    let tls = match raw.tls {
        Some(tls) => Some(listener_tls(ctx, &key("tls"), tls, mode)?),
        None => None,
    };
    Ok(ListenerConfig {
        pool: PoolRef { id, name: raw.pool },
        name,
        listen,
        max_connections,
        tcp,
        mode,
        tls,
        login,
        accept_proxy,
    })
}

/// `accept_proxy` with its `trusted_sources` (required) and `proxy_timeout`.
fn accept_proxy(
    ctx: &Ctx<'_>,
    name: &str,
    versions: Option<ProxyAccept>,
    trusted: Option<Vec<String>>,
    timeout: Option<crate::config::raw::Timeout>,
) -> Result<Option<AcceptProxy>, ConfigError> {
    use crate::protocol::proxy_header::Accept;
    let key = |field: &str| format!("listeners.{name}.{field}");
    let Some(versions) = versions else {
        if let Some(field) = [
            ("trusted_sources", trusted.is_some()),
            ("proxy_timeout", timeout.is_some()),
        ]
        .iter()
        .find_map(|(field, set)| set.then_some(*field))
        {
            return Err(ctx.invalid(key(field), "it only with accept_proxy"));
        }
        return Ok(None);
    };
    let trusted = trusted.unwrap_or_default();
    if trusted.is_empty() {
        return Err(ctx.invalid(
            key("trusted_sources"),
            "the networks allowed to send PROXY headers (CIDR, like [\"10.0.0.0/8\"]) with accept_proxy",
        ));
    }
    let trusted = trusted
        .iter()
        .map(|text| Cidr::parse(text).map_err(|e| ctx.invalid(key("trusted_sources"), e)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(AcceptProxy {
        versions: match versions {
            ProxyAccept::V1 => Accept::V1,
            ProxyAccept::V2 => Accept::V2,
            ProxyAccept::Any => Accept::Any,
        },
        trusted,
        timeout: timeout.map_or(defaults::PROXY_TIMEOUT, |t| t.0),
    }))
}
