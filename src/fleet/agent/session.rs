//! The agent's sessions with etcd: open (connect, lease, read), serve (keep-alive,
//! watch, proposals, publications, campaigns), and what each event means.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};
use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use super::{Agent, News, Proposal};
use crate::config::ClusterConfig;
use crate::fleet::shared::{Publish, Published};
use crate::fleet::store::{bounded, connect};
use crate::fleet::verdict::Verdict;
use crate::metrics as m;

/// What a session keeps.
struct Session {
    client: Client,
    lease: i64,
    /// Backend name → the proxy holding its checker key.
    checkers: HashMap<String, String>,
}

impl Agent {
    pub(super) async fn run(&mut self) {
        let config = self.fleet.config.clone();
        let pause = (config.lease_ttl / 6).max(Duration::from_millis(200));
        loop {
            let error = self.session().await;
            if self.announced != Some(false) {
                self.announced = Some(false);
                warn!(proxy = %config.name, endpoints = %config.etcd.join(","), %error, "ALARM: etcd out of reach: no new primary is adopted until it answers");
                self.fleet.set_store(false);
                let _ = self.news.send(News::Store { up: false }).await;
            } else {
                warn!(proxy = %config.name, endpoints = %config.etcd.join(","), %error, "etcd still out of reach");
            }
            // Proposals made while etcd was out of reach are stale by now.
            while self.proposed.try_recv().is_ok() {}
            while self.published.try_recv().is_ok() {}
            sleep(pause).await;
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
        let _ = self.news.send(News::Store { up: true }).await;
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
            // Biased: a checker's publication goes out before a verdict its router
            // proposes from the same check, so that every proxy learns the evidence
            // (the new primary's role) before the verdict that rests on it.
            tokio::select! {
                biased;
                Some(publish) = self.published.recv() => {
                    if let Err(e) = self.publish(session, publish).await {
                        return e;
                    }
                }
                _ = tick.tick() => {
                    if acked.elapsed() > beat + config.timeout {
                        return format!("the lease keep-alive was not answered for {:?}", acked.elapsed());
                    }
                    if let Err(e) = keeper.keep_alive().await {
                        return format!("keep-alive: {e}");
                    }
                }
                ack = acks.message() => match ack {
                    Ok(Some(ack)) if ack.ttl() > 0 => acked = Instant::now(),
                    Ok(Some(_)) => return "the lease expired".to_string(),
                    Ok(None) => return "the keep-alive stream ended".to_string(),
                    Err(e) => return format!("keep-alive: {e}"),
                },
                message = watch.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            return format!("the watch was cancelled: {}", response.cancel_reason());
                        }
                        for event in response.events() {
                            self.event(session, event).await;
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
                    Err(e) => warn!(%pool, error = %e, "fleet: a verdict key holds no verdict; taken as none"),
                },
                Some(Key::Checker(backend)) => {
                    checkers.insert(backend, String::from_utf8_lossy(kv.value()).into_owned());
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
        let _ = self.news.send(News::Loaded(verdicts)).await;
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
                            warn!(%pool, error = %e, "fleet: a verdict key holds no verdict; taken as none");
                            None
                        }
                    }
                } else {
                    None
                };
                let _ = self.news.send(News::Verdict { pool, verdict }).await;
            }
            Some(Key::Checker(backend)) => {
                let name = &self.fleet.config.name;
                let holder = put.then(|| String::from_utf8_lossy(kv.value()).into_owned());
                if let Some(shared) = self.fleet.shared(&backend) {
                    shared.set_holding(holder.as_ref() == Some(name) && kv.lease() == session.lease);
                }
                match holder {
                    Some(holder) => session.checkers.insert(backend, holder),
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

    /// Tries to take the checker key of every shared backend nobody holds.
    async fn campaign(&mut self, session: &mut Session) -> Result<(), String> {
        let config = self.fleet.config.clone();
        for shared in self.fleet.live() {
            if !config.shared_checks || session.checkers.contains_key(&shared.name) {
                continue;
            }
            let key = config.checker_key(&shared.name);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    config.name.clone(),
                    Some(PutOptions::new().with_lease(session.lease)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let response = bounded(&config, "checker campaign", session.client.txn(txn)).await?;
            let holder = if response.succeeded() {
                info!(proxy = %config.name, backend = %shared.name, "fleet: this proxy checks the backend for the fleet");
                config.name.clone()
            } else {
                first_value(&response).unwrap_or_default()
            };
            shared.set_holding(response.succeeded());
            session.checkers.insert(shared.name.clone(), holder);
        }
        Ok(())
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

    async fn publish(&mut self, session: &mut Session, publish: Publish) -> Result<(), String> {
        let config = self.fleet.config.clone();
        if session.checkers.get(&publish.backend) != Some(&config.name) {
            return Ok(()); // no longer ours
        }
        let key = config.observation_key(&publish.backend);
        let options = PutOptions::new().with_lease(session.lease);
        let put = session.client.put(key, publish.observation.encode(), Some(options));
        bounded(&config, "publishing an observation", put).await?;
        metrics::counter!(m::FLEET_OBSERVATIONS_PUBLISHED).increment(1);
        Ok(())
    }
}

enum Key {
    Verdict(String),
    Checker(String),
    Observation(String),
}

/// The value of the first key a transaction's `or_else` get returned.
fn first_value(response: &etcd_client::TxnResponse) -> Option<String> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    })
}
