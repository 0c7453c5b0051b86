//! The leg between two plain TCP sockets: waits for readiness without a buffer, reads
//! with one syscall less per message ([`read_drained`]), and splices bulk bytes on
//! Linux ([`super::splice`]).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use socket2::{SockRef, Socket};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tracing::warn;

use super::splice::{self, Pipe};
use super::{give_back, take, Direction, Leg, Mode, Observed, BULK_MIN, COM_QUIT, SPLICE_WORKS};

/// Plain TCP on both sides: wait for readiness without a buffer, read with the
/// short-read shortcut, and splice bulk bytes (Linux).
impl Leg for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }

    fn quit(upstream: &mut Self) {
        let _ = upstream.try_write(&COM_QUIT);
    }

    fn poll_direction(
        from: &mut Self,
        to: &mut Self,
        d: &mut Direction,
        other_done: bool,
        mut seen: Observed<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        // A fill that moved nothing is confirmed by one read on the buffer path.
        let mut confirm = false;
        let mut eager = d.mode == Mode::Eager;
        if eager {
            d.mode = Mode::Buffered;
        }
        loop {
            if d.done {
                return Poll::Ready(Ok(()));
            }
            // Bytes in flight go out first, from the pipe or the buffer.
            if let (Some(pipe), 1..) = (&d.pipe, d.in_pipe) {
                ready!(to.poll_write_ready(cx))?;
                let len = d.in_pipe as usize;
                d.in_pipe -= written(under_readiness(
                    to,
                    Interest::WRITABLE,
                    false,
                    |_| pipe.drain(to, len),
                    |n| n < len,
                ))? as u32;
                continue;
            }
            if let Some(pending) = d.pending() {
                if !eager {
                    ready!(to.poll_write_ready(cx))?;
                }
                d.pos += written(write_filled(to, pending, eager))? as u32;
                eager = false;
                continue;
            }
            // Nothing in flight, and no buffer or pipe held, while we wait for more.
            if !eager {
                if let Poll::Ready(ready) = from.poll_read_ready(cx) {
                    ready?;
                } else {
                    d.release_pipe();
                    return Poll::Pending;
                }
            }
            if d.mode == Mode::Bulk && !confirm {
                confirm = fill(from, d, seen.bytes, seen.spliced)?;
                continue;
            }
            let mut buffer = take();
            match read_drained(from, &mut buffer, eager) {
                Ok(0) => {
                    give_back(buffer);
                    d.forward_end(to, other_done)?;
                }
                Ok(n) => {
                    if n == buffer.len() && seen.may_splice() {
                        d.mode = Mode::Bulk;
                    }
                    confirm = false;
                    seen.read(d, buffer, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    give_back(buffer);
                    eager = false;
                }
                Err(e) => {
                    give_back(buffer);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

/// What a write moved; "would block" moved nothing (and cleared the readiness).
fn written(result: io::Result<usize>) -> io::Result<usize> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

/// One splice from `from` into the direction's pipe, taken from the pool first.
/// Returns true when nothing moved: the socket is drained, or at its end, or at a TCP
/// urgent mark, where a splice stops for good and a recv goes on. One read on the
/// buffer path then tells which (one recv per burst) and clears the readiness if
/// drained; the direction stays in bulk mode.
fn fill(from: &TcpStream, d: &mut Direction, bytes: &AtomicU64, spliced: &AtomicU64) -> io::Result<bool> {
    if d.pipe.is_none() {
        d.pipe = Pipe::take();
    }
    let Some(pipe) = &d.pipe else {
        // Out of descriptors, say. Copy through buffers until the next full read tries
        // again, rather than a failing pipe2 on every read.
        d.mode = Mode::Buffered;
        return Ok(false);
    };
    match pipe.fill(from) {
        Ok(0) => Ok(true),
        Ok(n) => {
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            spliced.fetch_add(n as u64, Ordering::Relaxed);
            d.in_pipe = n as u32;
            if n < BULK_MIN {
                d.mode = Mode::Buffered;
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) if splice::unsupported(&e) => {
            if SPLICE_WORKS.swap(false, Ordering::Relaxed) {
                warn!(error = %e, "splice(2) refused on a TCP socket; bulk bytes are copied through buffers from now on");
            }
            d.mode = Mode::Buffered;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Reads once from `from`. A read that returned less than the buffer emptied the
/// socket's receive queue, so it also tells tokio "would block" (through `try_io`),
/// which clears the read readiness now instead of after one more `recv` that could
/// only return EAGAIN: one syscall less per message per direction (figures:
/// `docs/performance.md`). Safe with edge-triggered epoll: bytes that arrive after
/// this read raise a new edge, and tokio does not clear readiness that a newer event
/// set. One exception: Linux stops a read at a TCP urgent mark (`MSG_OOB`) with bytes
/// still queued, which would then wait for the next bytes or the idle timeout. None
/// of the protocols switchyard fronts (MySQL, MongoDB, HTTP) sends urgent data.
fn read_drained(from: &TcpStream, buf: &mut [u8], eager: bool) -> io::Result<usize> {
    let full = buf.len();
    under_readiness(
        from,
        Interest::READABLE,
        eager,
        |mut socket| socket.read(buf),
        |n| n > 0 && n < full,
    )
}

/// Writes once to `to`; a short write means the send buffer is full, so, as for
/// reads, the write readiness is cleared now rather than by a write that returns
/// EAGAIN.
fn write_filled(to: &TcpStream, buf: &[u8], eager: bool) -> io::Result<usize> {
    under_readiness(
        to,
        Interest::WRITABLE,
        eager,
        |mut socket| socket.write(buf),
        |n| n < buf.len(),
    )
}

/// One `op` on `stream` under tokio's readiness; when `drained(n)` says the socket
/// cannot do more, the readiness is cleared too (by reporting WouldBlock to
/// `try_io`) while `n` is still returned. `eager`: tokio may not know the socket's
/// readiness yet (and would then not even try), so `op` goes straight to the socket.
fn under_readiness(
    stream: &TcpStream,
    interest: Interest,
    eager: bool,
    op: impl FnOnce(&Socket) -> io::Result<usize>,
    drained: impl Fn(usize) -> bool,
) -> io::Result<usize> {
    if eager {
        return op(&SockRef::from(stream));
    }
    let mut short = None;
    let result = stream.try_io(interest, || {
        let n = op(&SockRef::from(stream))?;
        if drained(n) {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    short.map_or(result, Ok)
}
