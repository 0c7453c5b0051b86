//! Socket options for both legs of a session, and listener binding.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::config::TcpOptions;

/// `TCP_NODELAY` (a proxy must not add Nagle delay to small queries), keepalive and
/// `TCP_USER_TIMEOUT`, so that a peer that vanished without a FIN or RST (power loss,
/// a dropped VM, a partition) kills the session instead of holding it for hours.
pub fn tune(stream: &TcpStream, options: &TcpOptions) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = SockRef::from(stream);
    let interval = (options.keepalive / 3).max(Duration::from_secs(1));
    let keepalive = TcpKeepalive::new()
        .with_time(options.keepalive)
        .with_interval(interval)
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(options.user_timeout))?;
    Ok(())
}

/// Binds a listening socket with `SO_REUSEADDR` (restart without waiting for
/// TIME_WAIT) and a deep backlog (a burst of reconnects after a failover).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}
