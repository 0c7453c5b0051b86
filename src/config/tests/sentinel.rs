//! `[pools.NAME.sentinel]`: the Sentinels a primary Redis pool needs the word of.

use super::*;

const SENTINEL: &str = "\n[pools.writer.sentinel]\nsentinels = [\"127.0.0.1:26411\", \"localhost:26412\"]\n\
                        master_name = \"labmaster\"\n";

/// The MongoDB example as Redis, with `extra` appended to the writer's sentinel section.
fn with(extra: &str) -> String {
    MONGO
        .replace("kind = \"mongo\"", "kind = \"redis\"")
        .replace("set_name = \"rs0\"\n", "")
        .replacen("\n[pools.reader]", &format!("{SENTINEL}{extra}\n[pools.reader]"), 1)
}

#[test]
fn the_section_is_read_with_its_defaults() {
    let config = parse(&with("")).unwrap();
    let writer = config.pools.iter().find(|p| p.name == "writer").unwrap();
    let s = writer.sentinel.clone().expect("a sentinel section");
    assert_eq!(s.sentinels, ["127.0.0.1:26411", "localhost:26412"]);
    assert_eq!(s.master_name, "labmaster");
    assert_eq!((s.user, s.password), (None, None));
    assert_eq!(
        (s.timeout, s.interval),
        (defaults::SENTINEL_TIMEOUT, defaults::SENTINEL_INTERVAL)
    );
    let text = with("user = \"watcher\"\npassword = \"s3nt\"\ntimeout = \"300ms\"\ninterval = \"2s\"\n");
    let config = parse(&text).unwrap();
    let s = config.pools.iter().find_map(|p| p.sentinel.clone()).unwrap();
    assert_eq!(s.user.as_deref(), Some("watcher"));
    assert_eq!(s.password.as_ref().map(|p| p.expose()), Some("s3nt"));
    assert_eq!(
        (s.timeout, s.interval),
        (Duration::from_millis(300), Duration::from_secs(2))
    );
    assert!(!format!("{config:?}").contains("s3nt"), "secrets are never printed");
    assert!(parse(&with("").replace("localhost:26412", "[::1]:26412")).is_ok());
}

#[test]
fn each_mistake_names_its_key() {
    let cases = [
        ("master_name = \"labmaster\"\n", "", "pools.writer.sentinel.master_name"),
        (
            "master_name = \"labmaster\"\n",
            "master_name = \"\"\n",
            "pools.writer.sentinel.master_name",
        ),
        (
            "sentinels = [\"127.0.0.1:26411\", \"localhost:26412\"]\n",
            "sentinels = []\n",
            "pools.writer.sentinel.sentinels",
        ),
        (
            "\"localhost:26412\"",
            "\"localhost\"",
            "pools.writer.sentinel.sentinels",
        ),
        ("\"localhost:26412\"", "\"h:0\"", "pools.writer.sentinel.sentinels"),
        (
            "\"localhost:26412\"",
            "\"::1:26412\"",
            "pools.writer.sentinel.sentinels",
        ),
        (
            "master_name = \"labmaster\"\n",
            "master_name = \"labmaster\"\nuser = \"watcher\"\n",
            "pools.writer.sentinel.user",
        ),
        (
            "master_name = \"labmaster\"\n",
            "master_name = \"labmaster\"\npassword = \"a\"\npassword_env = \"HOME\"\n",
            "pools.writer.sentinel.password",
        ),
        (
            "master_name = \"labmaster\"\n",
            "master_name = \"labmaster\"\ntimeout = \"0s\"\n",
            "pools.writer.sentinel.timeout",
        ),
    ];
    for (find, replace, key) in cases {
        let text = with("").replacen(find, replace, 1);
        assert_ne!(text, with(""), "{find:?} not found");
        let err = parse(&text).expect_err("config should be refused");
        assert_eq!(err.key(), Some(key), "{replace:?}: {err}");
    }
    let typo = parse(&with("colour = \"blue\"\n")).unwrap_err().to_string();
    assert!(typo.contains("unknown field `colour`"), "{typo}");
    // Only a primary pool of Redis members asks the Sentinels.
    let on_reader = with("").replacen(SENTINEL, "", 1) + &SENTINEL.replace("writer", "reader");
    assert_eq!(parse(&on_reader).unwrap_err().key(), Some("pools.reader.sentinel"));
    let on_mongo = MONGO.replacen("\n[pools.reader]", &format!("{SENTINEL}\n[pools.reader]"), 1);
    assert_eq!(parse(&on_mongo).unwrap_err().key(), Some("pools.writer.sentinel"));
}
