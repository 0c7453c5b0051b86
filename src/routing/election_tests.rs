//! The stale-primary rule against the applicable scenarios of MongoDB's SDAM tests
//! (`server-discovery-and-monitoring/tests/rs/`, fixed member lists), restated as
//! tables: replies arrive one by one; after each, the members whose latest reply
//! claims primary and is not stale are the candidates.
//!
//! Where SDAM keeps the later of two claims that are both not stale, the pool keeps
//! both (two writers; the single-writer rule decides), marked `TWO` below.

use super::*;

/// One reply: member `0`, `1` or `2` claims primary with `(setVersion, electionId)`
/// (electionIds as small numbers, `None` for absent) from a 6.0+ (`true`) or older
/// server; `None` for a reply that claims nothing (secondary, or a failed check).
type Reply = (usize, Option<(Option<i64>, Option<u8>, bool)>);

fn claim((version, id, modern): (Option<i64>, Option<u8>, bool)) -> Claim {
    Claim {
        election_id: id.map(|n| format!("{n:024x}")),
        set_version: version,
        modern,
    }
}

/// A scenario: its name, the replies in order, and the candidates after each.
type Scenario = (&'static str, Vec<Reply>, Vec<&'static [usize]>);

/// The candidates after each reply.
fn run(replies: &[Reply]) -> Vec<Vec<usize>> {
    let mut latest: [Option<Claim>; 3] = Default::default();
    let mut seen: Option<Newest> = None;
    let mut after = Vec::new();
    for &(member, reply) in replies {
        latest[member] = reply.map(claim);
        let claims: Vec<&Claim> = latest.iter().flatten().collect();
        let newest = Newest::after(seen.as_ref(), claims.iter().copied());
        let candidates = (0..3)
            .filter(|&m| latest[m].as_ref().is_some_and(|c| !newest.is_stale(c)))
            .collect();
        after.push(candidates);
        seen = Some(newest);
    }
    after
}

const M: bool = true; // maxWireVersion 17 or more (or none reported)
const OLD: bool = false; // before 6.0
const TWO: &[usize] = &[0, 1];

fn p(version: i64, id: u8, modern: bool) -> Option<(Option<i64>, Option<u8>, bool)> {
    Some((Some(version), Some(id), modern))
}

fn no_id(version: i64, modern: bool) -> Option<(Option<i64>, Option<u8>, bool)> {
    Some((Some(version), None, modern))
}

#[test]
fn sdam_stale_primary_scenarios() {
    let scenarios: Vec<Scenario> = vec![
        (
            "new_primary_new_electionid",
            vec![(0, p(1, 1, M)), (1, p(1, 2, M)), (0, p(1, 1, M))],
            vec![&[0], &[1], &[1]],
        ),
        (
            "new_primary_new_setversion",
            vec![(0, p(1, 1, M)), (1, p(2, 1, M)), (0, p(1, 1, M))],
            vec![&[0], &[1], &[1]],
        ),
        (
            "primary_disconnect_electionid",
            vec![
                (0, p(1, 1, M)),
                (1, p(1, 2, M)),
                (1, None),
                (0, p(1, 1, M)),
                (0, p(1, 3, M)),
                (1, None),
            ],
            vec![&[0], &[1], &[], &[], &[0], &[0]],
        ),
        (
            "primary_disconnect_setversion",
            vec![
                (0, p(1, 1, M)),
                (1, p(2, 1, M)),
                (1, None),
                (0, p(1, 1, M)),
                (0, p(2, 2, M)),
            ],
            vec![&[0], &[1], &[], &[], &[0]],
        ),
        (
            "equal_electionids (SDAM: the later)",
            vec![(0, p(1, 1, M)), (1, p(1, 1, M))],
            vec![&[0], TWO],
        ),
        (
            "set_version_can_rollback",
            vec![(0, p(2, 1, M)), (1, p(1, 2, M)), (0, p(2, 1, M))],
            vec![&[0], &[1], &[1]],
        ),
        (
            "setversion_without_electionid",
            vec![(0, no_id(2, M)), (1, no_id(1, M))],
            vec![&[0], &[0]],
        ),
        (
            "setversion_without_electionid-pre-6.0 (SDAM: the later)",
            vec![(0, no_id(2, OLD)), (1, no_id(1, OLD))],
            vec![&[0], TWO],
        ),
        (
            "setversion_equal_max_without_electionid (SDAM: the later)",
            vec![(0, no_id(1, M)), (1, no_id(1, M))],
            vec![&[0], TWO],
        ),
        (
            "setversion_greaterthan_max_without_electionid",
            vec![(0, no_id(1, M)), (1, no_id(2, M))],
            vec![&[0], &[1]],
        ),
        (
            "use_setversion_without_electionid",
            vec![(0, p(1, 1, M)), (1, no_id(2, M)), (0, p(1, 2, M))],
            vec![&[0], &[0], &[0]],
        ),
        (
            "use_setversion_without_electionid-pre-6.0",
            vec![(0, p(1, 1, OLD)), (1, no_id(2, OLD)), (0, p(1, 2, OLD))],
            vec![&[0], &[1], &[1]],
        ),
        (
            "null_election_id",
            vec![(0, no_id(1, M)), (1, p(1, 2, M)), (0, no_id(1, M)), (2, p(1, 1, M))],
            vec![&[0], &[1], &[1], &[1]],
        ),
        (
            // SDAM marks A unknown when B is accepted (it trusts A's next reply again);
            // the pool judges every member's latest reply at once: A's claim without
            // an electionId is trusted before 6.0, so A and B are two writers.
            "null_election_id-pre-6.0",
            vec![
                (0, no_id(1, OLD)),
                (1, p(1, 2, OLD)),
                (0, no_id(1, OLD)),
                (2, p(1, 1, OLD)),
            ],
            vec![&[0], TWO, TWO, TWO],
        ),
        (
            "new_primary (no electionId or setVersion)",
            vec![(0, Some((None, None, M))), (1, Some((None, None, M)))],
            vec![&[0], TWO],
        ),
    ];
    for (name, replies, expected) in scenarios {
        let got = run(&replies);
        let expected: Vec<Vec<usize>> = expected.into_iter().map(<[usize]>::to_vec).collect();
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn the_newest_election_of_6_0_orders_by_election_first_and_may_lower_the_set_version() {
    let newest = Newest::after(None, [&claim((Some(2), Some(1), M)), &claim((Some(1), Some(2), M))]);
    assert_eq!(
        newest.set_version,
        Some(1),
        "a newer election wins with its own setVersion"
    );
    assert_eq!(newest.election_id.as_deref(), Some("000000000000000000000002"));
}

#[test]
fn before_6_0_the_set_version_never_goes_down() {
    let newest = Newest::after(None, [&claim((Some(2), Some(1), OLD)), &claim((Some(1), Some(2), OLD))]);
    assert_eq!(newest.set_version, Some(2));
    assert!(
        newest.is_stale(&claim((Some(1), Some(2), OLD))),
        "setVersion first before 6.0"
    );
    assert!(
        !newest.is_stale(&claim((Some(1), None, OLD))),
        "a claim missing a value is trusted"
    );
}
