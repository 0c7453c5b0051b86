//! The fleet: proxies that share one primary verdict per pool, and their checks,
//! through etcd v3 (`[cluster]`). Without the section none of this runs.
//!
//! ```text
//!             etcd: <prefix>/pools/<pool>/primary            (verdict; mod_revision = epoch)
//!                   <prefix>/backends/<b>/checker            (a proxy's name, on its lease)
//!                   <prefix>/backends/<b>/observation        (what that proxy sees, on its lease)
//!   ┌──────────── Agent (one task) ─────────────┐
//!   │ lease + keep-alive, one watch on <prefix>/ │── News (verdicts, store up/down) ──▶ Router
//!   │ CAS of proposals, checker campaigns,       │◀── Proposal (CAS on the epoch seen) ── Router
//!   │ publishing of observations                 │◀── Publish ── SharedProbe (checker role)
//!   └────────────────────────────────────────────┘── observations ──▶ SharedProbe (light role)
//! ```
//!
//! - **Verdicts** ([`verdict`], [`gate`]): the router decides every pool as before
//!   (single-writer rule, stale-primary rule), then [`gate::gate`] lets a primary pool
//!   route only to the backend the current epoch names, and only while that local
//!   decision agrees. When the local primary differs from the epoch's (or there is no
//!   epoch yet), the router proposes it; the agent writes it with a compare-and-swap on
//!   the epoch the router saw, so two proxies that see one failover write one epoch and
//!   the loser adopts the winner's, if its own checks agree.
//! - **Store lost** (a keep-alive unanswered for `lease_ttl / 3 + timeout`, a broken
//!   watch, a failed or timed-out request):
//!   the epoch's primary keeps its sessions and takes new ones while this proxy's own
//!   checks agree and no second writer shows; nobody new is adopted (sessions are held,
//!   the alarm is up), unless the pool says `on_store_lost = "local"`.
//! - **Shared checks** ([`shared`]): per backend, the proxy holding its checker key
//!   runs the full probe and publishes the outcome; the others read it and only connect
//!   (TCP) every `light_interval`. No observation from another proxy (none holds the key
//!   yet, its lease expired, or etcd is out of reach), or an own connect that succeeds
//!   where the publisher could not connect: this proxy checks fully itself.

mod agent;
pub mod gate;
pub mod shared;
mod store;
pub mod verdict;

pub use agent::{start, Fleet, News, Proposal};
