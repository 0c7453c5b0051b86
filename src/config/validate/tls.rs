//! The `tls` tables of listeners and backends: file paths in, rustls configurations
//! out, every certificate and key read and checked here, at load time.

use rustls::pki_types::ServerName;

use super::Ctx;
use crate::config::defaults;
use crate::config::raw::{RawBackendTls, RawListenerTls};
use crate::config::*;
use crate::tls::{load, BackendTlsError, CertFiles, Verify};

pub(super) fn listener_tls(
    ctx: &Ctx<'_>,
    table: &str,
    raw: RawListenerTls,
    mode: ListenerMode,
) -> Result<ListenerTlsConfig, ConfigError> {
    let key = |field: &str| format!("{table}.{field}");
    if raw.certificates.is_empty() {
        return Err(ctx.invalid(
            key("certificates"),
            "at least one { cert = \"...\", key = \"...\" } entry",
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    let mut certificates = Vec::new();
    for (i, certificate) in raw.certificates.into_iter().enumerate() {
        let mut server_names = Vec::new();
        for name in certificate.server_names {
            let name = name.to_ascii_lowercase();
            if ServerName::try_from(name.as_str()).is_err() || name.parse::<std::net::IpAddr>().is_ok() {
                return Err(ctx.invalid(
                    key(&format!("certificates[{i}].server_names")),
                    format!("DNS names, got \"{name}\""),
                ));
            }
            if seen.contains(&name) {
                return Err(ctx.invalid(
                    key(&format!("certificates[{i}].server_names")),
                    format!("each name once across certificates, but \"{name}\" repeats"),
                ));
            }
            seen.push(name.clone());
            server_names.push(name);
        }
        if i > 0 && server_names.is_empty() {
            return Err(ctx.invalid(
                key(&format!("certificates[{i}].server_names")),
                "the names this certificate answers for (only the first certificate is the default)",
            ));
        }
        certificates.push(CertFiles {
            cert: certificate.cert.into(),
            key: certificate.key.into(),
            server_names,
        });
    }
    let files = ServerFiles {
        certificates,
        client_ca: raw.client_ca.map(Into::into),
    };
    let handshake_timeout = raw.handshake_timeout.map_or(defaults::HANDSHAKE_TIMEOUT, |t| t.0);
    if raw.require_tls.is_some() && mode != ListenerMode::Mysql {
        return Err(ctx.invalid(
            key("require_tls"),
            "no require_tls outside mode = \"mysql\" (a tcp-mode TLS listener always requires TLS)",
        ));
    }
    if raw.require_tls == Some(false) && files.client_ca.is_some() {
        return Err(ctx.invalid(
            key("require_tls"),
            "true with client_ca: a client that skips TLS would skip its certificate check too",
        ));
    }
    let loaded = load::server_config(&files).map_err(|e| ctx.tls_file(table, e))?;
    Ok(ListenerTlsConfig {
        files,
        loaded,
        handshake_timeout,
        require_tls: raw.require_tls.unwrap_or(defaults::REQUIRE_TLS),
    })
}

pub(super) fn backend_tls(
    ctx: &Ctx<'_>,
    table: &str,
    raw: RawBackendTls,
    address: &str,
) -> Result<BackendTls, ConfigError> {
    let key = |field: &str| format!("{table}.{field}");
    let verify = match (raw.ca, raw.insecure.unwrap_or(defaults::TLS_INSECURE)) {
        (Some(_), true) => {
            return Err(ctx.invalid(key("insecure"), "either ca or insecure = true, not both"));
        }
        (Some(ca), false) => Verify::Ca(ca.into()),
        (None, true) => Verify::Insecure,
        (None, false) => {
            return Err(ctx.invalid(
                key("ca"),
                "a CA bundle to verify the backend with (or insecure = true, for labs only)",
            ));
        }
    };
    let identity = match (raw.cert, raw.key) {
        (Some(cert), Some(k)) => Some(CertFiles {
            cert: cert.into(),
            key: k.into(),
            server_names: Vec::new(),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(ctx.invalid(key("key"), "the client certificate's key, since cert is set")),
        (None, Some(_)) => return Err(ctx.invalid(key("cert"), "a client certificate, since key is set")),
    };
    let server_name = raw.server_name.unwrap_or_else(|| defaults::tls_server_name(address));
    BackendTls::new(verify, &server_name, identity).map_err(|e| match e {
        BackendTlsError::ServerName(_) => ctx.invalid(key("server_name"), e.to_string()),
        BackendTlsError::File(e) => ctx.tls_file(table, e),
    })
}

/// MySQL starts TLS inside its protocol, after the greeting: a leg that does TLS from
/// the first byte never handshakes with a MySQL client or server, and a backend whose
/// TLS starts inside the protocol can only be checked by the MySQL probe.
pub(super) fn mode_fits_pool(
    ctx: &Ctx<'_>,
    listener: &str,
    mode: ListenerMode,
    listener_tls: bool,
    pool: &PoolConfig,
    backends: &[BackendConfig],
) -> Result<(), ConfigError> {
    let mut members = pool.members.iter().map(|&id| &backends[id]);
    let is_mysql = |b: &BackendConfig| b.check.probe.speaks_mysql();
    let mode_key = format!("listeners.{listener}.mode");
    let pool_name = &pool.name;
    match mode {
        ListenerMode::Tcp => {
            if let Some(b) = members.find(|b| is_mysql(b) && (b.tls.is_some() || listener_tls)) {
                let why = if b.tls.is_some() {
                    format!("pool \"{pool_name}\" has a MySQL backend with TLS (backends.{}.tls), which only the mysql mode can speak", b.name)
                } else {
                    format!("MySQL clients ask for TLS inside the protocol, and pool \"{pool_name}\" has MySQL backends (backends.{})", b.name)
                };
                return Err(ctx.invalid(mode_key, format!("\"mysql\": {why}")));
            }
        }
        ListenerMode::Mongo => {
            if pool.role != PoolRole::Primary {
                return Err(ctx.invalid(
                    mode_key,
                    format!("\"mongo\" only for a pool with role = \"primary\" (pool \"{pool_name}\" is not)"),
                ));
            }
            if let Some(b) = members.find(|b| !matches!(b.check.probe, ProbeConfig::Mongo(_))) {
                return Err(ctx.invalid(
                    mode_key,
                    format!(
                        "\"mongo\" only when every member has kind = \"mongo\" checks; \"{}\" has not",
                        b.name
                    ),
                ));
            }
        }
        ListenerMode::Mysql => {
            if let Some(b) = members.find(|b| b.tls.is_some() && !is_mysql(b)) {
                return Err(ctx.invalid(
                    format!("backends.{}.check.kind", b.name),
                    format!(
                        "\"mysql\": its TLS starts inside the MySQL protocol (listener \"{listener}\" has mode = \"mysql\"), which only the mysql check speaks"
                    ),
                ));
            }
        }
    }
    Ok(())
}
