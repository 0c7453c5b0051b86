//! Selection policies: the order in which one new session tries a pool's routable
//! members. The first is the pick; the rest are fallbacks, tried only while no byte
//! has gone upstream (a connect failure).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Policy;
use crate::pool::Member;

/// What least-connections and power-of-two compare.
pub trait Load {
    /// How busy it is now (for a member, its open sessions).
    fn load(&self) -> usize;
}

impl Load for Arc<Member> {
    fn load(&self) -> usize {
        self.active()
    }
}

/// Orders `members` (given in priority order) for one new session. `random(n)`
/// returns a number below `n`.
pub fn order<T: Clone + Load>(
    policy: Policy,
    members: &[T],
    cursor: &AtomicUsize,
    mut random: impl FnMut(usize) -> usize,
) -> Vec<T> {
    let n = members.len();
    if n <= 1 {
        return members.to_vec();
    }
    match policy {
        Policy::First => members.to_vec(),
        Policy::RoundRobin => rotated(members, cursor.fetch_add(1, Ordering::Relaxed) % n),
        Policy::LeastConnections => {
            // Rotate first so that ties (all idle) spread like round-robin.
            let mut ordered = rotated(members, cursor.fetch_add(1, Ordering::Relaxed) % n);
            ordered.sort_by_key(Load::load);
            ordered
        }
        Policy::PowerOfTwo => {
            let a = random(n);
            let b = (a + 1 + random(n - 1)) % n;
            let (pick, other) = if members[b].load() < members[a].load() {
                (b, a)
            } else {
                (a, b)
            };
            let mut ordered = Vec::with_capacity(n);
            ordered.push(members[pick].clone());
            ordered.push(members[other].clone());
            ordered.extend(
                members
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != pick && *i != other)
                    .map(|(_, m)| m.clone()),
            );
            ordered
        }
    }
}

fn rotated<T: Clone>(members: &[T], start: usize) -> Vec<T> {
    members[start..].iter().chain(&members[..start]).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Fake(&'static str, usize);

    impl Load for Fake {
        fn load(&self) -> usize {
            self.1
        }
    }

    fn names(v: &[Fake]) -> Vec<&'static str> {
        v.iter().map(|f| f.0).collect()
    }

    const MEMBERS: [Fake; 3] = [Fake("a", 5), Fake("b", 0), Fake("c", 2)];

    #[test]
    fn first_keeps_priority_order() {
        let cursor = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(names(&order(Policy::First, &MEMBERS, &cursor, |_| 0)), ["a", "b", "c"]);
        }
    }

    #[test]
    fn round_robin_rotates_and_keeps_the_rest_as_fallbacks() {
        let cursor = AtomicUsize::new(0);
        let picks: Vec<_> = (0..4)
            .map(|_| names(&order(Policy::RoundRobin, &MEMBERS, &cursor, |_| 0)))
            .collect();
        assert_eq!(
            picks,
            [
                vec!["a", "b", "c"],
                vec!["b", "c", "a"],
                vec!["c", "a", "b"],
                vec!["a", "b", "c"]
            ]
        );
    }

    #[test]
    fn least_connections_orders_by_load() {
        let cursor = AtomicUsize::new(0);
        assert_eq!(
            names(&order(Policy::LeastConnections, &MEMBERS, &cursor, |_| 0)),
            ["b", "c", "a"]
        );
    }

    #[test]
    fn least_connections_spreads_ties() {
        let idle = [Fake("a", 0), Fake("b", 0)];
        let cursor = AtomicUsize::new(0);
        let first: Vec<_> = (0..4)
            .map(|_| order(Policy::LeastConnections, &idle, &cursor, |_| 0)[0].0)
            .collect();
        assert_eq!(first, ["a", "b", "a", "b"]);
    }

    #[test]
    fn power_of_two_picks_the_less_loaded_of_two() {
        let cursor = AtomicUsize::new(0);
        // random draws: a = 0 ("a", load 5), then b = (0 + 1 + 1) % 3 = 2 ("c", load 2).
        let mut draws = [0, 1].into_iter();
        let ordered = order(Policy::PowerOfTwo, &MEMBERS, &cursor, |_| draws.next().unwrap());
        assert_eq!(names(&ordered), ["c", "a", "b"]);
    }

    #[test]
    fn power_of_two_never_compares_a_member_with_itself() {
        let cursor = AtomicUsize::new(0);
        for a in 0..3 {
            for b in 0..2 {
                let mut draws = [a, b].into_iter();
                let ordered = order(Policy::PowerOfTwo, &MEMBERS, &cursor, |_| draws.next().unwrap());
                let mut seen = names(&ordered);
                seen.sort();
                assert_eq!(seen, ["a", "b", "c"], "every member once");
            }
        }
    }

    #[test]
    fn empty_and_single_pools() {
        let cursor = AtomicUsize::new(0);
        assert!(order::<Fake>(Policy::RoundRobin, &[], &cursor, |_| 0).is_empty());
        assert_eq!(names(&order(Policy::PowerOfTwo, &MEMBERS[..1], &cursor, |_| 0)), ["a"]);
    }
}
