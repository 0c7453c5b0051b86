//! MySQL/MariaDB probe: log in as a monitor user with the probe's own client
//! ([`session`]: bounded decoders, the password never sent to a key the server
//! offers), keep that connection between checks (one login per backend, not one per
//! check), and read everything in one round trip:
//!
//! ```sql
//! SELECT @@read_only, @@server_id, @@gtid_binlog_pos; SHOW SLAVE STATUS
//! ```
//!
//! Every phase is under the check's deadline: a SIGSTOPped server completes the TCP
//! handshake in the kernel and then never sends its greeting. Any failure drops the
//! connection so the next check logs in afresh. The client only ever connects to the
//! configured address (no switch to a local unix socket).
//!
//! Classification ([`classify`], pure): `read_only=0` → `Primary`, else `Replica`,
//! with the replica's thread states and `Seconds_Behind_Master` (NULL kept as `None`).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use self::session::{Login, Session};
use crate::config::MysqlProbeConfig;
use crate::health::probe::Endpoint;
use crate::health::{CheckError, ReplicaState, Report, Role};
use crate::tls::ClientTls;

pub mod galera;
pub(crate) mod session;

const QUERY: &str = "SELECT @@read_only, @@server_id, @@gtid_binlog_pos; SHOW SLAVE STATUS";

/// The MySQL probe: a monitor login kept between checks, and one query round trip per
/// check.
pub struct MysqlProbe {
    config: MysqlProbeConfig,
    /// TLS inside the MySQL protocol, when the backend has it.
    tls: Option<ClientTls>,
    session: Option<Session>,
    /// A `kind = "galera"` check: the wsrep query and classification ([`galera`]).
    galera: bool,
}

impl std::fmt::Debug for MysqlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlProbe")
            .field("user", &self.config.user)
            .field("connected", &self.session.is_some())
            .field("galera", &self.galera)
            .finish()
    }
}

impl MysqlProbe {
    /// Drops the kept connection; the next check connects (and logs in) afresh.
    pub fn forget_connection(&mut self) {
        self.session = None;
    }

    /// Builds the probe from its config and the backend's TLS (used inside the MySQL
    /// protocol); it logs in at the first check.
    pub fn new(config: &MysqlProbeConfig, tls: Option<ClientTls>) -> Self {
        MysqlProbe {
            config: config.clone(),
            tls,
            session: None,
            galera: false,
        }
    }

    /// The same probe reading a Galera node's wsrep state ([`galera`]).
    pub fn galera(config: &MysqlProbeConfig, tls: Option<ClientTls>) -> Self {
        MysqlProbe {
            galera: true,
            ..MysqlProbe::new(config, tls)
        }
    }

    /// Checks `addr` once under `deadline`; a failure drops the kept connection, so the
    /// next check logs in afresh.
    pub async fn check(&mut self, to: Endpoint, deadline: Instant) -> Result<Report, CheckError> {
        let result = self.check_inner(to, deadline).await;
        super::drop_on_error(&mut self.session, result)
    }

    async fn check_inner(&mut self, to: Endpoint, deadline: Instant) -> Result<Report, CheckError> {
        let session = match &mut self.session {
            Some(session) => session,
            None => {
                let login = Login {
                    user: &self.config.user,
                    password: self.config.password.as_ref().map_or("", |p| p.expose()),
                    pinned: self.config.server_public_key.as_ref(),
                    tls: self.tls.as_ref(),
                };
                self.session.insert(Session::login(to, login, deadline).await?)
            }
        };
        let query = if self.galera { galera::QUERY } else { QUERY };
        let mut results = session.query(query, deadline).await?.into_iter();
        let variables = results
            .next()
            .and_then(|rows| rows.into_iter().next())
            .unwrap_or_default();
        if self.galera {
            return galera::classify(&variables, &results.next().unwrap_or_default());
        }
        let slave = results.next().and_then(|rows| rows.into_iter().next());
        classify(&variables, slave.as_ref())
    }
}

/// Column name → value as text (`None` for SQL NULL).
pub type Columns = HashMap<String, Option<String>>;

