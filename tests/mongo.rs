//! MongoDB role detection and failover: a scripted replica set (one process per
//! member, nx-27017 storage) and SecantusDB, with pymongo and the official Rust
//! driver as clients through the proxy (`directConnection=true`).

use std::time::{Duration, Instant};

use bson::{doc, Document};
use support::mongo::{driver, set_config, try_who_answers, who_answers};
use support::*;
use switchyard::health::Status;
use switchyard_lab::mongo::{ReplicaSet, Secantus};
use switchyard_lab::python;
use switchyard_test_support as support;

const LIMIT: Duration = Duration::from_secs(30);

fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

async fn start_set(name: &'static str) -> ReplicaSet {
    tokio::task::spawn_blocking(move || ReplicaSet::start(3, name))
        .await
        .unwrap()
        .expect("replica set starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymongo_and_the_rust_driver_insert_and_find_through_the_proxy() {
    let set = start_set("rs0").await;
    let proxy = proxy(&set_config(&set, "set_name = \"rs0\"")).await;
    await_pool(&proxy, "writer", &["m1"]).await;
    await_pool(&proxy, "reader", &["m2", "m3"]).await;
    let writer = proxy.listener("writer").unwrap();

    let client = driver(writer).await;
    let coll = client.database("app").collection::<Document>("things");
    coll.insert_one(doc! { "_id": "rust-1", "by": "rust" })
        .await
        .expect("insert through the proxy");
    let found = coll
        .find_one(doc! { "_id": "rust-1" })
        .await
        .unwrap()
        .expect("found through the proxy");
    assert_eq!(found.get_str("by").unwrap(), "rust");

    let script = r#"
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], directConnection=True, serverSelectionTimeoutMS=15000)
coll = c.app.things
coll.insert_one({"_id": "py-1", "by": "pymongo"})
print(coll.find_one({"_id": "py-1"})["by"])
"#;
    let uri = format!("mongodb://{writer}/");
    let out = blocking(|| python::run(script, &[&uri])).unwrap();
    assert_eq!(out.trim(), "pymongo");

    // Directly on the primary, both inserts are there.
    let direct = format!("mongodb://{}/", set.addr(0));
    let count = r#"
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], directConnection=True, serverSelectionTimeoutMS=15000)
print(c.app.things.count_documents({"_id": {"$in": ["rust-1", "py-1"]}}))
"#;
    assert_eq!(blocking(|| python::run(count, &[&direct])).unwrap().trim(), "2");
    proxy.shutdown().await;
    blocking(|| drop(set));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_election_moves_sessions_and_a_retrying_client_writes_on() {
    let mut set = start_set("rs0").await;
    let proxy = proxy(&set_config(&set, "set_name = \"rs0\"")).await;
    await_pool(&proxy, "writer", &["m1"]).await;
    let writer = proxy.listener("writer").unwrap();
    let (mut old_session, me) = who_answers(writer).await;
    assert_eq!(me, set.addr(0).to_string());
    let client = driver(writer).await;
    let coll = client.database("app").collection::<Document>("election");
    coll.insert_one(doc! { "n": 1 }).await.unwrap();

    blocking(|| set.elect(Some(1))).unwrap();
    let elected = Instant::now();
    // A short-lived client (a new connection per request) meets the new primary as
    // soon as the proxy has swapped.
    loop {
        // A session that reached the old primary just before the swap is fenced.
        if let Ok((_s, me)) = try_who_answers(writer).await {
            if me == set.addr(1).to_string() {
                break;
            }
        }
        assert!(elected.elapsed() < LIMIT, "new sessions never reached the new primary");
        poll_pause().await;
    }
    eprintln!(
        "MEASURED election -> first new session answered by the new primary: {:?}",
        elected.elapsed()
    );
    // Until the proxy sees the election, the old primary answers NotWritablePrimary
    // (the driver keeps its connection for that); then the proxy closes the session
    // and the client's next write reconnects through the proxy to the new primary.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match coll.insert_one(doc! { "n": 2 }).await {
            Ok(_) => break,
            Err(e) if elected.elapsed() < LIMIT => {
                if attempts == 1 {
                    eprintln!("first attempt after the election: {e}");
                }
                poll_pause().await;
            }
            Err(e) => panic!("no write succeeded within {LIMIT:?} of the election: {e}"),
        }
    }
    eprintln!(
        "MEASURED election -> first successful write through the proxy: {:?} ({attempts} attempt(s))",
        elected.elapsed()
    );
    await_pool(&proxy, "writer", &["m2"]).await;
    closes(&mut old_session, "the old primary's session to close").await;
    let (_new_session, me) = who_answers(writer).await;
    assert_eq!(me, set.addr(1).to_string(), "new sessions reach the new primary");
    let event = proxy
        .failovers()
        .into_iter()
        .find(|e| e.from.as_deref() == Some("m1"))
        .expect("failover recorded");
    assert_eq!(event.to.as_deref(), Some("m2"));
    if let (Some(fault), Some(routed)) = (event.fault_observed_ms, event.new_routed_ms) {
        eprintln!(
            "MEASURED proxy: election observed -> new primary routed: {} ms",
            routed.saturating_sub(fault)
        );
    }
    proxy.shutdown().await;
    blocking(|| drop(set));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_stopped_primaries_go_down_and_a_stale_primary_is_not_routed() {
    let mut set = start_set("rs0").await;
    let proxy = proxy(&set_config(&set, "set_name = \"rs0\"")).await;
    await_pool(&proxy, "writer", &["m1"]).await;
    let writer = proxy.listener("writer").unwrap();

    blocking(|| set.kill9(0)).unwrap();
    await_status(&proxy, "m1", Status::Down).await;
    await_pool(&proxy, "writer", &[]).await;
    let stale_term = set.term();
    blocking(|| set.elect(Some(1))).unwrap();
    await_pool(&proxy, "writer", &["m2"]).await;

    // m1 comes back still claiming primary with its old electionId: ignored.
    blocking(|| {
        set.restart(0)?;
        set.claim_stale(0, stale_term)
    })
    .unwrap();
    let mut view = proxy.backend("m1").unwrap().watch_view();
    within(LIMIT, "m1 to claim primary again", async {
        view.wait_for(|v| v.status == Status::Up && v.role == switchyard::health::Role::Primary)
            .await
            .unwrap();
    })
    .await;
    assert_eq!(
        proxy.routing().load().routable_names(proxy.pool("writer").unwrap()),
        ["m2"]
    );
    let status = status_json(&proxy).await;
    let writer_pool = pool_status(&status, "writer");
    assert!(
        writer_pool["alarm"].is_null(),
        "a stale claim is not a second writer: {writer_pool}"
    );
    let (_s, me) = who_answers(writer).await;
    assert_eq!(me, set.addr(1).to_string());

    // SIGSTOP of the primary: TCP still connects, hello never answers.
    blocking(|| set.sigstop(1)).unwrap();
    let stopped = Instant::now();
    let view = await_status(&proxy, "m2", Status::Down).await;
    eprintln!("MEASURED SIGSTOP -> member marked down: {:?}", stopped.elapsed());
    assert!(view.last_check.unwrap().error.unwrap().contains("timed out"));
    await_pool(&proxy, "writer", &[]).await;
    blocking(|| set.sigcont(1)).unwrap();
    await_pool(&proxy, "writer", &["m2"]).await;
    proxy.shutdown().await;
    blocking(|| drop(set));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_name_mismatch_and_secondaries_only_give_a_clean_error_after_the_hold() {
    let mut set = start_set("other").await;
    let first = proxy(
        &set_config(&set, "set_name = \"rs0\"\nhold_timeout = \"300ms\"").replace("hold_timeout = \"10s\"\n", ""),
    )
    .await;
    for name in ["m1", "m2", "m3"] {
        await_status(&first, name, Status::Up).await;
    }
    assert!(
        first
            .routing()
            .load()
            .routable_names(first.pool("writer").unwrap())
            .is_empty(),
        "wrong set: no primary"
    );
    let mut client = tokio::net::TcpStream::connect(first.listener("writer").unwrap())
        .await
        .unwrap();
    closes(&mut client, "the held client to be closed").await;
    first.shutdown().await;
    blocking(|| set.elect(None)).unwrap();

    // The writer pool under a name of its own: its hold-timeout series is this test's.
    let writer = unique("writer");
    let text = set_config(&set, "hold_timeout = \"300ms\"")
        .replace("hold_timeout = \"10s\"\n", "")
        .replace("[pools.writer]", &format!("[pools.{writer}]"))
        .replace("pool = \"writer\"", &format!("pool = \"{writer}\""));
    let proxy = proxy(&text).await;
    await_pool(&proxy, "reader", &["m1", "m2", "m3"]).await;
    assert!(
        proxy
            .routing()
            .load()
            .routable_names(proxy.pool(&writer).unwrap())
            .is_empty(),
        "secondaries only"
    );
    let script = r#"
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], directConnection=True, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000)
try:
    c.app.t.insert_one({"x": 1})
    print("wrote")
