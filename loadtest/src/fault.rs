//! Fault steps on the real cluster, and the primary-of-record timeline they produce
//! (which server was the writable primary when), against which acknowledged writes
//! are checked afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use switchyard_lab::mariadb::Cluster;
use tokio::time::{sleep, sleep_until, Instant};

use crate::scenario::{Action, Fault};

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

/// The state the fault task keeps: the cluster and which node is primary.
pub struct Faults {
    pub cluster: Arc<Mutex<Cluster>>,
    pub primary: usize,
    pub dead: Vec<usize>,
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("fault step panicked")
}

impl Faults {
    /// Applies `faults` at their times; returns the records and the timeline.
    pub async fn run(mut self, faults: Vec<Fault>, t0: Instant) -> (Vec<FaultRecord>, PrimaryTimeline, usize) {
        let ms = |at: Instant| at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        let first = self
            .cluster
            .lock()
            .expect("cluster lock")
            .node(self.primary)
            .server_id();
        let mut timeline = PrimaryTimeline(vec![(0.0, Some(first))]);
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
            let step = match fault.action {
                Action::KillPrimary => self.kill_primary(fault.promote_after, &mut timeline, t0).await,
                Action::Switchover => self.switchover(&mut timeline, t0).await,
                Action::StopPrimary => self.stop_primary(fault.stop_for).await,
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
        let (cluster, old) = (self.cluster.clone(), self.primary);
        blocking(move || cluster.lock().expect("cluster lock").kill9(old)).await?;
        timeline.0.push((t0.elapsed().as_secs_f64() * 1000.0, None));
        self.dead.push(old);
        sleep(promote_after).await;
        self.promote_best(timeline, t0).await.map(Some)
    }

    async fn switchover(&mut self, timeline: &mut PrimaryTimeline, t0: Instant) -> Result<Option<(f64, u32)>> {
        let (cluster, old) = (self.cluster.clone(), self.primary);
        blocking(move || cluster.lock().expect("cluster lock").sql(old, "SET GLOBAL read_only=1")).await?;
        timeline.0.push((t0.elapsed().as_secs_f64() * 1000.0, None));
        // A planned switchover loses nothing: every replica first applies all the old
        // primary wrote (it is read-only now, so that set is final).
        let (cluster, dead) = (self.cluster.clone(), self.dead.clone());
        blocking(move || -> Result<()> {
            let cluster = cluster.lock().expect("cluster lock");
            for replica in (0..cluster.nodes().len()).filter(|i| *i != old && !dead.contains(i)) {
                cluster.wait_caught_up(replica, old)?;
            }
            Ok(())
        })
        .await?;
        let promoted = self.promote_best(timeline, t0).await?;
        let (cluster, new) = (self.cluster.clone(), self.primary);
        blocking(move || cluster.lock().expect("cluster lock").rejoin_as_replica(old, new)).await?;
        Ok(Some(promoted))
    }

    async fn stop_primary(&mut self, stop_for: Duration) -> Result<Option<(f64, u32)>> {
        let (cluster, old) = (self.cluster.clone(), self.primary);
        blocking(move || cluster.lock().expect("cluster lock").sigstop(old)).await?;
        sleep(stop_for).await;
        let cluster = self.cluster.clone();
        blocking(move || cluster.lock().expect("cluster lock").sigcont(old)).await?;
        Ok(None)
    }

    /// Promotes the most advanced live replica and repoints the other live ones.
    async fn promote_best(&mut self, timeline: &mut PrimaryTimeline, t0: Instant) -> Result<(f64, u32)> {
        let cluster = self.cluster.clone();
        let old = self.primary;
        let dead = self.dead.clone();
        let (new, server) = blocking(move || -> Result<(usize, u32)> {
            let cluster = cluster.lock().expect("cluster lock");
            let replicas: Vec<usize> = (0..cluster.nodes().len())
                .filter(|i| *i != old && !dead.contains(i))
                .collect();
            let new = cluster.most_advanced(&replicas)?;
            cluster.promote(new)?;
            Ok((new, cluster.node(new).server_id()))
        })
        .await?;
        let at = t0.elapsed().as_secs_f64() * 1000.0;
        timeline.0.push((at, Some(server)));
        self.primary = new;
        let others = {
            let cluster = self.cluster.lock().expect("cluster lock");
            self.live_replicas(&cluster)
        };
        let cluster = self.cluster.clone();
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
