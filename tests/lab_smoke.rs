//! The MariaDB launcher itself: a cluster comes up replicating, with the accounts the
//! other tests rely on.

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
