//! `[pools.NAME.switchover]`: an orchestrated MySQL switchover's accounts and bounds.

use super::*;

const SWITCHOVER: &str = "\n[pools.writer.switchover]\nuser = \"orchestrator\"\npassword = \"0rch\"\n\
                          replication_user = \"repl\"\nreplication_password = \"r3pl\"\n";

fn with(extra: &str) -> String {
    // The section goes right after the writer pool, before `[pools.reader]`.
    MYSQL.replacen("\n[pools.reader]", &format!("{SWITCHOVER}{extra}\n[pools.reader]"), 1)
}

#[test]
fn the_section_is_optional_and_has_defaults() {
    let config = parse(MYSQL).unwrap();
    assert!(config.pools.iter().all(|p| p.switchover.is_none()));
    let config = parse(&with("")).unwrap();
    let writer = config.pools.iter().find(|p| p.name == "writer").unwrap();
    let s = writer.switchover.clone().expect("a switchover");
    assert_eq!((s.user.as_str(), s.replication_user.as_str()), ("orchestrator", "repl"));
    assert_eq!(s.password.unwrap().expose(), "0rch");
    assert_eq!(s.replication_password.unwrap().expose(), "r3pl");
    assert_eq!(s.drain, defaults::SWITCHOVER_DRAIN);
    assert_eq!(s.catch_up_timeout, defaults::SWITCHOVER_CATCH_UP);
    assert_eq!(s.route_timeout, defaults::SWITCHOVER_ROUTE);
    assert_eq!(s.statement_timeout, defaults::SWITCHOVER_STATEMENT);
    assert!(!format!("{config:?}").contains("r3pl"), "secrets are never printed");
}

#[test]
fn every_setting_is_read() {
    let text =
        with("drain = \"2s\"\ncatch_up_timeout = \"3s\"\nroute_timeout = \"4s\"\nstatement_timeout = \"500ms\"\n");
    let config = parse(&text).unwrap();
    let s = config.pools.iter().find_map(|p| p.switchover.clone()).unwrap();
    assert_eq!(s.drain, Duration::from_secs(2));
    assert_eq!(s.catch_up_timeout, Duration::from_secs(3));
    assert_eq!(s.route_timeout, Duration::from_secs(4));
    assert_eq!(s.statement_timeout, Duration::from_millis(500));
    assert_eq!(s.hold(), Duration::from_secs(13));
}

#[test]
fn each_mistake_names_its_key() {
    let cases = [
        ("user = \"orchestrator\"\n", "", "pools.writer.switchover.user"),
        (
            "replication_user = \"repl\"\n",
            "",
            "pools.writer.switchover.replication_user",
        ),
        (
            "password = \"0rch\"\n",
            "password = \"0rch\"\npassword_env = \"HOME\"\n",
            "pools.writer.switchover.password",
        ),
        (
            "user = \"orchestrator\"\n",
            "user = \"\"\n",
            "pools.writer.switchover.user",
        ),
        (
            "password = \"0rch\"\n",
            "password = \"0rch\"\ndrain = \"0s\"\n",
            "pools.writer.switchover.drain",
        ),
        (
            "password = \"0rch\"\n",
            "password = \"0rch\"\ncatch_up_timeout = \"10m\"\n",
            "pools.writer.switchover",
        ),
    ];
    for (find, replace, key) in cases {
        let text = with("").replacen(find, replace, 1);
        let err = parse(&text).expect_err("config should be refused");
        assert_eq!(err.key(), Some(key), "{replace:?}: {err}");
    }
    let typo = parse(&with("colour = \"blue\"\n")).unwrap_err().to_string();
    assert!(typo.contains("unknown field `colour`"), "{typo}");
    // Only a primary pool of MySQL members switches over.
    let on_reader = MYSQL.replacen(
        "\n[listeners.w]",
        &format!("{}\n[listeners.w]", SWITCHOVER.replace("pools.writer", "pools.reader")),
        1,
    );
    assert_eq!(parse(&on_reader).unwrap_err().key(), Some("pools.reader.switchover"));
}
