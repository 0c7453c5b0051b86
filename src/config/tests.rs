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
        (
            ("interval = \"500ms\"", "interval = \"500\""),
            "backends.a.check.interval",
        ),
        (
            ("interval = \"500ms\"", "interval = \"50ms\""),
            "backends.a.check.interval",
        ),
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
        assert!(text.starts_with(&format!("test.toml: {key}: expected ")), "{text}");
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

mod tls {
    use std::path::{Path, PathBuf};

    use switchyard_lab::tls::{Ca, Files};

    use super::*;

    struct Pki {
        dir: PathBuf,
        ca: Ca,
        ca_file: PathBuf,
    }

    fn pki(name: &str) -> Pki {
        let dir = switchyard_lab::system::temp_dir(name).unwrap();
        let ca = Ca::new("test").unwrap();
        let ca_file = ca.write(&dir, "ca.pem").unwrap();
        Pki { dir, ca, ca_file }
    }

    fn s(path: &Path) -> String {
        path.display().to_string()
    }

    /// BASE with a TLS table on the listener.
    fn with_listener_tls(table: &str) -> Result<Config, ConfigError> {
        parse(&format!("{BASE}[listeners.front.tls]\n{table}\n"))
    }

    fn with_cert(files: &Files, extra: &str) -> Result<Config, ConfigError> {
        with_listener_tls(&format!(
            "certificates = [{{ cert = \"{}\", key = \"{}\"{extra} }}]",
            s(&files.cert),
            s(&files.key)
        ))
    }

    /// The error is about `key` and `path`, and says `why`.
    fn assert_file_error(result: Result<Config, ConfigError>, key: &str, path: &Path, why: &str) {
        let error = result.expect_err("refused");
        let text = error.to_string();
        assert_eq!(error.key(), Some(key), "{text}");
        assert!(text.starts_with("test.toml: "), "{text}");
        assert!(text.contains(&s(path)), "names the file: {text}");
        assert!(text.contains(why), "says {why:?}: {text}");
    }

