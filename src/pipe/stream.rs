//! The copy loop over [`Stream`] legs, TLS on either side: a TLS leg cannot say
//! "readable" without being read, so each read borrows a pooled buffer and hands it
//! back at once if nothing came.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{give_back, take, Direction, Leg, Observed, COM_QUIT};
use crate::stream::Stream;

/// Legs with TLS on either side, with a buffer only while bytes are in flight (unlike
/// tokio's `copy_bidirectional`, which keeps two per session). Writes are flushed before
/// waiting for more input, so rustls never sits on ciphertext.
impl Leg for Stream {
    fn tcp(&self) -> &TcpStream {
        Stream::tcp(self)
    }

    fn quit(upstream: &mut Self) {
        if let Stream::Plain(tcp) = upstream {
            let _ = tcp.try_write(&COM_QUIT);
        }
    }

    fn poll_direction(
        from: &mut Self,
        to: &mut Self,
        d: &mut Direction,
        _other_done: bool, // close_notify goes out either way
        mut seen: Observed<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if d.done {
                return Poll::Ready(Ok(()));
            }
            if let Some(pending) = d.pending() {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                d.pos += n as u32;
                d.need_flush = true;
                continue;
            }
            if d.read_done {
                // close_notify, then the FIN.
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                d.done = true;
                continue;
            }
            let mut buffer = take();
            let mut read = ReadBuf::new(&mut buffer);
            match Pin::new(&mut *from).poll_read(cx, &mut read) {
                Poll::Pending => {
                    give_back(buffer);
                    if d.need_flush {
                        ready!(Pin::new(&mut *to).poll_flush(cx))?;
                        d.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    let n = read.filled().len();
                    seen.read(d, buffer, n);
                }
                // End of stream; also a TLS peer that closed the TCP connection without
                // close_notify (common, and harmless here: the proxy frames nothing).
                Poll::Ready(Ok(())) => {
                    give_back(buffer);
                    d.read_done = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    give_back(buffer);
                    d.read_done = true;
                }
                Poll::Ready(Err(e)) => {
                    give_back(buffer);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}
