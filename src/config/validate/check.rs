//! A backend's check table (its own fields over `[check]`'s) → [`CheckConfig`].

use std::path::Path;

use super::Ctx;
use crate::config::defaults;
use crate::config::raw::{CheckKind, RawCheck};
use crate::config::*;
use crate::tls::PinnedKey;

pub(super) fn check_config(ctx: &Ctx<'_>, key: &str, raw: RawCheck) -> Result<CheckConfig, ConfigError> {
    let interval = raw.interval.map_or(defaults::CHECK_INTERVAL, |i| i.0);
    let jitter = raw.jitter.map_or_else(
        || Fraction::new(defaults::JITTER).expect("the default jitter is a fraction"),
        |j| j.0,
    );
    let kind = raw.kind.unwrap_or(defaults::CHECK_KIND);
    only_where_they_apply(ctx, key, kind, &raw)?;
    let probe = match kind {
        CheckKind::Tcp => ProbeConfig::Tcp,
        CheckKind::Http => ProbeConfig::Http(http_probe(&raw)),
        CheckKind::Mysql => ProbeConfig::Mysql(mysql_probe(ctx, key, &raw)?),
        CheckKind::Galera => ProbeConfig::Galera(mysql_probe(ctx, key, &raw)?),
        CheckKind::Mongo => ProbeConfig::Mongo(mongo_probe(ctx, key, &raw)?),
        CheckKind::Redis => ProbeConfig::Redis(redis_probe(ctx, key, &raw)?),
    };
    Ok(CheckConfig {
        probe,
        interval,
        fast_interval: raw.fast_interval.map_or(defaults::fast_interval(interval), |i| i.0),
        down_interval: raw.down_interval.map_or(defaults::down_interval(interval), |i| i.0),
        timeout: raw.timeout.map_or(defaults::CHECK_TIMEOUT, |t| t.0),
        rise: raw.rise.map_or(defaults::RISE, |c| c.0),
        fall: raw.fall.map_or(defaults::FALL, |c| c.0),
        jitter,
    })
}

/// HTTP settings only on HTTP checks, login settings only on checks that log in.
fn only_where_they_apply(ctx: &Ctx<'_>, key: &str, kind: CheckKind, raw: &RawCheck) -> Result<(), ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let http_only = [
        ("method", raw.method.is_some()),
        ("path", raw.path.is_some()),
        ("host", raw.host.is_some()),
        ("expect_status", raw.expect_status.is_some()),
        ("body_contains", raw.body_contains.is_some()),
    ];
    if kind != CheckKind::Http {
        if let Some((field, _)) = http_only.iter().find(|(_, set)| *set) {
            return Err(ctx.invalid(k(field), "no HTTP setting on a check that is not `kind = \"http\"`"));
        }
    }
    if raw.server_public_key.is_some() && !matches!(kind, CheckKind::Mysql | CheckKind::Galera) {
        return Err(ctx.invalid(
            k("server_public_key"),
            "it only on a `kind = \"mysql\"` or `\"galera\"` check",
        ));
    }
    if raw.auth_source.is_some() && kind != CheckKind::Mongo {
        return Err(ctx.invalid(k("auth_source"), "it only on a `kind = \"mongo\"` check"));
    }
    let login_only = [
        ("user", raw.user.is_some()),
        ("password", raw.password.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
    ];
    if !matches!(
        kind,
        CheckKind::Mysql | CheckKind::Galera | CheckKind::Mongo | CheckKind::Redis
    ) {
        if let Some((field, _)) = login_only.iter().find(|(_, set)| *set) {
            return Err(ctx.invalid(
                k(field),
                "no login setting on a check that is not `kind = \"mysql\"`, `\"galera\"`, `\"mongo\"` or `\"redis\"`",
            ));
        }
    }
    Ok(())
}

fn http_probe(raw: &RawCheck) -> HttpProbeConfig {
    HttpProbeConfig {
        method: raw.method.clone().map_or_else(|| defaults::HTTP_METHOD.into(), |m| m.0),
        path: raw.path.clone().map_or_else(|| defaults::HTTP_PATH.into(), |p| p.0),
        host: raw.host.clone().map(|h| h.0),
        expect_status: raw.expect_status.clone().map_or(defaults::HTTP_EXPECT_STATUS, |s| s.0),
        body_contains: raw.body_contains.clone(),
    }
}

fn mysql_probe(ctx: &Ctx<'_>, key: &str, raw: &RawCheck) -> Result<MysqlProbeConfig, ConfigError> {
    let user = raw.user.clone().filter(|u| !u.is_empty()).ok_or_else(|| {
        ctx.invalid(
            format!("{key}.user"),
            "the monitor user name (a `kind = \"mysql\"` or `\"galera\"` check logs in)",
        )
    })?;
    let password = ctx.secret(
        &format!("{key}.password"),
        [&raw.password, &raw.password_env, &raw.password_file],
    )?;
    let server_public_key = match &raw.server_public_key {
        None => None,
        Some(path) => Some(PinnedKey::load(Path::new(path)).map_err(|e| {
            ctx.invalid(
                format!("{key}.server_public_key"),
                format!("a PEM file with the server's RSA public key, but \"{path}\": {e}"),
            )
        })?),
    };
    Ok(MysqlProbeConfig {
        user,
        password,
        server_public_key,
    })
}

fn mongo_probe(ctx: &Ctx<'_>, key: &str, raw: &RawCheck) -> Result<MongoProbeConfig, ConfigError> {
    let password = ctx.secret(
        &format!("{key}.password"),
        [&raw.password, &raw.password_env, &raw.password_file],
    )?;
    match (&raw.user, &password) {
        (Some(_), None) => return Err(ctx.invalid(format!("{key}.password"), "a password with `user` (SCRAM-SHA-256)")),
        (None, Some(_)) => return Err(ctx.invalid(format!("{key}.user"), "a user name with the password")),
        _ => {}
    }
    // SASLprep is the identity for ASCII; we do not implement the rest of it.
    if raw.user.as_deref().is_some_and(|u| u.is_empty() || !u.is_ascii()) {
        return Err(ctx.invalid(format!("{key}.user"), "a non-empty ASCII user name"));
    }
    if password.as_ref().is_some_and(|p| !p.expose().is_ascii()) {
        return Err(ctx.invalid(
            format!("{key}.password"),
            "an ASCII password (SASLprep of other text is not supported)",
        ));
    }
    Ok(MongoProbeConfig {
        user: raw.user.clone(),
        password,
        auth_source: raw
            .auth_source
            .clone()
            .unwrap_or_else(|| defaults::MONGO_AUTH_SOURCE.into()),
    })
}

fn redis_probe(ctx: &Ctx<'_>, key: &str, raw: &RawCheck) -> Result<RedisProbeConfig, ConfigError> {
    let password = ctx.secret(
        &format!("{key}.password"),
        [&raw.password, &raw.password_env, &raw.password_file],
    )?;
    if raw.user.is_some() && password.is_none() {
        return Err(ctx.invalid(format!("{key}.password"), "a password with `user` (AUTH user password)"));
    }
    if raw.user.as_deref().is_some_and(str::is_empty) {
        return Err(ctx.invalid(format!("{key}.user"), "a non-empty ACL user name"));
    }
    Ok(RedisProbeConfig {
        user: raw.user.clone(),
        password,
    })
}
