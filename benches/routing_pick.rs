//! What does picking a backend cost on the data path while the router keeps swapping
//! the table, with `ArcSwap` (what switchyard does) compared with an `RwLock` around
//! the same table?
//!
//! Run: `cargo bench --bench routing_pick`. One background thread publishes a new
//! table as fast as it can during the whole measurement (`pick_under_swaps`), or
//! 1,000 times a second (`pick_at_1000_swaps_per_s`). `walk_*` is what a session does
//! now (a [`select::Walk`] and its first member, nothing allocated); `arcswap_*` and
//! `rwlock_*` order the whole pool into a vector, as sessions did before.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::backend::Backend;
use switchyard::config::{self, Policy};
use switchyard::pool::{Member, Pool};
use switchyard::routing::{select, Routing, RoutingTable};

fn members() -> (Arc<Pool>, Vec<Arc<Member>>) {
    let addrs: Vec<SocketAddr> = (0..4).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))).collect();
    let config = config::forward("127.0.0.1:0".parse().unwrap(), &addrs, None).expect("a valid forward config");
    let backends = Backend::all(&config);
    let pool = Pool::all(&config, &backends).remove(0);
    let members = pool.members.clone();
    (pool, members)
}

/// Runs `swap` in a loop on another thread for as long as `bench` runs, `pause`
/// between two swaps.
fn with_swapper(swap: impl Fn(u64) + Send + 'static, pause: Duration, bench: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let writer = thread::spawn(move || {
        let mut generation = 0;
        while !flag.load(Ordering::Relaxed) {
            generation += 1;
            swap(generation);
            if !pause.is_zero() {
                thread::sleep(pause);
            }
        }
    });
    bench();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

/// What a session does to pick: a walk of the pool's order and its first member.
fn walk_first(routing: &Routing, pool: &Pool, policy: Policy) -> Option<Arc<Member>> {
    routing.pick(|table| {
        let (walk, first) = select::Walk::first(policy, table.routable(0), &pool.cursor, |n| fastrand::usize(..n));
        black_box(walk);
        first.cloned()
    })
}

/// The walk at 1,000 swaps a second, as a busy router might publish them.
fn walk_at_a_steady_rate(c: &mut Criterion) {
    let (pool, members) = members();
    let mut group = c.benchmark_group("pick_at_1000_swaps_per_s");
    let routing = Arc::new(Routing::new(RoutingTable::new(0, vec![members.clone()])));
    let (writer, swap_members) = (routing.clone(), members.clone());
    with_swapper(
        move |g| writer.publish(RoutingTable::new(g, vec![swap_members.clone()])),
        Duration::from_millis(1),
        || {
            for (name, policy) in [
                ("walk_round_robin", Policy::RoundRobin),
                ("walk_least_connections", Policy::LeastConnections),
            ] {
                group.bench_function(name, |b| b.iter(|| black_box(walk_first(&routing, &pool, policy))));
            }
        },
    );
    group.finish();
}

fn pick(c: &mut Criterion) {
    let (pool, members) = members();
    let mut group = c.benchmark_group("pick_under_swaps");

    let routing = Arc::new(Routing::new(RoutingTable::new(0, vec![members.clone()])));
    let (writer, swap_members) = (routing.clone(), members.clone());
    with_swapper(
        move |g| writer.publish(RoutingTable::new(g, vec![swap_members.clone()])),
        Duration::ZERO,
        || {
            for (name, policy) in [
                ("walk_round_robin", Policy::RoundRobin),
                ("walk_least_connections", Policy::LeastConnections),
            ] {
                group.bench_function(name, |b| b.iter(|| black_box(walk_first(&routing, &pool, policy))));
            }
            // What the data path does: a guard, no reference count touched.
            group.bench_function("arcswap_round_robin", |b| {
                b.iter(|| {
                    black_box(routing.pick(|table| {
                        select::order(Policy::RoundRobin, table.routable(0), &pool.cursor, |n| {
                            fastrand::usize(..n)
                        })
                    }))
                })
            });
            // An owned Arc per pick: a shared reference count the writer also touches.
            group.bench_function("arcswap_load_full_round_robin", |b| {
                b.iter(|| {
                    let table = routing.load();
                    black_box(select::order(
                        Policy::RoundRobin,
                        table.routable(0),
                        &pool.cursor,
                        |n| fastrand::usize(..n),
                    ))
                })
            });
        },
    );

    let locked = Arc::new(RwLock::new(Arc::new(RoutingTable::new(0, vec![members.clone()]))));
    let (writer, swap_members) = (locked.clone(), members.clone());
    with_swapper(
        move |g| *writer.write().unwrap() = Arc::new(RoutingTable::new(g, vec![swap_members.clone()])),
        Duration::ZERO,
        || {
            group.bench_function("rwlock_round_robin", |b| {
                b.iter(|| {
                    let table = locked.read().unwrap().clone();
                    black_box(select::order(
                        Policy::RoundRobin,
                        table.routable(0),
                        &pool.cursor,
                        |n| fastrand::usize(..n),
                    ))
                })
            });
        },
    );
    group.finish();
}

criterion_group!(benches, pick, walk_at_a_steady_rate);
criterion_main!(benches);
