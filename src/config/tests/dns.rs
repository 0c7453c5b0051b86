//! Host-named backends: `[dns]`, `resolve`, and one member per address.

use std::net::SocketAddr;

use super::*;

const NAMED: &str = "[dns]\nservers = [\"127.0.0.1:1\"]\ntimeout = \"200ms\"\n\
                     [backends.db]\naddress = \"db.lab.test:3306\"\n\
                     [backends.ip]\naddress = \"127.0.0.9:3306\"\n\
                     [pools.p]\nbackends = [\"ip\", \"db\"]\n\
                     [listeners.l]\nlisten = \"127.0.0.1:0\"\npool = \"p\"\n";

fn at(addresses: &[&str]) -> Resolved {
    let addresses: Vec<SocketAddr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
    Resolved::from([("db".to_string(), addresses)])
}

#[test]
fn a_host_name_is_one_member_per_address_with_its_settings() {
    let config = Config::parse_resolved(NAMED, "t.toml", &at(&["127.0.0.2:3306"])).unwrap();
    assert_eq!(config.dns.servers, ["127.0.0.1:1".parse::<SocketAddr>().unwrap()]);
    assert_eq!(config.dns.timeout, Duration::from_millis(200));
    let db = config.backend("db").expect("one address: the configured name");
    let resolve = db.resolve.clone().unwrap();
    assert_eq!(
        (resolve.host.as_str(), resolve.port, resolve.mode),
        ("db.lab.test", 3306, ResolveMode::Ttl)
    );
    assert_eq!(
        (resolve.min, resolve.max),
        (defaults::RESOLVE_MIN, defaults::RESOLVE_MAX)
    );
    assert!(config.backend("ip").unwrap().resolve.is_none());
    let two = Config::parse_resolved(NAMED, "t.toml", &at(&["127.0.0.3:3306", "127.0.0.2:3306"])).unwrap();
    assert_eq!(
        two.pools[0].members.names(),
        ["ip", "db@127.0.0.2:3306", "db@127.0.0.3:3306"],
        "in the pool's order, the addresses in theirs"
    );
    let tuned = NAMED.replace(
        "address = \"db.lab.test:3306\"\n",
        "address = \"db.lab.test:3306\"\nresolve_min = \"500ms\"\nresolve_max = \"5s\"\n",
    );
    let config = Config::parse_resolved(&tuned, "t.toml", &at(&["127.0.0.2:3306"])).unwrap();
    let resolve = config.backend("db").unwrap().resolve.clone().unwrap();
    assert_eq!(
        (resolve.min, resolve.max),
        (Duration::from_millis(500), Duration::from_secs(5))
    );
}

#[test]
fn dns_mistakes_name_their_key() {
    let resolved = at(&["127.0.0.2:3306"]);
    let cases = [
        (
            "servers = [\"127.0.0.1:1\"]",
            "servers = [\"dns.example\"]",
            "dns.servers",
        ),
        ("timeout = \"200ms\"", "timeout = \"0s\"", "dns.timeout"),
        (
            "address = \"127.0.0.9:3306\"\n",
            "address = \"127.0.0.9:3306\"\nresolve = \"ttl\"\n",
            "backends.ip.resolve",
        ),
        (
            "address = \"db.lab.test:3306\"\n",
            "address = \"db.lab.test:3306\"\nresolve_min = \"5s\"\nresolve_max = \"1s\"\n",
            "backends.db.resolve_max",
        ),
        ("\"db.lab.test:3306\"", "\"db.lab.test\"", "backends.db.address"),
        ("\"db.lab.test:3306\"", "\"db.lab.test:0\"", "backends.db.address"),
    ];
    for (find, replace, key) in cases {
        let text = NAMED.replacen(find, replace, 1);
        assert_ne!(text, NAMED, "{find:?} not found");
        let err = Config::parse_resolved(&text, "t.toml", &resolved).expect_err("config should be refused");
        assert_eq!(err.key(), Some(key), "{replace:?}: {err}");
    }
    // Without an answer to take, the name is looked up: nothing listens on port 1.
    let err = Config::parse(NAMED, "t.toml").unwrap_err();
    assert_eq!(err.key(), Some("backends.db.address"));
    assert!(err.to_string().contains("does not resolve"), "{err}");
    // A member's name taken by another backend.
    let clash = NAMED
        .replace("[backends.ip]", "[backends.\"db@127.0.0.2:3306\"]")
        .replace("\"ip\"", "\"db@127.0.0.2:3306\"");
    let two = at(&["127.0.0.2:3306", "127.0.0.3:3306"]);
    let err = Config::parse_resolved(&clash, "t.toml", &two).unwrap_err();
    assert_eq!(err.key(), Some("backends.db@127.0.0.2:3306"), "{err}");
}
