//! The agent's sessions with etcd: open (connect, lease, read), serve (keep-alive,
//! watch, proposals, publications, campaigns), and what each event means.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use super::{Agent, News, Proposal};
use crate::config::ClusterConfig;
use crate::fleet::shared::Published;
use crate::fleet::store::{bounded, connect};
use crate::fleet::verdict::Verdict;
use crate::metrics as m;

/// What a session keeps.
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) lease: i64,
    /// Backend name → the proxy holding its checker key, and the lease it is on.
    pub(super) checkers: HashMap<String, (String, i64)>,
}

impl Session {
    /// Whether this proxy holds `backend`'s checker key on this session's lease.
    pub(super) fn holds(&self, backend: &str, name: &str) -> bool {
        self.checkers
            .get(backend)
            .is_some_and(|(holder, lease)| holder == name && *lease == self.lease)
    }
}

impl Agent {
    pub(super) async fn run(&mut self) {
        let config = self.fleet.config.clone();
        let pause = (config.lease_ttl / 6).max(Duration::from_millis(200));
        loop {
            let error = self.session().await;
            // Whatever the session got to (it may have read the prefix before it
            // failed): no relayed observation and no checker key is trusted now.
            self.fleet.set_store(false);
            if self.announced != Some(false) {
                self.announced = Some(false);
                warn!(proxy = %config.name, endpoints = %config.etcd.join(","), %error, "ALARM: etcd out of reach: no new primary is adopted until it answers");
                self.tell(News::Store { up: false }).await;
            } else {
                warn!(proxy = %config.name, endpoints = %config.etcd.join(","), %error, "etcd still out of reach");
            }
            // Proposals made while etcd was out of reach are stale by now.
            while self.proposed.try_recv().is_ok() {}
            while self.published.try_recv().is_ok() {}
            sleep(pause).await;
        }
    }

    /// Hands news to the router, waiting at most `timeout` for room: a router that
    /// stopped taking news must not stop this task's keep-alives. News that cannot be
    /// delivered ends the session (the next one starts with a full read).
    async fn tell(&mut self, news: News) {
        let sent = tokio::time::timeout(self.fleet.config.timeout, self.news.send(news)).await;
        if !matches!(sent, Ok(Ok(()))) {
            warn!("fleet: the router takes no news; dropped");
            self.undelivered = true;
        }
    }

    pub(super) async fn revoke(&mut self) {
        let Some((mut client, lease)) = self.lease.take() else {
            return;
        };
        match bounded(&self.fleet.config, "lease revoke", client.lease_revoke(lease)).await {
            Ok(_) => info!(lease, "fleet: lease revoked; this proxy's checks pass to the others"),
            Err(e) => warn!(lease, error = %e, "fleet: lease not revoked; it expires by itself"),
        }
    }

    /// One session; returns why it ended.
    async fn session(&mut self) -> String {
        let config = self.fleet.config.clone();
        let (mut session, revision) = match self.open(&config).await {
            Ok(opened) => opened,
            Err(e) => return e,
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let watch = bounded(
            &config,
            "watching",
            session.client.watch(format!("{}/", config.prefix), Some(options)),
        )
        .await;
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(e) => return e,
        };
        let keep_alive = bounded(&config, "keep-alive", session.client.lease_keep_alive(session.lease)).await;
        let (mut keeper, mut acks) = match keep_alive {
            Ok(pair) => pair,
            Err(e) => return e,
        };
        self.fleet.set_store(true);
        self.announced = Some(true);
        self.tell(News::Store { up: true }).await;
        let member = &config.etcd[(self.next_member + config.etcd.len() - 1) % config.etcd.len()];
        info!(proxy = %config.name, %member, lease = session.lease, revision, "fleet: connected to etcd");
        if let Err(e) = self.campaign(&mut session).await {
            return e;
        }
        self.serve(&mut session, &mut watch, &mut keeper, &mut acks).await
    }

