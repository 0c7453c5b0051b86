//! MongoDB-wire peers on loopback (no mongod can be installed here):
//!
//! - [`ReplicaSet`]: a scripted replica set, one OS process per member
//!   (`lab/py/mongo_member.py`: nx-27017 storage of its own with a `hello` front whose
//!   roles and elections the test writes into `state.json`), so `kill -9` and SIGSTOP
//!   hit one member. The primary of record applies each write it accepts to every
//!   reachable member before acknowledging it; a stale claimant keeps its writes to
//!   itself, so they are lost as on a real set. Every write reply names the member
//!   (`labMember`, 1-based). Every election bumps the term, hence a newer `electionId`.
//! - [`Secantus`]: SecantusDB, a MongoDB-compatible server on WiredTiger that reports
//!   itself as a single-node replica-set primary and supports `replSetStepDown`.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{python, system};

/// How long a member may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn wait_listening(port: u16, child: &mut Child, log: &PathBuf) -> Result<()> {
    let started = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "peer on port {port} exited with {status}: {}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "peer on port {port} did not listen: {}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    system::stop(child, Duration::from_secs(5));
}

/// A scripted replica set.
#[derive(Debug)]
pub struct ReplicaSet {
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    term: u64,
    primary: Option<usize>,
}

impl ReplicaSet {
    /// Starts `n` members of set `set_name`, member 0 primary (term 1).
    pub fn start(n: usize, set_name: &str) -> Result<ReplicaSet> {
        let python = python::python()?;
        let dir = system::temp_dir("sy-mongo")?;
        let ports = (0..n).map(|_| system::free_port()).collect::<Result<Vec<_>>>()?;
        let config = format!(
            "{{\"set\": \"{set_name}\", \"ports\": [{}], \"max_wire\": 21}}",
            ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        );
        fs::write(dir.join("config.json"), config)?;
        let mut set = ReplicaSet {
            dir,
            ports,
            children: (0..n).map(|_| None).collect(),
            term: 1,
            primary: Some(0),
        };
        set.write_state(&[])?;
        for i in 0..n {
            set.spawn(i, &python)?;
        }
        Ok(set)
    }

    fn spawn(&mut self, i: usize, python: &PathBuf) -> Result<()> {
        let log = self.dir.join(format!("member-{}.log", self.ports[i]));
        let out = fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut child = Command::new(python)
            .arg(python::script("mongo_member.py"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(self.ports[i].to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn mongo_member.py")?;
        wait_listening(self.ports[i], &mut child, &log)?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn write_state(&self, claims: &[(usize, u64)]) -> Result<()> {
        let primary = match self.primary {
            Some(i) => format!("\"{}\"", self.addr(i)),
            None => "null".into(),
        };
        let claims: Vec<String> = claims
            .iter()
            .map(|(i, term)| format!("\"{}\": {term}", self.addr(*i)))
            .collect();
        let state = format!(
            "{{\"primary\": {primary}, \"term\": {}, \"setVersion\": 1, \"claims\": {{{}}}}}",
            self.term,
            claims.join(", ")
        );
        // Atomic replace: members re-read the file on every request.
        let tmp = self.dir.join("state.json.tmp");
        fs::write(&tmp, state)?;
        fs::rename(&tmp, self.dir.join("state.json"))?;
        Ok(())
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// An election: member `i` (or nobody) becomes primary with a new, larger term.
    pub fn elect(&mut self, primary: Option<usize>) -> Result<()> {
        self.term += 1;
        self.primary = primary;
        self.write_state(&[])
    }

    /// Member `i` claims primary with an old `term` (a returning stale primary),
    /// while the scripted primary stays as it is.
    pub fn claim_stale(&self, i: usize, term: u64) -> Result<()> {
        self.write_state(&[(i, term)])
    }

    /// How many `hello`s members answered while claiming primary with a stale term
    /// (see [`ReplicaSet::claim_stale`]): the claim reached whoever checks them.
    pub fn stale_hellos(&self) -> usize {
        self.ports
            .iter()
            .filter_map(|port| fs::read_to_string(self.dir.join(format!("stale-hellos-{port}.log"))).ok())
            .map(|text| text.lines().count())
            .sum()
    }

    /// The current term (the electionId's counter).
    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.children[i].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    pub fn sigstop(&self, i: usize) -> Result<()> {
        system::signal(self.pid(i)?, "STOP")
    }

    pub fn sigcont(&self, i: usize) -> Result<()> {
        system::signal(self.pid(i)?, "CONT")
    }

    fn pid(&self, i: usize) -> Result<u32> {
        self.children[i]
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("member {i} is not running"))
    }

    /// Restarts a killed member on its port.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let python = python::python()?;
        self.spawn(i, &python)
    }

    /// Restarts a killed member and catches it up with the primary of record, as a
    /// real member syncs before it can be elected: it missed every write made while it
    /// was down. Waits first until the primary replicates to it again (it skips a
    /// member that failed for a second), so no write falls between the copy and the
    /// replication that follows it.
    pub fn rejoin(&mut self, i: usize) -> Result<()> {
        self.restart(i)?;
        let Some(primary) = self.primary.filter(|&p| p != i) else {
            return Ok(());
        };
        thread::sleep(Duration::from_millis(1500));
        let python = python::python()?;
        let out = system::run(
            Command::new(python)
                .arg(python::script("mongo_catch_up.py"))
                .arg("--source")
                .arg(self.addr(primary).to_string())
                .arg("--target")
                .arg(self.addr(i).to_string()),
        )
        .with_context(|| format!("catching member {} up with member {}", i + 1, primary + 1))?;
        eprintln!("switchyard-lab: {}", out.trim());
        Ok(())
    }
}

impl Drop for ReplicaSet {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            stop(child);
        }
        if std::env::var_os("SWITCHYARD_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A SecantusDB server: a real MongoDB-compatible store, single node, reporting itself
/// as a replica-set primary.
#[derive(Debug)]
pub struct Secantus {
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Secantus {
    pub fn start() -> Result<Secantus> {
        let dir = system::temp_dir("sy-secantus")?;
        let port = system::free_port()?;
        let mut secantus = Secantus { dir, port, child: None };
        secantus.spawn(false)?;
        Ok(secantus)
    }

    /// Starts with SCRAM authentication on, with one user (root role) created first.
    pub fn start_with_user(user: &str, password: &str) -> Result<Secantus> {
        let mut secantus = Secantus::start()?;
        let script = "import sys, pymongo\n\
c = pymongo.MongoClient(sys.argv[1], directConnection=True, serverSelectionTimeoutMS=15000)\n\
c.admin.command('createUser', sys.argv[2], pwd=sys.argv[3], roles=[{'role': 'root', 'db': 'admin'}])\n";
        python::run(script, &[&format!("mongodb://{}/", secantus.addr()), user, password])?;
        if let Some(mut child) = secantus.child.take() {
            stop(&mut child);
        }
        secantus.spawn(true)?;
        Ok(secantus)
    }

    fn spawn(&mut self, auth: bool) -> Result<()> {
        let server = python::python()?.with_file_name("secantusd-py");
        let log = self.dir.join("secantus.log");
        let out = fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut command = Command::new(server);
        command
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--storage-path",
            ])
            .arg(self.dir.join("data"))
            .args(["--enable-test-commands", "--sync-on-commit"]);
        if auth {
            command.arg("--auth");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn secantusd-py")?;
        wait_listening(self.port, &mut child, &log)?;
        self.child = Some(child);
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Secantus {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop(child);
        }
        if std::env::var_os("SWITCHYARD_KEEP_LAB").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
