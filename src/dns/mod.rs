//! Host names that move (managed databases fail over by pointing a name at another
//! address): lookups through a maintained resolver (`hickory-resolver`), and the
//! [`watch`] task that follows each `resolve = "ttl"` backend's record.
//!
//! Data flow: at load, `config::validate` resolves every host name ([`resolve_now`]
//! for `ttl` names, the system resolver for `once`) and makes one member per address.
//! After that the watcher looks each `ttl` name up again when its TTL runs out
//! (bounded by `resolve_min`/`resolve_max`); when the addresses changed it parses the
//! running config's text again with the new addresses ([`Config::parse_resolved`](
//! crate::config::Config::parse_resolved)) and hands it to the reloader, which keeps
//! the members that stay, checks a new address before it takes traffic, and fences
//! the sessions of one that left as the pool's `on_leave` says. A failed lookup keeps
//! the last answer.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::DnsConfig;

pub mod watch;

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Every address of the answer with the port, sorted, each once; never empty.
    pub addresses: Vec<SocketAddr>,
    /// How long the answer is valid (its records' TTL).
    pub ttl: Duration,
}

/// A resolver configured as `[dns]` says.
#[derive(Clone)]
pub struct Lookup {
    resolver: TokioResolver,
    timeout: Duration,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup").field("timeout", &self.timeout).finish()
    }
}

impl Lookup {
    /// The resolver for `config`: its servers, or the system's configuration. Answers
    /// are not cached (each lookup asks), A records come before AAAA.
    pub fn new(config: &DnsConfig) -> Result<Lookup, String> {
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("the system resolver configuration: {e}"))?
        } else {
            let servers = config
                .servers
                .iter()
                .map(|server| {
                    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                    udp.port = server.port();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.cache_size = 0;
        options.timeout = config.timeout;
        options.attempts = 1;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder.build().map_err(|e| format!("building the resolver: {e}"))?;
        Ok(Lookup {
            resolver,
            timeout: config.timeout,
        })
    }

    /// Looks `host` up (A and AAAA); every address gets `port`. An empty answer is an
    /// error, like a failed lookup: neither may take a backend's members away.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Answer, String> {
        let found = tokio::time::timeout(self.timeout, self.resolver.lookup_ip(host))
            .await
            .map_err(|_| format!("no answer within {}", crate::duration::format(self.timeout)))?
            .map_err(|e| crate::logs::peer(&e.to_string()))?;
        let mut addresses: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err("the answer holds no address".into());
        }
        let ttl = found.valid_until().saturating_duration_since(std::time::Instant::now());
        Ok(Answer { addresses, ttl })
    }
}

/// One lookup from code that is not async (loading a config), on a thread of its
/// own so that it works inside a runtime too.
pub fn resolve_now(config: &DnsConfig, host: &str, port: u16) -> Result<Answer, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("a runtime for the lookup: {e}"))?;
                runtime.block_on(async { Lookup::new(config)?.lookup(host, port).await })
            })
            .join()
            .unwrap_or_else(|_| Err("the lookup panicked".into()))
    })
}
