//! The proxy tier is no single point of failure: an HA pair of switchyard processes
//! behind keepalived's VIP, on the shipped `config/ha-pair/` files, in network
//! namespaces this test makes (a client host, two proxy hosts, a database host with a
//! 3-node MariaDB cluster; root only). Clients on the client host open a new
//! connection every 20 operations through the VIP while the scenario
//! `loadtest/scenarios/ha-pair.toml` kills, hangs, partitions and cuts off the active
//! proxy, brings it back, fails the database primary over alone and together with
//! the active proxy, and stresses the standby. Per fault it prints
//! `ha scenario=NAME takeover_ms=N errors=N wrong_node_acks=N missing_acked=N vip_moves=N`
//! and asserts correctness, never timings: no write acknowledged by a non-primary, no
//! acknowledged write lost, one VIP move per takeover and none otherwise, and after
//! every takeover writes acknowledged through the other proxy.

use std::path::Path;

use switchyard_loadtest::drill;
use switchyard_loadtest::scenario::{Action, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pair_takes_over_for_every_proxy_fault_and_loses_no_write() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/loadtest/scenarios/ha-pair.toml");
    let scenario = Scenario::load(Path::new(path)).unwrap();
    let result = drill::run_pair(&scenario, Path::new(env!("CARGO_BIN_EXE_switchyard")))
        .await
        .expect("the HA drill runs");
    println!("{}", switchyard_loadtest::report::table(std::slice::from_ref(&result)));
    for line in &result.ha {
        println!("{line}");
    }
    assert!(
        result.faults.iter().all(|f| f.error.is_none()),
        "fault steps failed: {:?}",
        result.faults
    );
    assert_eq!(result.ha.len(), scenario.faults.len());
    for (fault, line) in scenario.faults.iter().zip(&result.ha) {
        assert_eq!(line.wrong_node_acks, 0, "{line}");
        assert_eq!(line.missing_acked, 0, "{line}");
        let moves = match fault.action {
            Action::ProxyRestart | Action::StandbyStress | Action::KillPrimary => 0,
            _ => 1,
        };
        assert_eq!(line.vip_moves, moves, "{line}");
        if moves == 1 {
            assert!(line.takeover_ms.is_some(), "the other proxy carried writes: {line}");
        }
    }
    assert_eq!(result.acked_by_non_primary, Some(0));
    assert_eq!(result.missing_writes, Some(0));
    assert!(result.writes_ok > 0);
}
