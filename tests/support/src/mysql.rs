//! MySQL client helpers for tests that go through the proxy (real `mysql_async`
//! clients, as applications use them).

use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use switchyard_lab::mariadb::{Cluster, APP_PASSWORD, APP_USER, MONITOR_PASSWORD, MONITOR_USER};

/// Connects as the unprivileged `app` user (which `read_only` stops).
pub async fn connect(addr: SocketAddr) -> mysql_async::Result<Conn> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some("appdb"))
        // Without this mysql_async would reconnect over the server's unix socket and
        // bypass the proxy.
        .prefer_socket(false);
    match tokio::time::timeout(Duration::from_secs(15), Conn::new(opts)).await {
        Ok(result) => result,
        Err(_) => Err(mysql_async::Error::Other("connect through the proxy timed out".into())),
    }
}

pub async fn server_id(conn: &mut Conn) -> mysql_async::Result<u32> {
    Ok(conn.query_first("SELECT @@server_id").await?.expect("one row"))
}

/// Inserts a row tagged with `tag` and the server that took it; returns that server.
pub async fn insert(conn: &mut Conn, tag: &str) -> mysql_async::Result<u32> {
    conn.exec_drop("INSERT INTO kv (v, server_id) VALUES (?, @@server_id)", (tag,))
        .await?;
    server_id(conn).await
}

/// A config with a `writer` (primary) and a `reader` (replica) pool over the cluster.
pub fn cluster_config(cluster: &Cluster, writer_extra: &str, reader_extra: &str) -> String {
    let mut text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\n\
         [check]\nkind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n\
         interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n"
    );
    let mut names = Vec::new();
    for node in cluster.nodes() {
        let name = format!("db{}", node.index + 1);
        text += &format!("[backends.{name}]\naddress = \"{}\"\n\n", node.addr());
        names.push(format!("\"{name}\""));
    }
    let names = names.join(", ");
    text += &format!(
        "[pools.writer]\nbackends = [{names}]\nrole = \"primary\"\nhold_timeout = \"10s\"\n{writer_extra}\n\n"
    );
    text += &format!("[pools.reader]\nbackends = [{names}]\nrole = \"replica\"\npolicy = \"round-robin\"\nmax_replication_lag = \"5s\"\n{reader_extra}\n\n");
    text += "[listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n\n[listeners.reader]\nlisten = \"127.0.0.1:0\"\npool = \"reader\"\n";
    text
}
