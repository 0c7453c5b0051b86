//! MySQL's in-protocol TLS through the `mysql` listener mode, against a real MariaDB
//! without TLS and one that has a certificate of its own: the `mariadb` client with `--ssl --ssl-ca
//! --ssl-verify-server-cert` and mysql_async with TLS through the proxy, the backend
//! leg in clear and over its own TLS, `require_tls` refusing a client without TLS,
//! and a monitor with the wrong CA failing at L6.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use support::tls::*;
use support::*;
use switchyard::health::{Layer, Status};
use switchyard_lab::mariadb::{Cluster, APP_PASSWORD, APP_USER, MONITOR_PASSWORD, MONITOR_USER};
use switchyard_test_support as support;

/// The `mariadb` client through `port`, as `app`; returns (success, stdout, stderr).
async fn mariadb(port: u16, tls: &[&str], sql: &str) -> (bool, String, String) {
    mariadb_as(port, APP_USER, APP_PASSWORD, tls, sql).await
}

/// The `mariadb` client through `port` as `user`, in database `appdb`.
async fn mariadb_as(port: u16, user: &str, password: &str, tls: &[&str], sql: &str) -> (bool, String, String) {
    let mut command = Command::new("mariadb");
    command
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "--protocol=TCP",
        ])
        .args([&format!("-u{user}"), &format!("-p{password}"), "--connect-timeout=10"])
        .args(tls)
        .args(["appdb", "-e", sql]);
    run(command).await
}

