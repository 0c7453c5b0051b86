//! Copying a session's bytes both ways, with a buffer only while bytes are in flight.
//!
//! Each direction takes a 64 KiB buffer from a per-thread pool only when there is
//! something to read, writes all it read, and gives the buffer back. An idle session
//! therefore holds no copy buffer (`copy_bidirectional` keeps two for a session's
//! whole life), and a busy one moves up to 64 KiB per syscall. End of stream in one
//! direction is forwarded (a FIN; close_notify first on a TLS leg) while the other
//! direction goes on: half-close is kept.
//!
//! One future, [`Transfer`], over two kinds of [`Leg`]: plain TCP waits for readiness
//! *without* a buffer and reads with one syscall less per message (see
//! `plain::read_drained`); once a read fills a whole buffer the direction is moving bulk,
//! and on Linux it splices socket → pipe → socket instead (module `splice`); a TLS leg
//! cannot say "readable" without being read, so each `poll_read` borrows a pooled
//! buffer and hands it back at once if nothing came (module `stream`). Figures for
//! each choice: `docs/performance.md`.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::net::TcpStream;

use crate::config::TcpOptions;
use crate::protocol::mongo::replies::Replies;
use crate::protocol::mysql::commands::{Commands, DRAIN_QUIET};
use crate::stream::Stream;
use crate::tcp;
use tracing::warn;

mod plain;
mod stream;

#[cfg(target_os = "linux")]
mod splice;
#[cfg(not(target_os = "linux"))]
mod splice {
    //! No splice(2) off Linux: bulk bytes take the buffer path.
    use std::io;
    use tokio::net::TcpStream;

    #[derive(Debug)]
    pub enum Pipe {}
    impl Pipe {
        pub fn take() -> Option<Pipe> {
            None
        }
        pub fn give_back(self) {}
        pub fn fill(&self, _: &TcpStream) -> io::Result<usize> {
            match *self {}
        }
        pub fn drain(&self, _: &TcpStream, _: usize) -> io::Result<usize> {
            match *self {}
        }
    }
    pub fn unsupported(_: &io::Error) -> bool {
        true
    }
}
use splice::Pipe;

/// A splice that moved less than this (message-sized) ends bulk mode: small messages go
/// back to the buffer path, whose short-read shortcut saves a syscall each (see
/// `plain::read_drained`). Between 1 byte and 16 KiB, iperf3 through the proxy could not
/// tell the thresholds apart; a bulk stream rarely delivers less than a page.
const BULK_MIN: usize = 4 * 1024;
/// `COM_QUIT` with sequence id 0: a MySQL client's goodbye.
const COM_QUIT: [u8; 5] = [1, 0, 0, 0, 0x01];
/// Cleared for good the first time the kernel refuses splice(2) on a TCP socket.
static SPLICE_WORKS: AtomicBool = AtomicBool::new(true);

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
    /// Of `upstream` + `downstream`, the bytes moved by splice(2).
    pub spliced: AtomicU64,
    /// Set by the session's timer once it has lived [`tcp::LIVENESS_AFTER`]: the copy
    /// then gives the backend socket its keepalive options (see [`tcp`]).
    pub liveness_due: AtomicBool,
    /// Set by the session's watchdog while its member drains at idle points: a copy
    /// with a command tracker ends at the next one.
    pub close_when_idle: AtomicBool,
    /// Set by the copy when it ended at an idle point.
    pub closed_idle: AtomicBool,
    /// Set by the copy when it ended at a reply that said the member is no longer the
    /// primary (`mongo` mode; the reply was not forwarded).
    pub not_primary: AtomicBool,
    /// Which side ended its direction first: 0 neither yet, [`CLIENT_FIRST`] or
    /// [`BACKEND_FIRST`] (the access log's "client closed" or "backend closed").
    pub first_end: AtomicU8,
    /// The member's checker: nudged when a `mysql`-mode reply says the node cannot
    /// serve (read-only, or a Galera node not ready), so the checks look at once.
    pub attention: Option<std::sync::Arc<crate::health::Attention>>,
}

/// [`Traffic::first_end`]: the client's direction ended first.
pub const CLIENT_FIRST: u8 = 1;
/// [`Traffic::first_end`]: the backend's direction ended first.
pub const BACKEND_FIRST: u8 = 2;

