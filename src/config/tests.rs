//! Config errors: each documented mistake gives an error naming the key.

use super::*;

const BASE: &str = r#"
[admin]
listen = "127.0.0.1:0"

[check]
interval = "500ms"

[backends.a]
address = "127.0.0.1:9001"

[backends.b]
address = "127.0.0.1:9002"
[backends.b.check]
kind = "http"
path = "/health"
expect_status = "200"

[pools.web]
backends = ["b", "a"]
policy = "round-robin"

[listeners.front]
listen = "127.0.0.1:0"
pool = "web"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml")
}

/// BASE with `find` replaced by `replace` (which must change it).
fn broken(find: &str, replace: &str) -> ConfigError {
    assert!(BASE.contains(find), "{find:?} not in BASE");
    parse(&BASE.replacen(find, replace, 1)).expect_err("config should be refused")
}

#[test]
fn base_config_is_valid_and_merges_check_defaults() {
    let config = parse(BASE).unwrap();
    let a = config.backends.iter().find(|b| b.name == "a").unwrap();
    let b = config.backends.iter().find(|b| b.name == "b").unwrap();
    assert_eq!(a.check.interval, Duration::from_millis(500));
    assert_eq!(b.check.interval, Duration::from_millis(500));
    assert_eq!(a.check.probe, ProbeConfig::Tcp);
    match &b.check.probe {
        ProbeConfig::Http(http) => assert_eq!(http.expect_status, 200..=200),
        other => panic!("expected an http probe, got {other:?}"),
    }
    let pool = &config.pools[0];
    assert_eq!(pool.policy, Policy::RoundRobin);
    let names: Vec<_> = pool
        .members
        .iter()
        .map(|&id| config.backends[id].name.as_str())
        .collect();
    assert_eq!(names, ["b", "a"], "pool keeps its own priority order");
}

#[test]
fn shipped_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    Config::load(Path::new(path)).unwrap();
}

#[test]
fn unknown_key_is_refused() {
    let err = broken("policy = \"round-robin\"", "polcy = \"round-robin\"");
    assert!(err.to_string().contains("unknown field `polcy`"), "{err}");
}

