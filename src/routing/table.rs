//! The routing snapshot.

use std::sync::Arc;

use crate::config::PoolId;
use crate::pool::Member;

/// Which members of each pool may take new sessions, in priority order.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Grows by one with every table the router publishes.
    pub generation: u64,
    pools: Vec<Vec<Arc<Member>>>,
}

impl RoutingTable {
    /// A table of `generation` with each pool's routable members (indexed by pool id), in
    /// priority order.
    pub fn new(generation: u64, pools: Vec<Vec<Arc<Member>>>) -> Self {
        RoutingTable { generation, pools }
    }

    /// The routable members of `pool` (empty for an unknown pool).
    pub fn routable(&self, pool: PoolId) -> &[Arc<Member>] {
        self.pools.get(pool).map(Vec::as_slice).unwrap_or_default()
    }

    /// The routable members' backend names, for tests and `/status`.
    pub fn routable_names(&self, pool: PoolId) -> Vec<String> {
        self.routable(pool).iter().map(|m| m.backend.name.clone()).collect()
    }
}
