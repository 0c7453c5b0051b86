//! The real peers a drill runs against, by workload kind (what the proxies in front
//! of them are told is in [`crate::proxy_config`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use switchyard_lab::mariadb::{Cluster, Placement};
use switchyard_lab::mongo::{ReplicaSet, Secantus};

use crate::scenario::WorkloadKind;
use crate::servers::{Protocol, Servers};

pub enum Peers {
    Mysql(Arc<Mutex<Cluster>>),
    Mongo(Arc<Mutex<ReplicaSet>>),
    Secantus(Arc<Secantus>),
    Servers(tokio::sync::Mutex<Servers>),
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("peer setup panicked")
}

impl Peers {
    /// Starts the peers of a `kind` workload on loopback.
    pub async fn start(kind: WorkloadKind) -> Result<Peers> {
        Ok(match kind {
            WorkloadKind::Mysql => Peers::mysql(Placement::default()).await?,
            WorkloadKind::Mongo => {
                let set = blocking(|| ReplicaSet::start(3, "rs0"))
                    .await
                    .context("starting the replica set")?;
                Peers::Mongo(Arc::new(Mutex::new(set)))
            }
            WorkloadKind::Secantus => Peers::Secantus(Arc::new(blocking(Secantus::start).await?)),
            WorkloadKind::Tcp => Peers::Servers(tokio::sync::Mutex::new(Servers::start(Protocol::Echo, 2).await?)),
            WorkloadKind::Http => Peers::Servers(tokio::sync::Mutex::new(Servers::start(Protocol::Http, 2).await?)),
        })
    }

    /// A 3-node MariaDB cluster placed as `placement` says, with the drill's table.
    pub async fn mysql(placement: Placement) -> Result<Peers> {
        let cluster = blocking(|| Cluster::start_placed(3, "", placement))
            .await
            .context("starting the MariaDB cluster")?;
        Peers::with_drill_table(cluster)
    }

    /// A 3-node MariaDB cluster with semi-synchronous replication (see
    /// [`Cluster::start_semi_sync`]), with the drill's table: the soak's, whose
    /// repeated kills must lose no acknowledged write.
    pub async fn mysql_semi_sync() -> Result<Peers> {
        let cluster = blocking(|| Cluster::start_semi_sync(3))
            .await
            .context("starting the semi-sync MariaDB cluster")?;
        Peers::with_drill_table(cluster)
    }

    fn with_drill_table(cluster: Cluster) -> Result<Peers> {
        cluster.sql(
            0,
            "CREATE TABLE appdb.drill (id BIGINT PRIMARY KEY, server_id INT NOT NULL, worker INT NOT NULL)",
        )?;
        for replica in 1..cluster.nodes().len() {
            cluster.wait_caught_up(replica, 0)?;
        }
        Ok(Peers::Mysql(Arc::new(Mutex::new(cluster))))
    }

    /// The ids stored at the end, read directly from the final primary (MySQL and
    /// MongoDB); `None` for peers that store nothing.
    pub async fn stored_ids(&self, final_primary: usize) -> Result<Option<HashSet<u64>>> {
        let addr = match self {
            Peers::Mysql(cluster) => {
                let cluster = cluster.clone();
                let ids = blocking(move || {
                    cluster
                        .lock()
                        .expect("cluster lock")
                        .sql(final_primary, "SELECT id FROM appdb.drill")
                })
                .await?;
                return Ok(Some(ids.lines().filter_map(|l| l.trim().parse().ok()).collect()));
            }
            Peers::Mongo(set) => set.lock().expect("set lock").addr(final_primary),
            Peers::Secantus(s) => s.addr(),
            Peers::Servers(_) => return Ok(None),
        };
        // The whole read-back is bounded: a dead or hung final primary must not hang the drill.
        let read_back = async {
            let uri = format!("mongodb://{addr}/?directConnection=true&serverSelectionTimeoutMS=10000");
            let client = mongodb::Client::with_uri_str(uri).await?;
            let coll = client.database("app").collection::<bson::Document>("drill");
            let mut cursor = coll.find(bson::doc! {}).await?;
            let mut ids = HashSet::new();
            while cursor.advance().await? {
                // Stores may hand an integer back as int32, int64 or double.
                match cursor.current().get("_id") {
                    Ok(Some(bson::RawBsonRef::Int64(id))) => ids.insert(id as u64),
                    Ok(Some(bson::RawBsonRef::Int32(id))) => ids.insert(id as u64),
                    Ok(Some(bson::RawBsonRef::Double(id))) => ids.insert(id as u64),
                    _ => false,
                };
            }
            // shutdown() waits for every cursor to be dropped first.
            drop(cursor);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), client.shutdown()).await;
            anyhow::Ok(ids)
        };
        let ids = tokio::time::timeout(std::time::Duration::from_secs(60), read_back)
            .await
            .with_context(|| format!("reading the drill's ids back from {addr} took over 60s"))??;
        Ok(Some(ids))
    }
}
