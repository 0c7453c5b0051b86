//! `[cluster]` → [`ClusterConfig`]: this proxy's name, etcd's endpoints, the lease and
//! timeouts, etcd's credentials and TLS files (read and checked here).

use std::path::Path;
use std::time::Duration;

use super::Ctx;
use crate::config::raw::RawCluster;
use crate::config::*;

/// The shortest and longest `lease_ttl` (etcd grants at least a few seconds anyway).
const LEASE_TTL_RANGE: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(60));

/// The `[cluster]` section, if any; pools may only set `on_store_lost` with one.
pub(super) fn cluster(
    ctx: &Ctx<'_>,
    raw: Option<RawCluster>,
    pools: &[PoolConfig],
) -> Result<Option<ClusterConfig>, ConfigError> {
    match raw {
        Some(raw) => {
            // Names are parts of etcd keys.
            let slash = |name: &str| name.contains('/');
            if let Some(pool) = pools.iter().find(|p| slash(&p.name)) {
                return Err(ctx.invalid(format!("pools.{}", pool.name), "a pool name without '/' in a [cluster]"));
            }
            if let Some(name) = pools.iter().flat_map(|p| p.members.names()).find(|n| slash(n)) {
                return Err(ctx.invalid(format!("backends.{name}"), "a backend name without '/' in a [cluster]"));
            }
            Ok(Some(cluster_config(ctx, raw)?))
        }
        None => match pools.iter().find(|p| p.on_store_lost != defaults::ON_STORE_LOST) {
            Some(pool) => Err(ctx.invalid(
                format!("pools.{}.on_store_lost", pool.name),
                "it only with a [cluster] section",
            )),
            None => Ok(None),
        },
    }
}

fn cluster_config(ctx: &Ctx<'_>, raw: RawCluster) -> Result<ClusterConfig, ConfigError> {
    let name_ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if raw.name.is_empty() || raw.name.len() > 128 || !raw.name.chars().all(name_ok) {
        return Err(ctx.invalid(
            "cluster.name",
            "this proxy's name in the fleet: 1 to 128 letters, digits, '-', '_' or '.'",
        ));
    }
    if raw.etcd.is_empty() {
        return Err(ctx.invalid("cluster.etcd", "at least one etcd endpoint, like \"127.0.0.1:2379\""));
    }
    for endpoint in &raw.etcd {
        let mismatch = match raw.tls.is_some() {
            true => endpoint.starts_with("http://"),
            false => endpoint.starts_with("https://"),
        };
        if mismatch {
            return Err(ctx.invalid(
                "cluster.etcd",
                format!("https:// endpoints with `tls` and http:// ones without, got \"{endpoint}\""),
            ));
        }
        let bare = endpoint.trim_start_matches("http://").trim_start_matches("https://");
        if !super::host_port(bare) {
            return Err(ctx.invalid(
                "cluster.etcd",
                format!("endpoints like \"127.0.0.1:2379\" or \"https://etcd1:2379\", got \"{endpoint}\""),
            ));
        }
    }
    let prefix = raw.prefix.unwrap_or_else(|| defaults::CLUSTER_PREFIX.to_string());
    if prefix.is_empty() || prefix.ends_with('/') || prefix.contains(char::is_whitespace) {
        return Err(ctx.invalid(
            "cluster.prefix",
            format!("a key prefix like \"/switchyard/prod\" (no trailing '/', no spaces), got \"{prefix}\""),
        ));
    }
    let lease_ttl = raw.lease_ttl.map_or(defaults::LEASE_TTL, |d| d.0);
    if lease_ttl < LEASE_TTL_RANGE.0 || lease_ttl > LEASE_TTL_RANGE.1 || lease_ttl.subsec_nanos() != 0 {
        return Err(ctx.invalid("cluster.lease_ttl", "whole seconds from 2s to 60s"));
    }
    let timeout = raw.timeout.map_or(defaults::STORE_TIMEOUT, |t| t.0);
    // A lost session must end (keep-alive every ttl/3, answered within the timeout)
    // well before its lease could expire.
    if timeout > lease_ttl / 3 {
        return Err(ctx.invalid("cluster.timeout", "at most a third of `lease_ttl`"));
    }
    let password = ctx.secret(
        "cluster.password",
        [&raw.password, &raw.password_env, &raw.password_file],
    )?;
    if raw.user.is_some() != password.is_some() {
        return Err(ctx.invalid("cluster.user", "`user` and a password together, or neither"));
    }
    let tls = match raw.tls {
        None => None,
        Some(tls) => Some(store_tls(ctx, tls, &raw.etcd[0])?),
    };
    Ok(ClusterConfig {
        name: raw.name,
        etcd: raw.etcd,
        prefix,
        lease_ttl,
        timeout,
        shared_checks: raw.shared_checks.unwrap_or(defaults::SHARED_CHECKS),
        light_interval: raw.light_interval.map_or(defaults::LIGHT_INTERVAL, |i| i.0),
        user: raw.user,
        password,
        tls,
    })
}

fn store_tls(ctx: &Ctx<'_>, raw: raw::RawBackendTls, first: &str) -> Result<StoreTls, ConfigError> {
    use crate::tls::load::{read_chain, read_key};
    let table = "cluster.tls";
    if raw.insecure.is_some() {
        return Err(ctx.invalid("cluster.tls.insecure", "no `insecure` for etcd: give its CA in `ca`"));
    }
    let Some(ca) = raw.ca else {
        return Err(ctx.invalid("cluster.tls.ca", "the CA bundle etcd's certificate is signed by"));
    };
    read_chain("ca", Path::new(&ca)).map_err(|e| ctx.tls_file(table, e))?;
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| ctx.invalid(table, format!("a readable file, but \"{path}\": {e}")))
    };
    let identity = match (raw.cert, raw.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            read_chain("cert", Path::new(&cert)).map_err(|e| ctx.tls_file(table, e))?;
            read_key("key", Path::new(&key)).map_err(|e| ctx.tls_file(table, e))?;
            let key = String::from_utf8(read(&key)?).map_err(|_| ctx.invalid("cluster.tls.key", "a PEM file"))?;
            Some((read(&cert)?, Secret::new(key)))
        }
        _ => return Err(ctx.invalid("cluster.tls.cert", "`cert` and `key` together, or neither")),
    };
    let host = first.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
    Ok(StoreTls {
        ca: read(&ca)?,
        server_name: raw.server_name.unwrap_or_else(|| host.to_string()),
        identity,
    })
}
