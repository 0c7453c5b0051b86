//! Fault steps on the real cluster, and the primary-of-record timeline they produce
//! (which server was the writable primary when), against which acknowledged writes
//! are checked afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use switchyard_lab::mariadb::Cluster;
use switchyard_lab::mongo::ReplicaSet;
use tokio::time::{sleep, sleep_until, Instant};

use crate::pair::{Disturbance, Pair};
use crate::peers::Peers;
use crate::scenario::{Action, Fault};
use switchyard_lab::netns::Host;

/// What happened for one fault, in milliseconds since the drill started.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub action: Action,
    pub injected_ms: f64,
    /// When the primary of record stopped being one (killed, or read-only), if it did.
    pub effective_ms: Option<f64>,
    /// When the new primary became writable (promotion done), if there was one.
    pub promoted_ms: Option<f64>,
    /// Its `server_id`.
    pub new_primary: Option<u32>,
    pub error: Option<String>,
}

/// `(since_ms, server_id)` steps: from `since_ms` on, that server (or none) is the
/// primary of record.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PrimaryTimeline(pub Vec<(f64, Option<u32>)>);

impl PrimaryTimeline {
    /// Whether `server` was the primary at some instant of `[from_ms, to_ms]`.
    pub fn was_primary_during(&self, server: u32, from_ms: f64, to_ms: f64) -> bool {
        let steps = &self.0;
        steps.iter().enumerate().any(|(i, &(since, who))| {
            let until = steps.get(i + 1).map_or(f64::INFINITY, |s| s.0);
            who == Some(server) && since <= to_ms && until >= from_ms
        })
    }
}

/// One blocking step on the HA pair, run off the async workers.
type PairStep = Box<dyn FnOnce(&mut Pair) -> Result<()> + Send>;

/// The state the fault task keeps: the peers and which one is primary.
pub struct Faults {
    pub peers: Arc<Peers>,
    /// Set by a step when its fault lands (for faults that do not end a primary of
    /// record on the MySQL timeline), ms since the drill started.
    pub landed_ms: Option<f64>,
    /// For MySQL (the fault steps' own handle on the cluster).
    pub cluster: Option<Arc<Mutex<Cluster>>>,
    pub primary: usize,
    pub dead: Vec<usize>,
    /// The HA pair, for the proxy-tier faults.
    pub pair: Option<Arc<Mutex<Pair>>>,
    /// Proxy hosts whose switchyard was killed and not restarted yet.
    pub dead_proxies: Vec<Host>,
}

