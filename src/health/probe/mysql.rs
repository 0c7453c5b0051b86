//! MySQL/MariaDB probe: log in as a monitor user with `mysql_async`, keep that
//! connection between checks (one login per backend, not one per check), and read
//! everything in one round trip:
//!
//! ```sql
//! SELECT @@read_only, @@server_id, @@gtid_binlog_pos; SHOW SLAVE STATUS
//! ```
//!
//! Every phase is under the check's deadline: a SIGSTOPped server completes the TCP
//! handshake in the kernel and then never sends its greeting, and mysql_async has no
//! connect timeout of its own. Any failure drops the connection so the next check
//! logs in afresh. `prefer_socket(false)`: otherwise mysql_async silently reconnects
//! over the server's unix socket when it exists on this host — it would check some
//! other server than the address configured.
//!
//! Classification ([`classify`], pure): `read_only=0` → `Primary`, else `Replica`,
//! with the replica's thread states and `Seconds_Behind_Master` (NULL kept as `None`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, OptsBuilder, Row, SslOpts, Value};
use tokio::time::{timeout_at, Instant};

use crate::config::MysqlProbeConfig;
use crate::health::{CheckError, Phase, ReplicaState, Report, Role};
use crate::tls::{BackendTls, Verify};

const QUERY: &str = "SELECT @@read_only, @@server_id, @@gtid_binlog_pos; SHOW SLAVE STATUS";

/// The MySQL probe: a monitor login kept between checks, and one query round trip per
/// check.
pub struct MysqlProbe {
    config: MysqlProbeConfig,
    /// TLS inside the MySQL protocol, when the backend has it.
    ssl: Option<SslOpts>,
    conn: Option<Conn>,
}

impl std::fmt::Debug for MysqlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlProbe")
            .field("user", &self.config.user)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl MysqlProbe {
    /// Drops the kept connection; the next check connects (and logs in) afresh.
    pub fn forget_connection(&mut self) {
        self.conn = None;
    }

    /// Builds the probe from its config and the backend's TLS settings (used inside the
    /// MySQL protocol); it logs in at the first check.
    pub fn new(config: &MysqlProbeConfig, tls: Option<&BackendTls>) -> Self {
        MysqlProbe {
            config: config.clone(),
            ssl: tls.map(ssl_opts),
            conn: None,
        }
    }

    /// Checks `addr` once under `deadline`; a failure drops the kept connection, so the
    /// next check logs in afresh.
    pub async fn check(&mut self, addr: SocketAddr, deadline: Instant) -> Result<Report, CheckError> {
        let result = self.check_inner(addr, deadline).await;
        super::drop_on_error(&mut self.conn, result)
    }

    async fn check_inner(&mut self, addr: SocketAddr, deadline: Instant) -> Result<Report, CheckError> {
        if self.conn.is_none() {
            let opts = OptsBuilder::default()
                .ip_or_hostname(addr.ip().to_string())
                .tcp_port(addr.port())
                .user(Some(self.config.user.clone()))
                .pass(self.config.password.as_ref().map(|p| p.expose().to_string()))
                .prefer_socket(false)
                .stmt_cache_size(0)
                .tcp_nodelay(true)
                .ssl_opts(self.ssl.clone());
            let conn = timeout_at(deadline, Conn::new(opts))
                .await
                .map_err(|_| CheckError::Timeout(Phase::LoggingIn))?
                .map_err(|e| login_error(&e))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        timeout_at(deadline, round_trip(conn))
            .await
            .map_err(|_| CheckError::Timeout(Phase::Reading))?
            .map_err(query_error)?
    }
}

/// The backend's TLS settings in mysql_async's terms: the same CA, server name and
/// client certificate as the data path (mysql_async builds its own rustls config,
/// with the same single provider).
fn ssl_opts(tls: &BackendTls) -> SslOpts {
    let opts = SslOpts::default().with_danger_tls_hostname_override(Some(tls.server_name()));
    let opts = match tls.verify() {
        Verify::Ca(path) => opts
            .with_root_certs(vec![path.clone().into()])
            .with_disable_built_in_roots(true),
        Verify::Insecure => opts.with_danger_accept_invalid_certs(true),
    };
    match tls.identity() {
        Some(files) => opts.with_client_identity(Some(ClientIdentity::new(
            files.cert.clone().into(),
            files.key.clone().into(),
        ))),
        None => opts,
    }
}

async fn round_trip(conn: &mut Conn) -> Result<Result<Report, CheckError>, mysql_async::Error> {
    let mut result = conn.query_iter(QUERY).await?;
    let variables: Vec<Row> = result.collect().await?;
    let slave: Vec<Row> = result.collect().await?;
    drop(result);
    let row = variables.into_iter().next().map(row_map).unwrap_or_default();
    let slave = slave.into_iter().next().map(row_map);
    Ok(classify(&row, slave.as_ref()))
}

/// Sorts a failed round trip: the server's own refusals (a missing privilege, an
/// unknown variable) are L7 responses worth reading; the rest lost the connection.
fn query_error(error: mysql_async::Error) -> CheckError {
    match error {
        mysql_async::Error::Server(e) => CheckError::Response(format!("query refused: {} ({})", e.message, e.code)),
        other => CheckError::Protocol(format!("query failed: {other}")),
    }
}

/// Column name → value as text (`None` for SQL NULL).
pub type Columns = HashMap<String, Option<String>>;

fn row_map(row: Row) -> Columns {
    let names: Vec<String> = row.columns_ref().iter().map(|c| c.name_str().into_owned()).collect();
    names
        .into_iter()
        .zip(row.unwrap())
        .map(|(name, value)| (name, text(value)))
        .collect()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

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
        other => return Err(CheckError::Response(format!("@@read_only unreadable: {other:?}"))),
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
        mongo: None,
    })
}

/// Sorts a login failure into its layer.
fn login_error(error: &mysql_async::Error) -> CheckError {
    use mysql_async::{Error, IoError};
    match error {
        // tokio-rustls reports a failed handshake as an I/O error around rustls' own.
        Error::Io(IoError::Io(e)) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
            CheckError::Tls(e.to_string())
        }
        Error::Io(IoError::Io(e)) => CheckError::Connect(e.to_string()),
        Error::Io(IoError::Tls(e)) => CheckError::Tls(e.to_string()),
        // 1045 access denied, 1044 no database access, 1129 host blocked, 1130 host not allowed
        Error::Server(e) if matches!(e.code, 1044 | 1045 | 1129 | 1130 | 1698) => {
            CheckError::Auth(format!("{} ({})", e.message, e.code))
        }
        other => CheckError::Protocol(other.to_string()),
    }
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
