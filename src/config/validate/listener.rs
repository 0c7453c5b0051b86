//! The listeners → [`ListenerConfig`]s: addresses (each used once), pools, limits,
//! socket options, mode and TLS.

use std::collections::BTreeMap;

use super::tls::{listener_tls, mode_fits_pool};
use super::Ctx;
use crate::config::defaults;
use crate::config::raw::RawListener;
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
    })
}
