//! Redis Sentinel as a witness for a primary pool of Redis members
//! (`[pools.NAME.sentinel]`): a master takes the pool's traffic only while the
//! Sentinels name it *and* its own `INFO` says master (the pool's other rules, such
//! as the superseded-master rule, still apply: `crate::routing::membership`).
//!
//! ```text
//! per Sentinel: query conn ──(every interval, and at once after an event)──► Heard::Answer
//!               event conn (PSUBSCRIBE *: +try-failover, +switch-master, +sdown …) ► Heard::Event
//! per pool:     latest answer of each Sentinel ─► word::Tally ─► News::Named ─► router
//!                                                   events ─────► News::Event ─► router nudges the checks
//! ```
//!
//! A Sentinel that cannot be reached, or answers nothing useful, gives no answer until
//! it does again; with no Sentinel answering, the last word stands (the router keeps
//! the master they named last, while its `INFO` agrees). Before a first word the pool
//! routes to no master. Every connect and query is bounded by `timeout`.

pub mod word;

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::SentinelConfig;
use crate::health::probe::read_decoded;
use crate::protocol::resp::{self, Value};

/// What the router hears from a pool's Sentinels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// The Sentinels' newest word.
    Named {
        /// The pool's name.
        pool: String,
        /// The watcher's generation (a reload that changes the Sentinels starts a new one).
        generation: u64,
        /// What they say.
        word: word::Word,
    },
    /// A Sentinel published an event about the pool's master: check its members now.
    Event {
        /// The pool's name.
        pool: String,
    },
}

/// What one Sentinel's task tells the pool's watcher.
enum Heard {
    Answer(usize, Option<word::Answer>),
    Event,
}

/// Watches `pool`'s Sentinels until `stop`: one task per Sentinel and one that turns
/// their answers into [`News`].
pub fn watch(pool: String, generation: u64, config: SentinelConfig, news: mpsc::Sender<News>, stop: CancellationToken) {
    let (heard, inbox) = mpsc::channel(64);
    for (i, address) in config.sentinels.iter().enumerate() {
        let follower = Follower {
            pool: pool.clone(),
            index: i,
            address: address.clone(),
            config: config.clone(),
            heard: heard.clone(),
        };
        tokio::spawn(follower.run(stop.clone()));
    }
    let tally = word::Tally::new(config.sentinels.len());
    tokio::spawn(gather(pool, generation, tally, inbox, news, stop));
}

/// Keeps the latest answer of each Sentinel and sends the router each new word, and
/// each event, until `stop` or the router is gone.
async fn gather(
    pool: String,
    generation: u64,
    mut tally: word::Tally,
    mut inbox: mpsc::Receiver<Heard>,
    news: mpsc::Sender<News>,
    stop: CancellationToken,
) {
    loop {
        let heard = tokio::select! {
            heard = inbox.recv() => heard,
            _ = stop.cancelled() => return,
        };
        let sent = match heard {
            None => return,
            Some(Heard::Event) => news.send(News::Event { pool: pool.clone() }).await,
            Some(Heard::Answer(i, answer)) => match tally.record(i, answer, Instant::now()) {
                None => Ok(()),
                Some(word) => {
                    match &word {
                        word::Word::Master(address) => {
                            info!(pool = %pool, master = %crate::logs::peer(address), "sentinel: the Sentinels name the master")
                        }
                        word::Word::FailingOver => {
                            info!(pool = %pool, "sentinel: a failover started; no master until a replica is promoted")
                        }
                        word::Word::Disputed(named) => {
                            warn!(pool = %pool, named = %crate::logs::peer(named), "sentinel: the newest Sentinels name different masters; no master")
                        }
                    }
                    let pool = pool.clone();
                    news.send(News::Named { pool, generation, word }).await
                }
            },
        };
        if sent.is_err() {
            return;
        }
    }
}

/// One Sentinel: its two connections, reopened after every failure.
struct Follower {
    pool: String,
    index: usize,
    address: String,
    config: SentinelConfig,
    heard: mpsc::Sender<Heard>,
}

