//! Real backends on loopback for switchyard's integration tests, failover drills and
//! demo. Nothing here is a mock: [`mariadb::Cluster`] runs real `mariadbd` processes
//! with GTID replication, in a throw-away directory, on free ports, and stops them by
//! PID when dropped. [`mongo::ReplicaSet`] runs a scripted MongoDB replica set (one
//! process per member) and [`mongo::Secantus`] a SecantusDB server, both from a Python
//! venv that [`python`] creates. [`tls`] issues throw-away certificates; [`daemon`] runs
//! HAProxy and nginx beside the proxy; [`etcd::Cluster`] a real etcd cluster for fleets.

pub mod chromium;
pub mod daemon;
pub mod dns;
pub mod etcd;
pub mod galera;
pub mod mariadb;
pub mod mongo;
pub mod netns;
pub mod python;
pub mod redis;
pub mod system;
pub mod tls;
