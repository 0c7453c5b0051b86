//! The etcd client as the agent uses it: one session pinned to one member at a time
//! (endpoints tried in turn, starting after the last one used), credentials and TLS
//! from `[cluster]`, every request bounded by `cluster.timeout`.
//!
//! One member per session, not a balanced channel over all of them: a member that
//! hangs (SIGSTOP, a black-holed network) keeps its TCP connections open, and a
//! balanced channel would keep sending it requests that time out; pinned, the
//! session ends at the first such timeout and the next one starts on another member.

use std::future::Future;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::config::ClusterConfig;

/// Connects to the first member, from `start` on, that answers a status request
/// within the timeout; returns the client and that member's index.
pub(super) async fn connect(config: &ClusterConfig, start: usize) -> Result<(Client, usize), String> {
    let mut errors = Vec::new();
    let count = config.etcd.len();
    for i in (0..count).map(|k| (start + k) % count) {
        let endpoint = url(config, &config.etcd[i]);
        let attempt = async {
            let mut client = bounded(
                config,
                "connecting",
                Client::connect([endpoint.clone()], Some(options(config))),
            )
            .await?;
            bounded(config, "status", client.status()).await?;
            Ok::<_, String>(client)
        };
        match attempt.await {
            Ok(client) => return Ok((client, i)),
            Err(e) => errors.push(format!("{}: {e}", config.etcd[i])),
        }
    }
    Err(errors.join("; "))
}

fn options(config: &ClusterConfig) -> ConnectOptions {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.timeout)
        .with_timeout(config.timeout)
        // No HTTP/2 keep-alive pings: etcd answers pings more often than its
        // `--grpc-keepalive-min-time` (5 s) with GOAWAY. The lease keep-alive every
        // `lease_ttl / 3`, answered within `timeout`, tells a dead member instead.
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.with_user(user.clone(), password.expose().to_string());
    }
    if let Some(tls) = &config.tls {
        let mut client_tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&tls.ca))
            .domain_name(tls.server_name.clone());
        if let Some((cert, key)) = &tls.identity {
            client_tls = client_tls.identity(Identity::from_pem(cert, key.expose()));
        }
        options = options.with_tls(client_tls);
    }
    options
}

fn url(config: &ClusterConfig, endpoint: &str) -> String {
    match (endpoint.contains("://"), config.tls.is_some()) {
        (true, _) => endpoint.to_string(),
        (false, true) => format!("https://{endpoint}"),
        (false, false) => format!("http://{endpoint}"),
    }
}

/// `request`, failing after `cluster.timeout` (an etcd member that stopped answering
/// keeps its TCP connection: only a deadline tells).
pub(super) async fn bounded<T>(
    config: &ClusterConfig,
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(config.timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {:?}", config.timeout)),
    }
}
