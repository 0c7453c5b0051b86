//! The agent's part in shared checks: campaigning for checker keys, giving up those of
//! backends a reload removed, and publishing what this proxy's checks see.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tracing::info;

use super::session::Session;
use super::Agent;
use crate::fleet::shared::Publish;
use crate::fleet::store::bounded;
use crate::metrics as m;

impl Agent {
    /// Tries to take the checker key of every shared backend nobody holds.
    pub(super) async fn campaign(&mut self, session: &mut Session) -> Result<(), String> {
        let config = self.fleet.config.clone();
        for gone in self.fleet.prune() {
            if session.holds(&gone, &config.name) {
                self.resign(session, &gone).await?;
            }
        }
        for shared in self.fleet.live() {
            if session.holds(&shared.name, &config.name) {
                shared.set_holding(true); // a backend a reload added back
                continue;
            }
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
                (config.name.clone(), session.lease)
            } else {
                first_value(&response).unwrap_or_default()
            };
            shared.set_holding(response.succeeded());
            session.checkers.insert(shared.name.clone(), holder);
        }
        Ok(())
    }

    /// Gives up the checker key (and the observation) of a backend this proxy no longer
    /// has (a reload removed it), if the key is still ours on this lease.
    async fn resign(&mut self, session: &mut Session, backend: &str) -> Result<(), String> {
        let config = self.fleet.config.clone();
        let key = config.checker_key(backend);
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, config.name.clone()),
                Compare::lease(key.clone(), CompareOp::Equal, session.lease),
            ])
            .and_then([
                TxnOp::delete(config.observation_key(backend), None),
                TxnOp::delete(key, None),
            ]);
        bounded(&config, "giving up a checker key", session.client.txn(txn)).await?;
        session.checkers.remove(backend);
        info!(proxy = %config.name, %backend, "fleet: this proxy no longer checks the backend for the fleet");
        Ok(())
    }

    pub(super) async fn publish(&mut self, session: &mut Session, publish: Publish) -> Result<(), String> {
        let config = self.fleet.config.clone();
        if !session.holds(&publish.backend, &config.name) {
            return Ok(()); // no longer ours, or on an older lease
        }
        let key = config.observation_key(&publish.backend);
        let options = PutOptions::new().with_lease(session.lease);
        let put = session.client.put(key, publish.observation.encode(), Some(options));
        bounded(&config, "publishing an observation", put).await?;
        metrics::counter!(m::FLEET_OBSERVATIONS_PUBLISHED).increment(1);
        Ok(())
    }
}

/// The value and lease of the first key a transaction's `or_else` get returned.
fn first_value(response: &etcd_client::TxnResponse) -> Option<(String, i64)> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())),
        _ => None,
    })
}
