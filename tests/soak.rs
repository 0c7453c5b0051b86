//! The soak, short: two minutes of mixed load (MySQL through a `mode = "mysql"`
//! listener on a semi-sync MariaDB cluster, the MongoDB driver on the scripted
//! replica set, TCP and TLS echo) through one switchyard process, with a fault
//! every 20 s (kill -9 of the MySQL primary and its rejoin, an election, a refusing
//! backend and its return, a `read_only` switchover, kill -9 of the MongoDB
//! primary and its rejoin, caught up). It passes when the proxy is alive and serving every load after the
//! last fault, its descriptors came back to their baseline after every fault and,
//! with the load over, to what it held before the load, its memory grew ≤ 5 % after
//! the first minute, and no write was acknowledged by a non-primary or lost.
//! `switchyard-drill soak` runs the 30-minute one.

use std::time::Duration;

use switchyard_loadtest::soak;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_faults_leave_the_proxy_as_it_was() {
    let settings = soak::Settings {
        duration: Duration::from_secs(120),
        every: Duration::from_secs(20),
        binary: env!("CARGO_BIN_EXE_switchyard").into(),
    };
    let report = soak::run(&settings).await.expect("the soak runs");
    println!("{}", soak::text(&report));
    assert_eq!(
        report.faults.len(),
        8,
        "five faults and three repairs: {:?}",
        report.faults
    );
    assert!(report.flows.iter().all(|f| f.ok > 0), "{:?}", report.flows);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
}
