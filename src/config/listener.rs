//! Listeners: an address, its pool, socket options, mode and TLS termination.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::PoolId;
use crate::tls::load::LoadedServer;
use crate::tls::ServerFiles;

/// The pool a listener routes to: its index in this config and its name, which
/// alone decides equality (see [`Members`](super::Members)).
#[derive(Debug, Clone)]
pub struct PoolRef {
    /// The pool's index in this config.
    pub id: PoolId,
    /// The pool's name, which identifies it.
    pub name: String,
}

impl PartialEq for PoolRef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PoolRef {}

/// Socket options for both legs of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// Idle time before the first keepalive probe (also the probe interval / 3).
    pub keepalive: Duration,
    /// `TCP_USER_TIMEOUT`: unacknowledged data for this long kills the connection.
    pub user_timeout: Duration,
}

/// A listener: an address that accepts clients for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Its identity, in this config and across reloads.
    pub name: String,
    /// The address clients connect to.
    pub listen: SocketAddr,
    /// The pool it routes to.
    pub pool: PoolRef,
    /// Connections beyond this wait in the kernel's backlog.
    pub max_connections: usize,
    /// Socket options for both legs of its sessions.
    pub tcp: TcpOptions,
    /// What it understands of the bytes it carries.
    pub mode: ListenerMode,
    /// TLS termination.
    pub tls: Option<ListenerTlsConfig>,
    /// `mysql` mode: the connection phase's limits.
    pub login: LoginLimits,
    /// A PROXY protocol header expected before each client's first byte.
    pub accept_proxy: Option<AcceptProxy>,
}

/// How a listener reads the PROXY protocol header its clients' balancer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptProxy {
    /// The versions accepted.
    pub versions: crate::protocol::proxy_header::Accept,
    /// Only connections from these networks may send one; others are closed.
    pub trusted: Vec<super::Cidr>,
    /// The longest the header may take to arrive.
    pub timeout: Duration,
}

/// The limits of a `mysql`-mode listener's connection phases: the backend connection
/// a login needs is made before the client has sent a byte, so garbage clients must
/// not get many of them, nor keep them long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// The longest one connection phase may take, greeting to OK.
    pub timeout: std::time::Duration,
    /// Connection phases under way at once.
    pub concurrent: usize,
}

/// What a listener understands of the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerMode {
    /// Nothing: TLS (if any) from the first byte, then a byte pipe.
    Tcp,
    /// The MySQL connection phase, to terminate and originate TLS inside the
    /// protocol (see `proxy::mysql`); a byte pipe after the login.
    Mysql,
    /// MongoDB: a byte pipe that watches the server's replies; one saying the member
    /// is no longer the primary ends the session instead of reaching the client (see
    /// `protocol::mongo::replies`).
    Mongo,
}

/// TLS termination on a listener.
#[derive(Debug, Clone)]
pub struct ListenerTlsConfig {
    /// The certificate files (and client CA), as configured.
    pub files: ServerFiles,
    /// Built from `files` at load time (not compared: equal paths are equal config; a
    /// certificate renewed under the same path is the TLS reload's business).
    pub loaded: LoadedServer,
    /// The longest a client's TLS handshake may take.
    pub handshake_timeout: Duration,
    /// `mysql` mode: refuse clients that do not ask for TLS (else they pass in clear).
    pub require_tls: bool,
}

impl PartialEq for ListenerTlsConfig {
    fn eq(&self, other: &Self) -> bool {
        (&self.files, self.handshake_timeout, self.require_tls)
            == (&other.files, other.handshake_timeout, other.require_tls)
    }
}

impl Eq for ListenerTlsConfig {}
