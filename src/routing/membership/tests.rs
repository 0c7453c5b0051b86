use std::time::Duration;

use super::*;
use crate::config::{LeavePolicy, Members, Policy};
use crate::health::ReplicaState;

pub(super) fn pool(role: PoolRole) -> PoolConfig {
    PoolConfig {
        name: "p".into(),
        role,
        policy: Policy::First,
        members: Members::new((0..3).map(|id| (format!("b{id}"), id))),
        initially_up: false,
        on_leave: LeavePolicy::Close,
        hold_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_replication_lag: Duration::from_secs(10),
        max_replication_lag_bytes: 1 << 20,
        fallback_to_primary: false,
        two_writers: TwoWriters::KeepCurrent,
        set_name: None,
        required: false,
        on_store_lost: crate::config::OnStoreLost::Hold,
        switchover: None,
        sentinel: None,
        galera: false,
        donor_ok: false,
    }
}

fn primary() -> BackendState {
    BackendState {
        status: Status::Up,
        report: Some(Report {
            role: Role::Primary,
            ..Report::default()
        }),
        ..BackendState::default()
    }
}

fn replica(io: &str, sql: bool, lag: Option<u64>) -> BackendState {
    let replica = ReplicaState {
        io_running: io == "Yes",
        io_connecting: io == "Connecting",
        sql_running: sql,
        lag: lag.map(Duration::from_secs),
        source: None,
    };
    BackendState {
        status: Status::Up,
        report: Some(Report {
            role: Role::Replica,
            replica: Some(replica),
            ..Report::default()
        }),
        ..BackendState::default()
    }
}

fn down(mut state: BackendState) -> BackendState {
    state.status = Status::Down;
    state
}

#[test]
fn primary_pool_routes_to_the_one_writable_member() {
    let states = [replica("Yes", true, Some(0)), primary(), replica("Yes", true, Some(0))];
    let d = decide(&pool(PoolRole::Primary), &states, None, None);
    assert_eq!(d.members, [1]);
    assert!(d.two_writers.is_empty());
}

#[test]
fn a_down_primary_is_not_routed_even_if_its_last_report_said_writable() {
    let states = [
        down(primary()),
        replica("Connecting", true, None),
        replica("Connecting", true, None),
    ];
    assert_eq!(
        decide(&pool(PoolRole::Primary), &states, Some(0), None).members,
        Vec::<usize>::new()
    );
}

#[test]
fn two_writers_keep_the_current_primary_and_alarm() {
    let states = [primary(), primary(), replica("Yes", true, Some(0))];
    let d = decide(&pool(PoolRole::Primary), &states, Some(1), None);
    assert_eq!(d.members, [1], "the current primary stays");
    assert_eq!(d.two_writers, [0, 1]);
}

#[test]
fn two_writers_without_a_current_primary_fail_closed() {
    let states = [primary(), primary(), replica("Yes", true, Some(0))];
    let d = decide(&pool(PoolRole::Primary), &states, None, None);
    assert!(d.members.is_empty());
    assert_eq!(d.two_writers, [0, 1]);
    // Nor does a current primary that is no longer writable survive.
    let states = [primary(), primary(), replica("Yes", true, Some(0))];
    assert!(decide(&pool(PoolRole::Primary), &states, Some(2), None)
        .members
        .is_empty());
}

#[test]
fn two_writers_fail_closed_policy_routes_nowhere() {
    let mut config = pool(PoolRole::Primary);
    config.two_writers = TwoWriters::FailClosed;
    let states = [primary(), primary(), replica("Yes", true, Some(0))];
    assert!(decide(&config, &states, Some(0), None).members.is_empty());
}

#[test]
fn replica_pool_drops_lagging_stopped_and_unreplicating_members() {
    let config = pool(PoolRole::Replica);
    let cases = [
        (replica("Yes", true, Some(3)), true),
        (replica("Yes", true, Some(11)), false),
        (replica("Yes", false, None), false),
        (replica("No", true, None), false),
        (replica("Yes", true, None), false),
        (replica("Connecting", true, None), true),
        (down(replica("Yes", true, Some(0))), false),
        (
            BackendState {
                status: Status::Up,
                report: Some(Report {
                    role: Role::Replica,
                    ..Report::default()
                }),
                ..BackendState::default()
            },
            false,
        ),
        (primary(), false),
    ];
    for (state, routable) in cases {
        let states = [state.clone(), down(primary()), down(primary())];
        assert_eq!(
            decide(&config, &states, None, None).members == [0],
            routable,
            "{state:?}"
        );
    }
}

