//! Two small in-process backends for the TCP and HTTP drills. Each says who it is
//! (`backend N`), so every operation records which backend served it. `refuse`
//! stops one: its listener closes (new connections are refused) and its open
//! connections are cut; `admit` opens it again on the same address.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the backends speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `backend N\n` on connect, then every line echoed.
    Echo,
    /// HTTP/1.1 with keep-alive; every response body is `backend N`.
    Http,
}

pub struct Servers {
    pub addrs: Vec<SocketAddr>,
    protocol: Protocol,
    tasks: Vec<Option<JoinSet<()>>>,
}

impl Servers {
    pub async fn start(protocol: Protocol, count: u32) -> Result<Servers> {
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for n in 1..=count {
            // Below the ephemeral range: while a refused backend is closed, an outgoing
            // connection of the busy drill must not take its port.
            let listener = bind_retrying(|| {
                switchyard_lab::system::free_port().map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            })
            .await?;
            addrs.push(listener.local_addr()?);
            tasks.push(Some(accept_loop(listener, protocol, n)));
        }
        Ok(Servers { addrs, protocol, tasks })
    }

    /// Backend `i` (0-based) listens again on its address, if it was refused.
    pub async fn admit(&mut self, i: usize) -> Result<()> {
        if self.tasks[i].is_none() {
            let addr = self.addrs[i];
            let listener = bind_retrying(|| Ok(addr)).await?;
            self.tasks[i] = Some(accept_loop(listener, self.protocol, i as u32 + 1));
        }
        Ok(())
    }

    /// Stops backend `i` (0-based): refused from now on, open connections cut.
    pub async fn refuse(&mut self, i: usize) {
        if let Some(mut set) = self.tasks.get_mut(i).and_then(Option::take) {
            set.shutdown().await;
        }
    }
}

/// Binds the address `pick` gives, trying again (a new pick) for up to 5 s while
/// another socket holds it.
async fn bind_retrying(mut pick: impl FnMut() -> Result<SocketAddr>) -> Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match TcpListener::bind(pick()?).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            bound => return Ok(bound?),
        }
    }
}

/// Backend `n` serving every connection `listener` accepts, until the set is shut down.
fn accept_loop(listener: TcpListener, protocol: Protocol, n: u32) -> JoinSet<()> {
    let mut set = JoinSet::new();
    set.spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(serve(stream, protocol, n));
        }
    });
    set
}

async fn serve(stream: TcpStream, protocol: Protocol, n: u32) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    match protocol {
        Protocol::Echo => {
            if write.write_all(format!("backend {n}\n").as_bytes()).await.is_err() {
                return;
            }
            let mut line = String::new();
            while matches!(lines.read_line(&mut line).await, Ok(read) if read > 0) {
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                line.clear();
            }
        }
        Protocol::Http => {
            let body = format!("backend {n}");
            loop {
                // Read one request head (no bodies in these drills).
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    match lines.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => head.push_str(&line),
                    }
                }
                let close = head.to_ascii_lowercase().contains("connection: close");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
                    body.len(),
                    if close { "close" } else { "keep-alive" }
                );
                if write.write_all(response.as_bytes()).await.is_err() || close {
                    return;
                }
            }
        }
    }
    let _ = lines.read(&mut [0u8; 1]).await;
}
