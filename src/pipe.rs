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
/// One exception: Linux stops a read at a TCP urgent mark (`MSG_OOB`) with bytes
/// still queued, which would then wait for the next bytes or the idle timeout. None
/// of the protocols switchyard fronts (MySQL, MongoDB, HTTP) sends urgent data.
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

/// Copies both ways between two legs: the readiness loop above when both are plain
/// TCP, else [`StreamCopy`], the same buffer-on-demand idea over `AsyncRead` /
/// `AsyncWrite` for legs with TLS.
///
/// Not an `async fn`: its state would be the larger of the two paths in every
/// session (a whole session's future went from 1712 to 1336 bytes when the paths
/// were split).
pub fn streams(client: Stream, upstream: Stream, traffic: &Traffic) -> Copying<'_> {
    match (client, upstream) {
        (Stream::Plain(client), Stream::Plain(upstream)) => Copying::Plain(Bidirectional {
            client,
            upstream,
            up: Direction::default(),
            down: Direction::default(),
            traffic,
        }),
        (client, upstream) => Copying::Streams(StreamCopy {
            client,
            upstream,
            up: Half::default(),
            down: Half::default(),
            traffic,
        }),
    }
}

/// The copy of one session, plain or with a TLS leg.
pub enum Copying<'a> {
    Plain(Bidirectional<'a>),
    Streams(StreamCopy<'a>),
}

impl Future for Copying<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Copying::Plain(copy) => Pin::new(copy).poll(cx),
            Copying::Streams(copy) => Pin::new(copy).poll(cx),
        }
    }
}

/// Both directions between legs of which at least one is TLS. A TLS stream cannot
/// say "readable" without being read, so each read borrows a pooled buffer for the
/// `poll_read` and gives it back at once if nothing came: an idle TLS session holds
/// no copy buffer (tokio's `copy_bidirectional` keeps two for the session's life:
/// an idle TLS session measured 27 KB of RSS before, 10.7 KB after). Writes are flushed
/// before waiting for more input, so rustls never sits on ciphertext.
pub struct StreamCopy<'a> {
    client: Stream,
    upstream: Stream,
    up: Half,
    down: Half,
    traffic: &'a Traffic,
}

#[derive(Default)]
struct Half {
    buffer: Option<Box<[u8]>>,
    pos: usize,
    len: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
}

impl Future for StreamCopy<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let traffic = this.traffic;
        let up = poll_half(
            &mut this.client,
            &mut this.upstream,
            &mut this.up,
            &traffic.upstream,
            &traffic.activity,
            cx,
        )?;
        let down = poll_half(
            &mut this.upstream,
            &mut this.client,
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

/// Moves bytes `from` → `to` until `from` would block (Pending) or ended and `to`
/// was shut down (Ready).
fn poll_half(
    from: &mut Stream,
    to: &mut Stream,
    h: &mut Half,
    bytes: &AtomicU64,
    activity: &AtomicU64,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        if h.done {
            return Poll::Ready(Ok(()));
        }
        if let Some(buffer) = &h.buffer {
            if h.pos < h.len {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &buffer[h.pos..h.len]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                h.pos += n;
                h.need_flush = true;
                continue;
            }
        }
        if let Some(buffer) = h.buffer.take() {
            give_back(buffer);
        }
        if h.read_done {
            // Forward the end of stream (close_notify and FIN on a TLS leg); the
            // other direction goes on.
            ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
            h.done = true;
            continue;
        }
        let mut buffer = take();
        let mut read = ReadBuf::new(&mut buffer);
        match Pin::new(&mut *from).poll_read(cx, &mut read) {
            Poll::Pending => {
                give_back(buffer);
                if h.need_flush {
                    ready!(Pin::new(&mut *to).poll_flush(cx))?;
                    h.need_flush = false;
                }
                return Poll::Pending;
            }
            // A TLS peer that closed the TCP connection without close_notify (common,
            // and harmless here: the proxy frames nothing) ends the stream like a FIN.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                give_back(buffer);
                h.read_done = true;
            }
            Poll::Ready(Err(e)) => {
                give_back(buffer);
                return Poll::Ready(Err(e));
            }
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    give_back(buffer);
                    h.read_done = true;
                } else {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                    activity.fetch_add(1, Ordering::Relaxed);
                    (h.buffer, h.pos, h.len) = (Some(buffer), 0, n);
                }
            }
        }
    }
}

impl Drop for Half {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            give_back(buffer);
        }
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

    #[tokio::test]
    async fn the_stream_copy_keeps_half_close_and_returns_its_buffers() {
        // The path TLS legs take, here over plain streams.
        let (mut client_end, proxy_client) = pair().await;
        let (proxy_upstream, mut server_end) = pair().await;
        let traffic = Traffic::default();
        let copying = StreamCopy {
            client: Stream::Plain(proxy_client),
            upstream: Stream::Plain(proxy_upstream),
            up: Half::default(),
            down: Half::default(),
            traffic: &traffic,
        };
        let talking = async {
            let big = vec![7u8; 300 * 1024];
            client_end.write_all(&big).await.unwrap();
            client_end.shutdown().await.unwrap();
            let mut got = Vec::new();
            server_end.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, big, "every byte, then the FIN");
            server_end.write_all(b"world").await.unwrap();
            server_end.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_end.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"world");
        };
        let (copied, ()) = tokio::join!(copying, talking);
        copied.unwrap();
        assert_eq!(traffic.upstream.load(Ordering::Relaxed), 300 * 1024);
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
