//! `kind = "galera"` checks and the pools over them.

use super::*;

/// The MongoDB example as a Galera cluster of two nodes.
fn galera() -> String {
    MONGO
        .replace(
            "kind = \"mongo\"",
            "kind = \"galera\"\nuser = \"monitor\"\npassword = \"pw\"",
        )
        .replace("set_name = \"rs0\"\n", "")
}

#[test]
fn galera_checks_log_in_like_mysql_and_mark_their_pools() {
    let config = parse(&galera()).unwrap();
    match &config.backends[0].check.probe {
        ProbeConfig::Galera(login) => {
            assert_eq!(login.user, "monitor");
            assert_eq!(login.password.as_ref().map(|p| p.expose()), Some("pw"));
        }
        other => panic!("a galera probe, got {other:?}"),
    }
    assert!(config.pools.iter().all(|p| p.galera && !p.donor_ok));
    let tolerant = galera().replacen("role = \"primary\"\n", "role = \"primary\"\ndonor_ok = true\n", 1);
    let config = parse(&tolerant).unwrap();
    let writer = config.pools.iter().find(|p| p.name == "writer").unwrap();
    assert!(writer.donor_ok);
    assert!(!parse(MONGO).unwrap().pools.iter().any(|p| p.galera));
}

#[test]
fn galera_mistakes_name_their_key() {
    let no_user = galera().replace("user = \"monitor\"\n", "");
    assert_eq!(parse(&no_user).unwrap_err().key(), Some("backends.m1.check.user"));
    // A pool mixing Galera and other members.
    let mixed = galera().replacen(
        "[backends.m2]\naddress = \"127.0.0.1:27102\"\n",
        "[backends.m2]\naddress = \"127.0.0.1:27102\"\ncheck = { kind = \"mysql\" }\n",
        1,
    );
    assert_ne!(mixed, galera());
    assert_eq!(parse(&mixed).unwrap_err().key(), Some("pools.reader.backends"));
    // donor_ok only on a Galera pool.
    let on_mongo = MONGO.replacen("role = \"primary\"\n", "role = \"primary\"\ndonor_ok = true\n", 1);
    assert_eq!(parse(&on_mongo).unwrap_err().key(), Some("pools.writer.donor_ok"));
}