/// What a session's copy follows in the bytes it carries.
#[derive(Debug)]
pub enum Follow {
    /// Nothing: bytes only.
    Bytes,
    /// `mysql` mode: the command phase, so that a drain can close it at an idle point.
    Mysql(Box<Commands>),
    /// `mongo` mode: the server's replies, so that one saying "not primary" ends the
    /// session instead of reaching the client.
    Mongo(Box<Replies>),
}

/// Copies both ways until both directions reached end of stream, or one failed, or
/// (with `commands`) the session reached an idle point while `traffic` asks to close
/// there. Plain legs take the readiness path; a TLS leg on either side takes the
/// generic one. `liveness`: the backend socket's keepalive options, set once `traffic`
/// says so. `commands`: a `mysql`-mode session's command tracker, fed every byte read
/// (such a session does not splice: the tracker must see the bytes).
pub fn copy<'a>(
    client: Stream,
    upstream: Stream,
    traffic: &'a Traffic,
    liveness: &'a TcpOptions,
    follow: Follow,
) -> Transfer<'a> {
    let (commands, replies) = match follow {
        Follow::Bytes => (None, None),
        Follow::Mysql(commands) => (Some(commands), None),
        Follow::Mongo(replies) => (None, Some(replies)),
    };
    match (client, upstream) {
        (Stream::Plain(client), Stream::Plain(upstream)) => {
            Transfer::Plain(Duplex::new(client, upstream, traffic, liveness, commands, replies))
        }
        (client, upstream) => Transfer::Streams(Duplex::new(client, upstream, traffic, liveness, commands, replies)),
    }
}

/// The copy of one session. Not an `async fn`: a hand-written future is only the two
/// legs and two small [`Direction`]s, which is most of what an idle session costs.
pub enum Transfer<'a> {
    /// Both legs plain TCP: the readiness path.
    Plain(Duplex<'a, TcpStream>),
    /// A TLS leg on either side: the generic path.
    Streams(Duplex<'a, Stream>),
}

impl Future for Transfer<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transfer::Plain(duplex) => Pin::new(duplex).poll(cx),
            Transfer::Streams(duplex) => Pin::new(duplex).poll(cx),
        }
    }
}

/// Both directions between two legs of one kind.
pub struct Duplex<'a, L> {
    client: L,
    upstream: L,
    up: Direction,
    down: Direction,
    traffic: &'a Traffic,
    /// Until applied to `upstream`.
    liveness: Option<&'a TcpOptions>,
    /// A `mysql`-mode session's command tracker.
    commands: Option<Box<Commands>>,
    /// A `mongo`-mode session's reply watch.
    replies: Option<Box<Replies>>,
}

impl<'a, L> Duplex<'a, L> {
    fn new(
        client: L,
        upstream: L,
        traffic: &'a Traffic,
        liveness: &'a TcpOptions,
        commands: Option<Box<Commands>>,
        replies: Option<Box<Replies>>,
    ) -> Self {
        Duplex {
            client,
            upstream,
            up: Direction::eager(),
            down: Direction::default(),
            traffic,
            liveness: Some(liveness),
            commands,
            replies,
        }
    }
}

