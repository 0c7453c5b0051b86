//! `[pools.NAME.switchover]` as written: what an orchestrated MySQL/MariaDB switchover
//! of a primary pool needs (see `crate::switchover`).

use serde::Deserialize;

use super::Timeout;

/// `[pools.NAME.switchover]`: the accounts and bounds of `POST /pools/NAME/switchover`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSwitchover {
    /// `switchover.user`: the account that demotes, promotes and repoints (required;
    /// MariaDB 10.11+ needs `READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, REPLICA MONITOR,
    /// RELOAD`; before 10.11, `SUPER, RELOAD, REPLICATION CLIENT`).
    pub user: Option<String>,
    /// `switchover.password`: its password, inline; at most one of `password`,
    /// `password_env`, `password_file`.
    pub password: Option<String>,
    /// `switchover.password_env`: the password from this environment variable.
    pub password_env: Option<String>,
    /// `switchover.password_file`: the password from this file (a trailing newline is dropped).
    pub password_file: Option<String>,
    /// `switchover.replication_user`: the account replicas replicate as; the old
    /// primary rejoins with it (required).
    pub replication_user: Option<String>,
    /// `switchover.replication_password`: its password, inline; at most one of the three.
    pub replication_password: Option<String>,
    /// `switchover.replication_password_env`: from this environment variable.
    pub replication_password_env: Option<String>,
    /// `switchover.replication_password_file`: from this file.
    pub replication_password_file: Option<String>,
    /// `switchover.drain`: how long the old primary's sessions have to reach an idle
    /// point before it is demoted (default `defaults::SWITCHOVER_DRAIN`).
    pub drain: Option<Timeout>,
    /// `switchover.catch_up_timeout`: how long the target may take to apply the old
    /// primary's last transaction (default `defaults::SWITCHOVER_CATCH_UP`).
    pub catch_up_timeout: Option<Timeout>,
    /// `switchover.route_timeout`: how long the checks may take to see the target as
    /// the primary (default `defaults::SWITCHOVER_ROUTE`).
    pub route_timeout: Option<Timeout>,
    /// `switchover.statement_timeout`: each login and statement (default
    /// `defaults::SWITCHOVER_STATEMENT`).
    pub statement_timeout: Option<Timeout>,
}
