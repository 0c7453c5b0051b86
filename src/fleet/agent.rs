//! The agent: this proxy's one connection to etcd, in sessions. A session connects,
//! takes a lease, reads everything under `<prefix>/` at one revision, watches it from
//! the next, campaigns for the checker keys of this proxy's backends, and then serves
//! the router's proposals and the checkers' publications until etcd stops answering
//! (a keep-alive unanswered for `timeout`, a broken watch, a failed request). Then
//! the store is lost: the router hears it, relayed observations are dropped (every
//! backend is checked fully here), and a new session starts after a short pause.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use etcd_client::Client;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::shared::{Publish, SharedBackend};
use super::verdict::{Epoch, Evidence, Verdict};
use crate::config::ClusterConfig;
use crate::metrics as m;

mod checks;
mod session;

/// What the router hears from the fleet.
#[derive(Debug, Clone, PartialEq)]
pub enum News {
    /// Every verdict, read at one revision at the start of a session: pools without
    /// an entry have none.
    Loaded(HashMap<String, (Epoch, Verdict)>),
    /// One pool's verdict changed (`None`: its key was deleted).
    Verdict {
        /// The pool.
        pool: String,
        /// Its new verdict and epoch.
        verdict: Option<(Epoch, Verdict)>,
    },
    /// etcd answers again (after `Loaded`), or stopped answering.
    Store {
        /// Whether it answers.
        up: bool,
    },
}

/// A verdict the router wants written: `backend` becomes `pool`'s primary if the key
/// is still at `expected` (`None`: the key does not exist yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The pool.
    pub pool: String,
    /// The backend this proxy sees as its primary.
    pub backend: String,
    /// What its check saw.
    pub evidence: Evidence,
    /// The epoch the router saw.
    pub expected: Option<Epoch>,
}

/// The process's handle on the fleet.
#[derive(Debug)]
pub struct Fleet {
    config: ClusterConfig,
    /// The backends whose checks are shared, by name.
    backends: Mutex<HashMap<String, Weak<SharedBackend>>>,
    /// A backend was registered: campaign for it.
    registered: Notify,
    publish: mpsc::Sender<Publish>,
    store_up: AtomicBool,
}

impl Fleet {
    /// The `[cluster]` section it runs.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Whether etcd answers.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// The backend's share of the fleet (one per name while its checker runs).
    pub fn share(&self, name: &str, attention: Arc<crate::health::Attention>) -> Arc<SharedBackend> {
        let mut backends = self.backends.lock().expect("fleet registry poisoned");
        if let Some(shared) = backends.get(name).and_then(Weak::upgrade) {
            // A reload replaced the backend: its new checker is the one to nudge.
            shared.set_attention(attention);
            return shared;
        }
        let shared = Arc::new(SharedBackend::new(name, attention));
        backends.insert(name.to_string(), Arc::downgrade(&shared));
        drop(backends);
        self.registered.notify_one();
        shared
    }

    /// Where shared checks send what they publish.
    pub fn publisher(&self) -> mpsc::Sender<Publish> {
        self.publish.clone()
    }

    /// The names of the backends whose checker key this proxy holds.
    pub fn holding(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .live()
            .into_iter()
            .filter(|s| s.holding())
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }

    fn live(&self) -> Vec<Arc<SharedBackend>> {
        let backends = self.backends.lock().expect("fleet registry poisoned");
        backends.values().filter_map(Weak::upgrade).collect()
    }

    /// Forgets the backends whose checkers stopped (a reload removed them); their names.
    fn prune(&self) -> Vec<String> {
        let mut backends = self.backends.lock().expect("fleet registry poisoned");
        let gone: Vec<String> = backends
            .iter()
            .filter(|(_, weak)| weak.strong_count() == 0)
            .map(|(name, _)| name.clone())
            .collect();
        backends.retain(|_, weak| weak.strong_count() > 0);
        gone
    }

    fn shared(&self, name: &str) -> Option<Arc<SharedBackend>> {
        self.backends
            .lock()
            .expect("fleet registry poisoned")
            .get(name)
            .and_then(Weak::upgrade)
    }

    /// Records whether etcd answers. Lost: relayed observations are dropped (every
    /// backend is checked fully here) and no checker key is held any more (another
    /// proxy takes them over when this one's lease expires).
    fn set_store(&self, up: bool) {
        self.store_up.store(up, Ordering::Relaxed);
        metrics::gauge!(m::FLEET_STORE_UP).set(if up { 1.0 } else { 0.0 });
        if !up {
            for shared in self.live() {
                shared.set_holding(false);
                shared.relay(None);
            }
        }
    }
}

/// Starts the agent for `config`: the fleet handle, the router's news, and where the
/// router sends its proposals. It runs until `shutdown`.
pub fn start(
    config: &ClusterConfig,
    shutdown: CancellationToken,
) -> (Arc<Fleet>, mpsc::Receiver<News>, mpsc::Sender<Proposal>) {
    let (publish, published) = mpsc::channel(1024);
    let (news_tx, news) = mpsc::channel(1024);
    let (proposals, proposed) = mpsc::channel(64);
    let fleet = Arc::new(Fleet {
        config: config.clone(),
        backends: Mutex::new(HashMap::new()),
        registered: Notify::new(),
        publish,
        store_up: AtomicBool::new(false),
    });
    metrics::gauge!(m::FLEET_STORE_UP).set(0.0);
    let mut agent = Agent {
        fleet: fleet.clone(),
        news: news_tx,
        proposed,
        published,
        announced: None,
        lease: None,
        // Sessions of a fleet's proxies start spread over the members.
        next_member: fastrand::usize(..config.etcd.len().max(1)),
        undelivered: false,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = agent.run() => {}
            _ = shutdown.cancelled() => {}
        }
        agent.revoke().await;
    });
    (fleet, news, proposals)
}

struct Agent {
    fleet: Arc<Fleet>,
    news: mpsc::Sender<News>,
    proposed: mpsc::Receiver<Proposal>,
    published: mpsc::Receiver<Publish>,
    /// What the router was last told of the store (nothing before the first session).
    announced: Option<bool>,
    /// The current session's client and lease, revoked at shutdown so that another
    /// proxy takes this one's checks over at once.
    lease: Option<(Client, i64)>,
    /// The member the next session tries first: the one after the last one used.
    next_member: usize,
    /// News was dropped (the router's queue stayed full): the session ends and the
    /// next one reads everything again.
    undelivered: bool,
}
