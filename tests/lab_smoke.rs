//! The launchers themselves: a MariaDB cluster comes up replicating, with the
//! accounts the other tests rely on; the semi-sync cluster and the scripted MongoDB
//! set bring a killed primary back as a replica that has every write.

use switchyard_lab::mariadb::Cluster;

#[test]
fn cluster_replicates_and_replicas_refuse_app_writes() {
    let cluster = Cluster::start(3).expect("cluster starts");
    for node in cluster.nodes() {
        let row = cluster.sql(node.index, "SELECT @@server_id, @@read_only").unwrap();
        let expected_ro = if node.index == 0 { 0 } else { 1 };
        assert_eq!(row, format!("{}\t{expected_ro}", node.server_id()));
        assert_eq!(
            cluster.sql(node.index, "SELECT v FROM appdb.kv").unwrap(),
            "hello",
            "replicated row on node{}",
            node.index + 1
        );
    }
    for replica in 1..3 {
        let status = cluster.slave_status(replica).unwrap();
        assert_eq!(status["Slave_IO_Running"], "Yes");
        assert_eq!(status["Slave_SQL_Running"], "Yes");
    }
}

/// The soak's MariaDB: with semi-sync, a killed primary restarts as a replica of
/// the promoted one and replicates again (its recovery dropped what no replica had).
#[test]
fn a_killed_semi_sync_primary_rejoins_as_a_replica() {
    let mut cluster = Cluster::start_semi_sync(3).expect("cluster starts");
    cluster.sql(0, "CREATE TABLE appdb.t (id INT PRIMARY KEY)").unwrap();
    for id in 0..20 {
        cluster.sql(0, &format!("INSERT INTO appdb.t VALUES ({id})")).unwrap();
    }
    let status = cluster
        .sql(0, "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'")
        .unwrap();
    assert!(status.ends_with("ON"), "the primary waits for a replica: {status}");
    cluster.kill9(0).unwrap();
    cluster.wait_caught_up(2, 1).ok();
    cluster.promote(1).unwrap();
    cluster.repoint(2, 1).unwrap();
    cluster.restart_as_replica(0, 1).unwrap();
    cluster.sql(1, "INSERT INTO appdb.t VALUES (100)").unwrap();
    for node in [0, 2] {
        cluster.wait_caught_up(node, 1).unwrap();
        assert_eq!(
            cluster.sql(node, "SELECT COUNT(*) FROM appdb.t").unwrap(),
            "21",
            "node{}",
            node + 1
        );
        let status = cluster.slave_status(node).unwrap();
        assert_eq!(
            (
                status["Slave_IO_Running"].as_str(),
                status["Slave_SQL_Running"].as_str()
            ),
            ("Yes", "Yes")
        );
    }
}

/// The soak's MongoDB peers: a member killed while writes go on rejoins caught up,
/// so electing it later loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mongo_member_rejoins_caught_up() {
    use switchyard_lab::mongo::ReplicaSet;
    let set = tokio::task::spawn_blocking(|| ReplicaSet::start(3, "rs0"))
        .await
        .unwrap()
        .unwrap();
    let set = std::sync::Arc::new(std::sync::Mutex::new(set));
    let client = |i: usize| {
        let addr = set.lock().unwrap().addr(i);
        mongodb::Client::with_uri_str(format!(
            "mongodb://{addr}/?directConnection=true&serverSelectionTimeoutMS=10000"
        ))
    };
    let primary = client(0).await.unwrap();
    let insert = |from: i64, count: i64| {
        let db = primary.database("app");
        async move {
            for id in from..from + count {
                let command = bson::doc! { "insert": "drill", "documents": [{ "_id": id }] };
                db.run_command(command).await.unwrap();
            }
        }
    };
    // More than a first batch (101) before the death: the catch-up pages with getMore
    // on the rejoined member too.
    insert(0, 150).await;
    let s = set.clone();
    tokio::task::spawn_blocking(move || s.lock().unwrap().kill9(2))
        .await
        .unwrap()
        .unwrap();
    insert(1000, 30).await;
    let s = set.clone();
    tokio::task::spawn_blocking(move || s.lock().unwrap().rejoin(2))
        .await
        .unwrap()
        .unwrap();
    insert(2000, 30).await;
    let s = set.clone();
    tokio::task::spawn_blocking(move || s.lock().unwrap().elect(Some(2)))
        .await
        .unwrap()
        .unwrap();
    let rejoined = client(2).await.unwrap();
    let count = rejoined
        .database("app")
        .collection::<bson::Document>("drill")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(count, 210, "every write, from before, during and after its death");
    tokio::task::spawn_blocking(move || drop(set)).await.unwrap();
}
