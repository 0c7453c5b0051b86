//! Several hosts on one machine, for tests of what crosses a network: network
//! namespaces joined by a bridge (root only; `iproute2`).
//!
//! [`HaNet::up`] makes five namespaces named `sy<pid>-br|cli|px1|px2|db` (after
//! deleting those of labs whose process is gone): `br` holds bridge `br0`; each host has an
//! `eth0` on it (the veth is made inside `br`, its peer moved straight into the host,
//! so the root namespace gets no interface, address or route). Addresses
//! `10.213.7.{10,11,12,20}` for cli, px1, px2 and db, and a virtual address `.100`
//! that keepalived moves between px1 and px2. Processes started with
//! [`HaNet::spawn`] are stopped by PID and the namespaces deleted when the value is
//! dropped, on failure too.
//!
//! [`enter`] moves the calling thread into a namespace (the clients of a drill run on
//! such a thread, in `cli`).

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::system;

/// The hosts of the pair's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// Where the clients run.
    Client,
    /// The first proxy host.
    Proxy1,
    /// The second proxy host.
    Proxy2,
    /// Where the databases run.
    Db,
}

impl Host {
    /// The short name: `cli`, `px1`, `px2`, `db`.
    pub fn name(self) -> &'static str {
        match self {
            Host::Client => "cli",
            Host::Proxy1 => "px1",
            Host::Proxy2 => "px2",
            Host::Db => "db",
        }
    }

    /// The other proxy (the client and the database host have none).
    pub fn peer(self) -> Option<Host> {
        match self {
            Host::Proxy1 => Some(Host::Proxy2),
            Host::Proxy2 => Some(Host::Proxy1),
            Host::Client | Host::Db => None,
        }
    }

    const ALL: [Host; 4] = [Host::Client, Host::Proxy1, Host::Proxy2, Host::Db];
}

const NET: [u8; 3] = [10, 213, 7];

/// A process started in a host's namespace.
struct Spawned {
    name: String,
    child: Child,
}

/// The network of an HA pair; see the module docs.
pub struct HaNet {
    prefix: String,
    dir: PathBuf,
    spawned: Vec<Spawned>,
}

impl HaNet {
    /// Makes the namespaces, the bridge and the links, with a directory of its own
    /// for logs (kept when `SWITCHYARD_KEEP_LAB` is set).
    pub fn up() -> Result<HaNet> {
        system::ensure_packages(&[("ip", "iproute2")])?;
        sweep_stale();
        let dir = system::temp_dir("sy-ha")?;
        let prefix = format!("sy{}", std::process::id());
        let net = HaNet {
            prefix,
            dir,
            spawned: Vec::new(),
        };
        net.make().context("making the HA pair's network namespaces")?;
        Ok(net)
    }

