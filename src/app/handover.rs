//! The running process's side of a hot upgrade (see [`crate::upgrade`]): the reloader
//! answers a new process on the upgrade socket with its listening sockets and its
//! backends' states; once that process serves, this one stops accepting (its admin
//! listener too) and drains.

use std::os::unix::net::UnixStream;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::reload::Reloader;
use crate::timeline::EventKind;
use crate::upgrade::{self, Header, Snapshot, SocketGroup};

/// What the reloader keeps for hot upgrades.
pub(crate) struct Upgrade {
    /// The upgrade socket, once [`super::Running::listen_for_upgrades`] bound it.
    pub(crate) listener: Option<tokio::net::UnixListener>,
    /// Its path.
    pub(crate) path: Option<std::path::PathBuf>,
    /// A copy of the admin listener's socket, to hand over.
    pub(crate) admin_socket: Option<std::net::TcpListener>,
    /// Stops the admin listener (after a hand-over).
    pub(crate) stop_admin: CancellationToken,
    /// Cancelled once a new process took over: the process then drains and exits.
    pub(crate) handed_over: CancellationToken,
}

impl Upgrade {
    /// The next connection on the upgrade socket (never, while there is none).
    pub(crate) async fn next(&mut self) -> Option<UnixStream> {
        let Some(listener) = &self.listener else {
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let stream = stream.into_std().ok()?;
                stream.set_nonblocking(false).ok()?;
                Some(stream)
            }
            Err(e) => {
                warn!(error = %e, "cannot accept on the upgrade socket");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                None
            }
        }
    }
}

impl Reloader {
    /// Hands every listening socket and the backends' states to the process on
    /// `stream`; true once it took over (this process then stops accepting), false if
    /// it failed (this process serves on).
    pub(super) async fn hand_over(&mut self, stream: UnixStream) -> bool {
        let (header, sockets) = match self.hand_over_what() {
            Ok(what) => what,
            Err(e) => {
                warn!(error = %e, "hot upgrade refused: cannot copy the listening sockets; serving on");
                return false;
            }
        };
        info!(
            sockets = sockets.len(),
            backends = header.health.len(),
            "hot upgrade: a new process asks to take over; handing over"
        );
        let handed = tokio::task::spawn_blocking(move || {
            let mut stream = stream;
            let refs: Vec<&std::net::TcpListener> = sockets.iter().collect();
            upgrade::hand_over(&mut stream, &header, &refs).map(|()| stream)
        })
        .await;
        let timeline = self.state.timeline.clone();
        match handed {
            Ok(Ok(mut stream)) => {
                // Closed before `bye`: the new process binds the upgrade socket next.
                self.upgrade.listener = None;
                let bye = tokio::task::spawn_blocking(move || upgrade::say_bye(&mut stream)).await;
                if !matches!(bye, Ok(Ok(()))) {
                    // The new process went away after `ready`: this one never stopped.
                    warn!("hot upgrade failed: the new process left before taking over; this one serves on");
                    timeline.push(
                        EventKind::Reload,
                        None,
                        None,
                        "hot upgrade failed: the new process left",
                    );
                    self.relisten().await;
                    return false;
                }
                self.upgrade.stop_admin.cancel();
                self.fabric.stop_accepting.cancel();
                info!("hot upgrade: the new process serves; this one stopped accepting and drains its sessions");
                timeline.push(
                    EventKind::Reload,
                    None,
                    None,
                    "handed over to a new process (hot upgrade)",
                );
                self.upgrade.handed_over.cancel();
                true
            }
            Ok(Err(e)) => {
                warn!(error = %e, "hot upgrade failed: the new process did not take over; this one serves on");
                timeline.push(EventKind::Reload, None, None, format!("hot upgrade failed: {e}"));
                false
            }
            Err(e) => {
                warn!(error = %e, "hot upgrade failed; this process serves on");
                false
            }
        }
    }

    /// Binds the upgrade socket again after a hand-over that failed late.
    async fn relisten(&mut self) {
        let Some(path) = self.upgrade.path.clone() else { return };
        let bound = tokio::task::spawn_blocking(move || crate::upgrade::bind(&path)).await;
        match bound
            .map_err(std::io::Error::other)
            .and_then(|bound| bound)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)
            }) {
            Ok(listener) => self.upgrade.listener = Some(listener),
            Err(e) => warn!(error = %e, "cannot listen for hot upgrades again"),
        }
    }

    /// The header and copies of the sockets to hand over.
    fn hand_over_what(&self) -> std::io::Result<(Header, Vec<std::net::TcpListener>)> {
        let (mut groups, mut sockets) = (Vec::new(), Vec::new());
        for live in &self.live {
            if live.sockets.is_empty() {
                return Err(std::io::Error::other(format!(
                    "listener {} has no copy of its sockets",
                    live.config.name
                )));
            }
            groups.push(SocketGroup {
                listener: Some(live.config.name.clone()),
                address: live.address,
                count: live.sockets.len(),
            });
            for socket in &live.sockets {
                sockets.push(socket.try_clone()?);
            }
        }
        if let Some(admin) = &self.upgrade.admin_socket {
            groups.push(SocketGroup {
                listener: None,
                address: admin.local_addr()?,
                count: 1,
            });
            sockets.push(admin.try_clone()?);
        }
        let topology = self.state.topology.load();
        let header = Header {
            pid: std::process::id(),
            sockets: groups,
            health: (topology.backends.iter().zip(&topology.config.backends))
                .map(|(b, c)| Snapshot::of(b, c.check.probe.kind()))
                .collect(),
        };
        Ok((header, sockets))
    }
}