impl<L: Leg> Future for Duplex<'_, L> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let traffic = this.traffic;
        // The session's timer wakes this task when it sets the flag, so an idle
        // session gets there too.
        if let Some(options) = this.liveness {
            if traffic.liveness_due.load(Ordering::Relaxed) {
                this.liveness = None;
                if let Err(e) = tcp::liveness(this.upstream.tcp(), options) {
                    if crate::logs::kinds::SOCKET_OPTIONS.allow() {
                        warn!(error = %e, "cannot set keepalive/TCP_USER_TIMEOUT on the backend socket; a vanished backend may hold this session");
                    }
                }
            }
        }
        // Plain byte sessions (most) skip every check below that a tracker needs.
        let tracked = this.commands.is_some() || this.replies.is_some();
        // A MongoDB session being fenced ends once no operation is under way, before a
        // request waiting in the client's socket is read (it would go to the fenced member).
        if this.replies.as_ref().is_some_and(|r| r.idle())
            && this.up.buffer.is_none()
            && this.down.buffer.is_none()
            && traffic.close_when_idle.load(Ordering::Relaxed)
        {
            traffic.closed_idle.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let up = L::poll_direction(
            &mut this.client,
            &mut this.upstream,
            &mut this.up,
            this.down.done,
            Observed {
                bytes: &traffic.upstream,
                spliced: &traffic.spliced,
                commands: this.commands.as_deref_mut(),
                replies: this.replies.as_deref_mut().map(|r| (r, &traffic.not_primary)),
                attention: None,
                side: Side::Client,
                tracked,
            },
            cx,
        )?;
        // A pool's check of the connection, while draining: the session ends before
        // the answer, so the pool connects anew (to the next primary).
        if this.commands.as_ref().is_some_and(|c| c.pinging_at_idle())
            && traffic.close_when_idle.load(Ordering::Relaxed)
        {
            L::quit(&mut this.upstream);
            traffic.closed_idle.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let down = L::poll_direction(
            &mut this.upstream,
            &mut this.client,
            &mut this.down,
            this.up.done,
            Observed {
                bytes: &traffic.downstream,
                spliced: &traffic.spliced,
                tracked,
                commands: this.commands.as_deref_mut(),
                replies: this.replies.as_deref_mut().map(|r| (r, &traffic.not_primary)),
                attention: traffic.attention.as_deref(),
                side: Side::Server,
            },
            cx,
        )?;
        // A reply said the member is no longer the primary; it was not forwarded.
        if this.replies.is_some() && traffic.not_primary.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        // A done direction stays ready: the first poll that sees one ready tells who
        // ended first (the client, when both ended between two polls).
        if (up.is_ready() || down.is_ready()) && traffic.first_end.load(Ordering::Relaxed) == 0 {
            let first = if up.is_ready() { CLIENT_FIRST } else { BACKEND_FIRST };
            traffic.first_end.store(first, Ordering::Relaxed);
        }
        if up.is_ready() && down.is_ready() {
            return Poll::Ready(Ok(()));
        }
        // Both directions wait for bytes with none in flight (tracked sessions never
        // splice, so no pipe holds any): an idle point if the tracker says so, and
        // the session ends there when its watchdog asks and it has sat still for
        // DRAIN_QUIET (the watchdog wakes this task meanwhile).
        let quiet = this.up.buffer.is_none() && this.down.buffer.is_none();
        if this.commands.is_some() && quiet && traffic.close_when_idle.load(Ordering::Relaxed) {
            if let Some(commands) = this.commands.as_deref_mut().filter(|c| c.idle()) {
                let moved = traffic.upstream.load(Ordering::Relaxed) + traffic.downstream.load(Ordering::Relaxed);
                if commands.quiet_for(moved, tokio::time::Instant::now()) >= DRAIN_QUIET {
                    L::quit(&mut this.upstream);
                    traffic.closed_idle.store(true, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
            }
        }
        Poll::Pending
    }
}

/// One direction's state.
#[derive(Default)]
pub struct Direction {
    /// Bytes read and not yet written; `None` while nothing is in flight.
    buffer: Option<Box<[u8]>>,
    // u32 offsets and counts (a buffer is 64 KiB, a pipe 256 KiB) keep a direction at
    // 40 bytes: two per session, idle or not.
    pos: u32,
    len: u32,
    /// `from` reached end of stream; `to` still has to be shut down.
    read_done: bool,
    /// Written since the last flush (a TLS leg may hold ciphertext).
    need_flush: bool,
    /// End of stream forwarded: nothing more to do.
    done: bool,
    /// Plain legs only: how the next read goes.
    mode: Mode,
    /// Held only while `in_pipe` bytes are in it, or while bulk bytes are being read.
    pipe: Option<Pipe>,
    in_pipe: u32,
}

/// How a plain direction reads (TLS legs do not look at it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    /// A session's first read from the client, and the write of what it read to the
    /// backend, go straight to the sockets. The client's socket was registered with
    /// the runtime a moment ago, so tokio may know nothing of its readiness yet, nor
    /// of the backend's if `tcp::connect` found it connected at once; waiting would
    /// cost a trip through `epoll_wait` for what is usually there already (a client
    /// that speaks first, HTTP or MongoDB, sent its request while the proxy accepted
    /// and connected). A WouldBlock leaves tokio's readiness as it is, and the
    /// direction waits as usual; a server that speaks first (MySQL) costs one `recv`
    /// that finds nothing. Figures: `docs/performance.md`.
    Eager,
    /// Wait for readiness, read into a pooled buffer.
    #[default]
    Buffered,
    /// A read filled a whole buffer, so this direction is moving bulk and splices
    /// through `pipe` (Linux) until a splice moves less than [`BULK_MIN`].
    Bulk,
}

impl Direction {
    /// A session's client → backend direction, before its first read.
    fn eager() -> Self {
        let mut d = Direction::default();
        d.mode = Mode::Eager;
        d
    }

    /// Counts `n` bytes read into `buffer` and keeps it until they are written.
    fn filled(&mut self, buffer: Box<[u8]>, n: usize, bytes: &AtomicU64) {
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        (self.buffer, self.pos, self.len) = (Some(buffer), 0, n as u32);
    }

    /// `from` ended: forward the FIN while the other direction goes on (half-close).
    /// If the other direction has ended too, the session is over and closing the
    /// sockets sends the FIN (`to` has read its peer's end, so the close cannot turn
    /// into a reset): one `shutdown` syscall fewer per session.
    fn forward_end(&mut self, to: &TcpStream, other_done: bool) -> io::Result<()> {
        self.release_pipe();
        if !other_done {
            SockRef::from(to).shutdown(std::net::Shutdown::Write)?;
        }
        self.done = true;
        Ok(())
    }

    /// The bytes in flight, if any; the buffer goes back to the pool once they are
    /// all written.
    fn pending(&mut self) -> Option<&[u8]> {
        if self.buffer.is_some() && self.pos < self.len {
            return self.buffer.as_deref().map(|b| &b[self.pos as usize..self.len as usize]);
        }
        if let Some(buffer) = self.buffer.take() {
            give_back(buffer);
        }
        None
    }

    /// Gives the pipe back to the pool if it is empty (a pipe with bytes in it is
    /// closed on drop, bytes and all: the session is over).
    fn release_pipe(&mut self) {
        if self.in_pipe == 0 {
            if let Some(pipe) = self.pipe.take() {
                pipe.give_back();
            }
        }
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            give_back(buffer);
        }
        self.release_pipe();
    }
}