except pymongo.errors.PyMongoError as e:
    print(type(e).__name__)
"#;
    let uri = format!("mongodb://{}/", proxy.listener("writer").unwrap());
    let out = blocking(|| python::run(script, &[&uri])).unwrap();
    assert!(out.trim().ends_with("Error"), "a clean client error, got {out:?}");
    let timeouts = format!("switchyard_hold_timeouts_total{{pool=\"{writer}\"}}");
    assert!(await_metric(&proxy, &timeouts, 1.0).await >= 1.0, "the hold timed out");
    proxy.shutdown().await;
    blocking(|| drop(set));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secantus_stepdown_stops_writes_and_closes_sessions_until_it_is_primary_again() {
    let secantus = tokio::task::spawn_blocking(Secantus::start)
        .await
        .unwrap()
        .expect("SecantusDB starts");
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n[backends.s1]\naddress = \"{}\"\n\
         check = {{ kind = \"mongo\", interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 2 }}\n\
         [pools.writer]\nbackends = [\"s1\"]\nrole = \"primary\"\nhold_timeout = \"15s\"\n\
         [listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n",
        secantus.addr()
    );
    let proxy = proxy(&text).await;
    await_pool(&proxy, "writer", &["s1"]).await;
    let writer = proxy.listener("writer").unwrap();
    let client = driver(writer).await;
    let coll = client.database("app").collection::<Document>("steps");
    coll.insert_one(doc! { "step": "before" })
        .await
        .expect("insert through the proxy");
    let (mut session, _) = who_answers(writer).await;

    let direct = driver(secantus.addr()).await;
    // The server closes connections on stepdown; the command may report that.
    let _ = direct
        .database("admin")
        .run_command(doc! { "replSetStepDown": 2, "force": true })
        .await;
    await_pool(&proxy, "writer", &[]).await;
    closes(&mut session, "the demoted primary's session to close").await;
    // SecantusDB steps up again by itself after the stepdown period.
    await_pool(&proxy, "writer", &["s1"]).await;
    coll.insert_one(doc! { "step": "after" })
        .await
        .expect("insert once it is primary again");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    proxy.shutdown().await;
    blocking(|| drop(secantus));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credentials_log_the_check_in_and_a_wrong_password_fails_at_l7() {
    let secantus = tokio::task::spawn_blocking(|| Secantus::start_with_user("monitor", "s3cret-pw"))
        .await
        .unwrap()
        .expect("SecantusDB with --auth starts");
    let check = |password: &str| {
        format!("{{ kind = \"mongo\", user = \"monitor\", password = \"{password}\", interval = \"100ms\", timeout = \"1s\", rise = 1, fall = 1 }}")
    };
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\
         [backends.good]\naddress = \"{addr}\"\ncheck = {good}\n\
         [backends.bad]\naddress = \"{addr}\"\ncheck = {bad}\n\
         [pools.writer]\nbackends = [\"good\", \"bad\"]\nrole = \"primary\"\n\
         [listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n",
        addr = secantus.addr(),
        good = check("s3cret-pw"),
        bad = check("wrong")
    );
    let proxy = proxy(&text).await;
    await_status(&proxy, "good", Status::Up).await;
    let view = await_status(&proxy, "bad", Status::Down).await;
    let last = view.last_check.unwrap();
    assert_eq!(last.layer, Some(switchyard::health::Layer::L7), "{last:?}");
    assert!(last.error.unwrap().contains("authentication failed"));
    await_pool(&proxy, "writer", &["good"]).await;
    let (_, body) = http_get(proxy.admin().unwrap(), "/status").await;
    assert!(
        !body.contains("s3cret-pw") && !body.contains("wrong\""),
        "no password on /status"
    );
    proxy.shutdown().await;
    blocking(|| drop(secantus));
}

