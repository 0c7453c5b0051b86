//! TLS termination with real clients (curl, a rustls client), SNI, mTLS, bad input on
//! a TLS port, reload under live sessions (admin call and SIGHUP), and TLS to
//! backends with a right and a wrong CA. Certificates are issued per test (rcgen).

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use support::tls::*;
use support::*;
use switchyard::health::{Layer, Status};
use switchyard_lab::system;
use switchyard_lab::tls::Files;
use switchyard_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "tls-test-token";

fn app() -> Behavior {
    Behavior::App {
        banner: "app",
        healthy: Arc::new(AtomicBool::new(true)),
    }
}

/// A certificate renewal: `live` (the files a listener serves, from the old CA) and
/// `renewed` (the same name from the new CA), with both CA files.
struct Renewal {
    dir: std::path::PathBuf,
    old_ca: switchyard_lab::tls::Ca,
    old_ca_file: std::path::PathBuf,
    new_ca_file: std::path::PathBuf,
    live: Files,
    renewed: Files,
}

fn renewal(prefix: &str) -> Renewal {
    let dir = cert_dir(prefix);
    let (old_ca, old_ca_file) = ca(&dir, "old");
    let (new_ca, new_ca_file) = ca(&dir, "new");
    let live = server_cert(&old_ca, &dir, "live", &["a.example"]);
    let renewed = server_cert(&new_ca, &dir, "renewed", &["a.example"]);
    Renewal {
        dir,
        old_ca,
        old_ca_file,
        new_ca_file,
        live,
        renewed,
    }
}

/// Admin, one backend `app1` at `backend`, pool `app`, and the given listeners.
/// Metrics are process-wide and tests run in parallel: each test names its
/// listeners differently.
fn config(backend: std::net::SocketAddr, listeners: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n[shutdown]\ngrace = \"1s\"\n\
         [check]\nkind = \"tcp\"\ninterval = \"100ms\"\n\
         [backends.app1]\naddress = \"{backend}\"\n\
         [pools.app]\nbackends = [\"app1\"]\n\n{listeners}"
    )
}

