//! Hot binary upgrade: a new process takes the running one's listening sockets and
//! health state over a Unix socket (`[runtime] upgrade_socket`, mode 0600), so no
//! connection is refused and it routes from its first connection.
//!
//! The exchange, on one stream connection the new process opens:
//!
//! 1. old → new: a length-prefixed JSON [`Header`] (which descriptor is which
//!    listener's or the admin's, and every backend's state, [`Snapshot`]), then the
//!    listening descriptors, [`MAX_SOCKETS`] at most per one-byte message
//!    (`SCM_RIGHTS`).
//! 2. The new process starts on those sockets (binding only what is new), then writes
//!    `ready\n`. Until then the old one serves as before, so an upgrade that fails
//!    (a bad config, a crash, a timeout) leaves it serving.
//! 3. old → new: `bye\n`, after closing its upgrade socket; only once that was sent
//!    does it stop accepting (had the new process gone meanwhile, the old one serves
//!    on), drain its sessions for `shutdown.grace` and exit. The new process then
//!    binds the upgrade socket itself.
//!
//! The same sockets pass over, not copies bound anew, so connections waiting in their
//! accept queues are taken by the new process, not reset.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use crate::backend::{AdminMode, Backend};
use crate::health::{Report, Status};

/// The most descriptors one message carries (the kernel's `SCM_MAX_FD`); a hand-over
/// sends as many messages as it needs.
pub const MAX_SOCKETS: usize = 253;
/// The largest header accepted (1,000 backends with full reports take ~0.5 MB).
const MAX_HEADER: usize = 16 << 20;
/// How long each side waits for the other's next step.
pub const STEP_LIMIT: Duration = Duration::from_secs(60);

/// What the old process sends along with its descriptors.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Header {
    /// The old process's PID.
    pub pid: u32,
    /// One entry per group of descriptors, in the order they are attached.
    pub sockets: Vec<SocketGroup>,
    /// Every backend's state.
    pub health: Vec<Snapshot>,
}

/// Consecutive descriptors of one listener (or of the admin listener).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketGroup {
    /// The listener's name; `None` for the admin listener.
    pub listener: Option<String>,
    /// The bound address.
    pub address: SocketAddr,
    /// How many descriptors (one per data-plane thread).
    pub count: usize,
}

/// One backend's state as the old process's router had it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The backend's name.
    pub name: String,
    /// Its address: the state is taken only for the same name at the same address,
    /// checked the same way.
    pub address: SocketAddr,
    /// Its probe's kind (`tcp`, `http`, `mysql`, `mongo`).
    #[serde(default)]
    pub probe: String,
    /// Up, down or unknown.
    pub status: Status,
    /// The operator's override.
    pub admin: AdminMode,
    /// The last passing check's report.
    pub report: Option<Report>,
}

impl Snapshot {
    /// The state of `backend`, checked by a probe of kind `probe`, now.
    pub fn of(backend: &Backend, probe: &str) -> Snapshot {
        let view = backend.view();
        Snapshot {
            name: backend.name.clone(),
            address: backend.address,
            probe: probe.to_string(),
            status: view.status,
            admin: view.admin,
            report: view.report,
        }
    }
}

/// What a new process took over.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Per listener name: its address and sockets.
    pub listeners: HashMap<String, (SocketAddr, Vec<TcpListener>)>,
    /// The admin listener's address and socket.
    pub admin: Option<(SocketAddr, TcpListener)>,
    /// Every backend's state in the old process.
    pub health: Vec<Snapshot>,
    /// The old process's PID.
    pub from_pid: u32,
}

impl Inherited {
    /// The sockets of listener `name` if they are bound to `address`.
    pub fn take_listener(&mut self, name: &str, address: SocketAddr) -> Option<Vec<TcpListener>> {
        match self.listeners.get(name) {
            Some((bound, _)) if *bound == address => self.listeners.remove(name).map(|(_, sockets)| sockets),
            _ => None,
        }
    }

    /// The admin socket if it is bound to `address`.
    pub fn take_admin(&mut self, address: SocketAddr) -> Option<TcpListener> {
        match &self.admin {
            Some((bound, _)) if *bound == address => self.admin.take().map(|(_, socket)| socket),
            _ => None,
        }
    }

    /// Sets each backend's view from the old process's state, for the same name at the
    /// same address checked by the same kind of probe (`config` is the backends' own,
    /// in the same order); returns how many were taken.
    pub fn restore(&self, backends: &[std::sync::Arc<Backend>], config: &[crate::config::BackendConfig]) -> usize {
        let mut restored = 0;
        for (backend, config) in backends.iter().zip(config) {
            let probe = config.check.probe.kind();
            let same = |s: &&Snapshot| s.name == backend.name && s.address == backend.address && s.probe == probe;
            if let Some(state) = self.health.iter().find(same) {
                backend.update_view(|view| {
                    view.status = state.status;
                    view.admin = state.admin;
                    view.role = state.report.as_ref().map(|r| r.role).unwrap_or_default();
                    view.report = state.report.clone();
                });
                restored += 1;
            }
        }
        restored
    }
}

