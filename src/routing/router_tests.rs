//! The router's fencing windows, on a real router fed observations and commands
//! directly: eviction comes before the table that drops a member is published, and a
//! drain marks the member so no new session starts on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::backend::Backend;
use crate::config::Config;
use crate::health::{CheckError, Flip, Observation, Report, Status};
use crate::pool::{Eviction, Pool};

const CONFIG: &str = "[backends.a]\naddress = \"127.0.0.1:1\"\n[backends.b]\naddress = \"127.0.0.1:2\"\n\
    [pools.app]\nbackends = [\"a\", \"b\"]\non_leave = \"close\"\n\
    [listeners.app]\nlisten = \"127.0.0.1:0\"\npool = \"app\"\n";

fn router() -> (Router, Vec<Arc<Pool>>) {
    router_for(CONFIG)
}

/// A router over `text`'s backends and pools, with no checkers or commands behind it.
fn router_for(text: &str) -> (Router, Vec<Arc<Pool>>) {
    let config = Config::parse(text, "test.toml").unwrap();
    let backends = Backend::all(&config);
    let pools = Pool::all(&config, &backends);
    let (_events, events_rx) = mpsc::channel(1);
    let (_commands, commands_rx) = mpsc::channel(1);
    let router = Router::new(backends, pools.clone(), Arc::default(), events_rx, commands_rx);
    (router, pools)
}

fn observed(backend: BackendId, up: bool, from: Status) -> Observation {
    let to = if up { Status::Up } else { Status::Down };
    Observation {
        backend,
        latency: Duration::from_millis(1),
        result: if up {
            Ok(Report::reachable())
        } else {
            Err(CheckError::Connect("refused".into()))
        },
        status: to,
        flip: (from != to).then_some(Flip { from, to }),
        at: tokio::time::Instant::now(),
    }
}

