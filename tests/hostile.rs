//! Hostile peers: a backend that answers with bytes meant to crash the proxy must
//! cost that backend a failed check, never the process.

use std::time::Duration;

use support::*;
use switchyard::health::Status;
use switchyard_test_support as support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(30);

/// Writes one MySQL packet.
async fn packet(stream: &mut TcpStream, seq: u8, payload: &[u8]) {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    let _ = stream.write_all(&out).await;
}

/// Reads one MySQL packet's payload (empty at end of stream).
async fn read_packet(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    if stream.read_exact(&mut header).await.is_err() {
        return Vec::new();
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    let _ = stream.read_exact(&mut payload).await;
    payload
}

/// A MariaDB-like greeting offering mysql_native_password.
fn greeting() -> Vec<u8> {
    let mut g = vec![10];
    g.extend_from_slice(b"5.5.5-10.11.0-MariaDB-hostile\0");
    g.extend_from_slice(&7u32.to_le_bytes());
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&0xA20Fu16.to_le_bytes()); // long password, found rows, long flag, db, 4.1, transactions, secure
    g.push(0x21);
    g.extend_from_slice(&2u16.to_le_bytes());
    g.extend_from_slice(&0x0008u16.to_le_bytes()); // plugin auth
    g.push(21);
    g.extend_from_slice(&[0; 10]);
    g.extend_from_slice(b"ijklmnopqrst\0");
    g.extend_from_slice(b"mysql_native_password\0");
    g
}

/// A server that logs anyone in, then answers every query with a result set of
/// 2^64 - 1 columns (mysql_async once tried to allocate them, and panicked).
async fn huge_column_count_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                packet(&mut stream, 0, &greeting()).await;
                read_packet(&mut stream).await;
                packet(&mut stream, 2, &[0, 0, 0, 2, 0, 0, 0]).await;
                loop {
                    if read_packet(&mut stream).await.is_empty() {
                        return;
                    }
                    packet(&mut stream, 1, &[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_mysql_backend_answering_with_2_64_columns_is_marked_down_at_l7_and_the_proxy_serves_on() {
    let hostile = huge_column_count_server().await;
    let good = Server::start(Behavior::Echo("good")).await;
    let (pool, bad_name) = (unique("hostile"), unique("hostile_db"));
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\
         [backends.{bad_name}]\naddress = \"{hostile}\"\ncheck = {{ kind = \"mysql\", user = \"monitor\", password = \"x\", interval = \"100ms\", timeout = \"2s\" }}\n\
         [backends.good]\naddress = \"{}\"\ncheck = {{ interval = \"100ms\" }}\n\
         [pools.{pool}]\nbackends = [\"{bad_name}\"]\n[pools.echo]\nbackends = [\"good\"]\n\
         [listeners.hostile]\nlisten = \"127.0.0.1:0\"\npool = \"{pool}\"\n\
         [listeners.echo]\nlisten = \"127.0.0.1:0\"\npool = \"echo\"\n",
        good.addr
    );
    let proxy = proxy(&text).await;
    let view = await_status(&proxy, &bad_name, Status::Down).await;
    let last = view.last_check.expect("checked");
    assert_eq!(last.layer, Some(switchyard::health::Layer::L7), "{last:?}");
    // mysql_async panicked ("capacity overflow") inside the probe: one failed check.
    let error = last.error.unwrap_or_default();
    assert!(error.contains("panicked"), "{error}");
    // The process lives on: the checks go on, and so do sessions of another pool.
    let panics = format!("switchyard_probe_panics_total{{backend=\"{bad_name}\"}}");
    assert!(
        await_metric(&proxy, &panics, 2.0).await >= 2.0,
        "checked again after the panic"
    );
    let (session, banner) = within(
        LIMIT,
        "a session",
        connect_and_read_banner(proxy.listener("echo").unwrap()),
    )
    .await;
    assert_eq!(banner, "good");
    drop(session);
    proxy.shutdown().await;
    good.stop().await;
}
