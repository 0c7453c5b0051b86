//! Keeps sessions even across the data-plane threads.
//!
//! `SO_REUSEPORT` hashes each new connection to one thread's socket. With many short
//! connections that evens out; with a few long ones (a sysbench run, an application's
//! connection pool) it often does not (figures: `docs/performance.md`), and the
//! busier thread then sets the tail latency of everything it serves.
//!
//! So each thread counts the sessions it runs ([`Threads`]), and an accept loop whose
//! thread holds clearly more than the least busy one ([`should_move`]) hands the new
//! connection over ([`Arrival`], through that thread's inbox). Accepted sockets are
//! registered only by the thread that serves them, so a move costs a channel send
//! and, if that thread sleeps, a wake-up; the rest take the direct path.
//! A moved connection is counted on its new thread at once, so a burst of accepts
//! does not overshoot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::proxy::{self, SessionContext};

/// The data-plane threads' session counts, and their inboxes.
#[derive(Debug)]
pub struct Threads {
    slots: Box<[Slot]>,
}

#[derive(Debug)]
struct Slot {
    /// Sessions on this thread, moved-in ones included; written once per session
    /// start and end, never per byte.
    sessions: Padded,
    inbox: UnboundedSender<Arrival>,
}

/// One cache line per counter, so two threads counting never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicUsize);

/// What a session holds while it runs: its place under its listener's
/// `max_connections` and under the process's descriptor budget (see
/// [`crate::local::session_budget`]).
#[derive(Debug)]
pub struct SessionPermit {
    /// The listener's cap.
    pub listener: OwnedSemaphorePermit,
    /// The process-wide budget.
    pub budget: OwnedSemaphorePermit,
}

/// An accepted connection, not yet registered, on its way to the thread that serves it.
pub struct Arrival {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    ctx: Arc<SessionContext>,
    permit: SessionPermit,
    counted: Counted,
}

/// A session counted on a thread; uncounted when dropped.
#[derive(Debug)]
pub struct Counted {
    threads: Arc<Threads>,
    thread: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.threads.slots[self.thread]
            .sessions
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a thread with `mine` sessions should hand a new one to a thread with
/// `least`: only when clearly busier (by 2, or by an eighth of the load), so that
/// counts that merely jitter do not move connections back and forth.
pub fn should_move(mine: usize, least: usize) -> bool {
    mine >= least + 2 + least / 8
}

impl Threads {
    /// `count` threads; the receivers go one to each thread's [`inbox`] task.
    pub fn new(count: usize) -> (Arc<Threads>, Vec<UnboundedReceiver<Arrival>>) {
        let (slots, receivers) = (0..count.max(1))
            .map(|_| {
                let (inbox, receiver) = mpsc::unbounded_channel();
                let slot = Slot {
                    sessions: Padded::default(),
                    inbox,
                };
                (slot, receiver)
            })
            .unzip::<_, _, Vec<_>, Vec<_>>();
        (
            Arc::new(Threads {
                slots: slots.into_boxed_slice(),
            }),
            receivers,
        )
    }

    /// How many data-plane threads there are.
    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// Sessions per thread now.
    pub fn sessions(&self) -> Vec<usize> {
        self.slots
            .iter()
            .map(|slot| slot.sessions.0.load(Ordering::Relaxed))
            .collect()
    }

    /// Picks the thread for a connection accepted on `here`, and counts it there.
    fn place(self: &Arc<Self>, here: usize) -> Counted {
        let load = |i: usize| self.slots[i].sessions.0.load(Ordering::Relaxed);
        let mine = load(here);
        let (least, thread) = (0..self.slots.len())
            .map(|i| (load(i), i))
            .min()
            .unwrap_or((mine, here));
        let thread = if should_move(mine, least) { thread } else { here };
        self.slots[thread].sessions.0.fetch_add(1, Ordering::Relaxed);
        Counted {
            threads: self.clone(),
            thread,
        }
    }
}

impl Threads {
    /// Serves a connection accepted (and not yet registered) on thread `here`: here,
    /// or on the less busy thread [`should_move`] picks. Either way it is registered
    /// once, by the thread that serves it, so a move costs no extra `epoll_ctl`.
    pub fn dispatch(
        self: &Arc<Self>,
        here: usize,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        ctx: Arc<SessionContext>,
        permit: SessionPermit,
        sessions: &TaskTracker,
    ) {
        let counted = self.place(here);
        let to = counted.thread;
        let arrival = Arrival {
            stream,
            peer,
            ctx,
            permit,
            counted,
        };
        if to == here {
            return arrival.start(sessions);
        }
        arrival.ctx.sessions_moved.increment(1);
        // Refused only once that thread's inbox has stopped (shutting down): served
        // here, while still counted there, which no longer matters then.
        if let Err(mpsc::error::SendError(arrival)) = self.slots[to].inbox.send(arrival) {
            arrival.start(sessions);
        }
    }
}

/// A thread's inbox: serves the connections other threads hand it. At `stop` it
/// takes no more, and still serves those already handed over: they were accepted.
pub async fn inbox(mut arrivals: UnboundedReceiver<Arrival>, stop: CancellationToken, sessions: TaskTracker) {
    loop {
        tokio::select! {
            biased;
            arrival = arrivals.recv() => match arrival {
                Some(arrival) => arrival.start(&sessions),
                None => return,
            },
            _ = stop.cancelled() => break,
        }
    }
    arrivals.close();
    while let Some(arrival) = arrivals.recv().await {
        arrival.start(&sessions);
    }
}

impl Arrival {
    /// Registers the connection with this thread's runtime and runs its session here.
    fn start(self, sessions: &TaskTracker) {
        let Arrival {
            stream,
            peer,
            ctx,
            permit,
            counted,
        } = self;
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                sessions.spawn(async move {
                    proxy::serve(ctx, stream, peer).await;
                    drop((permit, counted));
                });
            }
            Err(e) => {
                if crate::logs::kinds::ACCEPT_ERRORS.allow() {
                    warn!(listener = %ctx.listener, pool = %ctx.pool.name(), client = %peer, error = %e, "cannot register an accepted connection; closing it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_only_when_clearly_busier() {
        assert!(!should_move(0, 0));
        assert!(!should_move(1, 0), "one session apart is jitter");
        assert!(should_move(2, 0));
        assert!(!should_move(33, 31));
        assert!(should_move(36, 28));
        assert!(!should_move(5, 9), "never towards a busier thread");
        assert!(!should_move(1000, 900), "within an eighth");
        assert!(should_move(1020, 900));
    }

    #[test]
    fn a_burst_is_spread_and_counts_follow_sessions() {
        let (threads, _inboxes) = Threads::new(2);
        // Every connection lands on thread 0, as SO_REUSEPORT may do with a few.
        let placed: Vec<Counted> = (0..64).map(|_| threads.place(0)).collect();
        let counts = threads.sessions();
        assert_eq!(counts.iter().sum::<usize>(), 64);
        let (most, least) = (counts[0].max(counts[1]), counts[0].min(counts[1]));
        assert!(most <= least + 2 + least / 8, "{counts:?}");
        let moved = placed.iter().filter(|c| c.thread == 1).count();
        assert_eq!(moved, counts[1]);
        drop(placed);
        assert_eq!(threads.sessions(), vec![0, 0]);
    }

    #[test]
    fn one_thread_never_moves() {
        let (threads, _inboxes) = Threads::new(1);
        let placed: Vec<Counted> = (0..10).map(|_| threads.place(0)).collect();
        assert!(placed.iter().all(|c| c.thread == 0));
        assert_eq!(threads.sessions(), vec![10]);
    }
}