#[tokio::test]
async fn curl_through_a_tls_listener_with_sni_and_mtls() {
    let dir = cert_dir("sy-tls-curl");
    let (ca_a, ca_a_file) = ca(&dir, "alpha");
    let (ca_b, ca_b_file) = ca(&dir, "bravo");
    let (client_ca, client_ca_file) = ca(&dir, "clients");
    let a = server_cert(&ca_a, &dir, "a", &["a.example"]);
    let b = server_cert(&ca_b, &dir, "b", &["b.example"]);
    let client = client_ca.client("learner").unwrap().write(&dir, "client").unwrap();
    let backend = Server::start(app()).await;
    let listeners = format!(
        "[listeners.web]\nlisten = \"127.0.0.1:0\"\npool = \"app\"\n[listeners.web.tls]\ncertificates = [\n\
         {{ cert = \"{}\", key = \"{}\", server_names = [\"a.example\"] }},\n\
         {{ cert = \"{}\", key = \"{}\", server_names = [\"b.example\"] }},\n]\n\
         {}",
        path_text(&a.cert),
        path_text(&a.key),
        path_text(&b.cert),
        path_text(&b.key),
        tls_listener(
            "mtls",
            "127.0.0.1:0",
            "app",
            "",
            &a,
            &[],
            &format!("client_ca = \"{}\"", path_text(&client_ca_file))
        )
    );
    let proxy = proxy(&config(backend.addr, &listeners)).await;
    await_routable(&proxy, &["app1"]).await;
    let web = proxy.listener("web").unwrap().port();
    let mtls = proxy.listener("mtls").unwrap().port();
    let url = |host: &str, port: u16| format!("https://{host}:{port}/health");
    let resolve = |host: &str, port: u16| format!("{host}:{port}:127.0.0.1");

    // Each name gets the certificate of its own CA: only that CA verifies it.
    for (host, right, wrong) in [
        ("a.example", &ca_a_file, &ca_b_file),
        ("b.example", &ca_b_file, &ca_a_file),
    ] {
        let with_ca = |ca: &std::path::Path| {
            let args = [
                "--cacert".into(),
                path_text(ca),
                "--resolve".into(),
                resolve(host, web),
                url(host, web),
            ];
            async move { curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
        };
        let (ok, body, err) = with_ca(right).await;
        assert!(ok, "{host} with its CA: {err}");
        assert_eq!(body, "ok", "{host}: the plaintext backend answered through TLS");
        let (ok, _, err) = with_ca(wrong).await;
        assert!(!ok, "{host} must not verify with the other CA");
        assert!(err.contains("certificate") || err.contains("SSL"), "{host}: {err}");
    }
    // TLS 1.2 works too; nothing older is offered.
    let (ok, _, err) = curl(&[
        "--tls-max",
        "1.2",
        "--cacert",
        &path_text(&ca_a_file),
        "--resolve",
        &resolve("a.example", web),
        &url("a.example", web),
    ])
    .await;
    assert!(ok, "TLS 1.2: {err}");
    let (ok, _, _) = curl(&[
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        "--cacert",
        &path_text(&ca_a_file),
        "--resolve",
        &resolve("a.example", web),
        &url("a.example", web),
    ])
    .await;
    assert!(!ok, "TLS 1.1 must be refused");

    // mTLS: no client certificate, no session; with one, the backend answers.
    let (ca_arg, resolve_arg, url_arg) = (
        path_text(&ca_a_file),
        resolve("a.example", mtls),
        url("a.example", mtls),
    );
    let (cert_arg, key_arg) = (path_text(&client.cert), path_text(&client.key));
    let base = ["--cacert", &ca_arg, "--resolve", &resolve_arg];
    let (ok, _, err) = curl(&[&base[..], &[&url_arg]].concat()).await;
    assert!(!ok, "a client without a certificate must be refused: {err}");
    let with_cert = [&base[..], &["--cert", &cert_arg, "--key", &key_arg, &url_arg]].concat();
    let (ok, body, err) = curl(&with_cert).await;
    assert!(ok && body == "ok", "with a client certificate: {err}");

    let handshakes = |listener: &str, version: &str, certificate: &str| {
        format!(
            "switchyard_tls_handshakes_total{{listener=\"{listener}\",version=\"{version}\",certificate=\"{certificate}\"}}"
        )
    };
    // A handshake the client aborts (wrong CA) does not complete on the server either.
    assert!(metric(&proxy, &handshakes("web", "TLSv1.3", "a.example")).await >= 1.0);
    assert!(metric(&proxy, &handshakes("web", "TLSv1.3", "b.example")).await >= 1.0);
    assert!(metric(&proxy, &handshakes("web", "TLSv1.2", "a.example")).await >= 1.0);
    assert!(metric(&proxy, &handshakes("mtls", "TLSv1.3", "default")).await >= 1.0);
    await_metric(
        &proxy,
        "switchyard_tls_handshake_failures_total{listener=\"mtls\",reason=\"rejected\"}",
        1.0,
    )
    .await;
    proxy.shutdown().await;
    backend.stop().await;
}

#[tokio::test]
async fn bad_input_on_a_tls_port_is_closed_counted_and_harmless() {
    let dir = cert_dir("sy-tls-bad");
    let (ca_a, ca_file) = ca(&dir, "alpha");
    let a = server_cert(&ca_a, &dir, "a", &["a.example"]);
    let backend = Server::start(Behavior::Echo("echo")).await;
    let listeners = tls_listener(
        "bad",
        "127.0.0.1:0",
        "app",
        "",
        &a,
        &[],
        "handshake_timeout = \"300ms\"",
    );
    let proxy = proxy(&config(backend.addr, &listeners)).await;
    await_routable(&proxy, &["app1"]).await;
    let web = proxy.listener("bad").unwrap();
    let connector = connector(&ca_file);

    // A good session, open across all of the bad ones.
    let mut good = within(LIMIT, "TLS connect", connect_tls(web, "a.example", &connector))
        .await
        .unwrap();
    let mut banner = [0u8; 5];
    within(LIMIT, "banner", good.read_exact(&mut banner)).await.unwrap();
    assert_eq!(&banner, b"echo\n");

    // Plaintext HTTP on the TLS port.
    let mut plain = TcpStream::connect(web).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    closes_with_nothing_useful(&mut plain, "plaintext on a TLS port").await;
    // A TLS record header announcing a ClientHello, then garbage.
    let mut garbage = TcpStream::connect(web).await.unwrap();
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c];
    hello.extend((0..60u8).map(|i| i.wrapping_mul(37)));
    garbage.write_all(&hello).await.unwrap();
    closes_with_nothing_useful(&mut garbage, "a garbage ClientHello").await;
    // Connects and says nothing: closed by the handshake timeout.
    let mut stalled = TcpStream::connect(web).await.unwrap();
    closes(&mut stalled, "a stalled handshake").await;

    let failures =
        |reason: &str| format!("switchyard_tls_handshake_failures_total{{listener=\"bad\",reason=\"{reason}\"}}");
    await_metric(&proxy, &failures("rejected"), 2.0).await;
    assert_eq!(await_metric(&proxy, &failures("timeout"), 1.0).await, 1.0);

    // The good session never noticed, and new ones still work.
    good.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    within(LIMIT, "echo", good.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"still here");
    let mut another = within(LIMIT, "TLS connect", connect_tls(web, "a.example", &connector))
        .await
        .unwrap();
    within(LIMIT, "banner", another.read_exact(&mut banner)).await.unwrap();
    let (_, status) = http_get(proxy.admin().unwrap(), "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        pool_status(&status, "app")["connect_us"]["count"],
        2,
        "no bad connection reached the backend: {status}"
    );
    proxy.shutdown().await;
    backend.stop().await;
}