#[test]
fn replica_pool_falls_back_to_the_primary_only_when_asked() {
    let states = [replica("Yes", false, None), primary(), replica("Yes", true, Some(60))];
    assert!(decide(&pool(PoolRole::Replica), &states, None, None).members.is_empty());
    let mut config = pool(PoolRole::Replica);
    config.fallback_to_primary = true;
    assert_eq!(decide(&config, &states, None, None).members, [1]);
}

#[test]
fn any_pool_follows_status_and_initial_state() {
    let mut config = pool(PoolRole::Any);
    let unknown = BackendState::default();
    let states = [unknown.clone(), down(primary()), primary()];
    assert_eq!(decide(&config, &states, None, None).members, [2]);
    config.initially_up = true;
    assert_eq!(decide(&config, &states, None, None).members, [0, 2]);
}

#[test]
fn no_first_primary_while_a_member_is_unchecked() {
    let states = [BackendState::default(), primary(), replica("Yes", true, Some(0))];
    assert!(decide(&pool(PoolRole::Primary), &states, None, None).members.is_empty());
    // Once a primary is routed, an unchecked member does not take it away.
    assert_eq!(decide(&pool(PoolRole::Primary), &states, Some(1), None).members, [1]);
}

#[test]
fn drained_and_disabled_members_are_never_routable() {
    use crate::backend::AdminMode;
    let mut states = [primary(), replica("Yes", true, Some(0)), replica("Yes", true, Some(0))];
    states[0].admin = AdminMode::Draining;
    states[1].admin = AdminMode::Disabled;
    assert!(decide(&pool(PoolRole::Primary), &states, Some(0), None)
        .members
        .is_empty());
    assert_eq!(decide(&pool(PoolRole::Replica), &states, None, None).members, [2]);
    let mut any = pool(PoolRole::Any);
    any.initially_up = true;
    assert_eq!(decide(&any, &states, None, None).members, [2]);
}

fn mongo(primary: bool, set: &str, election: Option<(&str, i64)>, last_write_ms: i64) -> BackendState {
    use crate::protocol::mongo::Hello;
    let hello = Hello {
        ok: true,
        writable_primary: primary,
        secondary: !primary,
        set_name: Some(set.to_string()),
        election_id: election.map(|(id, _)| id.to_string()),
        set_version: election.map(|(_, v)| v),
        last_write_ms: Some(last_write_ms),
        ..Hello::default()
    };
    let role = if primary { Role::Primary } else { Role::Secondary };
    BackendState {
        status: Status::Up,
        report: Some(Report {
            role,
            mongo: Some(hello),
            ..Report::default()
        }),
        ..BackendState::default()
    }
}

fn newest(id: &str, version: i64) -> crate::routing::election::Newest {
    crate::routing::election::Newest {
        election_id: Some(id.to_string()),
        set_version: Some(version),
    }
}

const OLD: &str = "7fffffff0000000000000001";
const NEW: &str = "7fffffff0000000000000002";

#[test]
fn stale_primary_with_an_older_election_is_ignored() {
    let states = [
        mongo(true, "rs0", Some((OLD, 1)), 0),
        mongo(true, "rs0", Some((NEW, 1)), 0),
        mongo(false, "rs0", None, 0),
    ];
    let d = decide(&pool(PoolRole::Primary), &states, None, None);
    assert_eq!(d.members, [1], "only the newest election is a candidate");
    assert!(d.two_writers.is_empty(), "a stale claim is not a second writer");
    assert_eq!(d.newest_election, Some(newest(NEW, 1)));
}

#[test]
fn the_pool_remembers_the_newest_election_when_the_new_primary_is_gone() {
    // The new primary died; the old one returns still claiming primary with its old
    // electionId: the remembered newest election keeps it out.
    let seen = newest(NEW, 1);
    let states = [
        mongo(true, "rs0", Some((OLD, 1)), 0),
        down(mongo(true, "rs0", Some((NEW, 1)), 0)),
        mongo(false, "rs0", None, 0),
    ];
    let d = decide(&pool(PoolRole::Primary), &states, None, Some(&seen));
    assert!(d.members.is_empty());
    assert_eq!(d.newest_election, Some(seen));
}

