//! Backends named by host names that move: `[dns]` (where names are resolved) and
//! each backend's `resolve` settings (see [`crate::dns`] for the watcher that
//! re-resolves them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// `[dns]`: the resolver host names go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers (`ip:port`); empty: the system's (`/etc/resolv.conf`, and the
    /// hosts file).
    pub servers: Vec<SocketAddr>,
    /// Each lookup, all attempts included.
    pub timeout: Duration,
}

/// How a backend's host name is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResolveMode {
    /// Resolved again when the record's TTL runs out (within `resolve_min` and
    /// `resolve_max`); every address of the answer is a member.
    Ttl,
    /// Resolved once, at load (and at each reload), by the system resolver; the first
    /// address only.
    Once,
}

/// Where a backend's address came from, when it was written as a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// The backend's name in the file; with several addresses each member is named
    /// `NAME@ADDRESS`.
    pub configured: String,
    /// The host name, as written.
    pub host: String,
    /// The port, as written.
    pub port: u16,
    /// Followed by TTL, or resolved once.
    pub mode: ResolveMode,
    /// The shortest wait between two lookups (also after a failed one).
    pub min: Duration,
    /// The longest wait between two lookups, whatever the TTL.
    pub max: Duration,
}

/// The addresses each host-named backend resolved to, by its name in the file: what
/// a re-parse takes instead of resolving again.
pub type Resolved = BTreeMap<String, Vec<SocketAddr>>;

/// The name of the member for `address` of a backend configured as `configured`
/// with `count` addresses: the configured name alone when there is one.
pub fn member_name(configured: &str, address: SocketAddr, count: usize) -> String {
    if count == 1 {
        configured.to_string()
    } else {
        format!("{configured}@{address}")
    }
}
