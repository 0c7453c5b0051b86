//! The validated model: serde spellings with their allowed values, one path for
//! `forward` and files, and equality by name (what a reload diffs).

use super::*;

#[test]
fn an_unknown_spelling_names_its_key_line_and_the_allowed_values() {
    let err = broken("policy = \"round-robin\"", "policy = \"random\"");
    let ConfigError::Value { key, line, reason, .. } = &err else {
        panic!("expected a value error, got {err:?}");
    };
    assert_eq!(key, "pools.web.policy");
    assert_eq!(*line, BASE.lines().position(|l| l.starts_with("policy")).unwrap() + 1);
    for allowed in ["first", "round-robin", "least-connections", "power-of-two"] {
        assert!(reason.contains(allowed), "{reason}");
    }
    let err = broken("[backends.a]", "[backends.a]\ncheck = { kind = \"smtp\" }");
    assert!(err.to_string().contains("`mysql`"), "{err}");
}

#[test]
fn secondary_is_another_spelling_of_replica() {
    let text = super::MYSQL.replace("role = \"replica\"", "role = \"secondary\"");
    let config = parse(&text).unwrap();
    assert_eq!(config.pool("reader").unwrap().role, PoolRole::Replica);
}

#[test]
fn forward_takes_the_file_defaults() {
    let listen: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let backends: Vec<SocketAddr> = vec!["127.0.0.1:9002".parse().unwrap(), "127.0.0.1:9001".parse().unwrap()];
    let forwarded = forward(listen, &backends, None).unwrap();
    let text = r#"
[shutdown]
grace = "10s"
[backends."127.0.0.1:9001"]
address = "127.0.0.1:9001"
[backends."127.0.0.1:9002"]
address = "127.0.0.1:9002"
[pools.forward]
backends = ["127.0.0.1:9002", "127.0.0.1:9001"]
[listeners.forward]
listen = "127.0.0.1:7000"
pool = "forward"
"#;
    let from_file = parse(text).unwrap();
    assert_eq!(forwarded.backends, from_file.backends);
    assert_eq!(forwarded.pools, from_file.pools);
    assert_eq!(forwarded.listeners, from_file.listeners);
    assert_eq!(forwarded.shutdown_grace, Duration::from_secs(10));
    assert_eq!(forwarded.pools[0].members.names(), ["127.0.0.1:9002", "127.0.0.1:9001"]);
}

#[test]
fn forward_refuses_a_backend_given_twice() {
    let listen: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let twice: Vec<SocketAddr> = vec!["127.0.0.1:9001".parse().unwrap(); 2];
    let err = forward(listen, &twice, None).unwrap_err();
    assert_eq!(err.key(), Some("--backend"), "{err}");
    assert_eq!(
        err.to_string(),
        "forward: --backend: expected each backend once, got 127.0.0.1:9001 twice"
    );
}

#[test]
fn items_compare_by_name_not_by_index() {
    let old = parse(BASE).unwrap();
    // A backend sorted before the others moves every index by one.
    let new = parse(&BASE.replace(
        "[backends.a]",
        "[backends.0]\naddress = \"127.0.0.1:9000\"\n\n[backends.a]",
    ))
    .unwrap();
    assert_ne!(old.backends.len(), new.backends.len());
    for name in ["a", "b"] {
        assert_eq!(old.backend(name), new.backend(name), "backend {name}");
    }
    assert_ne!(
        old.pool("web").unwrap().members[..],
        new.pool("web").unwrap().members[..]
    );
    assert_eq!(old.pool("web"), new.pool("web"), "same members by name");
    assert_eq!(old.listener("front"), new.listener("front"));

    let reordered = parse(&BASE.replace("backends = [\"b\", \"a\"]", "backends = [\"a\", \"b\"]")).unwrap();
    assert_ne!(
        old.pool("web"),
        reordered.pool("web"),
        "priority order is part of a pool"
    );
    let slower = parse(&BASE.replace("interval = \"500ms\"", "interval = \"600ms\"")).unwrap();
    assert_ne!(
        old.backend("a"),
        slower.backend("a"),
        "a changed check is a changed backend"
    );
}

#[test]
fn errors_never_show_a_secret() {
    let mistyped = super::MYSQL.replace("password = \"s3cret\"", "password = 987654321");
    let err = parse(&mistyped).unwrap_err();
    assert_eq!(err.key(), Some("check.password"), "{err}");
    assert!(!err.to_string().contains("987654321"), "{err}");
    let unterminated = super::MYSQL.replace("password = \"s3cret\"", "password = \"s3cret");
    let err = parse(&unterminated).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.to_string().contains("line "), "still says where: {err}");
    // Other lines are quoted as before.
    let err = parse(&BASE.replace("[pools.web]", "[pools.web")).unwrap_err();
    assert!(err.to_string().contains("[pools.web"), "{err}");
}