    #[test]
    fn a_good_certificate_loads() {
        let pki = pki("sy-cfg-tls-ok");
        let files = pki.ca.server(&["a.example"]).unwrap().write(&pki.dir, "a").unwrap();
        let config = with_cert(&files, ", server_names = [\"A.example\"]").unwrap();
        let tls = config.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.files.certificates[0].server_names, ["a.example"]);
        assert!(tls.require_tls);
        assert_eq!(tls.handshake_timeout, Duration::from_secs(5));
        assert_eq!(config.listeners[0].mode, ListenerMode::Tcp);
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let pki = pki("sy-cfg-tls-missing");
        let files = pki.ca.server(&["a.example"]).unwrap().write(&pki.dir, "a").unwrap();
        let missing = pki.dir.join("nope.pem");
        let gone = Files {
            cert: missing.clone(),
            key: files.key.clone(),
        };
        assert_file_error(
            with_cert(&gone, ""),
            "listeners.front.tls.certificates[0].cert",
            &missing,
            "cannot read",
        );
        let empty = pki.dir.join("empty.pem");
        std::fs::write(&empty, "# nothing here\n").unwrap();
        let hollow = Files {
            cert: empty.clone(),
            key: files.key.clone(),
        };
        assert_file_error(
            with_cert(&hollow, ""),
            "listeners.front.tls.certificates[0].cert",
            &empty,
            "empty chain",
        );
        let no_key = Files {
            cert: files.cert.clone(),
            key: empty.clone(),
        };
        assert_file_error(
            with_cert(&no_key, ""),
            "listeners.front.tls.certificates[0].key",
            &empty,
            "no usable private key",
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let pki = pki("sy-cfg-tls-mismatch");
        let a = pki.ca.server(&["a.example"]).unwrap().write(&pki.dir, "a").unwrap();
        let b = pki.ca.server(&["b.example"]).unwrap().write(&pki.dir, "b").unwrap();
        let mixed = Files {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        assert_file_error(
            with_cert(&mixed, ""),
            "listeners.front.tls.certificates[0].key",
            &b.key,
            "does not match the certificate",
        );
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused() {
        let pki = pki("sy-cfg-tls-dates");
        let expired = pki
            .ca
            .server_valid(&["a.example"], (2020, 1, 1), (2021, 1, 1))
            .unwrap()
            .write(&pki.dir, "expired")
            .unwrap();
        assert_file_error(
            with_cert(&expired, ""),
            "listeners.front.tls.certificates[0].cert",
            &expired.cert,
            "expired on 2021-01-01 00:00:00 UTC",
        );
        let future = pki
            .ca
            .server_valid(&["a.example"], (2090, 1, 1), (2091, 1, 1))
            .unwrap()
            .write(&pki.dir, "future")
            .unwrap();
        assert_file_error(
            with_cert(&future, ""),
            "listeners.front.tls.certificates[0].cert",
            &future.cert,
            "not valid before 2090-01-01",
        );
    }

    #[test]
    fn a_server_name_the_certificate_does_not_cover_is_refused() {
        let pki = pki("sy-cfg-tls-names");
        let a = pki.ca.server(&["a.example"]).unwrap().write(&pki.dir, "a").unwrap();
        assert_file_error(
            with_cert(&a, ", server_names = [\"b.example\"]"),
            "listeners.front.tls.certificates[0].server_names",
            &a.cert,
            "not valid for \"b.example\"",
        );
    }

    #[test]
    fn listener_tls_mistakes_name_their_key() {
        let pki = pki("sy-cfg-tls-keys");
        let a = pki.ca.server(&["a.example"]).unwrap().write(&pki.dir, "a").unwrap();
        let cert = format!("{{ cert = \"{}\", key = \"{}\" }}", s(&a.cert), s(&a.key));
        let cases = [
            ("certificates = []", "listeners.front.tls.certificates"),
            (
                &format!("certificates = [{cert}]\nhandshake_timeout = \"0s\"") as &str,
                "listeners.front.tls.handshake_timeout",
            ),
            (
                &format!("certificates = [{cert}]\nrequire_tls = false"),
                "listeners.front.tls.require_tls",
            ),
            (
                &format!(
                    "certificates = [{cert}]\nclient_ca = \"{}\"",
                    s(&pki.dir.join("none.pem"))
                ),
                "listeners.front.tls.client_ca",
            ),
        ];
        for (table, key) in cases {
            let error = with_listener_tls(table).expect_err(table);
            assert_eq!(error.key(), Some(key), "{error}");
        }
        let two = format!("certificates = [{cert}, {cert}]");
        let error = with_listener_tls(&two).expect_err("a second certificate without names");
        assert_eq!(error.key(), Some("listeners.front.tls.certificates[1].server_names"));
        let error = parse(&format!(
            "{}[listeners.front.tls]\ncertificates = [{cert}]\nclient_ca = \"{}\"\nrequire_tls = false\n",
            BASE.replace("pool = \"web\"", "pool = \"web\"\nmode = \"mysql\""),
            s(&pki.ca_file)
        ))
        .expect_err("mTLS that a client could skip");
        assert_eq!(error.key(), Some("listeners.front.tls.require_tls"), "{error}");
        let bad_mode = parse(&BASE.replace("pool = \"web\"", "pool = \"web\"\nmode = \"redis\""));
        assert_eq!(bad_mode.unwrap_err().key(), Some("listeners.front.mode"));
    }

    #[test]
    fn backend_tls_mistakes_name_their_key() {
        let pki = pki("sy-cfg-tls-backend");
        let ca = s(&pki.ca_file);
        let with = |table: &str| parse(&format!("{BASE}[backends.a.tls]\n{table}\n"));
        let ok = with(&format!("ca = \"{ca}\"")).unwrap();
        let tls = ok.backends[0].tls.as_ref().unwrap();
        assert_eq!(tls.server_name, "127.0.0.1", "defaults to the address's host");
        assert!(with("insecure = true").is_ok());
        let cases = [
            ("server_name = \"x\"", "backends.a.tls.ca"),
            (
                &format!("ca = \"{ca}\"\ninsecure = true") as &str,
                "backends.a.tls.insecure",
            ),
            (
                &format!("ca = \"{ca}\"\nserver_name = \"not a name\""),
                "backends.a.tls.server_name",
            ),
            (&format!("ca = \"{ca}\"\ncert = \"{ca}\""), "backends.a.tls.key"),
            ("ca = \"does-not-exist/ca.pem\"", "backends.a.tls.ca"),
        ];
        for (table, key) in cases {
            let error = with(table).expect_err(table);
            assert_eq!(error.key(), Some(key), "{table}: {error}");
        }
    }

    #[test]
    fn mysql_backends_with_tls_need_the_mysql_mode() {
        let pki = pki("sy-cfg-tls-mysql");
        let text = format!(
            "[check]\nkind = \"mysql\"\nuser = \"monitor\"\n[backends.db]\naddress = \"127.0.0.1:3307\"\n\
             [backends.db.tls]\nca = \"{}\"\n[pools.db]\nbackends = [\"db\"]\n\
             [listeners.sql]\nlisten = \"127.0.0.1:0\"\npool = \"db\"\n",
            s(&pki.ca_file)
        );
        let error = parse(&text).expect_err("tcp mode to a MySQL backend with TLS");
        assert_eq!(error.key(), Some("listeners.sql.mode"), "{error}");
        assert!(error.to_string().contains("backends.db.tls"), "{error}");
        let config = parse(&text.replace("pool = \"db\"\n", "pool = \"db\"\nmode = \"mysql\"\n")).unwrap();
        assert_eq!(config.listeners[0].mode, ListenerMode::Mysql);
        // In mysql mode the backend's TLS starts inside the protocol: only the MySQL
        // check can follow it.
        let tcp_checked = text
            .replace("pool = \"db\"\n", "pool = \"db\"\nmode = \"mysql\"\n")
            .replace("kind = \"mysql\"\nuser = \"monitor\"", "kind = \"tcp\"");
        let error = parse(&tcp_checked).expect_err("a TCP check on a MySQL TLS backend");
        assert_eq!(error.key(), Some("backends.db.check.kind"), "{error}");
        // TLS from the first byte in front of MySQL backends: no MySQL client does that.
        let cert = pki
            .ca
            .server(&["db.example"])
            .unwrap()
            .write(&pki.dir, "front")
            .unwrap();
        let tls_first = format!(
            "{}[listeners.sql.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            text.replace(&format!("[backends.db.tls]\nca = \"{}\"\n", s(&pki.ca_file)), ""),
            s(&cert.cert),
            s(&cert.key)
        );
        let error = parse(&tls_first).expect_err("tcp-mode TLS in front of MySQL");
        assert_eq!(error.key(), Some("listeners.sql.mode"), "{error}");
        assert!(error.to_string().contains("inside the protocol"), "{error}");
    }
}