async fn mysql_async_conn(port: u16, ca: Option<&Path>) -> mysql_async::Result<Conn> {
    let ssl = ca.map(|ca| {
        SslOpts::default()
            .with_root_certs(vec![ca.to_path_buf().into()])
            .with_disable_built_in_roots(true)
    });
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some("appdb"))
        .prefer_socket(false)
        .ssl_opts(ssl);
    match tokio::time::timeout(Duration::from_secs(15), Conn::new(opts)).await {
        Ok(result) => result,
        Err(_) => Err(mysql_async::Error::Other("connect through the proxy timed out".into())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_clients_negotiate_tls_with_the_proxy_inside_the_protocol() {
    let dir = cert_dir("sy-mysql-tls");
    let (proxy_ca, proxy_ca_file) = ca(&dir, "proxy");
    let (db_ca, db_ca_file) = ca(&dir, "db");
    let front = server_cert(&proxy_ca, &dir, "front", &["proxy.example", "localhost"]);
    let db = server_cert(&db_ca, &dir, "db", &["db1.internal"]);
    let server_tls = format!(
        "ssl_cert = {}\nssl_key = {}\nssl_ca = {}\n",
        path_text(&db.cert),
        path_text(&db.key),
        path_text(&db_ca_file)
    );
    // Two servers: one with no TLS at all, one with a certificate of its own.
    let (plain, cluster) =
        tokio::task::spawn_blocking(move || (Cluster::start(1), Cluster::start_with(1, &server_tls)))
            .await
            .unwrap();
    let plain = plain.expect("MariaDB without TLS starts");
    let cluster = cluster.expect("MariaDB with TLS starts");
    let (clear_addr, addr) = (plain.node(0).addr(), cluster.node(0).addr());
    let on_both = |sql: &str| {
        tokio::task::block_in_place(|| {
            plain.sql(0, sql)?;
            cluster.sql(0, sql)
        })
    };
    let listener = |name: &str, pool: &str, extra: &str| {
        tls_listener(name, "127.0.0.1:0", pool, "mode = \"mysql\"", &front, &[], extra)
    };
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\
         [check]\nkind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n\
         interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"2s\"\nrise = 1\nfall = 1\n\
         [backends.clear]\naddress = \"{clear_addr}\"\n\
         [backends.secure]\naddress = \"{addr}\"\n[backends.secure.tls]\nca = \"{}\"\nserver_name = \"db1.internal\"\n\
         [backends.wrong_ca]\naddress = \"{addr}\"\n[backends.wrong_ca.tls]\nca = \"{}\"\nserver_name = \"db1.internal\"\n\
         [pools.clear]\nbackends = [\"clear\"]\n[pools.secure]\nbackends = [\"secure\"]\n[pools.wrong]\nbackends = [\"wrong_ca\"]\n\
         {}{}{}",
        path_text(&db_ca_file),
        path_text(&proxy_ca_file),
        listener("to_clear", "clear", ""),
        listener("to_secure", "secure", ""),
        listener("optional", "clear", "require_tls = false"),
    ) + &listener("optional_secure", "secure", "require_tls = false");
    let proxy = proxy(&text).await;
    await_pool(&proxy, "clear", &["clear"]).await;
    await_pool(&proxy, "secure", &["secure"]).await;
    let port = |name: &str| proxy.listener(name).unwrap().port();
    let verified = [
        "--ssl",
        "--ssl-ca",
        &path_text(&proxy_ca_file),
        "--ssl-verify-server-cert",
    ];
    let verified = verified.map(String::from);
    let verified: Vec<&str> = verified.iter().map(String::as_str).collect();

    // The mariadb client, TLS to the proxy, verified; the backend leg in clear.
    let sql = "SHOW STATUS LIKE 'Ssl_cipher'; SELECT 40 + 2 AS answer; \\s";
    let (ok, out, err) = mariadb(port("to_clear"), &verified, sql).await;
    assert!(ok, "{err}");
    assert!(out.contains("Ssl_cipher"), "SHOW STATUS answered: {out}");
    assert!(out.contains("answer\n42"), "queries work: {out}");
    let client_cipher = out
        .lines()
        .find(|l| l.starts_with("SSL:"))
        .unwrap_or_else(|| panic!("no SSL line in status: {out}"));
    assert!(
        client_cipher.contains("Cipher in use is"),
        "the client's leg is TLS: {out}"
    );
    let backend_cipher = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("Ssl_cipher"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(backend_cipher(&out), "", "the backend leg is in clear: {out}");

    // Same client, the backend leg over MariaDB's own TLS (verified against its CA).
    let (ok, out, err) = mariadb(port("to_secure"), &verified, sql).await;
    eprintln!("mariadb client through the proxy, TLS on both legs:\n{out}");
    assert!(ok, "{err}");
    assert!(out.contains("Cipher in use is"), "{out}");
    assert!(!backend_cipher(&out).is_empty(), "the backend leg is TLS too: {out}");

    // A client that does not ask for TLS is refused, with the server error it knows.
    let (ok, _, err) = mariadb(port("to_clear"), &["--skip-ssl"], "SELECT 1").await;
    assert!(!ok, "a client without TLS must be refused");
    assert!(err.contains("3159") && err.contains("require_tls"), "{err}");
    let refused = mysql_async_conn(port("to_clear"), None).await.expect_err("refused");
    assert!(
        matches!(&refused, mysql_async::Error::Server(e) if e.code == 3159),
        "{refused:?}"
    );
    // ... unless require_tls is off: then its login passes in clear.
    let (ok, out, err) = mariadb(port("optional"), &["--skip-ssl"], "SELECT 7 AS seven").await;
    assert!(ok && out.contains("seven\n7"), "{out}{err}");

    // A multi-packet login (ed25519: the server switches the client to another auth
    // plugin mid-login) on every combination of legs, so every sequence-id shift is
    // exercised: TLS→clear (+1), TLS→TLS (0), clear→TLS (−1), clear→clear (0).
    on_both(
        "INSTALL SONAME 'auth_ed25519';
         CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpass');
         GRANT ALL ON appdb.* TO 'ed'@'%';",
    )
    .expect("ed25519 user");
    for (listener, tls) in [
        ("to_clear", &verified[..]),
        ("to_secure", &verified[..]),
        ("optional_secure", &["--skip-ssl"][..]),
        ("optional", &["--skip-ssl"][..]),
    ] {
        let (ok, out, err) = mariadb_as(port(listener), "ed", "edpass", tls, "SELECT CURRENT_USER() AS who").await;
        assert!(ok && out.contains("ed@%"), "{listener}: {out}{err}");
        let (ok, _, err) = mariadb(port(listener), tls, "SELECT 1").await;
        assert!(ok, "{listener} with the app user: {err}");
    }
    let (ok, _, err) = mariadb_as(port("to_secure"), "ed", "wrong", &verified, "SELECT 1").await;
    assert!(
        !ok && err.contains("1045"),
        "a wrong password gets the server's own refusal: {err}"
    );

    // PAM makes the server switch the client to the `dialog` plugin, which sends the
    // password itself. Over a TLS client leg and a plaintext backend leg the proxy
    // refuses before the password leaves; with TLS on both legs the exchange passes
    // through to the server (whose PAM then judges it).
    on_both(
        "INSTALL SONAME 'auth_pam_v1';
         CREATE USER 'pamuser'@'%' IDENTIFIED VIA pam USING 'switchyard-test';",
    )
    .expect("PAM user");
    let pam_login = |listener: &str| mariadb_as(port(listener), "pamuser", "pampass", &verified, "SELECT 1");
    let (ok, _, err) = pam_login("to_clear").await;
    assert!(!ok && err.contains("1045"), "{err}");
    assert!(err.contains("dialog would send the password in clear"), "{err}");
    let (ok, _, err) = pam_login("to_secure").await;
    assert!(!ok, "PAM has no such service here: {err}");
    assert!(
        !err.contains("switchyard"),
        "the server, not the proxy, answered: {err}"
    );
    assert!(
        metric(
            &proxy,
            "switchyard_mysql_login_failures_total{listener=\"to_clear\",reason=\"cleartext\"}"
        )
        .await
            >= 1.0
    );

    // mysql_async with TLS, verifying the proxy's certificate for 127.0.0.1, on both
    // kinds of backend leg; several round trips and a transaction.
    for listener in ["to_clear", "to_secure"] {
        let mut conn = mysql_async_conn(port(listener), Some(&proxy_ca_file))
            .await
            .unwrap_or_else(|e| panic!("{listener}: {e}"));
        let mut tx = conn.start_transaction(Default::default()).await.unwrap();
        tx.exec_drop("INSERT INTO kv (v, server_id) VALUES (?, @@server_id)", (listener,))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let n: Option<u64> = conn
            .exec_first("SELECT COUNT(*) FROM kv WHERE v = ?", (listener,))
            .await
            .unwrap();
        assert_eq!(n, Some(1), "{listener}");
        let cipher: Option<(String, String)> = conn.query_first("SHOW STATUS LIKE 'Ssl_cipher'").await.unwrap();
        let cipher = cipher.map(|(_, v)| v).unwrap_or_default();
        assert_eq!(
            cipher.is_empty(),
            listener == "to_clear",
            "{listener}: backend cipher {cipher:?}"
        );
        conn.disconnect().await.unwrap();
    }

    // The monitor with the wrong CA for MariaDB's certificate: down, at L6.
    let view = await_status(&proxy, "wrong_ca", Status::Down).await;
    let last = view.last_check.expect("checked");
    assert_eq!(last.layer, Some(Layer::L6), "{last:?}");
    assert_eq!(proxy.backend("secure").unwrap().view().status, Status::Up);
    proxy.shutdown().await;
    tokio::task::block_in_place(|| drop((plain, cluster)));
}