#[test]
fn same_election_with_a_newer_set_version_wins() {
    let states = [
        mongo(true, "rs0", Some((NEW, 1)), 0),
        mongo(true, "rs0", Some((NEW, 2)), 0),
        mongo(false, "rs0", None, 0),
    ];
    assert_eq!(decide(&pool(PoolRole::Primary), &states, None, None).members, [1]);
}

#[test]
fn set_name_mismatch_is_not_eligible() {
    let mut config = pool(PoolRole::Primary);
    config.set_name = Some("rs0".into());
    let states = [
        mongo(true, "other", Some((NEW, 1)), 0),
        mongo(false, "rs0", None, 0),
        mongo(false, "rs0", None, 0),
    ];
    assert!(decide(&config, &states, None, None).members.is_empty());
    let mut secondaries = pool(PoolRole::Replica);
    secondaries.set_name = Some("rs0".into());
    assert_eq!(decide(&secondaries, &states, None, None).members, [1, 2]);
}

#[test]
fn lagging_secondaries_leave_the_secondary_pool() {
    // max_replication_lag is 10 s in `pool`; the primary wrote at t = 100 s.
    let states = [
        mongo(true, "rs0", Some((NEW, 1)), 100_000),
        mongo(false, "rs0", None, 95_000),
        mongo(false, "rs0", None, 80_000),
    ];
    assert_eq!(decide(&pool(PoolRole::Replica), &states, None, None).members, [1]);
}

#[test]
fn a_new_primary_that_is_not_routable_yet_still_demotes_the_old_one() {
    // B won an election but is drained (or down waiting for `rise`): A is stale anyway.
    use crate::backend::AdminMode;
    let mut states = [
        mongo(true, "rs0", Some((OLD, 1)), 0),
        mongo(true, "rs0", Some((NEW, 1)), 0),
        mongo(false, "rs0", None, 0),
    ];
    states[1].admin = AdminMode::Draining;
    let d = decide(&pool(PoolRole::Primary), &states, Some(0), None);
    assert!(d.members.is_empty(), "{d:?}");
    states[1].admin = AdminMode::Enabled;
    states[1].status = Status::Down;
    assert!(decide(&pool(PoolRole::Primary), &states, Some(0), None)
        .members
        .is_empty());
}

#[test]
fn a_primary_without_an_election_id_is_stale_once_one_was_seen() {
    let seen = newest(NEW, 1);
    let states = [
        mongo(true, "rs0", None, 0),
        mongo(false, "rs0", None, 0),
        mongo(false, "rs0", None, 0),
    ];
    assert!(decide(&pool(PoolRole::Primary), &states, None, Some(&seen))
        .members
        .is_empty());
}

#[test]
fn replica_fallback_never_picks_a_stale_primary() {
    let mut config = pool(PoolRole::Replica);
    config.fallback_to_primary = true;
    let mut states = [
        mongo(true, "rs0", Some((OLD, 1)), 0),
        down(mongo(true, "rs0", Some((NEW, 1)), 0)),
        mongo(false, "rs0", None, 0),
    ];
    states[2].status = Status::Down;
    assert!(decide(&config, &states, None, None).members.is_empty());
}

fn redis_master(replid: &str, replid2: &str, offset: i64) -> BackendState {
    let mut state = primary();
    state.report.as_mut().unwrap().redis = Some(crate::health::probe::RedisInfo {
        replid: replid.into(),
        replid2: replid2.into(),
        offset,
        ..Default::default()
    });
    state
}