/// The peer closes (end of stream, or a reset after its alert) within the limit, and
/// all it sent before is TLS alert records: nothing of the backend's.
async fn closes_with_nothing_useful(stream: &mut TcpStream, what: &str) {
    let mut got = Vec::new();
    match within(LIMIT, what, stream.read_to_end(&mut got)).await {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "{what}: closed with {e}, not a reset"
        ),
    }
    let mut rest = got.as_slice();
    while !rest.is_empty() {
        // An alert record: type 21, version 3.x, length 2, level and description.
        assert!(
            rest.len() >= 7 && rest[0] == 0x15 && rest[1] == 0x03 && rest[3..5] == [0, 2],
            "{what}: only TLS alerts may come back, got {got:?}"
        );
        rest = &rest[7..];
    }
}

/// Writes `a` over the live files, as an operator's renewal would.
fn install(from: &Files, to: &Files) {
    std::fs::copy(&from.cert, &to.cert).unwrap();
    std::fs::copy(&from.key, &to.key).unwrap();
}

async fn echo_roundtrip(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), text: &[u8]) {
    stream.write_all(text).await.unwrap();
    let mut back = vec![0u8; text.len()];
    within(LIMIT, "echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, text);
}

#[tokio::test]
async fn certificates_reload_under_live_sessions() {
    let Renewal {
        dir,
        old_ca,
        old_ca_file,
        new_ca_file,
        live,
        renewed,
    } = renewal("sy-tls-reload");
    let original = server_cert(&old_ca, &dir, "original", &["a.example"]);
    let backend = Server::start(Behavior::Echo("echo")).await;
    let listeners = tls_listener("reload", "127.0.0.1:0", "app", "", &live, &["a.example"], "");
    let proxy = proxy(&config(backend.addr, &listeners)).await;
    await_routable(&proxy, &["app1"]).await;
    let web = proxy.listener("reload").unwrap();
    let admin = proxy.admin().unwrap();
    let (old, new) = (connector(&old_ca_file), connector(&new_ca_file));

    let mut session = connect_tls(web, "a.example", &old).await.unwrap();
    let mut banner = [0u8; 5];
    within(LIMIT, "banner", session.read_exact(&mut banner)).await.unwrap();

    // Renewed files + reload: new handshakes get the new certificate, the live
    // session goes on with the keys it negotiated.
    install(&renewed, &live);
    assert_eq!(
        http_post(admin, "/tls/reload", None).await.0,
        401,
        "the token is required"
    );
    let (code, body) = http_post(admin, "/tls/reload", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    echo_roundtrip(&mut session, b"after the reload").await;
    let err = connect_tls(web, "a.example", &old)
        .await
        .expect_err("old CA no longer verifies");
    assert!(err.to_string().contains("certificate"), "{err}");
    let mut fresh = connect_tls(web, "a.example", &new).await.expect("new CA verifies");
    within(LIMIT, "banner", fresh.read_exact(&mut banner)).await.unwrap();

    // A broken file: the reload fails, says which file, and the current certificate
    // stays in service.
    std::fs::write(
        &live.key,
        "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (code, body) = http_post(admin, "/tls/reload", Some(TOKEN)).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains(&path_text(&live.key)), "the error names the file: {body}");
    // A key that belongs to another certificate is refused the same way.
    std::fs::copy(&original.key, &live.key).unwrap();
    let (code, body) = http_post(admin, "/tls/reload", Some(TOKEN)).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("does not match"), "{body}");
    connect_tls(web, "a.example", &new)
        .await
        .expect("still the renewed certificate");
    echo_roundtrip(&mut session, b"still alive").await;
    assert_eq!(
        metric(
            &proxy,
            "switchyard_tls_reloads_total{listener=\"reload\",outcome=\"failed\"}"
        )
        .await,
        2.0
    );
    proxy.shutdown().await;
    backend.stop().await;
}

#[tokio::test]
async fn sighup_reloads_certificates_in_the_binary() {
    let Renewal {
        dir,
        old_ca_file,
        new_ca_file,
        live,
        renewed,
        ..
    } = renewal("sy-tls-hup");
    let backend = Server::start(Behavior::Echo("echo")).await;
    let port = system::free_port().unwrap();
    let listeners = tls_listener("web", &format!("127.0.0.1:{port}"), "app", "", &live, &[], "");
    let config_file = dir.join("switchyard.toml");
    std::fs::write(&config_file, config(backend.addr, &listeners)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config", &path_text(&config_file)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn switchyard");
    let web: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let (old, new) = (connector(&old_ca_file), connector(&new_ca_file));
    let mut session = within(LIMIT, "the binary to serve TLS", async {
        loop {
            if let Ok(mut s) = connect_tls(web, "a.example", &old).await {
                let mut banner = [0u8; 5];
                if s.read_exact(&mut banner).await.is_ok() {
                    return s;
                }
            }
            poll_pause().await;
        }
    })
    .await;
    install(&renewed, &live);
    system::signal(child.id(), "HUP").unwrap();
    within(LIMIT, "the renewed certificate after SIGHUP", async {
        while connect_tls(web, "a.example", &new).await.is_err() {
            poll_pause().await;
        }
    })
    .await;
    echo_roundtrip(&mut session, b"through the reload").await;
    system::signal(child.id(), "TERM").unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    backend.stop().await;
}

#[tokio::test]
async fn backend_tls_verifies_the_server_and_a_wrong_ca_fails_at_l6() {
    let dir = cert_dir("sy-tls-origin");
    let (ca_a, ca_a_file) = ca(&dir, "alpha");
    let (ca_b, ca_b_file) = ca(&dir, "bravo");
    let front_cert = server_cert(&ca_a, &dir, "front", &["app.internal"]);
    // What `good` trusts: CA alpha now, rotated to bravo below.
    let good_ca_file = dir.join("good-ca.pem");
    std::fs::copy(&ca_a_file, &good_ca_file).unwrap();
    // The "TLS backend": a first switchyard terminating TLS in front of a plaintext app.
    let app_server = Server::start(app()).await;
    let tls_front = proxy(&config(
        app_server.addr,
        &tls_listener("tls", "127.0.0.1:0", "app", "", &front_cert, &[], ""),
    ))
    .await;
    let tls_addr = tls_front.listener("tls").unwrap();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n[shutdown]\ngrace = \"1s\"\n\
         [check]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ndown_interval = \"100ms\"\nrise = 1\nfall = 1\n\
         [backends.good]\naddress = \"{tls_addr}\"\n[backends.good.tls]\nca = \"{}\"\nserver_name = \"app.internal\"\n\
         [backends.wrong_ca]\naddress = \"{tls_addr}\"\n[backends.wrong_ca.tls]\nca = \"{}\"\nserver_name = \"app.internal\"\n\
         [backends.wrong_name]\naddress = \"{tls_addr}\"\n[backends.wrong_name.tls]\nca = \"{}\"\nserver_name = \"db.internal\"\n\
         [backends.lab]\naddress = \"{tls_addr}\"\n[backends.lab.tls]\ninsecure = true\n\
         [pools.app]\nbackends = [\"good\", \"wrong_ca\", \"wrong_name\", \"lab\"]\n\
         [listeners.plain]\nlisten = \"127.0.0.1:0\"\npool = \"app\"\n",
        path_text(&good_ca_file),
        path_text(&ca_b_file),
        path_text(&ca_a_file)
    );
    let proxy = proxy(&text).await;
    for name in ["wrong_ca", "wrong_name"] {
        let view = await_status(&proxy, name, Status::Down).await;
        let last = view.last_check.expect("checked");
        assert_eq!(last.layer, Some(Layer::L6), "{name}: {last:?}");
        let error = last.error.unwrap_or_default();
        assert!(
            error.contains("certificate") || error.contains("Certificate"),
            "{name}: {error}"
        );
    }
    await_status(&proxy, "good", Status::Up).await;
    await_status(&proxy, "lab", Status::Up).await;
    // The data path: plaintext in, TLS to the backend, the app answers.
    let (code, body) = http_get(proxy.listener("plain").unwrap(), "/health").await;
    assert_eq!((code, body.as_str()), (200, "ok"));

    // CA rotation: the backend moves to a certificate from bravo; `good` fails at L6
    // until its CA file says bravo too and the proxy reloads — no restart.
    install(&server_cert(&ca_b, &dir, "front-b", &["app.internal"]), &front_cert);
    let (code, body) = http_post(tls_front.admin().unwrap(), "/tls/reload", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let view = await_status(&proxy, "good", Status::Down).await;
    assert_eq!(view.last_check.and_then(|c| c.layer), Some(Layer::L6));
    std::fs::copy(&ca_b_file, &good_ca_file).unwrap();
    let (code, body) = http_post(proxy.admin().unwrap(), "/tls/reload", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"backend\":\"good\""), "{body}");
    await_status(&proxy, "good", Status::Up).await;
    proxy.shutdown().await;
    tls_front.shutdown().await;
    app_server.stop().await;
}
