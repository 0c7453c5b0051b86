//! The router's side of Redis Sentinel (`[pools.NAME.sentinel]`): it runs one watcher
//! per pool that has Sentinels (started, restarted and stopped as reloads change
//! them), keeps each pool's last word, turns it into the [`Named`] member
//! [`decide_with`](crate::routing::membership::decide_with) takes, and records each
//! new word on the timeline. An event about a pool's master nudges its members'
//! checks, so a master the Sentinels saw fail is checked at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::warn;

use super::Router;
use crate::config::SentinelConfig;
use crate::pool::Pool;
use crate::routing::membership::Named;
use crate::sentinel::word::Word;
use crate::sentinel::{watch, News};
use crate::timeline::EventKind;

/// The watchers and what they said.
pub struct Sentinels {
    news: mpsc::Receiver<News>,
    sender: mpsc::Sender<News>,
    /// By pool name: the config its watcher runs with and its generation; dropping
    /// the guard stops it.
    running: HashMap<String, (SentinelConfig, u64, DropGuard)>,
    /// The generation the next watcher gets: news of a stopped one is ignored.
    generations: u64,
    /// By pool name: the last word.
    words: HashMap<String, Word>,
}

impl Default for Sentinels {
    fn default() -> Self {
        let (sender, news) = mpsc::channel(64);
        Sentinels {
            news,
            sender,
            running: HashMap::new(),
            generations: 0,
            words: HashMap::new(),
        }
    }
}

impl Sentinels {
    /// Starts the watchers `pools` need and stops the others. A pool whose Sentinel
    /// settings changed starts over (its last word is forgotten).
    pub(super) fn sync(&mut self, pools: &[Arc<Pool>]) {
        let wanted: HashMap<&str, &SentinelConfig> = pools
            .iter()
            .filter_map(|p| Some((p.name(), p.config.sentinel.as_ref()?)))
            .collect();
        self.running
            .retain(|pool, (config, _, _)| wanted.get(pool.as_str()).is_some_and(|w| *w == config));
        self.words.retain(|pool, _| self.running.contains_key(pool));
        for (pool, config) in wanted {
            if !self.running.contains_key(pool) {
                let stop = CancellationToken::new();
                self.generations += 1;
                let generation = self.generations;
                watch(
                    pool.to_string(),
                    generation,
                    config.clone(),
                    self.sender.clone(),
                    stop.clone(),
                );
                self.running
                    .insert(pool.to_string(), (config.clone(), generation, stop.drop_guard()));
            }
        }
    }

    pub(super) async fn next(&mut self) -> Option<News> {
        self.news.recv().await
    }
}

impl Router {
    /// What `pool`'s Sentinels say, as a member of the pool.
    pub(super) fn named(&self, pool: &Pool) -> Named {
        if pool.config.sentinel.is_none() {
            return Named::Unused;
        }
        let Some(Word::Master(word)) = self.sentinels.words.get(pool.name()) else {
            return Named::Nobody;
        };
        let address: Option<SocketAddr> = word.parse().ok();
        pool.members
            .iter()
            .find(|m| Some(m.backend.address) == address)
            .map_or(Named::Nobody, |m| Named::Member(m.backend.id))
    }

    /// Applies news from a pool's watcher.
    pub(super) fn sentinel_news(&mut self, news: News) {
        match news {
            News::Event { pool } => {
                for member in self.pools.iter().filter(|p| p.name() == pool).flat_map(|p| &p.members) {
                    member.backend.attention.nudge();
                }
            }
            News::Named { pool, generation, word } => {
                if self.sentinels.running.get(&pool).map(|(_, g, _)| *g) != Some(generation) {
                    return; // from a watcher a reload stopped
                }
                self.sentinels.words.insert(pool.clone(), word.clone());
                let Some(live) = self.pools.iter().find(|p| p.name() == pool).cloned() else {
                    return;
                };
                let (master, failing_over) = match &word {
                    Word::Master(address) => (Some(crate::logs::peer(address)), false),
                    Word::FailingOver => (None, true),
                    Word::Disputed(_) => (None, false),
                };
                live.set_sentinel(crate::pool::SentinelView { master, failing_over });
                let detail = match (&word, self.named(&live)) {
                    (Word::FailingOver, _) => "a Sentinel started a failover: no master until it names one".to_string(),
                    (Word::Disputed(named), _) => {
                        format!(
                            "the newest Sentinels name different masters ({}): no master",
                            crate::logs::peer(named)
                        )
                    }
                    (Word::Master(address), Named::Member(id)) => {
                        format!("the Sentinels name {address} ({})", self.name_of(id))
                    }
                    (Word::Master(address), _) => {
                        let alarm = format!(
                            "the Sentinels name {}, which is no member of the pool",
                            crate::logs::peer(address)
                        );
                        warn!(pool = %pool, "ALARM: sentinel: {alarm}");
                        self.timeline.push(EventKind::Alarm, Some(&pool), None, alarm.clone());
                        alarm
                    }
                };
                self.timeline.push(EventKind::Sentinel, Some(&pool), None, detail);
                self.reroute();
            }
        }
    }
}
