//! Socket options for both legs of a session, and listener binding.
//!
//! A listener's sockets carry the session options themselves: on Linux an accepted
//! socket inherits `TCP_NODELAY`, keepalive and `TCP_USER_TIMEOUT` from its listening
//! socket (checked by the test below), so the client leg costs no `setsockopt` per
//! session — five syscalls fewer per new connection.
//!
//! The backend leg gets `TCP_NODELAY` at connect ([`connect`]) and its liveness
//! options ([`liveness`]) only once the session has lived [`LIVENESS_AFTER`]: they
//! guard long sessions against a backend that vanished, and a session of one short
//! exchange (most of them, for an HTTP pool) ends before a probe could ever fire.
//! Four syscalls fewer per such session.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

use crate::config::TcpOptions;

/// How long a backend connection lives before it gets its [`liveness`] options: a
/// vanished backend is noticed at most this much later than with them set at once.
pub const LIVENESS_AFTER: Duration = Duration::from_secs(1);

/// `TCP_NODELAY` (a proxy must not add Nagle delay to small queries), keepalive and
/// `TCP_USER_TIMEOUT` (see [`liveness`]).
pub fn tune(stream: &TcpStream, options: &TcpOptions) -> io::Result<()> {
    apply(&SockRef::from(stream), options)
}

