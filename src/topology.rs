//! What a running process serves right now: the validated config and the runtime
//! objects built from it. Published whole (an `ArcSwap`) at start and by every reload;
//! the admin handlers read it, the reloader ([`crate::app`]) is its only writer.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::Backend;
use crate::config::Config;
use crate::pool::Pool;
use crate::tls::ServerTls;

/// One generation of the configuration and what was built from it.
pub struct Topology {
    /// The config it was built from. Its indexes are the config's own; the runtime's
    /// are the slots on [`Backend::id`] and [`Pool::id`].
    pub config: Config,
    /// One per configured backend, in config order (by name).
    pub backends: Vec<Arc<Backend>>,
    /// One per configured pool, in config order (by name).
    pub pools: Vec<Arc<Pool>>,
    /// Every listener's name and bound address, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// Every TLS listener's termination, for certificate reloads.
    pub tls: Vec<Arc<ServerTls>>,
}

impl Topology {
    /// The backend of that name.
    pub fn backend(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The pool of that name.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name() == name)
    }
}
