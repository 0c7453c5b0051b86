//! switchyard: a failover-aware TCP proxy and health checker.
//!
//! # Layout
//!
//! The request path reads **listener → pool → backend → endpoint**; the health path
//! reads **probe → observation → transition → routing table**.
//!
//! - [`config`]: the TOML tree (`config::raw`: spellings and single values checked by
//!   serde; `config::defaults`: every default), validated into typed values before
//!   any port is bound.
//! - [`app`]: wires one process together (bind, spawn checkers, router, listeners,
//!   admin), applies config reloads and owns the shutdown sequence; [`topology`]:
//!   what it serves now (config, backends, pools), swapped whole by a reload;
//!   [`upgrade`]: the hot binary upgrade's hand-over of sockets and health state.
//! - [`listener`]: the accept loop (connection cap, backoff on accept errors);
//!   [`spread`]: handing new connections from a busy data-plane thread to an idle one;
//!   [`worker`]: one data-plane thread (its runtime, accept loops, inbox).
//! - [`proxy`]: one client session: (TLS handshake), pick from the routing snapshot,
//!   hold while the pool is empty, connect with a timeout, (backend TLS, or the MySQL
//!   login with in-protocol TLS in [`proxy::mysql`]), copy both ways, obey fencing,
//!   and at its end one access line (`proxy::access`: cause, phase times, bytes).
//! - [`pipe`]: the copy loop, with a buffer only while bytes are in flight, and
//!   splice(2) for bulk on Linux.
//! - [`pool`] and [`backend`]: the runtime objects the routing table points at.
//! - [`routing`]: the immutable [`routing::RoutingTable`], its selection policies and
//!   the single-writer [`routing::Router`] that publishes it through `ArcSwap`.
//! - [`health`]: hysteresis (pure), the per-backend [`health::Checker`] and its probes
//!   (the MySQL probe logs in with its own client, `health::probe::mysql::session`,
//!   and reads a Galera node's wsrep state with `kind = "galera"`).
//! - [`protocol`]: pure wire decoders (`&[u8]` in, `Decode` out): HTTP response heads
//!   and MongoDB OP_MSG for the probes, RESP for the Redis probe and the Sentinel
//!   watcher, MySQL packets for the `mysql` listener mode
//!   and for the MySQL probe's own client (`protocol::mysql::monitor`).
//! - [`admin`]: the admin HTTP listener (`/health`, `/health/live|ready`, `/status`,
//!   `/metrics`), on a thread of its own with the limits in [`admin::serve`].
//! - [`metrics`]: every metric name, in one place; [`stats`]: the sharded
//!   hdrhistograms behind the percentiles on `/status`.
//! - [`tls`]: TLS termination (reloadable, SNI, mTLS) and origination, from PEM files
//!   checked at load time; [`stream`]: a session leg, plain or TLS.
//! - [`tcp`]: socket options shared by both legs of a session and the probes, the
//!   backend connect and the non-blocking accept.
//! - [`fleet`]: proxies sharing one primary verdict per pool and their checks through
//!   etcd (`[cluster]`); [`sentinel`]: Redis Sentinel's word on a primary pool's
//!   master (`[pools.NAME.sentinel]`), one more input of the router beside the
//!   observations; [`switchover`]: an orchestrated MySQL/MariaDB switchover;
//!   [`dns`]: backends named by host names that move, re-resolved by TTL and applied
//!   as a reload.
//! - [`timeline`]: the failover event record (fault → swap → first session → old
//!   sessions closed).
//! - [`duration`]: the human duration syntax of the config (`250ms`, `2s`, `5m`).
//! - [`local`]: the proxy's own shortages (EMFILE and the like), kept apart from
//!   backend faults, and the descriptor budget; [`logs`]: rate-limited warnings and
//!   escaped peer text; [`logging`]: `[log]` installed (text or JSON lines, a filter a
//!   reload changes, written by a thread of its own) and the access log's switches.
//! - [`fuzzing`]: the fuzz targets' bodies, replayed by `cargo test`.

#![deny(unsafe_code, rust_2018_idioms, missing_docs)]

pub mod admin;
pub mod app;
pub mod backend;
pub mod config;
pub mod dns;
pub mod duration;
pub mod fleet;
pub mod fuzzing;
pub mod health;
pub mod listener;
pub mod local;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod pipe;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod sentinel;
pub mod spread;
pub mod stats;
pub mod stream;
pub mod switchover;
pub mod tcp;
pub mod timeline;
pub mod tls;
pub mod topology;
pub mod upgrade;
pub mod worker;
