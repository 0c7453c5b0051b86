//! Routing: one immutable [`RoutingTable`] per generation, built by the single
//! [`Router`] task and published with one `ArcSwap::store`. The data path only loads
//! it (lock-free) and never holds the guard across an `.await`; tests and held
//! sessions await the next generation through a `watch`.

pub mod election;
pub mod membership;
mod router;
pub mod select;
mod table;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use router::{AdminAction, AdminCommand, FleetLink, Reconfigure, Router};
pub use table::RoutingTable;

/// The published table and its generation signal.
#[derive(Debug)]
pub struct Routing {
    table: ArcSwap<RoutingTable>,
    generation: watch::Sender<u64>,
}

impl Routing {
    /// Publishes `table` as the first table; the generation signal starts at its
    /// generation.
    pub fn new(table: RoutingTable) -> Self {
        let generation = watch::Sender::new(table.generation);
        Routing {
            table: ArcSwap::from_pointee(table),
            generation,
        }
    }

    /// The current table as an owned `Arc` (one atomic load and a reference-count
    /// increment on a counter every session shares: use [`Routing::pick`] on the
    /// data path).
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Runs `f` on the current table under an arc-swap guard: no reference count is
    /// touched, so concurrent sessions do not contend on one cache line. `f` must not
    /// await (the guard is released when it returns).
    pub fn pick<T>(&self, f: impl FnOnce(&RoutingTable) -> T) -> T {
        f(&self.table.load())
    }

    /// A receiver that sees every newly published generation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Publishes a new table. In a running proxy only the router calls this (it is
    /// public for benches and embedding).
    pub fn publish(&self, table: RoutingTable) {
        let generation = table.generation;
        self.table.store(Arc::new(table));
        self.generation.send_replace(generation);
    }

    /// Waits until `ready` holds for the current table (for tests and admin tools).
    pub async fn wait_for(&self, mut ready: impl FnMut(&RoutingTable) -> bool) {
        let mut generation = self.subscribe();
        loop {
            generation.borrow_and_update();
            if ready(&self.load()) {
                return;
            }
            if generation.changed().await.is_err() {
                return;
            }
        }
    }
}