/// Old side: sends `sockets` (each group's descriptors) and `header` on `stream`, then
/// waits for the new process's `ready`.
pub fn hand_over(stream: &mut UnixStream, header: &Header, sockets: &[&TcpListener]) -> io::Result<()> {
    let named: usize = header.sockets.iter().map(|g| g.count).sum();
    if named != sockets.len() {
        return Err(io::Error::other(format!(
            "the header names {named} sockets, {} are to go",
            sockets.len()
        )));
    }
    stream.set_read_timeout(Some(STEP_LIMIT))?;
    stream.set_write_timeout(Some(STEP_LIMIT))?;
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    stream.write_all(&(json.len() as u32).to_be_bytes())?;
    stream.write_all(&json)?;
    let fds: Vec<_> = sockets.iter().map(|s| s.as_fd()).collect();
    for batch in fds.chunks(MAX_SOCKETS) {
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(batch.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(batch)) {
            return Err(io::Error::other("the descriptors do not fit the control message"));
        }
        rustix::net::sendmsg(&*stream, &[IoSlice::new(b"S")], &mut control, SendFlags::empty())?;
    }
    expect_line(stream, "ready")
}

/// Old side, once it closed its upgrade socket and before it stops accepting: lets
/// the new process go on.
pub fn say_bye(stream: &mut UnixStream) -> io::Result<()> {
    stream.write_all(b"bye\n")
}

/// New side: connects to the running process at `path` and takes its sockets and
/// state. The returned stream is for [`confirm`].
pub fn take_over(path: &Path) -> io::Result<(UnixStream, Inherited)> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach the running process at {}: {e}", path.display()),
        )
    })?;
    stream.set_read_timeout(Some(STEP_LIMIT))?;
    stream.set_write_timeout(Some(STEP_LIMIT))?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length)?;
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_HEADER {
        return Err(io::Error::other(format!("a hand-over header of {length} bytes")));
    }
    let mut json = vec![0u8; length];
    stream.read_exact(&mut json)?;
    let header: Header =
        serde_json::from_slice(&json).map_err(|e| io::Error::other(format!("a bad hand-over header: {e}")))?;
    let wanted: usize = header.sockets.iter().map(|g| g.count).sum();
    let mut fds: Vec<OwnedFd> = Vec::new();
    while fds.len() < wanted {
        let before = fds.len();
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let received = rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if received.bytes != 1 || byte != *b"S" || fds.len() == before {
            return Err(io::Error::other(format!(
                "the header names {wanted} sockets, {} came",
                fds.len()
            )));
        }
    }
    let inherited = sort(header, fds)?;
    Ok((stream, inherited))
}

/// Assigns the received descriptors to the header's groups.
fn sort(header: Header, fds: Vec<OwnedFd>) -> io::Result<Inherited> {
    let wanted: usize = header.sockets.iter().map(|g| g.count).sum();
    if wanted != fds.len() {
        return Err(io::Error::other(format!(
            "the header names {wanted} sockets, {} came",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut inherited = Inherited {
        health: header.health,
        from_pid: header.pid,
        ..Inherited::default()
    };
    for group in header.sockets {
        if group.count == 0 {
            return Err(io::Error::other(format!("no socket handed over for {}", group.address)));
        }
        let sockets: Vec<TcpListener> = fds.by_ref().take(group.count).map(TcpListener::from).collect();
        for socket in &sockets {
            socket.set_nonblocking(true)?;
            if socket.local_addr()? != group.address {
                return Err(io::Error::other(format!(
                    "a socket handed over for {} is bound elsewhere",
                    group.address
                )));
            }
        }
        match group.listener {
            Some(name) => {
                inherited.listeners.insert(name, (group.address, sockets));
            }
            None => inherited.admin = sockets.into_iter().next().map(|s| (group.address, s)),
        }
    }
    Ok(inherited)
}

/// New side, once it serves: tells the old process to stop accepting.
pub fn send_ready(stream: &mut UnixStream) -> io::Result<()> {
    stream.write_all(b"ready\n")
}

/// New side, after [`send_ready`]: waits until the old process has let go.
pub fn await_bye(stream: &mut UnixStream) -> io::Result<()> {
    expect_line(stream, "bye")
}

fn expect_line(stream: &mut UnixStream, word: &str) -> io::Result<()> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() <= word.len() {
        match stream.read(&mut byte)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the peer closed before `{word}`"),
                ))
            }
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    if line == word.as_bytes() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "expected `{word}`, got {:?}",
            String::from_utf8_lossy(&line)
        )))
    }
}

/// Binds the upgrade socket at `path`, mode 0600. A socket left there by a process that
/// is gone is removed first; one a live process answers on is not, nor is anything
/// that is not a socket.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(found) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !found.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket (not removed)", path.display()),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{}: another process listens on it (use run --upgrade to take over)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // Created 0600 (no window in which others may connect), then set so explicitly.
    let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    rustix::process::umask(umask);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