impl Faults {
    /// The fault state of fresh `peers`: the first node primary, none dead, no pair.
    pub fn new(peers: Arc<Peers>) -> Faults {
        let cluster = match &*peers {
            Peers::Mysql(cluster) => Some(cluster.clone()),
            _ => None,
        };
        Faults {
            peers,
            landed_ms: None,
            cluster,
            primary: 0,
            dead: Vec::new(),
            pair: None,
            dead_proxies: Vec::new(),
        }
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("fault step panicked")
}

impl Faults {
    /// Applies `faults` at their times; returns the records and the timeline.
    pub async fn run(mut self, faults: Vec<Fault>, t0: Instant) -> (Vec<FaultRecord>, PrimaryTimeline, usize) {
        let ms = |at: Instant| at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        let mut timeline = PrimaryTimeline::default();
        if let Some(cluster) = &self.cluster {
            let first = cluster.lock().expect("cluster lock").node(self.primary).server_id();
            timeline.0.push((0.0, Some(first)));
        }
        if let Peers::Mongo(_) = &*self.peers {
            // Scripted members are numbered from 1, as their write replies say.
            timeline.0.push((0.0, Some(self.primary as u32 + 1)));
        }
        let mut records = Vec::new();
        for fault in faults {
            sleep_until(t0 + fault.at).await;
            let injected = Instant::now();
            let mut record = FaultRecord {
                action: fault.action,
                injected_ms: ms(injected),
                effective_ms: None,
                promoted_ms: None,
                new_primary: None,
                error: None,
            };
            let steps_before = timeline.0.len();
            let step = match (&*self.peers.clone(), fault.action) {
                (_, action) if action.is_proxy_tier() => self.proxy_fault(action, &fault, &mut timeline, t0).await,
                (Peers::Mysql(_), Action::KillPrimary) => {
                    self.kill_primary(fault.promote_after, &mut timeline, t0).await
                }
                (Peers::Mysql(_), Action::Switchover) => self.switchover(&mut timeline, t0).await,
                (Peers::Mysql(_), Action::StopPrimary) => self.stop_primary(fault.stop_for, t0).await,
                (Peers::Mongo(set), action) => self.mongo(set.clone(), action, &fault, &mut timeline, t0).await,
                (Peers::Secantus(s), Action::Stepdown) => {
                    let stepped = stepdown(s.addr()).await;
                    self.landed_ms = Some(ms(Instant::now()));
                    stepped.map(|()| None)
                }
                (Peers::Servers(servers), Action::Refuse) => {
                    servers.lock().await.refuse(0).await;
                    self.landed_ms = Some(ms(Instant::now()));
                    Ok(None)
                }
                (Peers::Servers(servers), Action::Admit) => servers.lock().await.admit(0).await.map(|()| None),
                (Peers::Mysql(_), Action::Rejoin) => self.rejoin_mysql().await.map(|()| None),

                (_, action) => Err(anyhow::anyhow!("{action:?} does not apply to these peers")),
            };
            match step {
                Ok(Some((at, server))) => {
                    record.promoted_ms = Some(at);
                    record.new_primary = Some(server);
                }
                Ok(None) => {}
                Err(e) => record.error = Some(format!("{e:#}")),
            }
            record.effective_ms = timeline
                .0
                .get(steps_before)
                .filter(|(_, who)| who.is_none())
                .map(|(at, _)| *at);
            records.push(record);
        }
        (records, timeline, self.primary)
    }

    fn cluster(&self) -> Arc<Mutex<Cluster>> {
        self.cluster.clone().expect("MySQL faults run on a cluster")
    }

    /// MongoDB replica set: scripted elections, kill -9 (then an election after
    /// `promote_after`), SIGSTOP/SIGCONT, restarts of the killed members.
    async fn mongo(
        &mut self,
        set: Arc<Mutex<ReplicaSet>>,
        action: Action,
        fault: &Fault,
        timeline: &mut PrimaryTimeline,
        t0: Instant,
    ) -> Result<Option<(f64, u32)>> {
        let old = self.primary;
        let next = {
            let len = set.lock().expect("set lock").len();
            (1..len)
                .map(|d| (old + d) % len)
                .find(|i| !self.dead.contains(i))
                .unwrap_or(old)
        };
        let elect = |set: Arc<Mutex<ReplicaSet>>| async move {
            blocking(move || set.lock().expect("set lock").elect(Some(next))).await
        };
        let now = || Some(t0.elapsed().as_secs_f64() * 1000.0);
        match action {
            Action::Elect => {
                elect(set).await?;
                self.landed_ms = now();
            }
            Action::KillPrimary => {
                let s = set.clone();
                blocking(move || s.lock().expect("set lock").kill9(old)).await?;
                self.landed_ms = now();
                timeline.0.push((self.landed_ms.unwrap_or_default(), None));
                self.dead.push(old);
                // A live member that is not about to be elected claims primary with
                // an older term until the election (which rewrites the state).
                let len = set.lock().expect("set lock").len();
                let claimant = (0..len).find(|i| *i != next && !self.dead.contains(i));
                if let (true, Some(claimant)) = (fault.stale_claim, claimant) {
                    let (s, term) = (
                        set.clone(),
                        set.lock().expect("set lock").term().saturating_sub(1).max(1),
                    );
                    blocking(move || s.lock().expect("set lock").claim_stale(claimant, term)).await?;
                }
                sleep(fault.promote_after).await;
                elect(set).await?;
            }
            Action::Rejoin => {
                let dead = std::mem::take(&mut self.dead);
                blocking(move || {
                    dead.into_iter()
                        .try_for_each(|i| set.lock().expect("set lock").rejoin(i))
                })
                .await?;
                return Ok(None);
            }
            Action::StopPrimary => {
                let s = set.clone();
                blocking(move || s.lock().expect("set lock").sigstop(old)).await?;
                self.landed_ms = now();
                sleep(fault.stop_for).await;
                blocking(move || set.lock().expect("set lock").sigcont(old)).await?;
                return Ok(None);
            }
            other => anyhow::bail!("{other:?} does not apply to a replica set"),
        }
        self.primary = next;
        // From the moment the election is written, the members obey it (they re-read
        // the state on every request): the new primary of record.
        let elected_ms = t0.elapsed().as_secs_f64() * 1000.0;
        timeline.0.push((elected_ms, Some(next as u32 + 1)));
        Ok(Some((elected_ms, next as u32 + 1)))
    }

