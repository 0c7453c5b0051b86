//! MongoDB's stale-primary rule (SDAM `updateRSFromPrimary`), pure: which of the
//! members claiming to be primary are stale, given the newest `(electionId,
//! setVersion)` the pool has seen (SDAM's `maxElectionId` / `maxSetVersion`).
//!
//! Each claim is judged by the rule of the wire version of the reply it came from:
//!
//! - **MongoDB 6.0+** (`maxWireVersion` ≥ 17, and replies without one): claims are
//!   ordered by `(electionId, setVersion)`, electionId first, a missing value below any
//!   present one. A claim below the newest is stale; the newest is the greatest claim
//!   seen (it may carry a lower setVersion than an older one: a new election wins).
//!   So a primary without an electionId is stale once one with an electionId was seen,
//!   and among primaries without one the higher setVersion wins.
//! - **Before 6.0**: setVersion first. Only a claim with both an electionId and a
//!   setVersion can be stale: when the newest setVersion seen is higher, or equal with
//!   a higher electionId. A claim missing either is trusted. The newest setVersion is
//!   the highest seen from any claim; the newest electionId comes from the greatest
//!   `(setVersion, electionId)` among claims with both.
//!
//! SDAM processes replies in the order they arrive, and the later of two equal claims
//! wins; the pool decides from every member's latest reply at once, so two equal,
//! non-stale claims are two writers here (the single-writer rule then applies).

use serde::{Deserialize, Serialize};

/// The first wire version of MongoDB 6.0.
pub const MODERN_WIRE: i64 = 17;

/// What one reply claiming to be the primary carries for the rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claim {
    /// `electionId` as 24 hex digits (ObjectIds compare like their bytes).
    pub election_id: Option<String>,
    /// `setVersion`.
    pub set_version: Option<i64>,
    /// From a 6.0+ member (`maxWireVersion` ≥ 17, or none reported).
    pub modern: bool,
}

/// The newest election a pool has seen (SDAM's `maxElectionId`, `maxSetVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Newest {
    /// `maxElectionId`.
    pub election_id: Option<String>,
    /// `maxSetVersion`.
    pub set_version: Option<i64>,
}

impl Newest {
    /// The newest after taking in `claims` (from members claiming primary), starting
    /// from what was seen before.
    pub fn after<'a>(seen: Option<&Newest>, claims: impl IntoIterator<Item = &'a Claim>) -> Newest {
        let mut newest = seen.cloned().unwrap_or_default();
        let claims: Vec<&Claim> = claims.into_iter().collect();
        // 6.0+: the greatest (electionId, setVersion) tuple; it replaces both values.
        for claim in claims.iter().filter(|c| c.modern) {
            if (&claim.election_id, claim.set_version) > (&newest.election_id, newest.set_version) {
                newest = Newest {
                    election_id: claim.election_id.clone(),
                    set_version: claim.set_version,
                };
            }
        }
        // Before 6.0: the highest setVersion of any claim; the electionId of the
        // greatest (setVersion, electionId) among claims with both.
        for claim in claims.iter().filter(|c| !c.modern) {
            if let (Some(version), Some(id)) = (claim.set_version, &claim.election_id) {
                let greater = match (newest.set_version, &newest.election_id) {
                    (Some(v), Some(newest_id)) => (version, id) >= (v, newest_id),
                    _ => true,
                };
                if greater {
                    newest.election_id = Some(id.clone());
                }
            }
            if claim.set_version > newest.set_version {
                newest.set_version = claim.set_version;
            }
        }
        newest
    }

    /// Whether `claim` is a stale primary against this newest election.
    pub fn is_stale(&self, claim: &Claim) -> bool {
        if claim.modern {
            return (&claim.election_id, claim.set_version) < (&self.election_id, self.set_version);
        }
        match (
            claim.set_version,
            &claim.election_id,
            self.set_version,
            &self.election_id,
        ) {
            (Some(version), Some(id), Some(newest_version), Some(newest_id)) => {
                newest_version > version || (newest_version == version && newest_id > id)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "election_tests.rs"]
mod tests;