impl Follower {
    async fn run(self, stop: CancellationToken) {
        let mut reachable = true;
        loop {
            let cause = tokio::select! {
                cause = self.session(&mut reachable) => cause,
                _ = stop.cancelled() => return,
            };
            if self.heard.send(Heard::Answer(self.index, None)).await.is_err() {
                return;
            }
            if reachable {
                warn!(pool = %self.pool, sentinel = %self.address, cause = %cause, "sentinel: lost; retrying every interval");
                reachable = false;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Queries and listens until something fails; returns why.
    async fn session(&self, reachable: &mut bool) -> String {
        let mut query = match self.open().await {
            Ok(conn) => conn,
            Err(e) => return e,
        };
        let mut events = match self.open().await {
            Ok(conn) => conn,
            Err(e) => return e,
        };
        if let Err(e) = events.subscribe().await {
            return e;
        }
        // A PING goes out on the event connection every interval; its pong must be
        // back by the next one, or the connection is taken for dead.
        let mut pong_due = false;
        let mut unusable_before: Option<String> = None;
        loop {
            let answer = match query.ask(&self.config.master_name).await {
                Ok(Ok(answer)) => Some(answer),
                Ok(Err(unusable)) => {
                    if unusable_before.as_ref() != Some(&unusable) {
                        warn!(pool = %self.pool, sentinel = %self.address, cause = %unusable, "sentinel: no answer about the master");
                    }
                    unusable_before = Some(unusable);
                    None
                }
                Err(e) => return e,
            };
            if answer.is_some() {
                unusable_before = None;
            }
            tracing::debug!(pool = %self.pool, sentinel = %self.address, ?answer, "sentinel: answer");
            if !*reachable && answer.is_some() {
                info!(pool = %self.pool, sentinel = %self.address, "sentinel: answering again");
                *reachable = true;
            }
            if self.heard.send(Heard::Answer(self.index, answer)).await.is_err() {
                return "the pool's watcher stopped".into();
            }
            if let Err(e) = self.until_next_question(&mut events, &mut pong_due).await {
                return e;
            }
        }
    }

    /// Reads events until one concerns the pool's master (told to the watcher) or the
    /// interval is over (a PING sent; the previous one must have had its pong).
    async fn until_next_question(&self, events: &mut Conn, pong_due: &mut bool) -> Result<(), String> {
        let next = Instant::now() + self.config.interval;
        loop {
            let push = tokio::select! {
                push = events.read() => push?,
                _ = tokio::time::sleep_until(next) => {
                    if *pong_due {
                        return Err(format!("no pong on the event connection within {:?}", self.config.interval));
                    }
                    events.ping().await?;
                    *pong_due = true;
                    return Ok(());
                }
            };
            if word::is_pong(&push) {
                *pong_due = false;
                continue;
            }
            tracing::debug!(pool = %self.pool, sentinel = %self.address, ?push, "sentinel: event");
            if word::event(&push, &self.config.master_name) == Some(word::Event::Concerns) {
                return match self.heard.send(Heard::Event).await {
                    Ok(()) => Ok(()), // ask again at once
                    Err(_) => Err("the pool's watcher stopped".into()),
                };
            }
        }
    }

    async fn open(&self) -> Result<Conn, String> {
        let limit = self.config.timeout;
        let stream = match timeout(limit, TcpStream::connect(&self.address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(format!("connecting: {e}")),
            Err(_) => return Err(format!("connecting: no answer within {limit:?}")),
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            limit,
        };
        if let Some(password) = &self.config.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &self.config.user {
                args.push(user.as_bytes());
            }
            args.push(password.expose().as_bytes());
            if let Some(Value::Error(e)) = conn.call(&resp::command(&args), 1).await?.pop() {
                return Err(format!("AUTH refused: {}", crate::logs::peer(&e)));
            }
        }
        Ok(conn)
    }
}

/// One connection to a Sentinel.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    limit: Duration,
}

impl Conn {
    /// Sends `request` and reads `count` replies, all within the limit.
    async fn call(&mut self, request: &[u8], count: usize) -> Result<Vec<Value>, String> {
        let limit = self.limit;
        let work = async {
            self.stream
                .write_all(request)
                .await
                .map_err(|e| format!("sending: {e}"))?;
            let mut replies = Vec::with_capacity(count);
            while replies.len() < count {
                replies.push(self.read().await?);
            }
            Ok(replies)
        };
        match timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    /// The two-command question; the outer `Err` is a broken connection.
    async fn ask(&mut self, master: &str) -> Result<Result<word::Answer, String>, String> {
        let name = master.as_bytes();
        let mut request = resp::command(&[b"SENTINEL", b"get-master-addr-by-name", name]);
        request.extend_from_slice(&resp::command(&[b"SENTINEL", b"master", name]));
        let replies = self.call(&request, 2).await?;
        Ok(word::answer(&replies[0], &replies[1]))
    }

    /// Every event: a failover starts with `+try-failover`, and the payloads name the
    /// master they are about.
    async fn subscribe(&mut self) -> Result<(), String> {
        match self.call(&resp::command(&[b"PSUBSCRIBE", b"*"]), 1).await?.pop() {
            Some(Value::Error(e)) => Err(format!("PSUBSCRIBE refused: {}", crate::logs::peer(&e))),
            _ => Ok(()),
        }
    }

    /// Sends a PING on a subscribed connection (its pong arrives as a push).
    async fn ping(&mut self) -> Result<(), String> {
        let request = resp::command(&[b"PING"]);
        match timeout(self.limit, self.stream.write_all(&request)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("sending PING: {e}")),
            Err(_) => Err(format!("sending PING: not done within {:?}", self.limit)),
        }
    }

    /// The next reply or push. On a subscribed connection it has no limit (a PING
    /// every interval finds a dead one). Cancel-safe: bytes read stay in the buffer.
    async fn read(&mut self) -> Result<Value, String> {
        let max = resp::MAX_BULK + resp::MAX_LINE;
        read_decoded(&mut self.stream, &mut self.buf, max, "a reply", resp::decode)
            .await
            .map_err(|e| e.to_string())
    }
}