#[test]
fn toml_syntax_error_names_the_file() {
    let err = parse("[pools\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(err.to_string().starts_with("test.toml: "), "{err}");
}

#[test]
fn missing_file_is_a_read_error() {
    let err = Config::load(Path::new("/nonexistent/switchyard.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn each_mistake_names_its_key() {
    let cases = [
        // A value is refused where it is written (here `[check]`, the defaults of
        // every backend's check).
        (("interval = \"500ms\"", "interval = \"500\""), "check.interval"),
        (("interval = \"500ms\"", "interval = \"50ms\""), "check.interval"),
        (
            ("address = \"127.0.0.1:9001\"", "address = \"127.0.0.1\""),
            "backends.a.address",
        ),
        (
            ("backends = [\"b\", \"a\"]", "backends = [\"b\", \"c\"]"),
            "pools.web.backends",
        ),
        (
            ("backends = [\"b\", \"a\"]", "backends = [\"b\", \"b\"]"),
            "pools.web.backends",
        ),
        (("backends = [\"b\", \"a\"]", "backends = []"), "pools.web.backends"),
        (("pool = \"web\"", "pool = \"api\""), "listeners.front.pool"),
        (("policy = \"round-robin\"", "policy = \"random\""), "pools.web.policy"),
        (
            ("expect_status = \"200\"", "expect_status = \"399-200\""),
            "backends.b.check.expect_status",
        ),
        (("path = \"/health\"", "path = \"health\""), "backends.b.check.path"),
        (
            ("[backends.a]", "[backends.a]\ncheck = { rise = 0 }"),
            "backends.a.check.rise",
        ),
        (
            ("[backends.a]", "[backends.a]\ncheck = { jitter = 0.9 }"),
            "backends.a.check.jitter",
        ),
        (
            ("[backends.a]", "[backends.a]\ncheck = { kind = \"smtp\" }"),
            "backends.a.check.kind",
        ),
        (
            ("[backends.a]", "[backends.a]\ncheck = { path = \"/\" }"),
            "backends.a.check.path",
        ),
        (
            ("pool = \"web\"", "pool = \"web\"\nmax_connections = 0"),
            "listeners.front.max_connections",
        ),
        (
            ("policy = \"round-robin\"", "on_leave = \"evict\""),
            "pools.web.on_leave",
        ),
        (
            ("policy = \"round-robin\"", "drain_deadline = \"5s\""),
            "pools.web.drain_deadline",
        ),
        (
            ("policy = \"round-robin\"", "initial_state = \"maybe\""),
            "pools.web.initial_state",
        ),
        (
            ("policy = \"round-robin\"", "connect_timeout = \"0s\""),
            "pools.web.connect_timeout",
        ),
    ];
    for ((find, replace), key) in cases {
        let err = broken(find, replace);
        assert_eq!(err.key(), Some(key), "{find} -> {replace}: {err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("test.toml: {key}: ")), "{text}");
        assert!(text.contains("expected "), "{text}");
    }
}

#[test]
fn workers_default_to_one_per_core_and_are_bounded() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(parse(BASE).unwrap().workers, cores);
    assert_eq!(parse(&format!("{BASE}[runtime]\nworkers = 3\n")).unwrap().workers, 3);
    for bad in ["-1", "257"] {
        let error = parse(&format!("{BASE}[runtime]\nworkers = {bad}\n")).expect_err(bad);
        assert_eq!(error.key(), Some("runtime.workers"), "{error}");
    }
}

#[test]
fn no_listener_is_refused() {
    let text = BASE.split("[listeners.front]").next().unwrap();
    assert_eq!(parse(text).unwrap_err().key(), Some("listeners"));
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let text = BASE.replace("127.0.0.1:0\"\npool", "127.0.0.1:7000\"\npool")
        + "\n[listeners.second]\nlisten = \"127.0.0.1:7000\"\npool = \"web\"\n";
    assert_eq!(parse(&text).unwrap_err().key(), Some("listeners.second.listen"));
}

#[test]
fn wrong_type_is_refused_with_the_line() {
    let err = broken("policy = \"round-robin\"", "policy = 3");
    assert!(err.to_string().contains("line"), "{err}");
}

const MYSQL: &str = r#"
[check]
kind = "mysql"
user = "monitor"
password = "s3cret"

[backends.db1]
address = "127.0.0.1:3401"

[backends.db2]
address = "127.0.0.1:3402"

[pools.writer]
backends = ["db1", "db2"]
role = "primary"

[pools.reader]
backends = ["db1", "db2"]
role = "replica"
max_replication_lag = "5s"

[listeners.w]
listen = "127.0.0.1:0"
pool = "writer"
"#;

fn mysql_broken(find: &str, replace: &str) -> ConfigError {
    assert!(MYSQL.contains(find), "{find:?} not in MYSQL");
    parse(&MYSQL.replacen(find, replace, 1)).expect_err("config should be refused")
}

#[test]
fn mysql_pools_get_role_defaults_and_the_password_is_never_printed() {
    let config = parse(MYSQL).unwrap();
    let writer = config.pools.iter().find(|p| p.name == "writer").unwrap();
    assert_eq!(writer.role, PoolRole::Primary);
    assert!(!writer.initially_up, "primary pools start down");
    assert_eq!(
        writer.on_leave,
        LeavePolicy::Close,
        "primary pools close sessions of a demoted primary"
    );
    let reader = config.pools.iter().find(|p| p.name == "reader").unwrap();
    assert_eq!(reader.max_replication_lag, Duration::from_secs(5));
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[test]
fn mysql_mistakes_name_their_key() {
    let cases = [
        (("user = \"monitor\"", ""), "backends.db1.check.user"),
        (
            ("password = \"s3cret\"", "password = \"a\"\npassword_env = \"B\""),
            "backends.db1.check.password",
        ),
        (
            (
                "password = \"s3cret\"",
                "password_env = \"SWITCHYARD_TEST_UNSET_VARIABLE\"",
            ),
            "backends.db1.check.password_env",
        ),
        (
            ("password = \"s3cret\"", "password_file = \"/nonexistent/pw\""),
            "backends.db1.check.password_file",
        ),
        (
            ("password = \"s3cret\"", "password = \"s3cret\"\npath = \"/\""),
            "backends.db1.check.path",
        ),
        (("role = \"primary\"", "role = \"leader\""), "pools.writer.role"),
        (
            ("role = \"primary\"", "role = \"primary\"\nmax_replication_lag = \"1s\""),
            "pools.writer.max_replication_lag",
        ),
        (
            ("role = \"primary\"", "role = \"primary\"\ntwo_writers = \"both\""),
            "pools.writer.two_writers",
        ),
        (
            ("max_replication_lag = \"5s\"", "two_writers = \"fail-closed\""),
            "pools.reader.two_writers",
        ),
    ];
    for ((find, replace), key) in cases {
        let err = mysql_broken(find, replace);
        assert_eq!(err.key(), Some(key), "{find} -> {replace}: {err}");
    }
}

#[test]
fn role_pools_need_role_aware_checks() {
    let err = broken("policy = \"round-robin\"", "role = \"primary\"");
    assert_eq!(err.key(), Some("pools.web.role"));
    assert!(err.to_string().contains("role-aware"), "{err}");
}

#[test]
fn password_from_a_file_drops_the_trailing_newline() {
    let path = std::env::temp_dir().join(format!("switchyard-pw-{}", std::process::id()));
    std::fs::write(&path, "from-file\n").unwrap();
    let text = MYSQL.replace(
        "password = \"s3cret\"",
        &format!("password_file = \"{}\"", path.display()),
    );
    let config = parse(&text).unwrap();
    std::fs::remove_file(&path).unwrap();
    match &config.backends[0].check.probe {
        ProbeConfig::Mysql(mysql) => assert_eq!(mysql.password.as_ref().unwrap().expose(), "from-file"),
        other => panic!("{other:?}"),
    }
}

const MONGO: &str = r#"
[check]
kind = "mongo"

[backends.m1]
address = "127.0.0.1:27101"

[backends.m2]
address = "127.0.0.1:27102"

[pools.writer]
backends = ["m1", "m2"]
role = "primary"
set_name = "rs0"

[pools.reader]
backends = ["m1", "m2"]
role = "secondary"

[listeners.w]
listen = "127.0.0.1:0"
pool = "writer"
"#;

#[test]
fn mongo_pools_and_credentials() {
    let config = parse(MONGO).unwrap();
    let writer = config.pools.iter().find(|p| p.name == "writer").unwrap();
    assert_eq!(writer.set_name.as_deref(), Some("rs0"));
    let reader = config.pools.iter().find(|p| p.name == "reader").unwrap();
    assert_eq!(
        reader.role,
        PoolRole::Replica,
        "\"secondary\" is the MongoDB word for a replica pool"
    );
    let with_login = MONGO.replace(
        "kind = \"mongo\"",
        "kind = \"mongo\"\nuser = \"mon\"\npassword = \"pw\"\nauth_source = \"ops\"",
    );
    let config = parse(&with_login).unwrap();
    match &config.backends[0].check.probe {
        ProbeConfig::Mongo(mongo) => {
            assert_eq!(mongo.user.as_deref(), Some("mon"));
            assert_eq!(mongo.auth_source, "ops");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{config:?}").contains("\"pw\""));
}

#[test]
fn mongo_mistakes_name_their_key() {
    let cases = [
        (
            "kind = \"mongo\"",
            "kind = \"mongo\"\nuser = \"mon\"",
            "backends.m1.check.password",
        ),
        (
            "kind = \"mongo\"",
            "kind = \"mongo\"\npassword = \"pw\"",
            "backends.m1.check.user",
        ),
        (
            "kind = \"mongo\"",
            "kind = \"mongo\"\nuser = \"mön\"\npassword = \"pw\"",
            "backends.m1.check.user",
        ),
        (
            "kind = \"mongo\"",
            "kind = \"tcp\"\nauth_source = \"admin\"",
            "backends.m1.check.auth_source",
        ),
        (
            "kind = \"mongo\"",
            "kind = \"mongo\"\npath = \"/\"",
            "backends.m1.check.path",
        ),
    ];
    for (find, replace, key) in cases {
        let err = parse(&MONGO.replacen(find, replace, 1)).expect_err(replace);
        assert_eq!(err.key(), Some(key), "{replace}: {err}");
    }
    let on_mysql = MYSQL.replace("role = \"primary\"", "role = \"primary\"\nset_name = \"rs0\"");
    assert_eq!(parse(&on_mysql).unwrap_err().key(), Some("pools.writer.set_name"));
}

#[test]
fn mongo_mode_is_for_primary_pools_of_mongo_members() {
    let watched = MONGO.replace("pool = \"writer\"", "pool = \"writer\"\nmode = \"mongo\"");
    assert_eq!(parse(&watched).unwrap().listeners[0].mode, ListenerMode::Mongo);
    let on_reader = MONGO.replace("pool = \"writer\"", "pool = \"reader\"\nmode = \"mongo\"");
    let err = parse(&on_reader).unwrap_err();
    assert_eq!(err.key(), Some("listeners.w.mode"), "{err}");
    assert!(err.to_string().contains("role = \"primary\""), "{err}");
    let on_mysql = MYSQL.replace("pool = \"writer\"", "pool = \"writer\"\nmode = \"mongo\"");
    let err = parse(&on_mysql).unwrap_err();
    assert!(err.to_string().contains("kind = \"mongo\""), "{err}");
}

mod cluster;
mod dns;
mod galera;
mod log;
mod model;
mod proxy;
mod sentinel;
mod switchover;
mod tls;

#[test]
fn redis_checks_and_their_credentials() {
    let redis = MONGO
        .replace("kind = \"mongo\"", "kind = \"redis\"")
        .replace("set_name = \"rs0\"\n", "");
    let config = parse(&redis).unwrap();
    assert_eq!(
        config.backends[0].check.probe,
        ProbeConfig::Redis(RedisProbeConfig::default())
    );
    let with_user = redis.replace(
        "kind = \"redis\"",
        "kind = \"redis\"\nuser = \"probe\"\npassword = \"pw\"",
    );
    match &parse(&with_user).unwrap().backends[0].check.probe {
        ProbeConfig::Redis(r) => {
            assert_eq!(r.user.as_deref(), Some("probe"));
            assert_eq!(r.password.as_ref().map(|p| p.expose()), Some("pw"));
        }
        other => panic!("{other:?}"),
    }
    let no_password = redis.replace("kind = \"redis\"", "kind = \"redis\"\nuser = \"probe\"");
    assert_eq!(
        parse(&no_password).unwrap_err().key(),
        Some("backends.m1.check.password")
    );
    let http_field = redis.replace("kind = \"redis\"", "kind = \"redis\"\npath = \"/\"");
    assert_eq!(parse(&http_field).unwrap_err().key(), Some("backends.m1.check.path"));
}
