//! The configuration `switchyard forward` builds without a file: one listener, one
//! first-healthy pool, TCP checks with defaults that suit most TCP services.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use super::*;

/// One listener in front of `backends`, tried in the given order.
pub fn forward(listen: SocketAddr, backends: &[SocketAddr], admin: Option<SocketAddr>) -> Config {
    let check = CheckConfig {
        probe: ProbeConfig::Tcp,
        interval: Duration::from_secs(1),
        fast_interval: Duration::from_millis(250),
        down_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        rise: NonZeroU32::new(2).expect("2 is not zero"),
        fall: NonZeroU32::new(2).expect("2 is not zero"),
        jitter: 0.1,
    };
    let backends: Vec<_> = backends
        .iter()
        .map(|&address| BackendConfig {
            name: address.to_string(),
            address,
            check: check.clone(),
            tls: None,
        })
        .collect();
    Config {
        source: "forward".into(),
        admin: admin.map(|listen| AdminConfig { listen, token: None }),
        shutdown_grace: Duration::from_secs(10),
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        pools: vec![PoolConfig {
            name: "forward".into(),
            role: PoolRole::Any,
            policy: Policy::First,
            members: (0..backends.len()).collect(),
            initially_up: true,
            on_leave: LeavePolicy::Keep,
            hold_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3600),
            max_replication_lag: Duration::from_secs(10),
            fallback_to_primary: false,
            two_writers: TwoWriters::KeepCurrent,
            set_name: None,
        }],
        listeners: vec![ListenerConfig {
            name: "forward".into(),
            listen,
            pool: 0,
            max_connections: 10_000,
            tcp: TcpOptions {
                keepalive: Duration::from_secs(30),
                user_timeout: Duration::from_secs(30),
            },
            mode: ListenerMode::Tcp,
            tls: None,
        }],
        backends,
    }
}
