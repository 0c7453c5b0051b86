//! Selection policies: the order in which one new session tries a pool's routable
//! members. The first is the pick; the rest are fallbacks, tried only while no byte
//! has gone upstream (a connect failure).
//!
//! A [`Walk`] is one round of that order, drawn once (the round-robin position, the
//! power-of-two pair) and then walked one member at a time over the current table:
//! nothing is allocated per session, and a fallback comes from the newest table, not
//! from a copy taken when the session arrived. [`order`] collects a whole walk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Policy;
use crate::pool::Member;

/// What least-connections and power-of-two compare, and what a walk remembers.
pub trait Load {
    /// How busy it is now (for a member, its open sessions).
    fn load(&self) -> usize;
    /// What tells members apart across tables (a member's backend id).
    fn key(&self) -> usize;
}

impl Load for Arc<Member> {
    fn load(&self) -> usize {
        self.active()
    }

    fn key(&self) -> usize {
        self.backend.id
    }
}

/// Members one walk has handed out: inline up to [`Taken::INLINE`], beyond that (a
/// round with that many failed connects) in a vector.
#[derive(Debug, Default)]
struct Taken {
    inline: [usize; Taken::INLINE],
    len: usize,
    more: Vec<usize>,
}

impl Taken {
    const INLINE: usize = 8;

    fn contains(&self, key: usize) -> bool {
        self.inline[..self.len.min(Self::INLINE)].contains(&key) || self.more.contains(&key)
    }

    fn insert(&mut self, key: usize) {
        if self.len < Self::INLINE {
            self.inline[self.len] = key;
        } else {
            self.more.push(key);
        }
        self.len += 1;
    }
}

/// One round of a pool's order for one session.
#[derive(Debug)]
pub struct Walk {
    policy: Policy,
    /// The rotation (round-robin, least-connections' tie order).
    start: usize,
    /// Power-of-two: the two drawn positions.
    pair: (usize, usize),
    taken: Taken,
}

impl Walk {
    /// A new round over `n` routable members: draws from `cursor` and `random(n)`
    /// (a number below `n`) as the policy needs.
    pub fn new(policy: Policy, n: usize, cursor: &AtomicUsize, mut random: impl FnMut(usize) -> usize) -> Walk {
        let (mut start, mut pair) = (0, (0, 0));
        if n > 1 {
            match policy {
                Policy::First => {}
                Policy::RoundRobin | Policy::LeastConnections => start = cursor.fetch_add(1, Ordering::Relaxed) % n,
                Policy::PowerOfTwo => {
                    let a = random(n);
                    pair = (a, (a + 1 + random(n - 1)) % n);
                }
            }
        }
        Walk {
            policy,
            start,
            pair,
            taken: Taken::default(),
        }
    }

    /// A new round over `members` and its first member, in one look at the table
    /// (most sessions need no other).
    pub fn first<'a, T: Load>(
        policy: Policy,
        members: &'a [T],
        cursor: &AtomicUsize,
        random: impl FnMut(usize) -> usize,
    ) -> (Walk, Option<&'a T>) {
        let mut walk = Walk::new(policy, members.len(), cursor, random);
        let first = walk.next(members);
        (walk, first)
    }

    /// The next member of this round among `members` (the current table's, in
    /// priority order), or `None` once every one was handed out.
    pub fn next<'a, T: Load>(&mut self, members: &'a [T]) -> Option<&'a T> {
        let n = members.len();
        let fresh = |i: usize| (!self.taken.contains(members[i].key())).then_some(i);
        let rotated = (0..n).map(|i| (self.start + i) % n);
        let index = match self.policy {
            Policy::First => (0..n).find_map(fresh),
            Policy::RoundRobin => rotated.clone().find_map(fresh),
            // The least loaded; ties go to the earliest in the rotation.
            Policy::LeastConnections => {
                rotated
                    .clone()
                    .filter_map(fresh)
                    .fold(None, |best: Option<usize>, i| match best {
                        Some(b) if members[b].load() <= members[i].load() => Some(b),
                        _ => Some(i),
                    })
            }
            Policy::PowerOfTwo => {
                let (a, b) = self.pair;
                let (pick, other) = match (a < n, b < n) {
                    (true, true) if members[b].load() < members[a].load() => (b, a),
                    _ => (a, b),
                };
                [pick, other]
                    .into_iter()
                    .filter(|&i| i < n)
                    .find_map(fresh)
                    .or_else(|| (0..n).find_map(fresh))
            }
        }?;
        self.taken.insert(members[index].key());
        Some(&members[index])
    }
}

/// Orders `members` (given in priority order) for one new session: a whole
/// [`Walk`]. `random(n)` returns a number below `n`.
pub fn order<T: Clone + Load>(
    policy: Policy,
    members: &[T],
    cursor: &AtomicUsize,
    random: impl FnMut(usize) -> usize,
) -> Vec<T> {
    let mut walk = Walk::new(policy, members.len(), cursor, random);
    std::iter::from_fn(|| walk.next(members).cloned()).collect()
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

        fn key(&self) -> usize {
            self.0.as_ptr() as usize
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
    fn a_walk_takes_its_fallbacks_from_the_newest_table_and_never_repeats_one() {
        let cursor = AtomicUsize::new(0);
        let mut walk = Walk::new(Policy::First, MEMBERS.len(), &cursor, |_| 0);
        assert_eq!(walk.next(&MEMBERS).map(|f| f.0), Some("a"));
        // A new table: `a` moved behind the others, `d` joined.
        let newer = [Fake("c", 2), Fake("a", 5), Fake("d", 0)];
        let rest: Vec<&str> = std::iter::from_fn(|| walk.next(&newer).map(|f| f.0)).collect();
        assert_eq!(rest, ["c", "d"], "a was tried already");
    }

    #[test]
    fn a_walk_remembers_more_members_than_it_keeps_inline() {
        const NAMES: [&str; 12] = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11"];
        let many: Vec<Fake> = NAMES.iter().map(|n| Fake(n, 0)).collect();
        let cursor = AtomicUsize::new(5);
        let walked = names(&order(Policy::RoundRobin, &many, &cursor, |_| 0));
        assert_eq!(walked.len(), 12, "each once: {walked:?}");
        assert_eq!(walked[0], "m5", "from the cursor on");
        let mut sorted = walked.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 12);
    }

    #[test]
    fn empty_and_single_pools() {
        let cursor = AtomicUsize::new(0);
        assert!(order::<Fake>(Policy::RoundRobin, &[], &cursor, |_| 0).is_empty());
        assert_eq!(names(&order(Policy::PowerOfTwo, &MEMBERS[..1], &cursor, |_| 0)), ["a"]);
    }
}
