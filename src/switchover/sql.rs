//! The statements of a switchover and the pure reading of their answers.
//!
//! Values that go into statements are an address (an IP and a port: no quoting
//! needed), a GTID position the server itself reported (checked to be digits, `-` and
//! `,` only) and the replication account's name and password (quoted as SQL string
//! literals, backslashes and quotes escaped).

use std::net::SocketAddr;
use std::time::Duration;

use crate::health::probe::mysql::Columns;

/// Makes a server refuse writes from ordinary accounts.
pub const DEMOTE: &str = "SET GLOBAL read_only=1";
/// Undoes [`DEMOTE`].
pub const UNDEMOTE: &str = "SET GLOBAL read_only=0";
/// Where the old primary's history ends.
pub const POSITION: &str = "SELECT @@gtid_binlog_pos AS pos";
/// Stops the target replicating and makes it writable.
pub const PROMOTE: &str = "STOP SLAVE; SET GLOBAL read_only=0";
/// Undoes [`PROMOTE`].
pub const UNPROMOTE: &str = "SET GLOBAL read_only=1; START SLAVE";
/// What the target must be to lead: replicating, and writing what it applies to its
/// own binlog (so the others can follow it by GTID).
pub const TARGET_STATE: &str =
    "SELECT @@log_bin AS log_bin, @@log_slave_updates AS log_slave_updates, @@gtid_slave_pos AS slave_pos; SHOW SLAVE STATUS";
/// Forgets a replication source (the rejoined old primary's, on undo; the new
/// primary's old one, at the end).
pub const FORGET_SOURCE: &str = "STOP SLAVE; RESET SLAVE ALL";

/// The replication account a `CHANGE MASTER TO` names.
#[derive(Clone, Copy)]
pub struct Replication<'a> {
    /// Its name.
    pub user: &'a str,
    /// Its password (empty for none).
    pub password: &'a str,
}

/// `s` as a SQL string literal.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A GTID position as the server reported it, if it has the shape of one
/// (`domain-server-seq`, comma-separated; empty for none).
pub fn gtid(position: &str) -> Option<&str> {
    let position = position.trim();
    position
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == ',')
        .then_some(position)
}

/// Waits (server side) until `position` is applied, at most `within`.
pub fn wait_for(position: &str, within: Duration) -> String {
    format!(
        "SELECT MASTER_GTID_WAIT('{position}', {}) AS waited",
        within.as_secs_f64()
    )
}

/// Points a replica at `source` and starts it; `from_own_binlog` first sets its
/// replication position to its own binlog's end (an old primary: what it wrote
/// itself is already there).
pub fn replicate_from(source: SocketAddr, account: Replication<'_>, from_own_binlog: bool) -> String {
    let reset = if from_own_binlog {
        "SET GLOBAL gtid_slave_pos=@@gtid_binlog_pos; "
    } else {
        ""
    };
    format!(
        "STOP SLAVE; {reset}CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER={}, MASTER_PASSWORD={}, \
         MASTER_USE_GTID=slave_pos; START SLAVE",
        source.ip(),
        source.port(),
        quoted(account.user),
        quoted(account.password),
    )
}

/// Whether the target can lead: it replicates from `primary` with both threads
/// running, and logs what it applies. The reason when not.
pub fn fit_to_lead(variables: &Columns, slave: Option<&Columns>, primary: SocketAddr) -> Result<(), String> {
    let get = |row: &Columns, name: &str| row.get(name).cloned().flatten().unwrap_or_default();
    for flag in ["log_bin", "log_slave_updates"] {
        if !matches!(get(variables, flag).as_str(), "1" | "ON") {
            return Err(format!("it has {flag} off: the other replicas could not follow it"));
        }
    }
    let Some(slave) = slave else {
        return Err("it replicates from nobody".into());
    };
    let source = format!("{}:{}", get(slave, "Master_Host"), get(slave, "Master_Port"));
    let same_host = get(slave, "Master_Host") == primary.ip().to_string()
        || (get(slave, "Master_Host") == "localhost" && primary.ip().is_loopback());
    if !same_host || get(slave, "Master_Port") != primary.port().to_string() {
        return Err(format!(
            "it replicates from {source}, not from the primary at {primary}"
        ));
    }
    for thread in ["Slave_IO_Running", "Slave_SQL_Running"] {
        if get(slave, thread) != "Yes" {
            let error = get(slave, "Last_Error");
            return Err(format!("its {thread} is {:?} ({error})", get(slave, thread)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::health::probe::mysql::row;

    #[test]
    fn statements_quote_what_they_must() {
        let account = Replication {
            user: "repl",
            password: "it's\\x",
        };
        let sql = replicate_from("127.0.0.1:3307".parse().unwrap(), account, false);
        assert_eq!(
            sql,
            "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=3307, MASTER_USER='repl', \
             MASTER_PASSWORD='it''s\\\\x', MASTER_USE_GTID=slave_pos; START SLAVE"
        );
        let rejoin = replicate_from("[::1]:3307".parse().unwrap(), account, true);
        assert!(rejoin.starts_with("STOP SLAVE; SET GLOBAL gtid_slave_pos=@@gtid_binlog_pos; CHANGE MASTER TO MASTER_HOST='::1', MASTER_PORT=3307"));
        assert_eq!(
            wait_for("0-1-42", Duration::from_millis(2500)),
            "SELECT MASTER_GTID_WAIT('0-1-42', 2.5) AS waited"
        );
    }

    #[test]
    fn only_a_gtid_shaped_position_is_used() {
        assert_eq!(gtid(" 0-1-42,1-2-7 "), Some("0-1-42,1-2-7"));
        assert_eq!(gtid(""), Some(""));
        assert_eq!(gtid("0-1-42'); DROP TABLE t; --"), None);
    }

    #[test]
    fn the_target_must_follow_the_primary_and_log_what_it_applies() {
        let primary: SocketAddr = "127.0.0.1:3306".parse().unwrap();
        let on = row(&[("log_bin", "1"), ("log_slave_updates", "1")]);
        let following = row(&[
            ("Master_Host", "127.0.0.1"),
            ("Master_Port", "3306"),
            ("Slave_IO_Running", "Yes"),
            ("Slave_SQL_Running", "Yes"),
        ]);
        assert_eq!(fit_to_lead(&on, Some(&following), primary), Ok(()));
        let off = row(&[("log_bin", "1"), ("log_slave_updates", "0")]);
        assert!(fit_to_lead(&off, Some(&following), primary)
            .unwrap_err()
            .contains("log_slave_updates"));
        assert!(fit_to_lead(&on, None, primary).unwrap_err().contains("nobody"));
        let elsewhere = "127.0.0.1:3399".parse().unwrap();
        assert!(fit_to_lead(&on, Some(&following), elsewhere)
            .unwrap_err()
            .contains("not from the primary"));
        let mut stopped = following.clone();
        stopped.insert("Slave_SQL_Running".into(), Some("No".into()));
        assert!(fit_to_lead(&on, Some(&stopped), primary)
            .unwrap_err()
            .contains("Slave_SQL_Running"));
    }
}