    /// Serves a session until etcd stops answering; returns why it ended.
    async fn serve(
        &mut self,
        session: &mut Session,
        watch: &mut WatchStream,
        keeper: &mut LeaseKeeper,
        acks: &mut LeaseKeepAliveStream,
    ) -> String {
        let config = self.fleet.config.clone();
        let beat = config.lease_ttl / 3;
        let mut tick = tokio::time::interval(beat);
        let mut acked = Instant::now();
        loop {
            // Biased: the lease first (a session whose keep-alives go unanswered ends
            // within `lease_ttl / 3 + timeout`, before its lease can expire), then a
            // checker's publication before a verdict its router proposes from the same
            // check, so that every proxy learns the evidence (the new primary's role)
            // before the verdict that rests on it.
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(acked + beat + config.timeout) => {
                    return format!("the lease keep-alive was not answered for {:?}", acked.elapsed());
                }
                ack = acks.message() => match ack {
                    Ok(Some(ack)) if ack.ttl() > 0 => acked = Instant::now(),
                    Ok(Some(_)) => return "the lease expired".to_string(),
                    Ok(None) => return "the keep-alive stream ended".to_string(),
                    Err(e) => return format!("keep-alive: {e}"),
                },
                _ = tick.tick() => {
                    if let Err(e) = bounded(&config, "keep-alive", keeper.keep_alive()).await {
                        return e;
                    }
                    // Also gives up the checks of backends a reload removed.
                    if let Err(e) = self.campaign(session).await {
                        return e;
                    }
                }
                Some(publish) = self.published.recv() => {
                    if let Err(e) = self.publish(session, publish).await {
                        return e;
                    }
                }
                message = watch.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            return format!("the watch was cancelled: {}", response.cancel_reason());
                        }
                        for event in response.events() {
                            self.event(session, event).await;
                        }
                        if std::mem::take(&mut self.undelivered) {
                            return "the router took no news in time".to_string();
                        }
                        if let Err(e) = self.campaign(session).await {
                            return e;
                        }
                    }
                    Ok(None) => return "the watch ended".to_string(),
                    Err(e) => return format!("watch: {e}"),
                },
                Some(proposal) = self.proposed.recv() => {
                    if let Err(e) = self.propose(session, proposal).await {
                        return e;
                    }
                }
                _ = self.fleet.registered.notified() => {
                    if let Err(e) = self.campaign(session).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Connects, takes a lease, reads the prefix: the session and the revision read at.
    async fn open(&mut self, config: &ClusterConfig) -> Result<(Session, i64), String> {
        let (mut client, member) = connect(config, self.next_member).await?;
        self.next_member = member + 1;
        // The previous session's lease goes now, with the keys on it (its checker keys
        // pass to whoever campaigns first), instead of lingering until it expires.
        if let Some((_, old)) = self.lease.take() {
            let _ = bounded(config, "revoking the previous lease", client.lease_revoke(old)).await;
        }
        // Publications queued before this session rest on checks from before it.
        while self.published.try_recv().is_ok() {}
        let ttl = i64::try_from(config.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let lease = bounded(config, "lease grant", client.lease_grant(ttl, None))
            .await?
            .id();
        let options = GetOptions::new().with_prefix();
        let all = bounded(
            config,
            "reading",
            client.get(format!("{}/", config.prefix), Some(options)),
        )
        .await?;
        let revision = all.header().map_or(0, |h| h.revision());
        let mut verdicts = HashMap::new();
        let mut checkers = HashMap::new();
        let mut relayed: HashMap<String, (Published, i64)> = HashMap::new();
        for kv in all.kvs() {
            match self.key(kv.key()) {
                Some(Key::Verdict(pool)) => match Verdict::decode(kv.value()) {
                    Ok(verdict) => {
                        if let Some(shared) = self.fleet.shared(&verdict.backend) {
                            shared.named_primary(kv.mod_revision());
                        }
                        verdicts.insert(pool, (kv.mod_revision(), verdict));
                    }
                    Err(e) => {
                        warn!(%pool, error = %e, "fleet: a verdict key holds no verdict; the pool holds");
                        verdicts.insert(pool, (kv.mod_revision(), Verdict::unreadable(&e)));
                    }
                },
                Some(Key::Checker(backend)) => {
                    checkers.insert(backend, (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()));
                }
                Some(Key::Observation(backend)) => {
                    if let Ok(observation) = Published::decode(kv.value()) {
                        relayed.insert(backend, (observation, kv.mod_revision()));
                    }
                }
                None => {}
            }
        }
        for shared in self.fleet.live() {
            let observation = relayed.remove(&shared.name).filter(|(o, _)| o.by != config.name);
            // A key of ours from an earlier session is on an older lease: it expires, and
            // the campaign after its deletion takes it again.
            shared.set_holding(false);
            shared.relay(observation);
        }
        self.tell(News::Loaded(verdicts)).await;
        self.lease = Some((client.clone(), lease));
        Ok((
            Session {
                client,
                lease,
                checkers,
            },
            revision,
        ))
    }

    fn key(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.fleet.config.prefix)?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        match (parts.next()?, parts.next()?, parts.next()?, parts.next()) {
            ("pools", pool, "primary", None) => Some(Key::Verdict(pool.to_string())),
            ("backends", backend, "checker", None) => Some(Key::Checker(backend.to_string())),
            ("backends", backend, "observation", None) => Some(Key::Observation(backend.to_string())),
            _ => None,
        }
    }

    async fn event(&mut self, session: &mut Session, event: &etcd_client::Event) {
        let Some(kv) = event.kv() else { return };
        let put = event.event_type() == EventType::Put;
        match self.key(kv.key()) {
            Some(Key::Verdict(pool)) => {
                let verdict = if put {
                    match Verdict::decode(kv.value()) {
                        Ok(verdict) => {
                            if let Some(shared) = self.fleet.shared(&verdict.backend) {
                                shared.named_primary(kv.mod_revision());
                            }
                            Some((kv.mod_revision(), verdict))
                        }
                        Err(e) => {
                            warn!(%pool, error = %e, "fleet: a verdict key holds no verdict; the pool holds");
                            Some((kv.mod_revision(), Verdict::unreadable(&e)))
                        }
                    }
                } else {
                    None
                };
                self.tell(News::Verdict { pool, verdict }).await;
            }
            Some(Key::Checker(backend)) => {
                let name = &self.fleet.config.name;
                let holder = put.then(|| String::from_utf8_lossy(kv.value()).into_owned());
                if let Some(shared) = self.fleet.shared(&backend) {
                    shared.set_holding(holder.as_ref() == Some(name) && kv.lease() == session.lease);
                }
                match holder {
                    Some(holder) => session.checkers.insert(backend, (holder, kv.lease())),
                    None => session.checkers.remove(&backend),
                };
            }
            Some(Key::Observation(backend)) => {
                let Some(shared) = self.fleet.shared(&backend) else {
                    return;
                };
                let observation = if put { Published::decode(kv.value()).ok() } else { None };
                // Our own publications need no relaying; a deleted key (its lease
                // expired) withdraws the other proxy's.
                if observation.as_ref().is_some_and(|o| o.by == self.fleet.config.name) {
                    return;
                }
                shared.relay(observation.map(|o| (o, kv.mod_revision())));
            }
            None => {}
        }
    }

    /// Writes a proposed verdict if the key is still at the epoch the router saw; on a
    /// lost race the router hears the winner's verdict from the watch.
    async fn propose(&mut self, session: &mut Session, proposal: Proposal) -> Result<(), String> {
        let config = self.fleet.config.clone();
        let key = config.verdict_key(&proposal.pool);
        let verdict = Verdict {
            backend: proposal.backend.clone(),
            evidence: proposal.evidence,
            by: config.name.clone(),
            at_ms: crate::timeline::now_ms(),
        };
        let compare = match proposal.expected {
            Some(epoch) => Compare::mod_revision(key.clone(), CompareOp::Equal, epoch),
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key.clone(), verdict.encode(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = bounded(&config, "writing a verdict", session.client.txn(txn)).await?;
        let outcome = if response.succeeded() { "won" } else { "lost" };
        metrics::counter!(m::FLEET_VERDICT_WRITES, "pool" => proposal.pool.clone(), "outcome" => outcome).increment(1);
        let epoch = response.header().map_or(0, |h| h.revision());
        if response.succeeded() {
            info!(pool = %proposal.pool, primary = %proposal.backend, epoch, after = ?proposal.expected, "fleet: new epoch written");
        } else {
            info!(pool = %proposal.pool, primary = %proposal.backend, after = ?proposal.expected, "fleet: another proxy wrote the epoch first");
        }
        Ok(())
    }
}

enum Key {
    Verdict(String),
    Checker(String),
    Observation(String),
}
