//! Certificate and key mistakes, and the TLS config rules, each named by key and file.

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
    assert_eq!(tls.server_name(), "127.0.0.1", "defaults to the address's host");
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