#[test]
fn a_redis_master_whose_history_another_continued_is_not_routed() {
    const ZEROS: &str = "0000000000000000000000000000000000000000";
    // After a planned failover: b1 (the old master, still writable, current) and b2,
    // promoted from b1's history. The new one wins although the old one is current and
    // reports the higher offset; the alarm names both.
    let states = [
        redis_master("aaa", ZEROS, 900),
        redis_master("bbb", "aaa", 500),
        replica("Yes", true, Some(0)),
    ];
    let d = decide(&pool(PoolRole::Primary), &states, Some(0), None);
    assert_eq!(d.members, [1], "the continuing master");
    assert_eq!(d.two_writers, [0, 1]);
    // Down, its last report still tells the old one it was replaced.
    let states = [
        redis_master("aaa", ZEROS, 900),
        down(redis_master("bbb", "aaa", 500)),
        replica("Yes", true, Some(0)),
    ];
    assert_eq!(
        decide(&pool(PoolRole::Primary), &states, Some(0), None).members,
        Vec::<usize>::new()
    );
    // Unrelated histories (an old master restarted empty): the single-writer rule.
    let states = [
        redis_master("ccc", ZEROS, 0),
        redis_master("bbb", "aaa", 500),
        replica("Yes", true, Some(0)),
    ];
    let d = decide(&pool(PoolRole::Primary), &states, Some(1), None);
    assert_eq!(
        (d.members, d.two_writers),
        (vec![1], vec![0, 1]),
        "the current one is kept"
    );
}

#[test]
fn a_redis_replica_more_bytes_behind_its_master_than_allowed_is_not_routed() {
    let replica_at = |offset: i64| {
        let mut state = replica("Yes", true, Some(0));
        let report = state.report.as_mut().unwrap();
        report.redis = Some(crate::health::probe::RedisInfo {
            replid: "aaa".into(),
            offset,
            replica_offset: Some(offset),
            ..Default::default()
        });
        state
    };
    let master = redis_master("aaa", "0", 5_000_000);
    let states = [master.clone(), replica_at(4_500_000), replica_at(100)];
    assert_eq!(
        decide(&pool(PoolRole::Replica), &states, None, None).members,
        [1],
        "500 KB behind is within 1 MiB"
    );
    // Another history's master says nothing of these replicas' lag.
    let states = [redis_master("zzz", "0", 5_000_000), replica_at(100), replica_at(100)];
    assert_eq!(decide(&pool(PoolRole::Replica), &states, None, None).members, [1, 2]);
}

#[test]
fn with_sentinels_only_the_master_they_name_is_a_candidate() {
    use super::{decide_with, Inputs, Named};
    let inputs = |current, named| Inputs {
        current,
        named,
        ..Inputs::default()
    };
    const ZEROS: &str = "0000000000000000000000000000000000000000";
    let primary_pool = pool(PoolRole::Primary);
    let one = [
        redis_master("aaa", ZEROS, 900),
        replica("Yes", true, Some(0)),
        replica("Yes", true, Some(0)),
    ];
    let decided =
        |states: &[BackendState], current, named| decide_with(&primary_pool, states, inputs(current, named)).members;
    assert_eq!(decided(&one, None, Named::Member(0)), [0]);
    assert_eq!(decided(&one, None, Named::Unused), [0]);
    // Before a first word, or a word that names no member: no master.
    assert!(decided(&one, Some(0), Named::Nobody).is_empty());
    // Named, but its INFO says replica: no master either.
    assert!(decided(&one, Some(0), Named::Member(1)).is_empty());
    // The old master restarted empty (another history): the named one wins, alarm.
    let split = [
        redis_master("ccc", ZEROS, 0),
        redis_master("bbb", "aaa", 500),
        replica("Yes", true, Some(0)),
    ];
    let d = decide_with(&primary_pool, &split, inputs(None, Named::Member(1)));
    assert_eq!((d.members, d.two_writers), (vec![1], vec![0, 1]));
    // A planned failover before the Sentinels name the new master: the old one is
    // superseded, the new one not named yet: none.
    let planned = [
        redis_master("aaa", ZEROS, 900),
        redis_master("bbb", "aaa", 500),
        replica("Yes", true, Some(0)),
    ];
    assert!(decided(&planned, Some(0), Named::Member(0)).is_empty());
    assert_eq!(decided(&planned, None, Named::Member(1)), [1]);
}

#[test]
fn a_member_a_moved_name_added_waits_for_its_first_check_even_where_unchecked_ones_serve() {
    let mut any = pool(PoolRole::Any);
    any.initially_up = true;
    let unchecked = BackendState::default();
    let new_address = BackendState {
        check_first: true,
        ..BackendState::default()
    };
    let states = [unchecked, new_address, primary()];
    assert_eq!(decide(&any, &states, None, None).members, [0, 2]);
}
