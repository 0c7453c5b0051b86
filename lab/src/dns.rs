//! A DNS server the test controls: `dnsmasq` on a free loopback port (UDP and TCP),
//! authoritative for `lab.test` only (no upstream: any other name is refused),
//! serving the records of a hosts file with a fixed TTL and no negative caching.
//!
//! [`DnsServer::set`] replaces a name's records (write + rename, then SIGHUP) and
//! returns once the server answers with them, so a test never sleeps for a reload.
//! Dropping the server stops it by PID and removes its directory.
//!
//! dnsmasq runs with `--user=root`: as its own user it could not read the hosts file
//! in the test's directory, and would answer nothing after a SIGHUP.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::system;

/// The domain the server answers for.
pub const DOMAIN: &str = "lab.test";

/// A running `dnsmasq`.
#[derive(Debug)]
pub struct DnsServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    records: Vec<(String, IpAddr)>,
}

/// Installs dnsmasq, and dig for the readiness queries, if missing.
pub fn ensure_installed() -> Result<()> {
    system::ensure_packages(&[("dnsmasq", "dnsmasq"), ("dig", "dnsutils")])
}

impl DnsServer {
    /// Starts the server; every answer carries `ttl` seconds.
    pub fn start(ttl: u32) -> Result<DnsServer> {
        ensure_installed()?;
        let dir = system::temp_dir("sy-dns")?;
        fs::write(dir.join("hosts"), "")?;
        let port = system::free_port()?;
        let mut command = Command::new(crate::daemon::sbin("dnsmasq"));
        command
            .args([
                "--keep-in-foreground",
                "--user=root",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
            ])
            .args(["--no-resolv", "--no-hosts", "--no-negcache"])
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
            .arg(format!("--local=/{DOMAIN}/"))
            .arg(format!("--local-ttl={ttl}"))
            .arg(format!("--log-facility={}", dir.join("dnsmasq.log").display()));
        let child = system::spawn_logged(&mut command, &dir.join("stdout.log")).context("spawn dnsmasq")?;
        let server = DnsServer {
            dir,
            port,
            child: Some(child),
            records: Vec::new(),
        };
        server.wait_until(&format!("probe.{DOMAIN}"), &[])?;
        Ok(server)
    }

    /// Where it answers.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Makes `name` (e.g. `db.lab.test`) resolve to `ips` (none: NXDOMAIN) and waits
    /// until the server answers so.
    pub fn set(&mut self, name: &str, ips: &[IpAddr]) -> Result<()> {
        self.records.retain(|(n, _)| n != name);
        self.records.extend(ips.iter().map(|ip| (name.to_string(), *ip)));
        let text: String = self.records.iter().map(|(n, ip)| format!("{ip} {n}\n")).collect();
        let (tmp, hosts) = (self.dir.join("hosts.tmp"), self.dir.join("hosts"));
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &hosts)?;
        let pid = self.child.as_ref().map(Child::id).context("dnsmasq is not running")?;
        system::signal(pid, "HUP")?;
        self.wait_until(name, ips)
    }

    /// The A records it serves for `name` now, sorted.
    pub fn query(&self, name: &str) -> Result<Vec<IpAddr>> {
        let out = system::run(Command::new("dig").arg("@127.0.0.1").args([
            "-p",
            &self.port.to_string(),
            name,
            "A",
            "+short",
            "+time=1",
            "+tries=1",
        ]))?;
        let mut ips: Vec<IpAddr> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        ips.sort();
        Ok(ips)
    }

    fn wait_until(&self, name: &str, ips: &[IpAddr]) -> Result<()> {
        let mut want = ips.to_vec();
        want.sort();
        let started = Instant::now();
        loop {
            if self.query(name).is_ok_and(|got| got == want) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                let log = fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
                bail!("dnsmasq does not answer {name} with {want:?}: {log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            system::stop(&mut child, Duration::from_secs(5));
        }
        if std::env::var_os("SWITCHYARD_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
