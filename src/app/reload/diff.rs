//! How a reload compares the old and new configs where names alone do not tell.

use crate::config::{BackendConfig, Config, ListenerConfig};

/// Whether a listener's sockets can be kept: the same address (new socket options
/// are set on them).
pub(super) fn same_socket(a: &ListenerConfig, b: &ListenerConfig) -> bool {
    a.listen == b.listen
}

/// Whether two configs of a backend reach and check the same server the same way,
/// timings aside: its state then still holds.
pub(super) fn same_target(a: &BackendConfig, b: &BackendConfig) -> bool {
    (a.address, &a.tls, a.source, a.send_proxy, &a.check.probe)
        == (b.address, &b.tls, b.source, b.send_proxy, &b.check.probe)
}

/// What a reload cannot change.
pub(super) fn not_applied(old: &Config, new: &Config) -> Vec<String> {
    let mut kept = Vec::new();
    let address = |c: &Config| c.admin.as_ref().map(|a| a.listen);
    if address(old) != address(new) {
        kept.push("admin.listen (takes a restart or a hot upgrade)".to_string());
    }
    if old.workers != new.workers {
        kept.push("workers (takes a restart or a hot upgrade)".to_string());
    }
    if old.upgrade_socket != new.upgrade_socket {
        kept.push(
            "runtime.upgrade_socket (takes a restart: hot upgrades use the path this process listens on)".to_string(),
        );
    }
    if old.cluster != new.cluster {
        kept.push("[cluster] (takes a restart or a hot upgrade)".to_string());
    }
    kept
}
