//! An etcd v3 cluster on loopback: `Cluster::start(3)` installs `etcd-server` and
//! `etcd-client` if they are missing, starts one `etcd` per member on free client and
//! peer ports in a throw-away directory, and returns once `etcdctl endpoint health`
//! passes for all of them. Members can be killed, stopped (SIGSTOP), continued and
//! restarted from their data directory. Dropping the cluster stops every member by PID
//! and removes the directory.
//!
//! [`Cluster::start_secured`] serves clients over TLS only, with client certificates
//! required (a throw-away CA; [`Cluster::client_files`] issues more), and
//! [`Cluster::enable_auth`] turns on etcd's users and roles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::system;

/// How long the cluster may take to become healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One etcd member.
#[derive(Debug)]
struct Member {
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct Cluster {
    dir: PathBuf,
    members: Vec<Member>,
    token: String,
    /// TLS on the client port, when secured.
    tls: Option<Secured>,
    /// The root password, once authentication is on.
    root_password: Option<String>,
}

/// A secured cluster's CA, and etcdctl's client certificate.
struct Secured {
    ca: crate::tls::Ca,
    ca_file: PathBuf,
    etcdctl: crate::tls::Files,
}

/// Installs etcd and etcdctl if they are missing.
pub fn ensure_installed() -> Result<()> {
    system::ensure_packages(&[("etcd", "etcd-server"), ("etcdctl", "etcd-client")])
}

impl Cluster {
    /// Starts `n` members and waits until all are healthy.
    pub fn start(n: usize) -> Result<Cluster> {
        Self::start_with(n, false)
    }

    /// Starts `n` members serving clients over TLS only, client certificates
    /// required, and waits until all are healthy.
    pub fn start_secured(n: usize) -> Result<Cluster> {
        Self::start_with(n, true)
    }

    fn start_with(n: usize, secured: bool) -> Result<Cluster> {
        ensure_installed()?;
        let dir = system::temp_dir("sy-etcd")?;
        let tls = match secured {
            false => None,
            true => {
                let ca = crate::tls::Ca::new("etcd test CA")?;
                ca.server(&["localhost"])?.write(&dir, "server")?;
                let etcdctl = ca.client("root")?.write(&dir, "etcdctl")?;
                let ca_file = ca.write(&dir, "ca.pem")?;
                Some(Secured { ca, ca_file, etcdctl })
            }
        };
        let mut members = Vec::new();
        let mut taken = Vec::new();
        while members.len() < n {
            let (client, peer) = (system::free_port()?, system::free_port()?);
            if client == peer || taken.contains(&client) || taken.contains(&peer) {
                continue;
            }
            taken.extend([client, peer]);
            members.push(Member {
                client,
                peer,
                child: None,
            });
        }
        let token = format!("sy-{}-{}", std::process::id(), members[0].client);
        let mut cluster = Cluster {
            dir,
            members,
            token,
            tls,
            root_password: None,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(&(0..n).collect::<Vec<_>>())?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let initial: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .map(|(j, m)| format!("m{j}=http://127.0.0.1:{}", m.peer))
            .collect();
        let data = self.dir.join(format!("m{i}"));
        let state = if data.join("member").exists() {
            "existing"
        } else {
            "new"
        };
        let member = &self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let mut command = Command::new("etcd");
        command
            .arg("--name")
            .arg(format!("m{i}"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &self.token, "--initial-cluster-state", state])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if self.tls.is_some() {
            command
                .arg("--cert-file")
                .arg(self.dir.join("server.pem"))
                .arg("--key-file")
                .arg(self.dir.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(self.dir.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let log = self.dir.join(format!("m{i}.log"));
        self.members[i].child = Some(system::spawn_logged(&mut command, &log)?);
        Ok(())
    }

    /// The client address of member `i`.
    pub fn endpoint(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client))
    }

    /// Every member's client address, `host:port`.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i).to_string()).collect()
    }

    /// The PID of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// `etcdctl` (API v3) against the given members (all when empty).
    pub fn ctl_on(&self, members: &[usize], args: &[&str]) -> Result<String> {
        let endpoints: Vec<String> = if members.is_empty() {
            self.endpoints()
        } else {
            members.iter().map(|&i| self.endpoint(i).to_string()).collect()
        };
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["--dial-timeout=2s", "--command-timeout=5s"]);
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cacert={}", tls.ca_file.display()))
                .arg(format!("--cert={}", tls.etcdctl.cert.display()))
                .arg(format!("--key={}", tls.etcdctl.key.display()));
        }
        if let Some(password) = &self.root_password {
            command.arg(format!("--user=root:{password}"));
        }
        system::run(command.args(args))
    }

