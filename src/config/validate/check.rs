//! A backend's check table (its own fields over `[check]`'s) → [`CheckConfig`].

use super::Ctx;
use crate::config::defaults::{self, MIN_INTERVAL};
use crate::config::raw::{CheckKind, RawCheck};
use crate::config::*;
use crate::duration;

pub(super) fn check_config(ctx: &Ctx<'_>, key: &str, raw: RawCheck) -> Result<CheckConfig, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let interval = raw.interval.map_or(defaults::CHECK_INTERVAL, |s| s.0);
    let fast_interval = raw.fast_interval.map_or(defaults::fast_interval(interval), |s| s.0);
    let down_interval = raw.down_interval.map_or(defaults::down_interval(interval), |s| s.0);
    for (field, value) in [
        ("interval", interval),
        ("fast_interval", fast_interval),
        ("down_interval", down_interval),
    ] {
        if value < MIN_INTERVAL {
            return Err(ctx.invalid(k(field), format!("at least 100ms, got {}", duration::format(value))));
        }
    }
    let timeout = ctx.above_zero(&k("timeout"), raw.timeout, defaults::CHECK_TIMEOUT)?;
    let jitter = raw.jitter.unwrap_or(defaults::JITTER);
    let jitter = Fraction::new(jitter)
        .filter(|j| j.get() <= 0.5)
        .ok_or_else(|| ctx.invalid(k("jitter"), format!("a fraction from 0.0 to 0.5, got {jitter}")))?;
    let kind = raw.kind.unwrap_or(defaults::CHECK_KIND);
    only_where_they_apply(ctx, key, kind, &raw)?;
    let probe = match kind {
        CheckKind::Tcp => ProbeConfig::Tcp,
        CheckKind::Http => ProbeConfig::Http(http_probe(ctx, key, &raw)?),
        CheckKind::Mysql => ProbeConfig::Mysql(mysql_probe(ctx, key, &raw)?),
        CheckKind::Mongo => ProbeConfig::Mongo(mongo_probe(ctx, key, &raw)?),
    };
    Ok(CheckConfig {
        probe,
        interval,
        fast_interval,
        down_interval,
        timeout,
        rise: ctx.positive(&k("rise"), raw.rise, defaults::RISE)?,
        fall: ctx.positive(&k("fall"), raw.fall, defaults::FALL)?,
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
    if raw.auth_source.is_some() && kind != CheckKind::Mongo {
        return Err(ctx.invalid(k("auth_source"), "it only on a `kind = \"mongo\"` check"));
    }
    let login_only = [
        ("user", raw.user.is_some()),
        ("password", raw.password.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
    ];
    if !matches!(kind, CheckKind::Mysql | CheckKind::Mongo) {
        if let Some((field, _)) = login_only.iter().find(|(_, set)| *set) {
            return Err(ctx.invalid(
                k(field),
                "no login setting on a check that is not `kind = \"mysql\"` or `kind = \"mongo\"`",
            ));
        }
    }
    Ok(())
}

fn http_probe(ctx: &Ctx<'_>, key: &str, raw: &RawCheck) -> Result<HttpProbeConfig, ConfigError> {
    let method = raw.method.clone().unwrap_or_else(|| defaults::HTTP_METHOD.into());
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ctx.invalid(
            format!("{key}.method"),
            format!("an HTTP method like \"GET\", got \"{method}\""),
        ));
    }
    let path = raw.path.clone().unwrap_or_else(|| defaults::HTTP_PATH.into());
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(ctx.invalid(
            format!("{key}.path"),
            format!("a path starting with \"/\" and without spaces, got \"{path}\""),
        ));
    }
    if let Some(host) = &raw.host {
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(ctx.invalid(
                format!("{key}.host"),
                format!("a host name without spaces, got \"{host}\""),
            ));
        }
    }
    let expect_status = match raw.expect_status.as_deref() {
        None => defaults::HTTP_EXPECT_STATUS,
        Some(text) => status_range(text).ok_or_else(|| {
            ctx.invalid(
                format!("{key}.expect_status"),
                format!("a status like \"200\" or a range like \"200-399\" within 100-599, got \"{text}\""),
            )
        })?,
    };
    Ok(HttpProbeConfig {
        method,
        path,
        host: raw.host.clone(),
        expect_status,
        body_contains: raw.body_contains.clone(),
    })
}

fn mysql_probe(ctx: &Ctx<'_>, key: &str, raw: &RawCheck) -> Result<MysqlProbeConfig, ConfigError> {
    let user = raw.user.clone().filter(|u| !u.is_empty()).ok_or_else(|| {
        ctx.invalid(
            format!("{key}.user"),
            "the monitor user name (a `kind = \"mysql\"` check logs in)",
        )
    })?;
    let password = ctx.secret(
        &format!("{key}.password"),
        [&raw.password, &raw.password_env, &raw.password_file],
    )?;
    Ok(MysqlProbeConfig { user, password })
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

fn status_range(text: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high): (u16, u16) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    (100 <= low && low <= high && high <= 599).then_some(low..=high)
}