/// The role and replication state from the variables row and the optional
/// `SHOW SLAVE STATUS` row. Pure. A server whose `@@read_only` cannot be read is an
/// error, never a guess: guessing "writable" could make two writers.
pub fn classify(variables: &Columns, slave: Option<&Columns>) -> Result<Report, CheckError> {
    let get = |row: &Columns, name: &str| row.get(name).cloned().flatten();
    let read_only = match get(variables, "@@read_only").as_deref() {
        Some("0") => false,
        Some("1") => true,
        Some(v) if v.eq_ignore_ascii_case("off") => false,
        Some(v) if v.eq_ignore_ascii_case("on") => true,
        other => {
            let value = crate::logs::peer(&format!("{other:?}"));
            return Err(CheckError::Response(format!("@@read_only unreadable: {value}")));
        }
    };
    let replica = slave.map(|row| {
        let io = get(row, "Slave_IO_Running").unwrap_or_default();
        let host = get(row, "Master_Host");
        let port = get(row, "Master_Port");
        ReplicaState {
            io_running: io.eq_ignore_ascii_case("yes"),
            io_connecting: io.eq_ignore_ascii_case("connecting"),
            sql_running: get(row, "Slave_SQL_Running").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            lag: get(row, "Seconds_Behind_Master")
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs),
            source: host.map(|h| format!("{h}:{}", port.unwrap_or_default())),
        }
    });
    Ok(Report {
        role: if read_only { Role::Replica } else { Role::Primary },
        replica,
        server_id: get(variables, "@@server_id").and_then(|s| s.parse().ok()),
        position: get(variables, "@@gtid_binlog_pos"),
        ..Report::default()
    })
}

/// A row from `(column, value)` pairs, none NULL (for tests).
#[cfg(test)]
pub(crate) fn row(pairs: &[(&str, &str)]) -> Columns {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(pairs: &[(&str, Option<&str>)]) -> Columns {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    fn variables(read_only: &str) -> Columns {
        columns(&[
            ("@@read_only", Some(read_only)),
            ("@@server_id", Some("2")),
            ("@@gtid_binlog_pos", Some("0-1-42")),
        ])
    }

    fn slave(io: &str, sql: &str, lag: Option<&str>) -> Columns {
        columns(&[
            ("Slave_IO_Running", Some(io)),
            ("Slave_SQL_Running", Some(sql)),
            ("Seconds_Behind_Master", lag),
            ("Master_Host", Some("127.0.0.1")),
            ("Master_Port", Some("3401")),
        ])
    }

    #[test]
    fn writable_server_is_primary() {
        let report = classify(&variables("0"), None).unwrap();
        assert_eq!(report.role, Role::Primary);
        assert_eq!(report.server_id, Some(2));
        assert_eq!(report.position.as_deref(), Some("0-1-42"));
        assert_eq!(report.replica, None);
    }

    #[test]
    fn read_only_replica_with_running_threads() {
        let report = classify(&variables("1"), Some(&slave("Yes", "Yes", Some("3")))).unwrap();
        assert_eq!(report.role, Role::Replica);
        let replica = report.replica.unwrap();
        assert!(replica.io_running && replica.sql_running);
        assert_eq!(replica.lag, Some(Duration::from_secs(3)));
        assert_eq!(replica.source.as_deref(), Some("127.0.0.1:3401"));
    }

    #[test]
    fn null_lag_and_stopped_threads_are_kept_as_such() {
        let replica = classify(&variables("1"), Some(&slave("Yes", "No", None)))
            .unwrap()
            .replica
            .unwrap();
        assert!(!replica.sql_running);
        assert_eq!(replica.lag, None);
        let replica = classify(&variables("1"), Some(&slave("Connecting", "Yes", None)))
            .unwrap()
            .replica
            .unwrap();
        assert!(!replica.io_running && replica.io_connecting);
    }

    #[test]
    fn read_only_as_on_off_text() {
        assert_eq!(classify(&variables("ON"), None).unwrap().role, Role::Replica);
        assert_eq!(classify(&variables("OFF"), None).unwrap().role, Role::Primary);
    }

    #[test]
    fn unreadable_read_only_is_an_error_not_a_writer() {
        assert!(classify(&Columns::new(), None).is_err());
        assert!(classify(&columns(&[("@@read_only", None)]), None).is_err());
        assert!(classify(&columns(&[("@@read_only", Some("maybe"))]), None).is_err());
    }
}
