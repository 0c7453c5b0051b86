//! The verdict a primary pool's key holds: which backend is the primary, the evidence
//! its writer's check saw, and who wrote it when. The key's `mod_revision` is the
//! epoch: it only grows, so a proxy can tell an older verdict from a newer one.

use serde::{Deserialize, Serialize};

use crate::health::Report;

/// A key's revision in etcd: the epoch of the verdict it holds.
pub type Epoch = i64;

/// The value of `<prefix>/pools/<pool>/primary` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The primary's backend name.
    pub backend: String,
    /// What the writer's check saw of it.
    #[serde(default)]
    pub evidence: Evidence,
    /// The proxy that wrote it.
    pub by: String,
    /// When it was written (Unix milliseconds, the writer's clock).
    pub at_ms: u64,
}

/// Why the writer took the backend for the primary: the role-specific identity and
/// position its check reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// MySQL `@@server_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
    /// MySQL GTID position (`@@gtid_binlog_pos` / `@@gtid_executed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// MongoDB electionId (24 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_id: Option<String>,
    /// MongoDB setVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_version: Option<i64>,
}

impl Evidence {
    /// The evidence in a check's report.
    pub fn of(report: Option<&Report>) -> Evidence {
        let Some(report) = report else {
            return Evidence::default();
        };
        let mongo = report.mongo.as_ref();
        Evidence {
            server_id: report.server_id,
            position: report.position.clone(),
            election_id: mongo.and_then(|m| m.election_id.clone()),
            set_version: mongo.and_then(|m| m.set_version),
        }
    }
}

/// The most a value of ours in etcd holds; a bigger one is not ours.
const MAX_VALUE: usize = 64 * 1024;

/// A JSON value read from etcd (a verdict, an observation), size-capped: `Err` says
/// why it is not one (the caller logs it and treats the key as absent).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() > MAX_VALUE {
        return Err(format!("{} bytes, more than a value of ours holds", bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The JSON written to etcd.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain data serializes")
}

impl Verdict {
    /// A value read from etcd, or why it is not a verdict.
    pub fn decode(bytes: &[u8]) -> Result<Verdict, String> {
        decode(bytes)
    }

    /// What stands for a verdict key whose value is not a verdict (another version's
    /// format, a hand-written value): it names no member, so the pool holds and says
    /// why, and nobody overwrites it by accident.
    pub fn unreadable(why: &str) -> Verdict {
        Verdict {
            backend: format!("(an unreadable verdict: {})", crate::logs::peer(why)),
            evidence: Evidence::default(),
            by: "?".into(),
            at_ms: 0,
        }
    }

    /// The JSON written to etcd.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_a_verdict() {
        let verdict = Verdict {
            backend: "db2".into(),
            evidence: Evidence {
                server_id: Some(2),
                position: Some("0-2-17".into()),
                ..Evidence::default()
            },
            by: "proxy-a".into(),
            at_ms: 1,
        };
        assert_eq!(Verdict::decode(&verdict.encode()), Ok(verdict));
        assert!(Verdict::decode(b"db2").is_err());
        assert!(Verdict::decode(br#"{"by":"x","at_ms":1}"#).is_err());
        assert!(Verdict::decode(&vec![b' '; 70_000]).is_err());
    }
}