    /// The CA file of a secured cluster.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|t| t.ca_file.as_path())
    }

    /// A client certificate for `name`, issued by a secured cluster's CA, written
    /// into the cluster's directory.
    pub fn client_files(&self, name: &str) -> Result<crate::tls::Files> {
        let tls = self.tls.as_ref().context("the cluster is not secured")?;
        tls.ca.client(name)?.write(&self.dir, &format!("client-{name}"))
    }

    /// Turns authentication on: user `root` (password `root_password`), then
    /// `user` with `password` and read-write access to keys under `prefix` only.
    pub fn enable_auth(&mut self, root_password: &str, user: &str, password: &str, prefix: &str) -> Result<()> {
        for args in [
            vec!["user", "add", &format!("root:{root_password}")],
            vec!["role", "add", "root"],
            vec!["user", "grant-role", "root", "root"],
            vec!["user", "add", &format!("{user}:{password}")],
            vec!["role", "add", user],
            vec!["role", "grant-permission", user, "--prefix=true", "readwrite", prefix],
            vec!["user", "grant-role", user, user],
            vec!["auth", "enable"],
        ] {
            self.ctl(&args)?;
        }
        self.root_password = Some(root_password.to_string());
        Ok(())
    }

    /// `etcdctl` against every member.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        self.ctl_on(&[], args)
    }

    /// The member that leads now.
    pub fn leader(&self) -> Result<usize> {
        for i in 0..self.members.len() {
            if self.pid(i).is_none() {
                continue;
            }
            let Ok(out) = self.ctl_on(&[i], &["endpoint", "status", "-w", "fields"]) else {
                continue;
            };
            let field = |name: &str| {
                out.lines()
                    .find(|l| l.starts_with(&format!("\"{name}\"")))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_string())
            };
            if field("MemberID").is_some() && field("MemberID") == field("Leader") {
                return Ok(i);
            }
        }
        bail!("no member says it leads")
    }

    /// Makes sure member `i` does not lead (moves the leadership to another member
    /// if it does), so that stopping it leaves the others a leader.
    pub fn make_follower(&self, i: usize) -> Result<()> {
        if self.leader()? != i {
            return Ok(());
        }
        let other = (0..self.members.len())
            .find(|&j| j != i && self.pid(j).is_some())
            .context("no other member")?;
        let out = self.ctl_on(&[other], &["endpoint", "status", "-w", "fields"])?;
        let id: u64 = out
            .lines()
            .find(|l| l.starts_with("\"MemberID\""))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
            .context("no MemberID in the status")?;
        self.ctl_on(&[i], &["move-leader", &format!("{id:x}")])?;
        if self.leader()? == i {
            bail!("member m{i} still leads after move-leader");
        }
        Ok(())
    }

    /// kill -9 of member `i`.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGSTOP of member `i`: its connections stay open, nothing answers.
    pub fn sigstop(&self, i: usize) -> Result<()> {
        system::signal(self.pid(i).context("member not running")?, "STOP")
    }

    /// SIGCONT of member `i`.
    pub fn sigcont(&self, i: usize) -> Result<()> {
        system::signal(self.pid(i).context("member not running")?, "CONT")
    }

    /// Starts a killed member again from its data directory; waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill9(i)?;
        self.spawn(i)?;
        self.wait_healthy(&[i])
    }

    /// Stops every member (SIGCONT, SIGTERM, then SIGKILL).
    pub fn stop_all(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                system::stop(&mut child, Duration::from_secs(5));
            }
        }
    }

    /// Starts every stopped member again; waits until all are healthy.
    pub fn start_all(&mut self) -> Result<()> {
        let stopped: Vec<usize> = (0..self.members.len()).filter(|&i| self.pid(i).is_none()).collect();
        for &i in &stopped {
            self.spawn(i)?;
        }
        self.wait_healthy(&stopped)
    }

    fn wait_healthy(&self, members: &[usize]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.ctl_on(members, &["endpoint", "health"]).is_ok() {
                return Ok(());
            }
            for &i in members {
                if let Some(pid) = self.pid(i) {
                    if !system::alive(pid) {
                        bail!(
                            "etcd member m{i} exited; see {}",
                            self.dir.join(format!("m{i}.log")).display()
                        );
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("etcd not healthy after {READY_TIMEOUT:?}; see {}", self.dir.display());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