    /// A proxy-tier fault on the HA pair (see [`Action`]); returns a promotion for
    /// `proxy-kill-with-primary`.
    async fn proxy_fault(
        &mut self,
        action: Action,
        fault: &Fault,
        timeline: &mut PrimaryTimeline,
        t0: Instant,
    ) -> Result<Option<(f64, u32)>> {
        let pair = self
            .pair
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{action:?} needs the HA pair target"))?;
        let on_pair = |work: PairStep| {
            let pair = pair.clone();
            blocking(move || work(&mut pair.lock().expect("pair lock")))
        };
        let active = {
            let pair = pair.clone();
            blocking(move || pair.lock().expect("pair lock").active()).await?
        };
        let landed = |faults: &mut Faults| faults.landed_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
        match action {
            Action::ProxyKill | Action::ProxyKillWithPrimary => {
                on_pair(Box::new(move |p| p.kill_proxy(active))).await?;
                landed(self);
                self.dead_proxies.push(active);
                if action == Action::ProxyKillWithPrimary {
                    return self.kill_primary(fault.promote_after, timeline, t0).await;
                }
            }
            Action::ProxyHang | Action::ProxyPartition | Action::ProxyRouteLoss => {
                let disturbance = match action {
                    Action::ProxyHang => Disturbance::Hang,
                    Action::ProxyPartition => Disturbance::Partition,
                    _ => Disturbance::RouteLoss,
                };
                on_pair(Box::new(move |p| p.disturb(disturbance, active, true))).await?;
                landed(self);
                sleep(fault.stop_for).await;
                on_pair(Box::new(move |p| p.disturb(disturbance, active, false))).await?;
            }
            Action::ProxyRestart => {
                for host in std::mem::take(&mut self.dead_proxies) {
                    on_pair(Box::new(move |p| {
                        p.start_proxy(host)?;
                        p.await_ready(host, Duration::from_secs(30))
                    }))
                    .await?;
                }
                landed(self);
            }
            Action::StandbyStress => {
                let stop_for = fault.stop_for;
                on_pair(Box::new(move |p| {
                    let standby = p.standby()?;
                    p.stress(standby, stop_for)
                }))
                .await?;
                landed(self);
                sleep(stop_for).await;
            }
            other => anyhow::bail!("{other:?} is not a proxy-tier fault"),
        }
        Ok(None)
    }

    fn live_replicas(&self, cluster: &Cluster) -> Vec<usize> {
        (0..cluster.nodes().len())
            .filter(|i| *i != self.primary && !self.dead.contains(i))
            .collect()
    }

    async fn kill_primary(
        &mut self,
        promote_after: Duration,
        timeline: &mut PrimaryTimeline,
        t0: Instant,
    ) -> Result<Option<(f64, u32)>> {
        let (cluster, old) = (self.cluster(), self.primary);
        blocking(move || cluster.lock().expect("cluster lock").kill9(old)).await?;
        timeline.0.push((t0.elapsed().as_secs_f64() * 1000.0, None));
        self.dead.push(old);
        sleep(promote_after).await;
        self.promote_best(timeline, t0).await.map(Some)
    }

