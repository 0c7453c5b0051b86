//! switchyard's failover-drill harness: drive real client load through a proxy while
//! injecting faults into a real cluster, and report what the clients saw.
//!
//! # Layout
//!
//! - [`scenario`]: a drill as a file (`loadtest/scenarios/*.toml`): workload + timed faults.
//! - [`peers`]: the real peers per workload kind — a MariaDB GTID cluster, a scripted
//!   MongoDB replica set, SecantusDB, or two in-process TCP/HTTP [`servers`].
//! - [`proxy_config`]: switchyard's and HAProxy's configs, built from the peers.
//! - [`ha`] (pure): the HA pair's figures per fault (takeover, errors, wrong-node
//!   acks, missing acks, VIP moves).
//! - [`pair`]: an HA pair of switchyard processes behind keepalived's VIP, in network
//!   namespaces, on the shipped `config/ha-pair/` files (target `switchyard-pair`).
//! - [`target`]: what the clients talk to — switchyard (in-process) or HAProxy (a
//!   process, MySQL drills), in front of the peers.
//! - [`workload`]: open-loop clients — MySQL (`mysql_async`), MongoDB (the official
//!   driver), raw TCP echo, HTTP — on long-lived and short-lived connections; every
//!   write carries a unique id and records who acknowledged it where the protocol says.
//! - [`fault`]: the fault steps (kill -9 + promotion, switchover, SIGSTOP, scripted
//!   election, SecantusDB stepdown, refused connections) and the primary-of-record
//!   timeline they produce.
//! - [`measure`] (pure): per-second buckets, outage, longest gap, errors by kind,
//!   writes acknowledged by a non-primary, acknowledged writes missing afterwards.
//! - [`report`]: JSON and a self-contained HTML page (inline SVG).
//! - [`drill`]: runs one scenario against one target, end to end.
//! - [`soak`]: one switchyard process under mixed load (MySQL, MongoDB, TCP, TLS)
//!   with a fault every window, its descriptors and memory sampled all along.
//! - [`reload_bench`]: the time a config reload with 1,000 backends takes to apply,
//!   and the sessions it costs (none).
//! - [`upgrade_bench`]: hot binary upgrades under wrk (`Connection: close`) and
//!   sysbench, counting the clients' errors.
//! - [`sysbench`]: `sysbench oltp_read_write` direct vs switchyard vs HAProxy (the
//!   last part of `loadtest/compare.sh`).

pub mod admin_flood;
pub mod admin_http;
pub mod corpus;
pub mod detect;
pub mod dns_drill;
pub mod drill;
pub mod fault;
pub mod fleet_bench;
pub mod galera_drill;
pub mod ha;
pub mod measure;
pub mod pair;
pub mod peers;
pub mod proxy_config;
pub mod redis_drill;
pub mod reload_bench;
pub mod report;
pub mod scenario;
pub mod servers;
pub mod soak;
pub mod switchover_drill;
pub mod sysbench;
pub mod target;
pub mod upgrade_bench;
pub mod workload;
