//! Blocking, bounded GETs on a proxy's admin listener, for the drills and benches that
//! watch a switchyard process from outside (2 s to connect, 2 s per read).

use std::net::SocketAddr;
use std::time::Duration;

/// `GET path` on the admin listener (blocking, bounded): the JSON document, or `None`.
pub(crate) fn get_json(admin: SocketAddr, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&get_text(admin, path)?).ok()
}

/// `GET path` on the admin listener (blocking, bounded): the body of a 200, or `None`.
pub(crate) fn get_text(admin: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}