/// pymongo with `tls=true` and the test CA through a TLS listener to a plaintext
/// SecantusDB; then a second proxy that originates TLS to the first (its MongoDB
/// probe and its sessions both over TLS) serves a plaintext pymongo client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymongo_with_tls_through_the_proxy_and_probes_over_tls() {
    use support::tls::{ca, cert_dir, server_cert, tls_listener};
    let dir = cert_dir("sy-mongo-tls");
    let (test_ca, ca_file) = ca(&dir, "mongo");
    let cert = server_cert(&test_ca, &dir, "front", &["mongo.example"]);
    let peer = tokio::task::spawn_blocking(Secantus::start)
        .await
        .unwrap()
        .expect("SecantusDB starts");
    let check = "[check]\nkind = \"mongo\"\ninterval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"2s\"\nrise = 1\nfall = 1\n";
    let front = proxy(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n{check}\
         [backends.secantus]\naddress = \"{}\"\n[pools.mongo]\nbackends = [\"secantus\"]\n{}",
        peer.addr(),
        tls_listener("tls", "127.0.0.1:0", "mongo", "", &cert, &[], "")
    ))
    .await;
    await_pool(&front, "mongo", &["secantus"]).await;
    let tls_addr = front.listener("tls").unwrap();

    let script = r#"
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], directConnection=True, serverSelectionTimeoutMS=15000, **eval(sys.argv[2]))
coll = c.app.tls_things
coll.insert_one({"_id": sys.argv[3], "by": "pymongo"})
print(coll.find_one({"_id": sys.argv[3]})["by"])
"#;
    let tls_options = format!("dict(tls=True, tlsCAFile={:?})", ca_file.display().to_string());
    let uri = format!("mongodb://{tls_addr}/");
    let out = blocking(|| python::run(script, &[&uri, &tls_options, "via-tls"])).unwrap();
    assert_eq!(out.trim(), "pymongo");
    // Without TLS the same port gives pymongo nothing it can use.
    let plain = r#"
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], directConnection=True, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
try:
    c.admin.command("ping")
    print("answered")
except pymongo.errors.PyMongoError:
    print("refused")
"#;
    assert_eq!(blocking(|| python::run(plain, &[&uri])).unwrap().trim(), "refused");

    let origin = proxy(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n{check}\
         [backends.front]\naddress = \"{tls_addr}\"\n[backends.front.tls]\nca = \"{}\"\nserver_name = \"mongo.example\"\n\
         [pools.mongo]\nbackends = [\"front\"]\n[listeners.plain]\nlisten = \"127.0.0.1:0\"\npool = \"mongo\"\n",
        ca_file.display()
    ))
    .await;
    let view = await_status(&origin, "front", Status::Up).await;
    assert!(view.report.and_then(|r| r.mongo).is_some(), "hello answered over TLS");
    let uri = format!("mongodb://{}/", origin.listener("plain").unwrap());
    let out = blocking(|| python::run(script, &[&uri, "dict()", "via-origin"])).unwrap();
    assert_eq!(out.trim(), "pymongo");
    origin.shutdown().await;
    front.shutdown().await;
    blocking(|| drop(peer));
}