#[test]
fn no_table_without_a_member_is_ever_seen_before_the_member_is_evicted() {
    let (mut router, pools) = router();
    router.apply(observed(0, true, Status::Unknown));
    router.apply(observed(1, true, Status::Unknown));
    let routing = router.routing();
    let member = pools[0].members[0].clone();
    // `epoch` odd: `a` is being taken down, and a reader on another thread (as
    // sessions are) checks that whenever it sees a table without `a`, `a` is already
    // evicted. Even: the reader acknowledges (`acked`) and waits, while `a` comes back.
    let (epoch, acked, violated) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    const ROUNDS: u64 = 2_000;
    let reader = {
        let (epoch, acked, violated, routing, member) = (
            epoch.clone(),
            acked.clone(),
            violated.clone(),
            routing.clone(),
            member.clone(),
        );
        std::thread::spawn(move || loop {
            let now = epoch.load(Ordering::SeqCst);
            if now % 2 == 1 {
                let dropped = routing.pick(|table| table.routable_names(0) == ["b"]);
                if dropped && !member.is_evicted() {
                    violated.store(true, Ordering::SeqCst);
                }
            } else {
                acked.store(now, Ordering::SeqCst);
                if now == 2 * ROUNDS {
                    return;
                }
            }
        })
    };
    for round in 0..ROUNDS {
        epoch.store(2 * round + 1, Ordering::SeqCst);
        router.apply(observed(0, false, Status::Up));
        epoch.store(2 * round + 2, Ordering::SeqCst);
        while acked.load(Ordering::SeqCst) != 2 * round + 2 {
            std::hint::spin_loop();
        }
        router.apply(observed(0, true, Status::Down));
    }
    reader.join().unwrap();
    assert!(
        !violated.load(Ordering::SeqCst),
        "a table without `a` was seen while `a` was not evicted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_pool_routes_nothing_without_fencing_until_released_or_its_deadline() {
    let (mut router, pools) = router();
    router.apply(observed(0, true, Status::Unknown));
    let routed = |router: &Router| router.routing().load().routable_names(0);
    let before = routed(&router);
    assert!(!before.is_empty());
    let command = |action| {
        let (done, _) = oneshot::channel();
        AdminCommand { action, done }
    };
    let deadline = std::time::Duration::from_secs(10);
    router.command(command(AdminAction::Hold {
        pool: 0,
        deadline,
        drain: None,
    }));
    assert!(routed(&router).is_empty(), "new sessions wait");
    assert_eq!(
        *pools[0].members[0].eviction().borrow(),
        Eviction::Active,
        "live sessions go on"
    );
    assert!(pools[0].held_until().is_some());
    router.command(command(AdminAction::Release { pool: 0 }));
    assert_eq!(routed(&router), before);
    assert_eq!(pools[0].held_until(), None);
    // A hold ends by itself at its deadline.
    router.command(command(AdminAction::Hold {
        pool: 0,
        deadline,
        drain: None,
    }));
    tokio::time::timeout(deadline * 2, router.holds.next_expiry())
        .await
        .expect("the deadline comes");
    router.expire_holds();
    assert_eq!(routed(&router), before);
}

#[test]
fn a_drain_marks_the_member_so_no_new_session_starts_on_it_and_enable_clears_it() {
    let (mut router, pools) = router();
    router.apply(observed(0, true, Status::Unknown));
    let command = |mode| {
        let (done, _) = oneshot::channel();
        AdminCommand {
            action: AdminAction::Backend { backend: 0, mode },
            done,
        }
    };
    router.command(command(AdminMode::Draining));
    assert_eq!(*pools[0].members[0].eviction().borrow(), Eviction::Draining);
    assert!(pools[0].members[0].is_evicted(), "no new session on a drained member");
    router.command(command(AdminMode::Enabled));
    assert_eq!(*pools[0].members[0].eviction().borrow(), Eviction::Active);
}

/// The test config as a Galera primary pool over `a` and `b`, `pool_extra` in the pool.
fn galera_router(pool_extra: &str) -> (Router, Vec<Arc<Pool>>) {
    let text = CONFIG
        .replace("on_leave = \"close\"\n", &format!("role = \"primary\"\n{pool_extra}"))
        .replace("[backends.a]", "[check]\nkind = \"galera\"\nuser = \"m\"\n[backends.a]");
    let (router, pools) = router_for(&text);
    assert!(pools[0].config.galera);
    (router, pools)
}

/// A Galera node's passing check: synced, or desynced.
fn galera_observed(backend: BackendId, state: u32, from: Status) -> Observation {
    let galera = crate::health::probe::GaleraState {
        local_state: Some(state),
        cluster_status: "Primary".into(),
        ready: true,
        connected: true,
        reject_queries: "NONE".into(),
        ..Default::default()
    };
    Observation {
        result: Ok(Report {
            role: crate::health::Role::Primary,
            galera: Some(galera),
            ..Report::default()
        }),
        ..observed(backend, true, from)
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_galera_writer_waits_for_the_old_writers_sessions() {
    let (mut router, pools) = galera_router("");
    router.apply(galera_observed(0, 4, Status::Unknown));
    router.apply(galera_observed(1, 4, Status::Unknown));
    let routing = router.routing();
    assert_eq!(routing.load().routable_names(0), ["a"]);
    let session = pools[0].members[0].enter();
    // `a` desynced: it leaves, and `b` waits while `a` still has a session.
    router.apply(galera_observed(0, 2, Status::Up));
    assert!(
        routing.load().routable_names(0).is_empty(),
        "no writer while a's session lives"
    );
    assert!(pools[0].members[0].is_evicted(), "a's session is fenced");
    tokio::time::advance(barrier::BARRIER / 2).await;
    router.reroute();
    assert!(routing.load().routable_names(0).is_empty());
    drop(session);
    router.reroute();
    assert_eq!(
        routing.load().routable_names(0),
        ["b"],
        "routed once a's sessions are gone"
    );
    // A session that outlives the barrier does not hold the pool longer.
    let session = pools[0].members[1].enter();
    router.apply(galera_observed(0, 4, Status::Up));
    router.apply(galera_observed(1, 2, Status::Up));
    assert!(routing.load().routable_names(0).is_empty());
    tokio::time::advance(barrier::BARRIER).await;
    router.reroute();
    assert_eq!(routing.load().routable_names(0), ["a"]);
    drop(session);
}

#[tokio::test(start_paused = true)]
async fn after_a_writer_vanished_the_new_one_waits_for_a_newer_view() {
    let (mut router, _) = galera_router("hold_timeout = \"4s\"\n");
    let in_view = |backend, view, from| {
        let mut o = galera_observed(backend, 4, from);
        if let Ok(report) = o.result.as_mut() {
            report.galera.as_mut().unwrap().conf_id = Some(view);
        }
        o
    };
    router.apply(in_view(0, 7, Status::Unknown));
    router.apply(in_view(1, 7, Status::Unknown));
    let routing = router.routing();
    assert_eq!(routing.load().routable_names(0), ["a"]);
    // `a` is killed: down. `b` still reports the view with `a` in it: no writer yet.
    router.apply(observed(0, false, Status::Up));
    router.apply(observed(0, false, Status::Up));
    router.apply(in_view(1, 7, Status::Up));
    assert!(
        routing.load().routable_names(0).is_empty(),
        "b waits for the view without a"
    );
    router.apply(in_view(1, 8, Status::Up));
    assert_eq!(routing.load().routable_names(0), ["b"], "routed in the new view");
}

#[tokio::test(start_paused = true)]
async fn a_node_waking_with_a_stale_view_is_not_routed_after_a_spell_without_writer() {
    let (mut router, _) = galera_router("");
    let view = |backend, primary: bool, conf_id, from| {
        let mut o = galera_observed(backend, if primary { 4 } else { 0 }, from);
        if let Ok(report) = o.result.as_mut() {
            let g = report.galera.as_mut().unwrap();
            g.conf_id = Some(conf_id);
            if !primary {
                g.cluster_status = "non-Primary".into();
                g.ready = false;
            }
        }
        o
    };
    router.apply(view(0, true, 7, Status::Unknown));
    router.apply(observed(1, false, Status::Unknown));
    let routing = router.routing();
    assert_eq!(routing.load().routable_names(0), ["a"]);
    // `a` alone in a non-Primary component, `b` frozen: no writer.
    router.apply(view(0, false, u64::MAX, Status::Up));
    assert!(routing.load().routable_names(0).is_empty());
    // `b` wakes still reporting the old view: not routed in it.
    router.apply(view(1, true, 7, Status::Down));
    assert!(
        routing.load().routable_names(0).is_empty(),
        "the stale view is not routed"
    );
    router.apply(view(1, true, 9, Status::Up));
    assert_eq!(routing.load().routable_names(0), ["b"], "routed in the newer view");
}
