//! Copying a session's bytes both ways, with a buffer only while bytes are in flight.
//!
//! Each direction waits for readability *without* a buffer, takes a 64 KiB buffer
//! from a per-thread pool for the burst, reads and writes until the socket would
//! block, and gives the buffer back. An idle session therefore holds no copy buffer
//! (`copy_bidirectional` keeps two 8 KiB buffers per session for its whole life), and
//! a busy one moves up to 64 KiB per syscall instead of 8 KiB. End of stream in one
//! direction is forwarded as a FIN (`shutdown`) while the other direction goes on:
//! half-close is kept.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bytes per read while a burst is in flight.
pub const BUFFER: usize = 64 * 1024;
/// Buffers kept per worker thread between bursts (at most 4 MiB).
const POOLED: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Box<[u8]> {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUFFER].into_boxed_slice())
}

fn give_back(buffer: Box<[u8]>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED {
            pool.push(buffer);
        }
    });
}

/// What a session moved; written by its own task only (relaxed, uncontended).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Client → backend bytes.
    pub upstream: AtomicU64,
    /// Backend → client bytes.
    pub downstream: AtomicU64,
    /// Bumped on every read that moved bytes, either way (the idle timer watches it).
    pub activity: AtomicU64,
}

/// Copies both ways until both directions reached end of stream, or one failed.
pub async fn bidirectional(client: TcpStream, upstream: TcpStream, traffic: &Traffic) -> io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let up = one_way(
        &mut client_read,
        &mut upstream_write,
        &traffic.upstream,
        &traffic.activity,
    );
    let down = one_way(
        &mut upstream_read,
        &mut client_write,
        &traffic.downstream,
        &traffic.activity,
    );
    tokio::try_join!(up, down).map(|_| ())
}

async fn one_way(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    bytes: &AtomicU64,
    activity: &AtomicU64,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buffer = take();
        let burst = burst(from, to, &mut buffer, bytes, activity).await;
        give_back(buffer);
        match burst {
            Ok(Burst::Drained) => continue,
            Ok(Burst::Ended) => {
                // Forward the FIN; the other direction goes on (half-close).
                return to.shutdown().await;
            }
            Err(e) => return Err(e),
        }
    }
}

enum Burst {
    /// The socket would block: wait for readability again (without a buffer).
    Drained,
    /// End of stream.
    Ended,
}

async fn burst(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    buffer: &mut [u8],
    bytes: &AtomicU64,
    activity: &AtomicU64,
) -> io::Result<Burst> {
    loop {
        match from.try_read(buffer) {
            Ok(0) => return Ok(Burst::Ended),
            Ok(n) => {
                to.write_all(&buffer[..n]).await?;
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                activity.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Drained),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        (connected.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn copies_both_ways_and_keeps_half_close() {
        // client_end <-> [proxy_client | proxy_upstream] <-> server_end
        let (mut client_end, proxy_client) = pair().await;
        let (proxy_upstream, mut server_end) = pair().await;
        let traffic = Traffic::default();
        let copying = bidirectional(proxy_client, proxy_upstream, &traffic);
        let talking = async {
            client_end.write_all(b"hello").await.unwrap();
            client_end.shutdown().await.unwrap();
            let mut got = Vec::new();
            server_end.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello", "the FIN came through after the bytes");
            // The other direction still works after the client's half-close.
            server_end.write_all(b"world").await.unwrap();
            server_end.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_end.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"world");
        };
        let (copied, ()) = tokio::join!(copying, talking);
        copied.unwrap();
        assert_eq!(traffic.upstream.load(Ordering::Relaxed), 5);
        assert_eq!(traffic.downstream.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn the_pool_is_bounded() {
        for _ in 0..POOLED + 10 {
            give_back(vec![0u8; BUFFER].into_boxed_slice());
        }
        assert_eq!(POOL.with(|p| p.borrow().len()), POOLED);
        assert_eq!(take().len(), BUFFER);
    }
}