/// Which side a direction reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: bytes for the backend.
    Client,
    /// The backend: bytes for the client.
    Server,
}

/// Who sees what one direction reads: `bytes` counts it, `spliced` (shared by both
/// directions) what of it went through splice(2), `commands` follows it, `replies`
/// watches it (with the flag it raises instead of forwarding a "not primary" reply).
pub struct Observed<'a> {
    bytes: &'a AtomicU64,
    spliced: &'a AtomicU64,
    commands: Option<&'a mut Commands>,
    replies: Option<(&'a mut Replies, &'a AtomicBool)>,
    /// Nudged when the server refuses as a node that cannot serve.
    attention: Option<&'a crate::health::Attention>,
    side: Side,
    /// A tracker sees this session's bytes: no splice.
    tracked: bool,
}

impl Observed<'_> {
    /// Whether this direction may splice (bytes spliced are not seen).
    fn may_splice(&self) -> bool {
        !self.tracked && SPLICE_WORKS.load(Ordering::Relaxed)
    }

    /// Counts and follows `n` bytes read into `buffer`, which `d` keeps until written;
    /// a reply the watch withholds is dropped here instead.
    fn read(&mut self, d: &mut Direction, buffer: Box<[u8]>, n: usize) {
        if let Some((replies, not_primary)) = self.replies.as_mut() {
            if self.side == Side::Client {
                replies.client(&buffer[..n]);
            // Nothing more reaches the client once one reply was withheld.
            } else if not_primary.load(Ordering::Relaxed) || replies.not_primary(&buffer[..n]) {
                not_primary.store(true, Ordering::Relaxed);
                give_back(buffer);
                return;
            }
        }
        if let Some(commands) = self.commands.as_deref_mut() {
            match self.side {
                Side::Client => commands.client(&buffer[..n]),
                Side::Server => {
                    commands.server(&buffer[..n]);
                    if commands.take_refusals() > 0 {
                        if let Some(attention) = self.attention {
                            attention.nudge();
                        }
                    }
                }
            }
        }
        d.filled(buffer, n, self.bytes);
    }
}

/// A session leg the copy loop can drive.
pub trait Leg: Unpin {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;

    /// Moves bytes `from` → `to` until `from` would block (Pending) or ended and the
    /// end was forwarded (Ready). `other_done`: the opposite direction has ended, so
    /// this end ends the session. `seen` counts and follows what this direction reads.
    fn poll_direction(
        from: &mut Self,
        to: &mut Self,
        d: &mut Direction,
        other_done: bool,
        seen: Observed<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>;

    /// A MySQL session closed at an idle point says `COM_QUIT` to its backend first,
    /// so the server counts a client that left, not an aborted connection (best
    /// effort: one non-blocking write on a plain leg; a TLS leg just closes).
    fn quit(upstream: &mut Self);
}

#[cfg(test)]
mod tests;
