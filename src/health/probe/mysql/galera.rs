//! The Galera (wsrep) side of the MySQL probe, for `kind = "galera"` checks: the same
//! kept monitor login, and one round trip that reads the node's own variables and its
//! wsrep status together:
//!
//! ```sql
//! SELECT @@read_only, @@server_id, @@wsrep_desync, @@wsrep_reject_queries;
//! SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', ...)
//! ```
//!
//! A node that answers passes the check, whatever its wsrep state: the state travels
//! in the report as [`GaleraState`], and the pool decides at once on each report
//! ([`GaleraState::unusable`]), without waiting for `fall` failures. `wsrep_local_state`
//! alone does not tell health: 2 is a donor or a node an operator desynced (it still
//! answers reads and writes), and a node in a non-Primary component says 0 while its
//! TCP port and login keep working.

use serde::{Deserialize, Serialize};

use super::Columns;
#[cfg(test)]
use crate::health::Role;
use crate::health::{CheckError, Report};

/// The probe's query: variables first, then the status rows.
pub(super) const QUERY: &str = "SELECT @@read_only, @@server_id, @@wsrep_desync, @@wsrep_reject_queries; \
     SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', 'wsrep_local_state_comment', \
     'wsrep_cluster_status', 'wsrep_ready', 'wsrep_connected', 'wsrep_cluster_size', \
     'wsrep_cluster_state_uuid', 'wsrep_local_state_uuid', 'wsrep_cluster_conf_id')";

/// `wsrep_local_state` of a node in sync with its component.
pub const SYNCED: u32 = 4;
/// `wsrep_local_state` of a donor, or of a node desynced by `wsrep_desync=ON`.
pub const DONOR_DESYNCED: u32 = 2;

/// What a Galera node says of itself and its component.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GaleraState {
    /// `wsrep_local_state`: 4 Synced, 2 Donor/Desynced, 1 Joining, 3 Joined, 0 in a
    /// non-Primary component; `None` when unreadable.
    pub local_state: Option<u32>,
    /// `wsrep_local_state_comment`, e.g. `Synced`.
    pub state_comment: String,
    /// `wsrep_cluster_status`: `Primary`, `non-Primary` or `Disconnected`.
    pub cluster_status: String,
    /// `wsrep_ready`: the node accepts queries.
    pub ready: bool,
    /// `wsrep_connected`: the node is connected to a cluster.
    pub connected: bool,
    /// `@@wsrep_desync`: an operator took it out of flow control.
    pub desync: bool,
    /// `@@wsrep_reject_queries`: `NONE`, `ALL` or `ALL_KILL`.
    pub reject_queries: String,
    /// `wsrep_cluster_size`: the nodes in its component.
    pub cluster_size: Option<u32>,
    /// `wsrep_cluster_state_uuid`: the cluster's history.
    pub cluster_uuid: String,
    /// `wsrep_local_state_uuid`: the history this node holds.
    pub local_uuid: String,
    /// `wsrep_cluster_conf_id`: how many views its component went through.
    pub conf_id: Option<u64>,
}

impl GaleraState {
    /// Why the node must take no traffic, or `None` when it may: in a Primary
    /// component, connected, ready, not rejecting queries, and `Synced` (or, when the
    /// pool says `donor_ok`, `Donor/Desynced`).
    pub fn unusable(&self, donor_ok: bool) -> Option<String> {
        if self.cluster_status != "Primary" {
            return Some(format!(
                "in a non-Primary component (wsrep_cluster_status={})",
                self.cluster_status
            ));
        }
        if !self.connected {
            return Some("not connected to its cluster (wsrep_connected=OFF)".into());
        }
        if !self.ready {
            return Some("not ready for queries (wsrep_ready=OFF)".into());
        }
        if !self.reject_queries.eq_ignore_ascii_case("NONE") {
            return Some(format!(
                "rejecting queries (wsrep_reject_queries={})",
                self.reject_queries
            ));
        }
        match self.local_state {
            Some(SYNCED) => None,
            Some(DONOR_DESYNCED) if donor_ok => None,
            Some(DONOR_DESYNCED) => Some(format!(
                "{} (wsrep_local_state=2; the pool does not say donor_ok)",
                self.state_comment
            )),
            state => Some(format!(
                "not synced (wsrep_local_state={}, {})",
                state.map_or_else(|| "?".into(), |s| s.to_string()),
                self.state_comment
            )),
        }
    }
}

