//! `[cluster]`: the fleet through etcd, and `on_store_lost`.

use super::*;

const CLUSTER: &str = "\n[cluster]\nname = \"proxy-a\"\netcd = [\"127.0.0.1:2379\", \"http://127.0.0.1:2479\"]\n";

const PRIMARY: &str = r#"
[check]
kind = "mysql"
user = "monitor"
password = "secret"

[backends.db1]
address = "127.0.0.1:3306"

[pools.writer]
backends = ["db1"]
role = "primary"

[listeners.writer]
listen = "127.0.0.1:0"
pool = "writer"
"#;

#[test]
fn the_section_is_optional_and_has_defaults() {
    assert_eq!(parse(BASE).unwrap().cluster, None);
    let config = parse(&format!("{BASE}{CLUSTER}")).unwrap();
    let cluster = config.cluster.expect("a cluster");
    assert_eq!(cluster.name, "proxy-a");
    assert_eq!(cluster.etcd, ["127.0.0.1:2379", "http://127.0.0.1:2479"]);
    assert_eq!(cluster.prefix, defaults::CLUSTER_PREFIX);
    assert_eq!(cluster.lease_ttl, defaults::LEASE_TTL);
    assert_eq!(cluster.timeout, defaults::STORE_TIMEOUT);
    assert!(cluster.shared_checks);
    assert_eq!(cluster.light_interval, defaults::LIGHT_INTERVAL);
    assert_eq!(cluster.verdict_key("writer"), "/switchyard/pools/writer/primary");
    assert_eq!((cluster.user, cluster.password, cluster.tls), (None, None, None));
    let pool = parse(&format!("{PRIMARY}{CLUSTER}")).unwrap().pools[0].clone();
    assert_eq!(pool.on_store_lost, OnStoreLost::Hold);
}

#[test]
fn every_setting_is_read() {
    let text = format!(
        "{PRIMARY}{CLUSTER}prefix = \"/sy/prod\"\nlease_ttl = \"6s\"\ntimeout = \"2s\"\nshared_checks = false\n\
         light_interval = \"750ms\"\nuser = \"switchyard\"\npassword = \"etcd-secret\"\n"
    )
    .replace("role = \"primary\"", "role = \"primary\"\non_store_lost = \"local\"");
    let config = parse(&text).unwrap();
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.prefix, "/sy/prod");
    assert_eq!(cluster.lease_ttl, Duration::from_secs(6));
    assert_eq!(cluster.timeout, Duration::from_secs(2));
    assert!(!cluster.shared_checks);
    assert_eq!(cluster.light_interval, Duration::from_millis(750));
    assert_eq!(cluster.user.as_deref(), Some("switchyard"));
    assert_eq!(cluster.password.unwrap().expose(), "etcd-secret");
    assert_eq!(config.pools[0].on_store_lost, OnStoreLost::Local);
}

#[test]
fn mistakes_name_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("name = \"proxy-a\"", "name = \"\"", "cluster.name"),
        ("name = \"proxy-a\"", "name = \"a b\"", "cluster.name"),
        (
            "etcd = [\"127.0.0.1:2379\", \"http://127.0.0.1:2479\"]",
            "etcd = []",
            "cluster.etcd",
        ),
        (
            "etcd = [\"127.0.0.1:2379\", \"http://127.0.0.1:2479\"]",
            "etcd = [\"etcd1\"]",
            "cluster.etcd",
        ),
        (
            "name = \"proxy-a\"",
            "name = \"proxy-a\"\nprefix = \"/sy/\"",
            "cluster.prefix",
        ),
        (
            "name = \"proxy-a\"",
            "name = \"proxy-a\"\nlease_ttl = \"1s\"",
            "cluster.lease_ttl",
        ),
        (
            "name = \"proxy-a\"",
            "name = \"proxy-a\"\nlease_ttl = \"2500ms\"",
            "cluster.lease_ttl",
        ),
        (
            "name = \"proxy-a\"",
            "name = \"proxy-a\"\ntimeout = \"3s\"",
            "cluster.timeout",
        ),
        ("name = \"proxy-a\"", "name = \"proxy-a\"\nuser = \"u\"", "cluster.user"),
        (
            "name = \"proxy-a\"",
            "name = \"proxy-a\"\npassword = \"p\"",
            "cluster.user",
        ),
        (
            "name = \"proxy-a\"",
            "name = \"proxy-a\"\nlight_interval = \"10ms\"",
            "cluster.light_interval",
        ),
        (
            "etcd = [\"127.0.0.1:2379\", \"http://127.0.0.1:2479\"]",
            "etcd = [\"127.0.0.1:2379\"]\ntls = { insecure = true }",
            "cluster.tls.insecure",
        ),
        (
            "etcd = [\"127.0.0.1:2379\", \"http://127.0.0.1:2479\"]",
            "etcd = [\"127.0.0.1:2379\"]\ntls = { server_name = \"etcd\" }",
            "cluster.tls.ca",
        ),
        (
            "etcd = [\"127.0.0.1:2379\", \"http://127.0.0.1:2479\"]",
            "etcd = [\"127.0.0.1:2379\"]\ntls = { ca = \"/nonexistent/ca.pem\" }",
            "cluster.tls.ca",
        ),
    ];
    let text = format!("{BASE}{CLUSTER}");
    for (find, replace, key) in cases {
        let err = parse(&text.replacen(find, replace, 1)).expect_err(replace);
        assert_eq!(err.key(), Some(*key), "{replace}: {err}");
    }
    let err = parse(&format!("{BASE}{CLUSTER}bogus = 1\n")).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn names_in_a_cluster_are_key_parts() {
    let text = format!("{PRIMARY}{CLUSTER}")
        .replace("[pools.writer]", "[pools.\"a/b\"]")
        .replace("pool = \"writer\"", "pool = \"a/b\"");
    assert_eq!(parse(&text).unwrap_err().key(), Some("pools.a/b"));
    assert!(
        parse(
            &PRIMARY
                .replace("[pools.writer]", "[pools.\"a/b\"]")
                .replace("pool = \"writer\"", "pool = \"a/b\"")
        )
        .is_ok(),
        "fine without a cluster"
    );
}

#[test]
fn on_store_lost_needs_a_cluster_and_a_primary_pool() {
    let local = PRIMARY.replace("role = \"primary\"", "role = \"primary\"\non_store_lost = \"local\"");
    let err = parse(&local).unwrap_err();
    assert_eq!(err.key(), Some("pools.writer.on_store_lost"), "{err}");
    let replica =
        format!("{PRIMARY}{CLUSTER}").replace("role = \"primary\"", "role = \"replica\"\non_store_lost = \"hold\"");
    let err = parse(&replica).unwrap_err();
    assert_eq!(err.key(), Some("pools.writer.on_store_lost"), "{err}");
    let misspelt =
        format!("{PRIMARY}{CLUSTER}").replace("role = \"primary\"", "role = \"primary\"\non_store_lost = \"wait\"");
    let err = parse(&misspelt).unwrap_err();
    assert_eq!(err.key(), Some("pools.writer.on_store_lost"), "{err}");
}
