//! The PROXY protocol on the data path: a listener with `accept_proxy` reads its
//! balancer's header before anything else (TLS and the MySQL greeting included),
//! and a backend with `send_proxy` gets ours before its first byte (in `mysql` mode
//! before its greeting is read, with backend TLS before the handshake).
//!
//! The reader never consumes a byte past the header: it reads exactly what the
//! decoder's [`need`] allows, peeking for a v1 line's end, so the client's own
//! bytes (a ClientHello, a MySQL packet) stay in the socket for what follows.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::AcceptProxy;
use crate::protocol::proxy_header::{self, decode, need, Accept, Header, Need, Version};
use crate::protocol::Decode;

/// Why a client connection was closed for its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// It came from outside `trusted_sources`.
    Untrusted,
    /// No complete header within `proxy_timeout`.
    Timeout,
    /// Bytes that are no header of an accepted version.
    Malformed(&'static str),
    /// The connection ended or failed first.
    Closed,
}

impl Refused {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Untrusted => "untrusted",
            Refused::Timeout => "timeout",
            Refused::Malformed(_) => "malformed",
            Refused::Closed => "closed",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Untrusted => f.write_str("a PROXY header from outside trusted_sources"),
            Refused::Timeout => f.write_str("no PROXY header within proxy_timeout"),
            Refused::Malformed(reason) => f.write_str(reason),
            Refused::Closed => f.write_str("closed before its PROXY header ended"),
        }
    }
}

/// Reads the header of a connection from `peer`, under the listener's rules.
pub async fn read(client: &mut TcpStream, peer: SocketAddr, accept: &AcceptProxy) -> Result<Header, Refused> {
    if !accept.trusted.iter().any(|network| network.contains(peer.ip())) {
        return Err(Refused::Untrusted);
    }
    tokio::time::timeout(accept.timeout, read_header(client, accept.versions))
        .await
        .unwrap_or(Err(Refused::Timeout))
}

async fn read_header(client: &mut TcpStream, versions: Accept) -> Result<Header, Refused> {
    let mut buf = Vec::with_capacity(64);
    let mut line = [0u8; proxy_header::V1_MAX];
    loop {
        match decode(&buf, versions) {
            Decode::Done(header) => return Ok(header),
            Decode::Invalid(reason) => return Err(Refused::Malformed(reason)),
            Decode::Incomplete => {}
        }
        let take = match need(&buf) {
            Need::Exactly(n) => n,
            Need::Line(max) => {
                // What has arrived, up to the line's end: all of it is header.
                let peeked = client.peek(&mut line[..max]).await.map_err(|_| Refused::Closed)?;
                if peeked == 0 {
                    return Err(Refused::Closed);
                }
                line[..peeked]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(peeked, |at| at + 1)
            }
        };
        let start = buf.len();
        buf.resize(start + take, 0);
        client
            .read_exact(&mut buf[start..])
            .await
            .map_err(|_| Refused::Closed)?;
    }
}

/// Writes our header for a session from `addresses` (client, the address it
/// reached) to a backend, under `limit`.
pub async fn send(
    upstream: &mut TcpStream,
    version: Version,
    addresses: (SocketAddr, SocketAddr),
    limit: Duration,
) -> std::io::Result<()> {
    let header = proxy_header::encode(version, Some(addresses));
    match tokio::time::timeout(limit, upstream.write_all(&header)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;
    use tokio::net::TcpListener;

    fn accept(trusted: &str) -> AcceptProxy {
        AcceptProxy {
            versions: Accept::Any,
            trusted: vec![Cidr::parse(trusted).unwrap()],
            timeout: Duration::from_secs(2),
        }
    }

    /// A connection whose client sends `chunks` (with a pause between them), and
    /// the accepted side.
    async fn pair(chunks: Vec<Vec<u8>>) -> (TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Held open until the test side is done reading.
            let _ = client.read(&mut [0u8; 1]).await;
        });
        let (server, peer) = listener.accept().await.unwrap();
        (server, peer)
    }

    #[tokio::test]
    async fn the_header_is_read_in_pieces_and_nothing_after_it() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n".to_vec();
        let (head, tail) = v1.split_at(9);
        let chunks = vec![head.to_vec(), [tail, b"hello"].concat()];
        let (mut server, peer) = pair(chunks).await;
        let header = read(&mut server, peer, &accept("127.0.0.0/8")).await.unwrap();
        assert_eq!(header.addresses.unwrap().0, "192.0.2.7:56324".parse().unwrap());
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello", "the client's bytes stay in the socket");

        let v2 = proxy_header::encode(
            Version::V2,
            Some(("[2001:db8::1]:9".parse().unwrap(), "[::1]:3306".parse().unwrap())),
        );
        let chunks = v2.chunks(5).map(<[u8]>::to_vec).chain([b"\x0a\x00".to_vec()]).collect();
        let (mut server, peer) = pair(chunks).await;
        let header = read(&mut server, peer, &accept("127.0.0.1")).await.unwrap();
        assert_eq!(header.len, v2.len());
        let mut rest = [0u8; 2];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\x0a\x00");
    }

    #[tokio::test]
    async fn untrusted_malformed_late_and_cut_headers_are_refused() {
        let (mut server, peer) = pair(vec![b"PROXY UNKNOWN\r\n".to_vec()]).await;
        assert_eq!(
            read(&mut server, peer, &accept("10.0.0.0/8")).await,
            Err(Refused::Untrusted)
        );
        let (mut server, peer) = pair(vec![b"\x16\x03\x01\x00".to_vec()]).await;
        let refused = read(&mut server, peer, &accept("127.0.0.1")).await.unwrap_err();
        assert_eq!(refused.reason(), "malformed");
        let (mut server, peer) = pair(vec![b"PROXY TCP4 1.2.3.4".to_vec()]).await;
        let mut quick = accept("127.0.0.1");
        quick.timeout = Duration::from_millis(200);
        assert_eq!(read(&mut server, peer, &quick).await, Err(Refused::Timeout));
        let (mut server, peer) = pair(vec![[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat()]).await;
        let refused = read(&mut server, peer, &accept("127.0.0.1")).await.unwrap_err();
        assert_eq!(refused, Refused::Malformed("v1 header longer than 107 bytes"));
    }
}
