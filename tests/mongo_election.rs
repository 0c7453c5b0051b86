//! Scripted elections on the lab replica set under writing clients: pymongo through a
//! `mode = "mongo"` listener (`directConnection=true`), pymongo connected to the
//! members directly (the driver alone), and the Rust driver through the proxy, all in
//! the same run. Through the proxy no write may fail; the time from each election to
//! the first acknowledged write is printed for both pymongo paths (never asserted).

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bson::{doc, Document};
use support::mongo::set_config;
use support::*;
use switchyard_lab::mongo::ReplicaSet;
use switchyard_lab::python;
use switchyard_test_support as support;

const ELECTIONS: usize = 4;
/// Seconds between elections (and before the first, after the last).
const EVERY: f64 = 2.0;

fn wall() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// One write a pymongo writer reported.
#[derive(serde::Deserialize)]
struct Write {
    end: f64,
    ok: bool,
    error: Option<String>,
}

fn pymongo_writer(uri: String, seconds: f64, tag: &'static str) -> std::thread::JoinHandle<Vec<Write>> {
    std::thread::spawn(move || {
        let python = python::python().expect("the lab's Python");
        let out = Command::new(python)
            .arg(python::script("mongo_writer.py"))
            .args([uri.as_str(), &seconds.to_string(), tag])
            .output()
            .expect("the writer runs");
        assert!(out.status.success(), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    })
}

/// Per election, ms from the election to the first acknowledgement more than 5 ms
/// after it (an ack within 5 ms may be the old primary's, sent just before).
fn first_writes(writes: &[Write], elections: &[f64]) -> Vec<f64> {
    elections
        .iter()
        .map(|&at| {
            writes
                .iter()
                .filter(|w| w.ok && w.end > at + 0.005)
                .map(|w| (w.end - at) * 1000.0)
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_cost_writers_through_the_proxy_no_error() {
    let mut set = tokio::task::spawn_blocking(|| ReplicaSet::start(3, "rs0"))
        .await
        .unwrap()
        .expect("replica set starts");
    let config = set_config(&set, "set_name = \"rs0\"").replacen(
        "pool = \"writer\"\n",
        "pool = \"writer\"\nmode = \"mongo\"\n",
        1,
    );
    let proxy = proxy(&config).await;
    await_pool(&proxy, "writer", &["m1"]).await;
    let writer = proxy.listener("writer").unwrap();
    tokio::task::spawn_blocking(python::python).await.unwrap().unwrap();

    let seconds = EVERY * (ELECTIONS as f64 + 1.0);
    let through = pymongo_writer(format!("mongodb://{writer}/?directConnection=true"), seconds, "proxy");
    let members: Vec<String> = (0..set.len()).map(|i| set.addr(i).to_string()).collect();
    let direct = pymongo_writer(
        format!("mongodb://{}/?replicaSet=rs0", members.join(",")),
        seconds,
        "direct",
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let rust = tokio::spawn({
        let stop = stop.clone();
        async move {
            let client = support::mongo::driver(writer).await;
            let coll = client.database("app").collection::<Document>("election_rust");
            let (mut ok, mut errors) = (0, Vec::new());
            for n in 0..1_000_000 {
                if stop.is_cancelled() {
                    break;
                }
                match coll.insert_one(doc! { "n": n }).await {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, errors)
        }
    });

    let mut elections = Vec::new();
    for i in 0..ELECTIONS {
        tokio::time::sleep(Duration::from_secs_f64(EVERY)).await;
        let to = if i % 2 == 0 { 1 } else { 0 };
        tokio::task::block_in_place(|| set.elect(Some(to))).unwrap();
        elections.push(wall());
    }
    let through = tokio::task::spawn_blocking(move || through.join().unwrap())
        .await
        .unwrap();
    let direct = tokio::task::spawn_blocking(move || direct.join().unwrap())
        .await
        .unwrap();
    stop.cancel();
    let (rust_ok, rust_errors) = within(Duration::from_secs(30), "the Rust writer", rust).await.unwrap();

    let errors = |writes: &[Write]| -> Vec<String> {
        writes
            .iter()
            .filter(|w| !w.ok)
            .map(|w| w.error.clone().unwrap_or_default())
            .collect()
    };
    for (name, writes) in [("switchyard", &through), ("driver-alone", &direct)] {
        let firsts = first_writes(writes, &elections);
        let max = firsts.iter().copied().fold(0.0, f64::max);
        let mut sorted = firsts.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        println!(
            "switchover scenario=mongo-election target={name} client=pymongo elections={ELECTIONS} writes={} errors={} first_write_p50_ms={:.0} first_write_max_ms={max:.0} each={firsts:.0?}",
            writes.len(),
            errors(writes).len(),
            sorted[sorted.len() / 2],
        );
    }
    println!(
        "switchover scenario=mongo-election target=switchyard client=rust-driver elections={ELECTIONS} writes={} errors={}",
        rust_ok + rust_errors.len(),
        rust_errors.len()
    );
    assert!(
        through.iter().filter(|w| w.ok).count() > 100,
        "pymongo wrote through the proxy"
    );
    assert_eq!(
        errors(&through),
        Vec::<String>::new(),
        "no pymongo write through the proxy failed"
    );
    assert_eq!(
        rust_errors,
        Vec::<String>::new(),
        "no Rust driver write through the proxy failed"
    );
    assert!(rust_ok > 100);
    proxy.shutdown().await;
    tokio::task::block_in_place(|| drop(set));
}