    async fn switchover(&mut self, timeline: &mut PrimaryTimeline, t0: Instant) -> Result<Option<(f64, u32)>> {
        let (cluster, old) = (self.cluster(), self.primary);
        blocking(move || cluster.lock().expect("cluster lock").sql(old, "SET GLOBAL read_only=1")).await?;
        timeline.0.push((t0.elapsed().as_secs_f64() * 1000.0, None));
        // A planned switchover loses nothing: every replica first applies all the old
        // primary wrote (it is read-only now, so that set is final).
        let (cluster, dead) = (self.cluster(), self.dead.clone());
        blocking(move || -> Result<()> {
            let cluster = cluster.lock().expect("cluster lock");
            for replica in (0..cluster.nodes().len()).filter(|i| *i != old && !dead.contains(i)) {
                cluster.wait_caught_up(replica, old)?;
            }
            Ok(())
        })
        .await?;
        let promoted = self.promote_best(timeline, t0).await?;
        let (cluster, new) = (self.cluster(), self.primary);
        blocking(move || cluster.lock().expect("cluster lock").rejoin_as_replica(old, new)).await?;
        Ok(Some(promoted))
    }

    /// Restarts every killed node as a replica of the current primary.
    async fn rejoin_mysql(&mut self) -> Result<()> {
        let (cluster, primary, dead) = (self.cluster(), self.primary, std::mem::take(&mut self.dead));
        blocking(move || {
            dead.into_iter()
                .try_for_each(|node| cluster.lock().expect("cluster lock").restart_as_replica(node, primary))
        })
        .await
    }

    async fn stop_primary(&mut self, stop_for: Duration, t0: Instant) -> Result<Option<(f64, u32)>> {
        let (cluster, old) = (self.cluster(), self.primary);
        blocking(move || cluster.lock().expect("cluster lock").sigstop(old)).await?;
        self.landed_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
        sleep(stop_for).await;
        let cluster = self.cluster();
        blocking(move || cluster.lock().expect("cluster lock").sigcont(old)).await?;
        Ok(None)
    }

    /// Promotes the most advanced live replica and repoints the other live ones.
    async fn promote_best(&mut self, timeline: &mut PrimaryTimeline, t0: Instant) -> Result<(f64, u32)> {
        let cluster = self.cluster();
        let old = self.primary;
        let dead = self.dead.clone();
        let (new, server, at) = blocking(move || -> Result<(usize, u32, f64)> {
            let cluster = cluster.lock().expect("cluster lock");
            let replicas: Vec<usize> = (0..cluster.nodes().len())
                .filter(|i| *i != old && !dead.contains(i))
                .collect();
            let new = cluster.most_advanced(&replicas)?;
            // Stamped before read_only=0: from here on its acks are the primary's.
            let at = t0.elapsed().as_secs_f64() * 1000.0;
            cluster.promote(new)?;
            Ok((new, cluster.node(new).server_id(), at))
        })
        .await?;
        timeline.0.push((at, Some(server)));
        self.primary = new;
        let others = {
            let cluster = self.cluster();
            let cluster = cluster.lock().expect("cluster lock");
            self.live_replicas(&cluster)
        };
        let cluster = self.cluster();
        blocking(move || -> Result<()> {
            let cluster = cluster.lock().expect("cluster lock");
            for other in others.into_iter().filter(|&o| o != old) {
                cluster.repoint(other, new)?;
            }
            Ok(())
        })
        .await?;
        Ok((at, server))
    }
}

/// SecantusDB: `replSetStepDown` (the server closes connections as it steps down, so
/// the command's own reply may be lost; that is not a failure of the step).
async fn stepdown(addr: std::net::SocketAddr) -> Result<()> {
    let uri = format!("mongodb://{addr}/?directConnection=true&serverSelectionTimeoutMS=5000");
    let client = mongodb::Client::with_uri_str(uri).await?;
    let command = bson::doc! { "replSetStepDown": 2, "force": true };
    let _ = tokio::time::timeout(Duration::from_secs(5), client.database("admin").run_command(command)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_of_record_over_intervals() {
        let timeline = PrimaryTimeline(vec![(0.0, Some(1)), (1000.0, None), (2000.0, Some(2))]);
        assert!(timeline.was_primary_during(1, 500.0, 600.0));
        assert!(
            timeline.was_primary_during(1, 900.0, 1500.0),
            "in flight across the fault"
        );
        assert!(
            !timeline.was_primary_during(1, 1200.0, 1900.0),
            "during the gap nobody was"
        );
        assert!(!timeline.was_primary_during(1, 2500.0, 2600.0));
        assert!(timeline.was_primary_during(2, 2500.0, 2600.0));
        assert!(!timeline.was_primary_during(3, 0.0, 5000.0));
    }
}
