//! `[log]`: its defaults, its values, and mistakes named by key.

use super::*;

fn with_log(body: &str) -> Result<Config, ConfigError> {
    parse(&format!("{BASE}\n[log]\n{body}\n"))
}

#[test]
fn without_a_log_section_text_at_info_with_every_session_logged() {
    let config = parse(BASE).unwrap();
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert!(config.log.access.enabled);
    assert_eq!(config.log.access.sample.get(), 1.0);
}

#[test]
fn every_key_is_read() {
    let config =
        with_log("format = \"json\"\nlevel = \"warn,switchyard::access=info\"\naccess = false\naccess_sample = 0.25")
            .unwrap();
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "warn,switchyard::access=info");
    assert!(!config.log.access.enabled);
    assert_eq!(config.log.access.sample.get(), 0.25);
}

#[test]
fn mistakes_name_their_key() {
    let cases = [
        ("format = \"xml\"", "log.format"),
        ("level = \"loud\"", "log.level"),
        ("level = \"\"", "log.level"),
        ("access_sample = 1.5", "log.access_sample"),
        ("access_sample = -0.1", "log.access_sample"),
        ("acess = true", "acess"),
    ];
    for (body, key) in cases {
        let err = with_log(body).expect_err(body).to_string();
        assert!(err.contains(key), "{body}: {err}");
    }
}
