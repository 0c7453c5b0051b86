//! Redis probe: on a connection kept between checks (after `AUTH` when credentials
//! are set, and TLS from the first byte when the backend has it), one round trip of
//! two pipelined commands:
//!
//! ```text
//! INFO replication   role, master_link_status, offsets, replids, connected_slaves
//! INFO persistence   loading
//! ```
//!
//! Classification ([`classify`], pure): `role:master` → `Primary`, `role:slave` →
//! `Replica` with its link state; a node loading its dataset, or one that answers
//! with an error (`-BUSY` while a script runs, `-MASTERDOWN`, `-LOADING`, `-NOAUTH`)
//! fails the check at L7: it is not routable. The replication ids and offsets go into
//! the report for the pool's rules (a superseded master is told by its replid
//! history, not by offsets).

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{connect, drop_on_error, phase, read_decoded};
use crate::config::RedisProbeConfig;
use crate::health::probe::Endpoint;
use crate::health::{CheckError, Phase, ReplicaState, Report, Role};
use crate::protocol::resp::{self, Value};
use crate::stream::Stream;
use crate::tls::ClientTls;

/// What `INFO replication` says of a Redis node, for the pool's rules and `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RedisInfo {
    /// The id of the replication history this node serves or follows.
    pub replid: String,
    /// The id of the history it continued, when it was promoted (else all zeros).
    pub replid2: String,
    /// `master_repl_offset`.
    pub offset: i64,
    /// `slave_repl_offset` (replicas).
    pub replica_offset: Option<i64>,
    /// `connected_slaves`.
    pub replicas: u32,
}

/// The Redis probe.
#[derive(Debug, Default)]
pub struct RedisProbe {
    config: RedisProbeConfig,
    conn: Option<Stream>,
    tls: Option<ClientTls>,
}

impl RedisProbe {
    /// Builds the probe; it connects at the first check.
    pub fn new(config: &RedisProbeConfig, tls: Option<ClientTls>) -> Self {
        RedisProbe {
            config: config.clone(),
            conn: None,
            tls,
        }
    }

    /// Drops the kept connection; the next check connects (and logs in) afresh.
    pub fn forget_connection(&mut self) {
        self.conn = None;
    }

    /// Checks once under `deadline`; a failure drops the kept connection.
    pub async fn check(&mut self, to: Endpoint, deadline: Instant) -> Result<Report, CheckError> {
        let result = self.check_inner(to, deadline).await;
        drop_on_error(&mut self.conn, result)
    }

    async fn check_inner(&mut self, to: Endpoint, deadline: Instant) -> Result<Report, CheckError> {
        if self.conn.is_none() {
            let mut stream = connect(to, self.tls.as_ref(), deadline).await?;
            if let Some(password) = &self.config.password {
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                if let Some(user) = &self.config.user {
                    args.push(user.as_bytes());
                }
                args.push(password.expose().as_bytes());
                let replies = exchange(&mut stream, &resp::command(&args), 1, deadline).await?;
                if let Some(Value::Error(e)) = replies.first() {
                    return Err(CheckError::Auth(crate::logs::peer(e)));
                }
            }
            self.conn = Some(stream);
        }
        let stream = self.conn.as_mut().expect("connected");
        let mut request = resp::command(&[b"INFO", b"replication"]);
        request.extend_from_slice(&resp::command(&[b"INFO", b"persistence"]));
        let replies = exchange(stream, &request, 2, deadline).await?;
        let text = |v: &Value| match v {
            Value::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Value::Error(e) => Err(CheckError::Response(format!("INFO refused: {}", crate::logs::peer(e)))),
            other => Err(CheckError::Protocol(format!("INFO answered {other:?}"))),
        };
        classify(&text(&replies[0])?, &text(&replies[1])?)
    }
}