    fn make(&self) -> Result<()> {
        let br = self.bridge_ns();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for host in Host::ALL {
            let ns = self.ns(host);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &br,
                "link",
                "add",
                host.name(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", host.name(), "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(host)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        // The client takes the VIP's new MAC from a gratuitous ARP.
        system::run(
            self.command(Host::Client, "sysctl")
                .args(["-qw", "net.ipv4.conf.eth0.arp_accept=1"]),
        )?;
        Ok(())
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.name())
    }

    /// The address of `host` on the bridge.
    pub fn ip(&self, host: Host) -> Ipv4Addr {
        let last = match host {
            Host::Client => 10,
            Host::Proxy1 => 11,
            Host::Proxy2 => 12,
            Host::Db => 20,
        };
        Ipv4Addr::new(NET[0], NET[1], NET[2], last)
    }

    /// The virtual address keepalived moves between the proxies.
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], NET[2], 100)
    }

    /// The lab's directory (configs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `program` to run inside `host`'s namespace.
    pub fn command(&self, host: Host, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host), program]);
        command
    }

    /// Starts `command` (from [`HaNet::command`]) in the background as `name`, its
    /// output in `<dir>/<name>.log`; it is stopped when the lab is dropped. Returns
    /// its PID (`ip netns exec` execs, so it is the program's own).
    pub fn spawn(&mut self, name: &str, mut command: Command) -> Result<u32> {
        let child = system::spawn_logged(&mut command, &self.dir.join(format!("{name}.log")))?;
        let pid = child.id();
        // A process started under the same name before (killed, or ended) is reaped
        // or stopped first, never left behind.
        if let Some(i) = self.spawned.iter().position(|s| s.name == name) {
            let mut old = self.spawned.remove(i);
            system::stop(&mut old.child, Duration::from_secs(5));
        }
        self.spawned.push(Spawned {
            name: name.to_string(),
            child,
        });
        Ok(pid)
    }

    /// The PID of the process started as `name`, while it runs.
    pub fn pid(&mut self, name: &str) -> Option<u32> {
        let spawned = self.spawned.iter_mut().find(|s| s.name == name)?;
        matches!(spawned.child.try_wait(), Ok(None)).then(|| spawned.child.id())
    }

    /// `kill -9` of the process started as `name`, reaped.
    pub fn kill9(&mut self, name: &str) -> Result<()> {
        let spawned = self
            .spawned
            .iter_mut()
            .find(|s| s.name == name)
            .with_context(|| format!("no process {name}"))?;
        let _ = spawned.child.kill();
        let _ = spawned.child.wait();
        Ok(())
    }

    /// Which proxies hold the virtual address now (both during a split brain).
    pub fn vip_owners(&self) -> Vec<Host> {
        [Host::Proxy1, Host::Proxy2]
            .into_iter()
            .filter(|&host| {
                let out = self
                    .command(host, "ip")
                    .args(["-4", "-o", "addr", "show", "dev", "eth0"])
                    .output();
                out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {}/", self.vip())))
            })
            .collect()
    }

    /// Waits until exactly one proxy holds the virtual address; returns it.
    pub fn wait_single_owner(&self, limit: Duration) -> Result<Host> {
        let deadline = Instant::now() + limit;
        loop {
            if let [owner] = self.vip_owners()[..] {
                return Ok(owner);
            }
            if Instant::now() > deadline {
                bail!(
                    "no single owner of {} after {limit:?}: {:?}",
                    self.vip(),
                    self.vip_owners()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes `host` off the bridge; its link stays up (a silent partition).
    pub fn cut(&self, host: Host) -> Result<()> {
        ip(&["-n", &self.bridge_ns(), "link", "set", host.name(), "nomaster"])
    }

    /// Puts `host` back on the bridge.
    pub fn heal(&self, host: Host) -> Result<()> {
        ip(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            host.name(),
            "master",
            "br0",
            "up",
        ])
    }

    /// `host` loses (`true`) or regains its route to the database host: a route of
    /// type `prohibit` answers its connects at once with "permission denied".
    pub fn block_db(&self, host: Host, blocked: bool) -> Result<()> {
        let verb = if blocked { "add" } else { "del" };
        ip(&[
            "-n",
            &self.ns(host),
            "route",
            verb,
            "prohibit",
            &format!("{}/32", self.ip(Host::Db)),
        ])
    }
}

impl Drop for HaNet {
    fn drop(&mut self) {
        for spawned in &mut self.spawned {
            system::stop(&mut spawned.child, Duration::from_secs(5));
        }
        for ns in Host::ALL.map(|h| self.ns(h)).into_iter().chain([self.bridge_ns()]) {
            let _ = ip(&["netns", "del", &ns]);
        }
        if std::env::var_os("SWITCHYARD_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Deletes the namespaces of labs whose process is gone (a run that was killed
/// before it could clean up): `sy<pid>-*` with no process `<pid>`. Processes still
/// inside them are named in a warning, not killed.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("sy")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if system::alive(pid) {
            continue;
        }
        if let Ok(left) = Command::new("ip").args(["netns", "pids", name]).output() {
            let left = String::from_utf8_lossy(&left.stdout)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if !left.is_empty() {
                eprintln!("switchyard-lab: stale namespace {name} still holds processes {left}");
            }
        }
        let _ = ip(&["netns", "del", name]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    system::run(Command::new("ip").args(args)).map(drop)
}

/// Moves the calling thread into the network namespace `ns` (made with `ip netns
/// add`); sockets it opens from then on live there. Other threads are not affected.
pub fn enter(ns: &str) -> Result<()> {
    let file = File::open(format!("/var/run/netns/{ns}")).with_context(|| format!("namespace {ns}"))?;
    // SAFETY: setns on a descriptor we hold open for the call; it changes only this
    // thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
