//! switchyard's failover-drill harness: drive real client load through a proxy while
//! injecting faults into a real cluster, and report what the clients saw.
//!
//! # Layout
//!
//! - [`scenario`]: a drill as a file (`loadtest/scenarios/*.toml`): workload + timed faults.
//! - [`target`]: what the clients talk to — switchyard (in-process) or HAProxy (a
//!   process), in front of a `switchyard_lab` MariaDB cluster.
//! - [`workload`]: open-loop MySQL clients (`mysql_async`), long-lived and short-lived
//!   connections; every write carries a unique id and records the `@@server_id` that
//!   acknowledged it.
//! - [`fault`]: the fault steps (kill -9 + promotion, switchover, SIGSTOP) and the
//!   primary-of-record timeline they produce.
//! - [`measure`] (pure): per-second buckets, outage, longest gap, errors by kind,
//!   writes acknowledged by a non-primary, acknowledged writes missing afterwards.
//! - [`report`]: JSON and a self-contained HTML page (inline SVG).
//! - [`drill`]: runs one scenario against one target, end to end.

pub mod drill;
pub mod fault;
pub mod measure;
pub mod report;
pub mod scenario;
pub mod target;
pub mod workload;
