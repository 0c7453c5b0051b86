//! Copying a session's bytes both ways, with a buffer only while bytes are in flight.
//!
//! Each direction waits for readability *without* a buffer, takes a 64 KiB buffer
//! from a per-thread pool, reads, writes all it read, and gives the buffer back. An idle session therefore holds no copy buffer
//! (`copy_bidirectional` keeps two 8 KiB buffers per session for its whole life), and
//! a busy one moves up to 64 KiB per syscall instead of 8 KiB. End of stream in one
//! direction is forwarded as a FIN (`shutdown`) while the other direction goes on:
//! half-close is kept.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use std::io::{Read, Write};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::stream::Stream;

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
    Bidirectional {
        client,
        upstream,
        up: Direction::default(),
        down: Direction::default(),
        traffic,
    }
    .await
}

/// A hand-written future rather than two `async fn`s joined: its whole state is the
/// two sockets and two small [`Direction`]s (about 150 bytes instead of 720), which is
/// most of what an idle session costs.
pub struct Bidirectional<'a> {
    client: TcpStream,
    upstream: TcpStream,
    up: Direction,
    down: Direction,
    traffic: &'a Traffic,
}

#[derive(Default)]
struct Direction {
    /// Bytes read and not yet written; `None` while nothing is in flight.
    buffer: Option<Box<[u8]>>,
    pos: usize,
    len: usize,
    ended: bool,
}

impl Future for Bidirectional<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let traffic = this.traffic;
        let up = poll_direction(
            &this.client,
            &this.upstream,
            &mut this.up,
            &traffic.upstream,
            &traffic.activity,
            cx,
        )?;
        let down = poll_direction(
            &this.upstream,
            &this.client,
            &mut this.down,
            &traffic.downstream,
            &traffic.activity,
            cx,
        )?;
        if up.is_ready() && down.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// Moves bytes `from` → `to` until the socket would block (Pending) or `from` ended
/// and the FIN was forwarded (Ready).
fn poll_direction(
    from: &TcpStream,
    to: &TcpStream,
    d: &mut Direction,
    bytes: &AtomicU64,
    activity: &AtomicU64,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        if d.ended {
            return Poll::Ready(Ok(()));
        }
        if let Some(buffer) = &d.buffer {
            if d.pos < d.len {
                ready!(to.poll_write_ready(cx))?;
                match write_filled(to, &buffer[d.pos..d.len]) {
                    Ok(n) => d.pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
        }
        // Nothing in flight: the buffer goes back before we wait for more.
        if let Some(buffer) = d.buffer.take() {
            give_back(buffer);
        }
        ready!(from.poll_read_ready(cx))?;
        let mut buffer = take();
        match read_drained(from, &mut buffer) {
            Ok(0) => {
                give_back(buffer);
                // Forward the FIN; the other direction goes on (half-close).
                socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)?;
                d.ended = true;
            }
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                activity.fetch_add(1, Ordering::Relaxed);
                (d.buffer, d.pos, d.len) = (Some(buffer), 0, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => give_back(buffer),
            Err(e) => {
                give_back(buffer);
                return Poll::Ready(Err(e));
            }
        }
    }
}

/// Reads once from `from`. A read that returned less than the buffer emptied the
/// socket's receive queue, so it also tells tokio "would block" (through `try_io`),
/// which clears the read readiness now instead of after one more `recv` that could
/// only return EAGAIN. One syscall less per message per direction: with 128-byte
/// request/response pairs, wrk through the proxy went from 69–74k to 73–84k req/s on the
/// 2-core test machine. Safe with edge-triggered epoll: bytes that arrive after this
/// read raise a new edge, and tokio does not clear readiness that a newer event set.
fn read_drained(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut short = None;
    let result = from.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(from)).read(buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (result, short) {
        (_, Some(n)) => Ok(n),
        (result, None) => result,
    }
}

/// Writes once to `to`; a short write means the send buffer is full, so, as for
/// reads, the write readiness is cleared now rather than by a write that returns
/// EAGAIN.
fn write_filled(to: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut short = None;
    let result = to.try_io(Interest::WRITABLE, || {
        let n = (&*SockRef::from(to)).write(buf)?;
        if n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (result, short) {
        (_, Some(n)) => Ok(n),
        (result, None) => result,
    }
}

/// Copies both ways between two legs: the loop above when both are plain TCP, else
/// tokio's copy loop (16 KiB each way) with the byte counters on the read side.
/// rustls keeps its own record buffers per connection, so buffer-on-demand would buy
/// little on a TLS leg.
///
/// Not an `async fn`: its state would be the larger of the two paths in every
/// session. The TLS path is boxed, so a plaintext session carries only the
/// [`Bidirectional`] state (a whole session's future went from 1712 to 1336 bytes).
pub fn streams(client: Stream, upstream: Stream, traffic: &Traffic) -> Copying<'_> {
    match (client, upstream) {
        (Stream::Plain(client), Stream::Plain(upstream)) => Copying::Plain(Bidirectional {
            client,
            upstream,
            up: Direction::default(),
            down: Direction::default(),
            traffic,
        }),
        (client, upstream) => Copying::Tls(Box::pin(async move {
            let mut client = Counted {
                inner: client,
                bytes: &traffic.upstream,
                activity: &traffic.activity,
            };
            let mut upstream = Counted {
                inner: upstream,
                bytes: &traffic.downstream,
                activity: &traffic.activity,
            };
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, TLS_BUFFER, TLS_BUFFER)
                .await
                .map(|_| ())
        })),
    }
}

/// The copy of one session, plain or with a TLS leg.
pub enum Copying<'a> {
    Plain(Bidirectional<'a>),
    Tls(Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>),
}

impl Future for Copying<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Copying::Plain(copy) => Pin::new(copy).poll(cx),
            Copying::Tls(copy) => copy.as_mut().poll(cx),
        }
    }
}

/// Bytes per read on a TLS leg (one TLS record).
const TLS_BUFFER: usize = 16 * 1024;

/// A leg that counts what is read from it.
struct Counted<'a> {
    inner: Stream,
    bytes: &'a AtomicU64,
    activity: &'a AtomicU64,
}

impl AsyncRead for Counted<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match ready!(Pin::new(&mut this.inner).poll_read(cx, buf)) {
            Ok(()) => {}
            // A TLS peer that closed the TCP connection without close_notify (common,
            // and harmless here: the proxy frames nothing): end of stream, so the other
            // direction goes on as with a plaintext FIN.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e)),
        }
        let n = buf.filled().len() - before;
        if n > 0 {
            this.bytes.fetch_add(n as u64, Ordering::Relaxed);
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            give_back(buffer);
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