/// Sends `request` and reads `count` replies, under `deadline`.
async fn exchange(
    stream: &mut Stream,
    request: &[u8],
    count: usize,
    deadline: Instant,
) -> Result<Vec<Value>, CheckError> {
    phase(deadline, Phase::Requesting, async {
        stream
            .write_all(request)
            .await
            .map_err(|e| CheckError::Protocol(format!("sending a command: {e}")))
    })
    .await?;
    phase(deadline, Phase::Reading, async {
        let mut buf = Vec::with_capacity(4096);
        let mut replies = Vec::with_capacity(count);
        while replies.len() < count {
            let max = resp::MAX_BULK + resp::MAX_LINE;
            replies.push(read_decoded(stream, &mut buf, max, "a reply", resp::decode).await?);
        }
        Ok(replies)
    })
    .await
}

/// The role and replication state from `INFO replication` and `INFO persistence`
/// (their text). Pure. An unknown role is an error, never a guess.
pub fn classify(replication: &str, persistence: &str) -> Result<Report, CheckError> {
    let field = |text: &'_ str, key: &str| {
        resp::info_fields(text)
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    };
    if field(persistence, "loading").as_deref() == Some("1") {
        return Err(CheckError::Response("the node is loading its dataset".into()));
    }
    let number = |key: &str| field(replication, key).and_then(|v| v.parse::<i64>().ok());
    let info = RedisInfo {
        replid: field(replication, "master_replid").unwrap_or_default(),
        replid2: field(replication, "master_replid2").unwrap_or_default(),
        offset: number("master_repl_offset").unwrap_or(0),
        replica_offset: number("slave_repl_offset"),
        replicas: number("connected_slaves").unwrap_or(0).max(0) as u32,
    };
    let (role, replica) = match field(replication, "role").as_deref() {
        Some("master") => (Role::Primary, None),
        Some("slave") => {
            let up = field(replication, "master_link_status").as_deref() == Some("up");
            let source = field(replication, "master_host").zip(field(replication, "master_port"));
            // Lag in bytes needs the master's offset: a pool-level comparison (not
            // here). A linked replica counts as current; one whose link is down serves
            // what it has, as a MySQL replica reconnecting to its source does.
            let state = ReplicaState {
                io_running: up,
                io_connecting: !up,
                sql_running: true,
                lag: up.then_some(std::time::Duration::ZERO),
                source: source.map(|(h, p)| format!("{h}:{p}")),
            };
            (Role::Replica, Some(state))
        }
        other => return Err(CheckError::Response(format!("INFO replication has role {other:?}"))),
    };
    Ok(Report {
        role,
        replica,
        position: Some(format!("{}:{}", info.replid, info.offset)),
        redis: Some(info),
        ..Report::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.0.1,port=26402,state=online,offset=98,lag=0\r\n\
        master_replid:4c9b4b0b\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n\
        master_repl_offset:526\r\nsecond_repl_offset:-1\r\n";
    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:26401\r\n\
        master_link_status:up\r\nslave_repl_offset:526\r\nslave_read_only:1\r\nmaster_replid:4c9b4b0b\r\n\
        master_repl_offset:526\r\n";

    #[test]
    fn roles_and_histories_are_read() {
        let master = classify(MASTER, "loading:0\r\n").unwrap();
        assert_eq!(master.role, Role::Primary);
        let info = master.redis.unwrap();
        assert_eq!((info.replid.as_str(), info.offset, info.replicas), ("4c9b4b0b", 526, 2));
        let replica = classify(REPLICA, "loading:0\r\n").unwrap();
        assert_eq!(replica.role, Role::Replica);
        let state = replica.replica.unwrap();
        assert!(state.io_running && !state.io_connecting);
        assert_eq!(state.source.as_deref(), Some("127.0.0.1:26401"));
        assert_eq!(replica.redis.unwrap().replica_offset, Some(526));
        let cut = classify(&REPLICA.replace("master_link_status:up", "master_link_status:down"), "").unwrap();
        assert!(cut.replica.unwrap().io_connecting);
    }

    #[test]
    fn loading_and_unknown_roles_fail_the_check() {
        assert!(matches!(
            classify(MASTER, "loading:1\r\n"),
            Err(CheckError::Response(_))
        ));
        assert!(matches!(
            classify("role:sentinel\r\n", ""),
            Err(CheckError::Response(_))
        ));
        assert!(matches!(classify("", ""), Err(CheckError::Response(_))));
    }
}
