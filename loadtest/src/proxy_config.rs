//! The proxies' configs for a drill, built from its peers in one place: switchyard's
//! for every workload, HAProxy's (as an experienced operator would deploy it for
//! MySQL: `option mysql-check`, `inter 250 fall 2 rise 1`, `on-marked-down
//! shutdown-sessions`, `balance first` with backups) for MySQL drills.

use std::fmt::Write;
use std::net::SocketAddr;

use switchyard_lab::mariadb::{Cluster, MONITOR_PASSWORD, MONITOR_USER};

use crate::peers::Peers;
use crate::scenario::WorkloadKind;

/// switchyard's checks in every drill: every 100 ms, 300 ms timeout, fall 2.
const CHECK: &str = "interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n";

/// switchyard's config: a `writer` listener in front of the peers, whose pool is
/// `writer` too.
pub async fn switchyard(peers: &Peers, kind: WorkloadKind) -> String {
    // (the check's kind and login, (name, address) of each backend, the pool's role lines)
    let (check, members, pool): (String, Vec<(String, String)>, &str) = match peers {
        Peers::Mysql(cluster) => {
            let cluster = cluster.lock().expect("cluster lock");
            (
                format!("kind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\n"),
                cluster
                    .nodes()
                    .iter()
                    .map(|n| (format!("db{}", n.index + 1), n.addr().to_string()))
                    .collect(),
                "role = \"primary\"\n",
            )
        }
        Peers::Mongo(set) => {
            let set = set.lock().expect("set lock");
            (
                "kind = \"mongo\"\n".into(),
                (0..set.len())
                    .map(|i| (format!("b{}", i + 1), set.addr(i).to_string()))
                    .collect(),
                "role = \"primary\"\nset_name = \"rs0\"\n",
            )
        }
        Peers::Secantus(s) => (
            "kind = \"mongo\"\n".into(),
            vec![("b1".into(), s.addr().to_string())],
            "role = \"primary\"\n",
        ),
        Peers::Servers(servers) => {
            let check = if kind == WorkloadKind::Http {
                "kind = \"http\"\n"
            } else {
                "kind = \"tcp\"\n"
            };
            let servers = servers.lock().await;
            let members = servers.addrs.iter().enumerate();
            (
                check.into(),
                members.map(|(i, a)| (format!("b{}", i + 1), a.to_string())).collect(),
                "policy = \"first\"\n",
            )
        }
    };
    let mut text =
        format!("[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\n[check]\n{check}{CHECK}\n");
    for (name, addr) in &members {
        let _ = write!(text, "[backends.{name}]\naddress = \"{addr}\"\n\n");
    }
    let names: Vec<String> = members.iter().map(|(name, _)| format!("\"{name}\"")).collect();
    // MongoDB primary pools watch the replies (a "not primary" one ends the session).
    let mode = match peers {
        Peers::Mongo(_) | Peers::Secantus(_) => "mode = \"mongo\"\n",
        _ => "",
    };
    let _ = write!(
        text,
        "[pools.writer]\nbackends = [{}]\n{pool}hold_timeout = \"10s\"\nconnect_timeout = \"1s\"\n\n\
         [listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n{mode}",
        names.join(", ")
    );
    text
}

/// switchyard in front of one MariaDB node (the sysbench comparison), on `port`.
/// `mysql_port`: a second listener in `mode = "mysql"` (the command tracker's cost).
pub fn switchyard_one_node(node: SocketAddr, port: u16, mysql_port: u16) -> String {
    format!(
        "[check]\nkind = \"mysql\"\nuser = \"{MONITOR_USER}\"\npassword = \"{MONITOR_PASSWORD}\"\ninterval = \"1s\"\n\
         [backends.db1]\naddress = \"{node}\"\n[pools.writer]\nbackends = [\"db1\"]\nrole = \"primary\"\n\
         [listeners.writer]\nlisten = \"127.0.0.1:{port}\"\npool = \"writer\"\n\
         [listeners.writer_mysql]\nlisten = \"127.0.0.1:{mysql_port}\"\npool = \"writer\"\nmode = \"mysql\"\n"
    )
}

/// HAProxy in front of one MariaDB node (the sysbench comparison), on `port`.
pub fn haproxy_one_node(node: SocketAddr, port: u16) -> String {
    format!(
        "global\n    maxconn 4000\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
         listen mysql\n    bind 127.0.0.1:{port}\n    option mysql-check user haproxy post-41\n    server db1 {node} check inter 1s\n"
    )
}

/// HAProxy's config for a MySQL drill, listening on `port`.
pub fn haproxy(cluster: &Cluster, port: u16) -> String {
    let mut text = format!(
        "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n\n\
         listen mysql\n    bind 127.0.0.1:{port}\n    option mysql-check user haproxy post-41\n    balance first\n"
    );
    for node in cluster.nodes() {
        let backup = if node.index == 0 { "" } else { " backup" };
        let _ = writeln!(
            text,
            "    server db{} {} check inter 250 fall 2 rise 1 on-marked-down shutdown-sessions{backup}",
            node.index + 1,
            node.addr()
        );
    }
    text
}
