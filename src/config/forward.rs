//! The configuration `switchyard forward` builds without a file: one listener, one
//! first-healthy pool, TCP checks. It is a raw tree like a file's and goes through
//! the same [`validate`], so every default is the file's default; only the shutdown
//! grace is shorter (a command-line proxy is stopped by hand).

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{ConfigDuration, RawAdmin, RawBackend, RawConfig, RawListener, RawPool, RawShutdown};
use super::*;

/// How long `forward` lets sessions finish after SIGTERM.
const FORWARD_GRACE: Duration = Duration::from_secs(10);

/// One listener in front of `backends`, tried in the given order. Each backend is
/// named after its address, so an address given twice is refused.
pub fn forward(listen: SocketAddr, backends: &[SocketAddr], admin: Option<SocketAddr>) -> Result<Config, ConfigError> {
    let names: Vec<String> = backends.iter().map(SocketAddr::to_string).collect();
    if let Some((_, twice)) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)) {
        return Err(ConfigError::Invalid {
            file: "forward".into(),
            key: "--backend".into(),
            expected: format!("each backend once, got {twice} twice"),
        });
    }
    let raw = RawConfig {
        admin: admin.map(|listen| RawAdmin {
            listen: listen.to_string(),
            ..RawAdmin::default()
        }),
        shutdown: Some(RawShutdown {
            grace: Some(ConfigDuration(FORWARD_GRACE)),
        }),
        backends: names
            .iter()
            .map(|name| {
                let backend = RawBackend {
                    address: name.clone(),
                    ..RawBackend::default()
                };
                (name.clone(), backend)
            })
            .collect(),
        pools: [(
            "forward".to_string(),
            RawPool {
                backends: names,
                ..RawPool::default()
            },
        )]
        .into(),
        listeners: [(
            "forward".to_string(),
            RawListener {
                listen: listen.to_string(),
                pool: "forward".into(),
                ..RawListener::default()
            },
        )]
        .into(),
        ..RawConfig::default()
    };
    validate(raw, "forward", &super::Resolved::new())
}
