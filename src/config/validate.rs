//! Raw tree → typed [`Config`]: defaults (from [`defaults`]), ranges, rules across
//! fields, names resolved to indexes, secrets and TLS files read. Spellings were
//! checked by serde already. Each helper takes the dotted key it is checking so the
//! error can name it; the first mistake found is returned.
//!
//! - [`check`]: a backend's merged check table → [`CheckConfig`];
//! - [`pool`]: a pool → [`PoolConfig`] (members, role rules, fencing policy);
//! - [`listener`]: a listener → [`ListenerConfig`];
//! - [`tls`]: the `tls` tables of listeners and backends, and which listener modes
//!   fit which backends.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};

use super::raw::RawConfig;
use super::*;
use crate::tls::load::FileError;

mod check;
mod cluster;
mod dns;
mod listener;
mod pool;
mod tls;

/// Where errors point.
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
}

/// Validates the raw tree; the first mistake found is returned. Host-named backends
/// in `resolved` take those addresses instead of a lookup.
pub fn validate(raw: RawConfig, file: &str, resolved: &Resolved) -> Result<Config, ConfigError> {
    let ctx = Ctx { file };
    let admin = match raw.admin {
        None => None,
        Some(admin) => Some(AdminConfig {
            listen: ctx.address("admin.listen", &admin.listen)?,
            token: ctx.secret("admin.token", [&admin.token, &admin.token_env, &admin.token_file])?,
        }),
    };
    let shutdown_grace = raw
        .shutdown
        .and_then(|s| s.grace)
        .map_or(defaults::SHUTDOWN_GRACE, |s| s.0);
    let upgrade_socket = raw.runtime.as_ref().and_then(|r| r.upgrade_socket.clone());
    if upgrade_socket.as_ref().is_some_and(|p| p.is_empty() || p.len() > 100) {
        return Err(ctx.invalid("runtime.upgrade_socket", "a path of 1 to 100 bytes (a Unix socket)"));
    }
    let workers = match raw.runtime.and_then(|r| r.workers).map_or(defaults::WORKERS, |w| w.0) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => usize::from(n),
    };

    let dns = dns::dns_config(&ctx, raw.dns)?;
    let log = log_config(raw.log);
    let check_defaults = raw.check.unwrap_or_default();
    let mut backends = Vec::new();
    for (name, backend) in raw.backends {
        let key = format!("backends.{name}");
        let addresses = dns::addresses(&ctx, &key, &name, &backend, &dns, resolved)?;
        let check = backend.check.unwrap_or_default().over(&check_defaults);
        let check = check::check_config(&ctx, &format!("{key}.check"), check)?;
        let tls = match backend.tls {
            Some(tls) => Some(tls::backend_tls(&ctx, &format!("{key}.tls"), tls, &backend.address)?),
            None => None,
        };
        let source = match &backend.source {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                ctx.invalid(
                    format!("{key}.source"),
                    format!("a local IP address like \"10.0.0.5\", got \"{text}\""),
                )
            })?),
        };
        use crate::protocol::proxy_header::Version;
        let send_proxy = backend.send_proxy.map(|v| match v {
            raw::ProxySend::V1 => Version::V1,
            raw::ProxySend::V2 => Version::V2,
        });
        for (address, resolve) in addresses {
            backends.push(BackendConfig {
                name: resolve
                    .as_ref()
                    .map_or_else(|| name.clone(), |r| member_name(&name, address, r.members)),
                address,
                resolve: resolve.map(|r| r.resolve),
                check: check.clone(),
                tls: tls.clone(),
                source,
                send_proxy,
            });
        }
    }
    // Sorted by name, members of host-named backends included; a member's name may
    // not be another backend's.
    backends.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = backends.windows(2).find(|pair| pair[0].name == pair[1].name) {
        return Err(ctx.invalid(
            format!("backends.{}", pair[0].name),
            "a name no member of a host-named backend takes (NAME@ADDRESS)",
        ));
    }
    let mut backend_ids: HashMap<&str, Vec<BackendId>> = HashMap::new();
    for (id, b) in backends.iter().enumerate() {
        let configured = b.resolve.as_ref().map_or(b.name.as_str(), |r| r.configured.as_str());
        backend_ids.entry(configured).or_default().push(id);
    }
    for ids in backend_ids.values_mut() {
        ids.sort_by_key(|&id| backends[id].address);
    }

    let mut pools = Vec::new();
    for (name, raw_pool) in raw.pools {
        pools.push(pool::pool_config(&ctx, &name, raw_pool, &backend_ids, &backends)?);
    }

    let listeners = listener::listeners(&ctx, raw.listeners, &pools, &backends)?;
    let cluster = cluster::cluster(&ctx, raw.cluster, &pools)?;
    Ok(Config {
        source: file.to_string(),
        admin,
        shutdown_grace,
        workers,
        upgrade_socket: upgrade_socket.map(std::path::PathBuf::from),
        backends,
        pools,
        listeners,
        cluster,
        dns,
        log,
        text: Text::default(),
    })
}

/// `[log]`: its values were checked as read; what it leaves out is the default.
fn log_config(raw: Option<crate::config::raw::RawLog>) -> LogConfig {
    let raw = raw.unwrap_or_default();
    let default = LogConfig::default();
    LogConfig {
        format: raw.format.unwrap_or(default.format),
        level: raw.level.map_or(default.level, |l| l.0),
        access: AccessLog {
            enabled: raw.access.unwrap_or(default.access.enabled),
            sample: raw.access_sample.map_or(default.access.sample, |s| s.0),
        },
    }
}

/// `host:port` with a host and a port number; an IPv6 host in brackets (`[::1]:26379`).
pub(super) fn host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
            !host.is_empty() && (!host.contains(':') || bracketed) && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}