/// The report from the variables row and the `SHOW GLOBAL STATUS` rows
/// (`Variable_name`, `Value`). Pure. `read_only=0` → `Primary` (may take writes),
/// else `Replica`; an unreadable `@@read_only` is an error, as for MySQL, and so is a
/// server without wsrep status (not a Galera node: judging it by wsrep would guess).
pub fn classify(variables: &Columns, status: &[Columns]) -> Result<Report, CheckError> {
    let mut report = super::classify(variables, None)?;
    let var = |name: &str| variables.get(name).cloned().flatten().unwrap_or_default();
    let stat = |name: &str| {
        status
            .iter()
            .find(|row| row.get("Variable_name").cloned().flatten().as_deref() == Some(name))
            .and_then(|row| row.get("Value").cloned().flatten())
    };
    let Some(cluster_status) = stat("wsrep_cluster_status") else {
        return Err(CheckError::Response(
            "no wsrep status: not a Galera node (use `kind = \"mysql\"`)".into(),
        ));
    };
    let on = |v: Option<String>| v.is_some_and(|v| v.eq_ignore_ascii_case("ON") || v == "1");
    report.galera = Some(GaleraState {
        local_state: stat("wsrep_local_state").and_then(|s| s.parse().ok()),
        state_comment: crate::logs::peer(&stat("wsrep_local_state_comment").unwrap_or_default()),
        cluster_status: crate::logs::peer(&cluster_status),
        ready: on(stat("wsrep_ready")),
        connected: on(stat("wsrep_connected")),
        desync: on(Some(var("@@wsrep_desync"))),
        reject_queries: crate::logs::peer(&var("@@wsrep_reject_queries")),
        cluster_size: stat("wsrep_cluster_size").and_then(|s| s.parse().ok()),
        cluster_uuid: crate::logs::peer(&stat("wsrep_cluster_state_uuid").unwrap_or_default()),
        local_uuid: crate::logs::peer(&stat("wsrep_local_state_uuid").unwrap_or_default()),
        conf_id: stat("wsrep_cluster_conf_id").and_then(|s| s.parse().ok()),
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::row;
    use super::*;

    fn variables(read_only: &str, reject: &str) -> Columns {
        row(&[
            ("@@read_only", read_only),
            ("@@server_id", "2"),
            ("@@wsrep_desync", "0"),
            ("@@wsrep_reject_queries", reject),
        ])
    }

    fn status(state: &str, comment: &str, cluster: &str, ready: &str) -> Vec<Columns> {
        [
            ("wsrep_local_state", state),
            ("wsrep_local_state_comment", comment),
            ("wsrep_cluster_status", cluster),
            ("wsrep_ready", ready),
            ("wsrep_connected", "ON"),
            ("wsrep_cluster_size", "3"),
            ("wsrep_cluster_state_uuid", "u-1"),
            ("wsrep_local_state_uuid", "u-1"),
            ("wsrep_cluster_conf_id", "7"),
        ]
        .iter()
        .map(|(name, value)| row(&[("Variable_name", name), ("Value", value)]))
        .collect()
    }

    fn galera(report: &Report) -> &GaleraState {
        report.galera.as_ref().unwrap()
    }

    #[test]
    fn a_synced_writable_node_is_usable_and_primary() {
        let report = classify(&variables("0", "NONE"), &status("4", "Synced", "Primary", "ON")).unwrap();
        assert_eq!(report.role, Role::Primary);
        assert_eq!(report.server_id, Some(2));
        let g = galera(&report);
        assert_eq!((g.local_state, g.cluster_size, g.conf_id), (Some(4), Some(3), Some(7)));
        assert!(g.ready && g.connected && !g.desync);
        assert_eq!(g.unusable(false), None);
    }

    #[test]
    fn a_donor_is_out_unless_the_pool_allows_it() {
        let report = classify(&variables("0", "NONE"), &status("2", "Donor/Desynced", "Primary", "ON")).unwrap();
        let why = galera(&report).unusable(false).unwrap();
        assert!(why.contains("Donor/Desynced") && why.contains("donor_ok"), "{why}");
        assert_eq!(galera(&report).unusable(true), None);
    }

    #[test]
    fn non_primary_joining_not_ready_and_rejecting_nodes_are_out_whatever_donor_ok_says() {
        let cases = [
            ("NONE", "0", "Initialized", "non-Primary", "OFF", "non-Primary"),
            (
                "NONE",
                "1",
                "Joining: receiving State Transfer",
                "Primary",
                "ON",
                "not synced",
            ),
            ("NONE", "4", "Synced", "Primary", "OFF", "wsrep_ready=OFF"),
            ("ALL", "4", "Synced", "Primary", "ON", "wsrep_reject_queries=ALL"),
        ];
        for (reject, state, comment, cluster, ready, expected) in cases {
            let report = classify(&variables("0", reject), &status(state, comment, cluster, ready)).unwrap();
            let why = galera(&report).unusable(true).unwrap();
            assert!(why.contains(expected), "{why} should say {expected}");
        }
    }

    #[test]
    fn read_only_nodes_are_replicas_and_plain_mysql_is_refused() {
        let report = classify(&variables("1", "NONE"), &status("4", "Synced", "Primary", "ON")).unwrap();
        assert_eq!(report.role, Role::Replica);
        let err = classify(&variables("0", "NONE"), &[]).unwrap_err();
        assert!(err.to_string().contains("not a Galera node"), "{err}");
        assert!(classify(&Columns::new(), &status("4", "Synced", "Primary", "ON")).is_err());
    }
}
