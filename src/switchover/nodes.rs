//! The switchover's connections: one admin login per member, kept for the whole run
//! and made again after a failure (an undo must not depend on the connection that
//! just broke).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Backend;
use crate::config::{ProbeConfig, SwitchoverConfig};
use crate::health::probe::mysql::session::{Login, Rows, Session};
use crate::health::probe::mysql::Columns;
use crate::health::probe::Endpoint;
use crate::tls::PinnedKey;

/// One member, as the switchover talks to it.
pub struct Node {
    /// The backend.
    pub backend: Arc<Backend>,
    /// Its check's pinned server key, for the login.
    pinned: Option<PinnedKey>,
    session: Option<Session>,
}

impl Node {
    /// A member; `probe` is its check config (for the pinned server key).
    pub fn new(backend: Arc<Backend>, probe: &ProbeConfig) -> Self {
        let pinned = probe.mysql().and_then(|mysql| mysql.server_public_key.clone());
        Node {
            backend,
            pinned,
            session: None,
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.backend.name
    }

    /// Runs `sql` (statements separated by `;`), logging in first if needed, within
    /// `limit`; any failure drops the connection. The error names the backend.
    pub async fn run(&mut self, config: &SwitchoverConfig, sql: &str, limit: Duration) -> Result<Vec<Rows>, String> {
        let deadline = Instant::now() + limit;
        let result = self.run_inner(config, sql, deadline).await;
        if result.is_err() {
            self.session = None;
        }
        result.map_err(|e| format!("{}: {e}", self.backend.name))
    }

    async fn run_inner(
        &mut self,
        config: &SwitchoverConfig,
        sql: &str,
        deadline: Instant,
    ) -> Result<Vec<Rows>, crate::health::CheckError> {
        let session = match &mut self.session {
            Some(session) => session,
            None => {
                let login = Login {
                    user: &config.user,
                    password: config.password.as_ref().map_or("", |p| p.expose()),
                    pinned: self.pinned.as_ref(),
                    tls: self.backend.tls.as_ref(),
                };
                let to = Endpoint {
                    addr: self.backend.address,
                    source: self.backend.source,
                    send_proxy: self.backend.send_proxy,
                };
                self.session.insert(Session::login(to, login, deadline).await?)
            }
        };
        session.query(sql, deadline).await
    }

    /// The first row of the first result of `sql`, and the first row of the second.
    pub async fn rows(
        &mut self,
        config: &SwitchoverConfig,
        sql: &str,
        limit: Duration,
    ) -> Result<(Columns, Option<Columns>), String> {
        let mut results = self.run(config, sql, limit).await?.into_iter();
        let first = results.next().and_then(|r| r.into_iter().next()).unwrap_or_default();
        let second = results.next().and_then(|r| r.into_iter().next());
        Ok((first, second))
    }
}

/// A column of a row as text (`""` for NULL or absent).
pub fn text(row: &Columns, name: &str) -> String {
    row.get(name).cloned().flatten().unwrap_or_default()
}
