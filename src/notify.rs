//! The systemd notification protocol (`sd_notify`), without libsystemd: one datagram
//! per state change to the Unix socket `$NOTIFY_SOCKET` names (a path, or `@name` in
//! the abstract namespace). Without the variable (not started by systemd with
//! `Type=notify`) every call does nothing. A failed send is logged once and never
//! stops the proxy: the service manager's view is not worth an outage.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;

/// A state to tell the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Every listener is bound and serving.
    Ready,
    /// A reload (SIGHUP) has started; [`State::Ready`] follows when it is done.
    Reloading,
    /// Shutdown has started: listeners close, sessions get their grace period.
    Stopping,
    /// A hot upgrade's new process serves and is the service's main process now
    /// (`MAINPID=`, accepted with `NotifyAccess=all`).
    TookOver(u32),
}

/// The datagram for `state`; `monotonic_usec` is `CLOCK_MONOTONIC` in microseconds,
/// which a reload notification must carry.
pub fn message(state: State, monotonic_usec: u64) -> String {
    match state {
        State::Ready => "READY=1\nSTATUS=serving".into(),
        State::Reloading => format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading"),
        State::Stopping => "STOPPING=1\nSTATUS=stopping".into(),
        State::TookOver(pid) => format!("MAINPID={pid}\nREADY=1\nSTATUS=serving (hot upgrade)"),
    }
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Tells the service manager `state`, if one is listening.
pub fn notify(state: State) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = (now.tv_sec as u64).saturating_mul(1_000_000) + (now.tv_nsec as u64) / 1_000;
    let text = message(state, usec);
    if let Err(e) = send(&target, text.as_bytes()) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            warn!(socket = ?target, error = %e, "cannot notify the service manager");
        }
    }
}

fn send(target: &std::ffi::OsStr, datagram: &[u8]) -> std::io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(datagram, &addr)
        }
        None => socket.send_to(datagram, target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_the_protocol() {
        assert!(message(State::Ready, 0).starts_with("READY=1\n"));
        assert_eq!(
            message(State::Reloading, 42).lines().take(2).collect::<Vec<_>>(),
            ["RELOADING=1", "MONOTONIC_USEC=42"]
        );
        assert!(message(State::Stopping, 0).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn datagrams_reach_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("sy-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("sy-notify-test-{}", std::process::id());
        let abstract_addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), b"STOPPING=1").unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
