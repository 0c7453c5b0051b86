//! Real backends on loopback for switchyard's integration tests, failover drills and
//! demo. Nothing here is a mock: [`mariadb::Cluster`] runs real `mariadbd` processes
//! with GTID replication, in a throw-away directory, on free ports, and stops them by
//! PID when dropped.

pub mod mariadb;
pub mod system;
