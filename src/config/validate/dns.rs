//! `[dns]` and a backend's address → the addresses it stands for: one, as written,
//! or every address its host name resolves to (see [`crate::dns`]).

use std::net::{SocketAddr, ToSocketAddrs};

use super::Ctx;
use crate::config::raw::{RawBackend, RawDns};
use crate::config::*;

/// A host-named backend's member: how it is resolved, and how many members the
/// backend has (which decides their names).
pub(super) struct Member {
    pub(super) resolve: Resolve,
    pub(super) members: usize,
}

pub(super) fn dns_config(ctx: &Ctx<'_>, raw: Option<RawDns>) -> Result<DnsConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let mut servers = Vec::new();
    for text in &raw.servers {
        let server = text.parse::<SocketAddr>().map_err(|_| {
            ctx.invalid(
                "dns.servers",
                format!("name server addresses like \"127.0.0.1:53\", got \"{text}\""),
            )
        })?;
        servers.push(server);
    }
    Ok(DnsConfig {
        servers,
        timeout: raw.timeout.map_or(defaults::DNS_TIMEOUT, |t| t.0),
    })
}

/// The addresses `backend` stands for. An IP address is itself (and takes no
/// `resolve` settings). A host name takes `resolved`'s addresses when it has them,
/// else a lookup: through `[dns]` for `resolve = "ttl"` (every address), by the system
/// resolver for `"once"` (the first address). A name that does not resolve is an
/// error at load, so a typo never starts a proxy.
pub(super) fn addresses(
    ctx: &Ctx<'_>,
    key: &str,
    name: &str,
    backend: &RawBackend,
    dns: &DnsConfig,
    resolved: &Resolved,
) -> Result<Vec<(SocketAddr, Option<Member>)>, ConfigError> {
    let text = &backend.address;
    if let Ok(address) = text.parse::<SocketAddr>() {
        let misplaced = [
            ("resolve", backend.resolve.is_some()),
            ("resolve_min", backend.resolve_min.is_some()),
            ("resolve_max", backend.resolve_max.is_some()),
        ];
        if let Some((field, _)) = misplaced.iter().find(|(_, set)| *set) {
            return Err(ctx.invalid(format!("{key}.{field}"), "it only with a host name in `address`"));
        }
        return Ok(vec![(address, None)]);
    }
    let expected = |why: &str| {
        ctx.invalid(
            format!("{key}.address"),
            format!("an address like \"127.0.0.1:3306\" or \"db1:3306\", got \"{text}\"{why}"),
        )
    };
    // Not an IP address, so no IPv6 literal: a name and a port.
    let (host, port) = text
        .rsplit_once(':')
        .filter(|(host, _)| super::host_port(text) && !host.starts_with('['))
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or_else(|| expected(""))?;
    let mode = backend.resolve.unwrap_or(ResolveMode::Ttl);
    let min = backend.resolve_min.map_or(defaults::RESOLVE_MIN, |t| t.0);
    let max = backend.resolve_max.map_or(defaults::RESOLVE_MAX, |t| t.0);
    if max < min {
        return Err(ctx.invalid(format!("{key}.resolve_max"), "at least `resolve_min`"));
    }
    let addresses = match (resolved.get(name), mode) {
        (Some(addresses), _) if !addresses.is_empty() => {
            let mut addresses = addresses.clone();
            addresses.sort();
            addresses.dedup();
            addresses
        }
        (_, ResolveMode::Once) => {
            let first = text.to_socket_addrs().ok().and_then(|mut addrs| addrs.next());
            vec![first.ok_or_else(|| expected(": the name does not resolve"))?]
        }
        (_, ResolveMode::Ttl) => {
            crate::dns::resolve_now(dns, host, port)
                .map_err(|e| expected(&format!(": the name does not resolve ({e})")))?
                .addresses
        }
    };
    let resolve = Resolve {
        configured: name.to_string(),
        host: host.to_string(),
        port,
        mode,
        min,
        max,
    };
    let members = addresses.len();
    Ok(addresses
        .into_iter()
        .map(|address| {
            let resolve = resolve.clone();
            (address, Some(Member { resolve, members }))
        })
        .collect())
}
