//! MongoDB helpers for tests through the proxy: raw `hello` on a socket (to see which
//! member answered and to hold a session open), the official Rust driver, pymongo.

use std::net::SocketAddr;
use std::time::Duration;

use bson::{doc, Document};
use switchyard::protocol::mongo::{decode_op_msg, encode_op_msg};
use switchyard::protocol::Decode;
use switchyard_lab::mongo::ReplicaSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `hello` on an open connection and returns the reply body.
pub async fn hello(stream: &mut TcpStream) -> std::io::Result<Document> {
    stream
        .write_all(&encode_op_msg(1, &doc! { "hello": 1, "$db": "admin" }))
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Decode::Done((body, _)) = decode_op_msg(&buf) {
            return Ok(body);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects through the proxy and returns the stream and the `me` of the member
/// that answered.
pub async fn who_answers(addr: SocketAddr) -> (TcpStream, String) {
    try_who_answers(addr).await.expect("hello answered")
}

/// Like [`who_answers`], but a session closed before the answer is an error, not a
/// failure: during a failover a session that reached the old primary just before
/// the swap is fenced (closed), as it should be.
pub async fn try_who_answers(addr: SocketAddr) -> std::io::Result<(TcpStream, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let reply = tokio::time::timeout(Duration::from_secs(15), hello(&mut stream))
        .await
        .expect("hello within 15s")?;
    Ok((stream, reply.get_str("me").expect("me in hello").to_string()))
}

/// A Rust driver client with a direct connection (what clients of the proxy use),
/// heartbeat at 500 ms as a failover-minded operator sets it.
pub async fn driver(addr: SocketAddr) -> mongodb::Client {
    let uri = format!(
        "mongodb://{addr}/?directConnection=true&serverSelectionTimeoutMS=15000&connectTimeoutMS=5000&heartbeatFrequencyMS=500"
    );
    mongodb::Client::with_uri_str(uri).await.expect("driver options")
}

/// A config with a `writer` (primary) and a `reader` (secondary) pool over the set.
pub fn set_config(set: &ReplicaSet, pool_extra: &str) -> String {
    let mut text = String::from(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ngrace = \"1s\"\n\n[check]\nkind = \"mongo\"\n\
         interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 2\n\n",
    );
    let mut names = Vec::new();
    for i in 0..set.len() {
        text += &format!("[backends.m{}]\naddress = \"{}\"\n\n", i + 1, set.addr(i));
        names.push(format!("\"m{}\"", i + 1));
    }
    let names = names.join(", ");
    text +=
        &format!("[pools.writer]\nbackends = [{names}]\nrole = \"primary\"\nhold_timeout = \"10s\"\n{pool_extra}\n\n");
    text += &format!(
        "[pools.reader]\nbackends = [{names}]\nrole = \"secondary\"\npolicy = \"round-robin\"\n{pool_extra}\n\n"
    );
    text += "[listeners.writer]\nlisten = \"127.0.0.1:0\"\npool = \"writer\"\n\n[listeners.reader]\nlisten = \"127.0.0.1:0\"\npool = \"reader\"\n";
    text
}
