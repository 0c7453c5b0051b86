//! Bulk bytes between two plain sockets without passing through user space: splice(2)
//! from the reading socket into a pipe, then from the pipe into the writing socket.
//! The kernel moves page references instead of copying every byte into a buffer and
//! out again, which is two of the four copies a proxied byte costs on loopback.
//!
//! A pipe is held only while bytes are in it, like the copy buffers: taken from a
//! per-thread pool when a bulk direction has something to read, given back empty when
//! it waits again. An idle session holds no pipe and no file descriptors beyond its
//! two sockets.
//!
//! Only ever spliced *into an empty pipe*, so a fill that moves nothing is about the
//! socket, never a full pipe. Even so it is not taken as "drained": TCP's splice
//! stops at an urgent mark (`MSG_OOB`) that `recv` steps over, so the caller confirms
//! with one ordinary read, which also clears tokio's readiness.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::net::TcpStream;

/// Bytes a pipe holds (at most 4 GiB: counts of bytes in a pipe fit a `u32`). The
/// kernel's default is 64 KiB in 16 page slots, which a socket's pages may fill only
/// partly; 256 KiB measured fastest (`docs/performance.md`).
const CAPACITY: usize = 256 * 1024;
/// Empty pipes kept per worker thread between bursts (two descriptors each).
const POOLED: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// One pipe, both ends non-blocking.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// An empty pipe: a pooled one, or a new one. `None` when none can be made (out of
    /// descriptors, say); the caller copies through a buffer instead.
    pub fn take() -> Option<Pipe> {
        if let Some(pipe) = POOL.with(|pool| pool.borrow_mut().pop()) {
            return Some(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC).ok()?;
        // Best effort: past the per-user pipe page limit the kernel refuses, and the
        // default size still works (a splice takes what fits).
        let _ = fcntl_setpipe_size(&write, CAPACITY);
        Some(Pipe { read, write })
    }

    /// Returns an *empty* pipe to this thread's pool (or closes it if the pool is full).
    pub fn give_back(self) {
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED {
                pool.push(self);
            }
        });
    }

    /// Moves what `from` has to read into this pipe, which must be empty. Ok(0) and
    /// WouldBlock leave `from`'s readiness as it was (see the module docs).
    pub fn fill(&self, from: &TcpStream) -> io::Result<usize> {
        Ok(splice(from, None, &self.write, None, CAPACITY, flags())?)
    }

    /// Moves up to `len` bytes from this pipe into `to`, one syscall; the caller runs it
    /// under `to`'s write readiness (the pipe is not empty, so a short or refused
    /// splice means the socket is full). Unlike `send` with `MSG_NOSIGNAL`, a splice
    /// into a socket whose peer is gone raises SIGPIPE; Rust programs ignore that
    /// signal from the start (std does it before `main`), so here it is the EPIPE error
    /// it would be anyway.
    pub fn drain(&self, to: &TcpStream, len: usize) -> io::Result<usize> {
        Ok(splice(&self.read, None, to, None, len, flags())?)
    }
}

fn flags() -> SpliceFlags {
    SpliceFlags::MOVE | SpliceFlags::NONBLOCK
}

/// splice(2) refused these sockets (a kernel or socket type without it): nothing was
/// moved, and the bytes can still be copied the ordinary way.
pub fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_bounded_and_pipes_are_reused() {
        let pipes: Vec<Pipe> = (0..POOLED + 4).map(|_| Pipe::take().unwrap()).collect();
        for pipe in pipes {
            pipe.give_back();
        }
        assert_eq!(POOL.with(|p| p.borrow().len()), POOLED);
        Pipe::take().unwrap();
        assert_eq!(POOL.with(|p| p.borrow().len()), POOLED - 1);
    }
}