/// Binds `socket` to `source` with the port left to the connect: with
/// IP_BIND_ADDRESS_NO_PORT the kernel picks it per destination at connect time, as
/// for an unbound socket, instead of reserving one of the ~28k ephemeral ports for
/// every destination at bind time (which short sessions would exhaust).
fn bind_source(socket: &Socket, source: std::net::IpAddr) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        #[allow(unsafe_code)]
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&on`, a live c_int,
        // on a descriptor `socket` owns.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 && source.is_ipv4() {
            return Err(io::Error::last_os_error());
        }
    }
    socket.bind(&SocketAddr::new(source, 0).into())
}

/// Connects to a backend, with `TCP_NODELAY` set. Unlike `TcpStream::connect`, it
/// reads the outcome from the readiness event itself (an error flag or a closed write
/// side) and asks the socket for its error only then: one `getsockopt` fewer per
/// session that connects. No timeout of its own: the caller bounds it
/// (`connect_timeout`, `hold_timeout`).
///
/// Before waiting, it asks once more with a second `connect`, which sends nothing
/// and answers for the handshake so far: 0 once established, EALREADY while under
/// way, or the connect's error. To a backend on the same host the handshake has
/// usually completed inside the first `connect` (loopback delivers in the caller's
/// context), and the session starts without a trip through `epoll_wait`; see
/// `pipe::plain` for the first bytes, which then go without one too. Elsewhere it is
/// one syscall that finds the handshake under way. Linux only: elsewhere a second
/// `connect` may report a failed handshake with another error than its own.
pub async fn connect(addr: SocketAddr, source: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let socket = {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket
    };
    socket.set_tcp_nodelay(true)?;
    if let Some(source) = source {
        bind_source(&socket, source)?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => return TcpStream::from_std(socket.into()),
        // Under way, as expected of a non-blocking connect.
        Err(e) if in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match socket.connect(&addr.into()) {
        Ok(()) => return TcpStream::from_std(socket.into()),
        Err(e) if e.raw_os_error() == Some(libc::EISCONN) => return TcpStream::from_std(socket.into()),
        Err(e) if e.raw_os_error() == Some(libc::EALREADY) || in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream.take_error()?.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connect failed (the socket reported no error)",
            )
        }));
    }
    Ok(stream)
}

/// Accepts one connection, non-blocking from the start (one `accept4` on Linux), and
/// not yet registered with any runtime: the thread that serves it does that (see
/// [`spread`](crate::spread)).
pub fn accept(listener: &std::net::TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let (socket, peer) = SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
        let peer = peer
            .as_socket()
            .ok_or_else(|| io::Error::other("an accepted TCP peer without an IP address"))?;
        Ok((socket.into(), peer))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let (stream, peer) = listener.accept()?;
        stream.set_nonblocking(true)?;
        Ok((stream, peer))
    }
}

// Unix only, as the whole data plane is (`AsyncFd` in `listener`).
fn in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINPROGRESS)
}

/// Keepalive and `TCP_USER_TIMEOUT`, so that a peer that vanished without a FIN or
/// RST (power loss, a dropped VM, a partition) kills the session instead of holding
/// it for hours.
pub fn liveness(stream: &TcpStream, options: &TcpOptions) -> io::Result<()> {
    set_liveness(&SockRef::from(stream), options)
}

fn apply(socket: &Socket, options: &TcpOptions) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    set_liveness(socket, options)
}

fn set_liveness(socket: &Socket, options: &TcpOptions) -> io::Result<()> {
    let interval = (options.keepalive / 3).max(Duration::from_secs(1));
    let keepalive = TcpKeepalive::new().with_time(options.keepalive).with_interval(interval);
    // Where TCP_USER_TIMEOUT is set, it decides when unanswered probes kill the
    // connection and the kernel ignores the probe count (tcp(7)): not setting
    // TCP_KEEPCNT then saves a syscall per backend connection and changes nothing.
    // With `user_timeout = "0s"` (off) the count matters again.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if options.user_timeout.is_zero() {
            socket.set_tcp_keepalive(&keepalive.with_retries(3))?;
        } else {
            socket.set_tcp_keepalive(&keepalive)?;
        }
        socket.set_tcp_user_timeout(Some(options.user_timeout))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    socket.set_tcp_keepalive(&keepalive.with_retries(3))?;
    Ok(())
}

/// Binds a listening socket with `SO_REUSEADDR` (restart without waiting for
/// TIME_WAIT) and a deep backlog (a burst of reconnects after a failover). With
/// `options`, the sockets it accepts come with them (see the module docs). Must be
/// called inside a tokio runtime, which will drive it.
pub fn bind(addr: SocketAddr, options: Option<&TcpOptions>) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, options, false)?)
}

fn bind_std(addr: SocketAddr, options: Option<&TcpOptions>, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    if let Some(options) = options {
        apply(&socket, options)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// `count` listening sockets on one address, one per data-plane thread, with
/// `SO_REUSEPORT` so the kernel spreads new connections across them (and so across
/// cores) with no shared accept queue. Each is handed to its thread's runtime.
///
/// `SO_REUSEPORT` would also let another process of this user bind the same
/// address and take half the connections, silently; so the address is first bound
/// once without it, which fails if anyone holds it.
pub fn bind_group(addr: SocketAddr, options: &TcpOptions, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if count <= 1 {
        return Ok(vec![bind_std(addr, Some(options), false)?]);
    }
    if addr.port() != 0 {
        // Bound, never listening: no client can land on it meanwhile.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let first = bind_std(addr, Some(options), true)?;
    let addr = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(bind_std(addr, Some(options), true)?);
    }
    Ok(group)
}

/// One more socket in the `SO_REUSEPORT` group already bound at `addr` (by this
/// process or, for a hot upgrade, by the one it took the group from).
pub fn join_group(addr: SocketAddr, options: &TcpOptions) -> io::Result<std::net::TcpListener> {
    bind_std(addr, Some(options), true)
}

/// Sets `options` on listening sockets already bound (a reload changed them): the
/// sockets they accept from then on come with them.
pub fn reconfigure(group: &[std::net::TcpListener], options: &TcpOptions) -> io::Result<()> {
    group
        .iter()
        .try_for_each(|listener| apply(&socket2::SockRef::from(listener), options))
}

/// Whether accepted sockets inherit the listener's options here (Linux does).
pub const ACCEPTED_INHERIT_OPTIONS: bool = cfg!(any(target_os = "linux", target_os = "android"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shares_one_port_and_refuses_a_taken_one() {
        let options = TcpOptions {
            keepalive: Duration::from_secs(30),
            user_timeout: Duration::from_secs(30),
        };
        let group = bind_group("127.0.0.1:0".parse().unwrap(), &options, 3).unwrap();
        let ports: Vec<_> = group.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
        // Another group (another process, say) on the same address is refused.
        let taken = group[0].local_addr().unwrap();
        let error = bind_group(taken, &options, 2).expect_err("address in use");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn connect_reports_success_and_refusal() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(connect(addr, None), listener.accept());
        let connected = connected.expect("a listening port accepts");
        assert!(connected.nodelay().unwrap());
        assert_eq!(connected.peer_addr().unwrap(), addr);
        drop(accepted);
        drop(listener);
        let refused = connect(addr, None).await.expect_err("nothing listens there now");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "{refused}");
    }

    /// A handshake still under way after the second look is awaited: the listener's
    /// accept queue is full, so the kernel drops the SYN and the connect completes
    /// with the retransmission (1 s later) once the queue has room.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn connect_waits_for_a_handshake_still_under_way() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let listener = std::net::TcpListener::from(socket);
        // Fills the accept queue (room for one with a backlog of 0).
        let _queued = std::net::TcpStream::connect(addr).unwrap();
        let connecting = tokio::spawn(connect(addr, None));
        tokio::task::yield_now().await;
        let (first, _) = listener.accept().unwrap();
        let stream = tokio::time::timeout(Duration::from_secs(30), connecting)
            .await
            .expect("the SYN is retransmitted")
            .unwrap()
            .expect("the second SYN finds room");
        assert_eq!(stream.peer_addr().unwrap(), addr);
        drop(first);
    }

    /// With TCP_USER_TIMEOUT on, the probe count is left to the kernel (it ignores
    /// it); with it off (`0s`), three probes.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn the_probe_count_is_set_only_when_the_user_timeout_is_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (user_timeout, probes) in [(Duration::from_secs(23), None), (Duration::ZERO, Some(3))] {
            let (stream, accepted) = tokio::join!(connect(addr, None), listener.accept());
            let (stream, _accepted) = (stream.unwrap(), accepted.unwrap());
            let default = SockRef::from(&stream).tcp_keepalive_retries().unwrap();
            let options = TcpOptions {
                keepalive: Duration::from_secs(17),
                user_timeout,
            };
            liveness(&stream, &options).unwrap();
            let socket = SockRef::from(&stream);
            assert!(socket.keepalive().unwrap());
            assert_eq!(socket.tcp_keepalive_retries().unwrap(), probes.unwrap_or(default));
            assert_eq!(
                socket.tcp_user_timeout().unwrap(),
                Some(user_timeout).filter(|t| !t.is_zero())
            );
        }
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_options() {
        let options = TcpOptions {
            keepalive: Duration::from_secs(17),
            user_timeout: Duration::from_secs(23),
        };
        let group = bind_group("127.0.0.1:0".parse().unwrap(), &options, 2).unwrap();
        let listener = TcpListener::from_std(group.into_iter().next().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, _client) = tokio::join!(listener.accept(), TcpStream::connect(addr));
        let (accepted, _) = accepted.unwrap();
        let socket = SockRef::from(&accepted);
        if ACCEPTED_INHERIT_OPTIONS {
            assert!(socket.tcp_nodelay().unwrap());
            assert!(socket.keepalive().unwrap());
            assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(17));
            #[cfg(any(target_os = "linux", target_os = "android"))]
            assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_secs(23)));
        }
    }

    #[tokio::test]
    async fn options_set_again_on_a_bound_group_apply_to_what_it_accepts_next() {
        let options = |secs| TcpOptions {
            keepalive: Duration::from_secs(secs),
            user_timeout: Duration::from_secs(secs),
        };
        let group = bind_group("127.0.0.1:0".parse().unwrap(), &options(17), 1).unwrap();
        reconfigure(&group, &options(41)).unwrap();
        let listener = TcpListener::from_std(group.into_iter().next().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, _client) = tokio::join!(listener.accept(), TcpStream::connect(addr));
        let (accepted, _) = accepted.unwrap();
        if ACCEPTED_INHERIT_OPTIONS {
            assert_eq!(
                SockRef::from(&accepted).tcp_keepalive_time().unwrap(),
                Duration::from_secs(41)
            );
        }
    }
}
