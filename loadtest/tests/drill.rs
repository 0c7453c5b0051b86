//! One short drill (16 s) through switchyard against a real MariaDB cluster: a kill -9
//! failover and a read_only switchover under load. Asserts correctness, never timings:
//! no write acknowledged by a node that was not the primary, no acknowledged write
//! missing afterwards (the promoted replicas had caught up), and writes succeeded.

use switchyard_loadtest::drill;
use switchyard_loadtest::scenario::Scenario;
use switchyard_loadtest::target::TargetKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_drill_through_switchyard_acks_only_on_the_primary_and_loses_nothing() {
    let scenario = scenario("ci-short");
    let result = drill::run(&scenario, TargetKind::Switchyard)
        .await
        .expect("the drill runs");
    println!("{}", switchyard_loadtest::report::table(std::slice::from_ref(&result)));
    assert_eq!(
        result.acked_by_non_primary,
        Some(0),
        "writes acknowledged by a non-primary"
    );
    assert_eq!(result.missing_writes, Some(0), "acknowledged writes missing afterwards");
    assert!(
        result.faults.iter().all(|f| f.error.is_none()),
        "fault steps failed: {:?}",
        result.faults
    );
    assert!(
        result.faults.iter().all(|f| f.new_primary.is_some()),
        "each fault promoted a replica"
    );
    assert!(
        result.outage_ms.iter().all(Option::is_some),
        "writes resumed after every fault: {:?}",
        result.outage_ms
    );
    assert!(result.writes_ok > 0);
    the_report_renders_in_chromium(&result);
}

/// The HTML report of `result` in headless Chromium: no script error, its script ran
/// to the end (it counts the close-ups), one close-up per fault with points in it, and
/// a screenshot.
fn the_report_renders_in_chromium(result: &drill::DrillResult) {
    let dir = switchyard_lab::system::temp_dir("sy-report").unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, switchyard_loadtest::report::html(std::slice::from_ref(result))).unwrap();
    let url = format!("file://{}", page.display());
    let rendered = switchyard_lab::chromium::render(&url, None).expect("chromium renders the report");
    assert!(
        rendered.script_errors.is_empty(),
        "script errors: {:?}",
        rendered.script_errors
    );
    let closeups = result.faults.len() + 1;
    assert!(
        rendered.dom.contains(&format!("data-closeups=\"{closeups}\"")),
        "the page's script ran over {closeups} charts:\n{}",
        rendered.dom
    );
    for i in 0..result.faults.len() {
        let id = format!("id=\"zoom-switchyard-{i}\"");
        let chart = rendered.dom.split(&id).nth(1).expect("a close-up per fault");
        let chart = chart.split("</svg>").next().unwrap();
        assert!(chart.contains("<circle"), "fault {i}: operations as points");
        assert!(chart.contains("class=\"marker\""), "fault {i}: its markers");
    }
    let headline = rendered.dom.find("<table").expect("the headline table");
    assert!(headline < rendered.dom.find("<svg").unwrap(), "the table comes first");
    let shot = dir.join("report.png");
    switchyard_lab::chromium::render(&url, Some(&shot)).expect("a screenshot");
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false));
    let _ = std::fs::remove_dir_all(&dir);
}

fn scenario(name: &str) -> Scenario {
    Scenario::load(format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR")).as_ref()).unwrap()
}

/// Each scripted member has its own storage; the primary of record replicates what it
/// accepts, a stale primary keeps its writes to itself. So an insert acknowledged by
/// anyone but the primary of record is counted, and is also missing from the final
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_drill_through_switchyard_acks_only_on_the_primary_and_loses_nothing() {
    let result = drill::run(&scenario("mongo-election"), TargetKind::Switchyard)
        .await
        .expect("the drill runs");
    println!("{}", switchyard_loadtest::report::table(std::slice::from_ref(&result)));
    assert_eq!(
        result.acked_by_non_primary,
        Some(0),
        "inserts acknowledged by a non-primary"
    );
    assert_eq!(
        result.missing_writes,
        Some(0),
        "acknowledged inserts missing afterwards"
    );
    assert!(
        result.stale_primary_hellos.is_some_and(|n| n > 0),
        "the proxy's checks met the stale primary's claim: {:?}",
        result.stale_primary_hellos
    );
    assert!(result.writes_ok > 0);
    assert!(
        result.faults.iter().all(|f| f.error.is_none()),
        "fault steps failed: {:?}",
        result.faults
    );
    assert!(
        result.outage_ms.iter().all(Option::is_some),
        "writes resumed after every fault: {:?}",
        result.outage_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_http_drills_move_to_the_second_backend() {
    for name in ["tcp-refuse", "http-refuse"] {
        let result = drill::run(&scenario(name), TargetKind::Switchyard)
            .await
            .expect("the drill runs");
        println!("{}", switchyard_loadtest::report::table(std::slice::from_ref(&result)));
        assert!(
            result.outage_ms.iter().all(Option::is_some),
            "{name}: requests resumed: {:?}",
            result.outage_ms
        );
        assert!(result.writes_ok > 0);
    }
}

#[test]
fn haproxy_is_refused_for_non_mysql_drills() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(drill::run(&scenario("tcp-refuse"), TargetKind::Haproxy))
        .unwrap_err();
    assert!(format!("{err:#}").contains("MySQL"), "{err:#}");
}
