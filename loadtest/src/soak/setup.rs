//! The soak's stage: the peers (a semi-sync MariaDB cluster, the scripted MongoDB
//! replica set, two echo servers), a throw-away CA for the TLS listener, one
//! switchyard process in front of all of them on a combined config, and a sampler
//! of that process's descriptors and memory.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use switchyard_lab::mariadb::{MONITOR_PASSWORD, MONITOR_USER};
use switchyard_lab::system;
use switchyard_lab::tls::{Ca, Files};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::plan::Sample;
use crate::peers::Peers;
use crate::scenario::WorkloadKind;

/// Checks every 100 ms, 300 ms timeout, fall 2 (the drills' settings).
const CHECK: &str = "interval = \"100ms\"\nfast_interval = \"100ms\"\ndown_interval = \"100ms\"\n\
                     timeout = \"300ms\"\nrise = 1\nfall = 2\n";

/// The peers, one handle per fault group.
pub struct Stage {
    pub mysql: Arc<Peers>,
    pub mongo: Arc<Peers>,
    pub servers: Arc<Peers>,
    /// The directory of the config, the certificates and the proxy's log.
    pub dir: PathBuf,
    pub connector: TlsConnector,
    cert: Files,
}

/// The proxy's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub admin: SocketAddr,
    pub mysql: SocketAddr,
    pub mongo: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
}

fn loopback() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], system::free_port()?)))
}

impl Stage {
    /// Starts every peer and writes the TLS listener's certificate.
    pub async fn start() -> Result<Stage> {
        let mysql = Arc::new(Peers::mysql_semi_sync().await?);
        let mongo = Arc::new(Peers::start(WorkloadKind::Mongo).await?);
        let servers = Arc::new(Peers::start(WorkloadKind::Tcp).await?);
        let dir = system::temp_dir("sy-soak")?;
        let ca = Ca::new("switchyard soak CA")?;
        let ca_file = ca.write(&dir, "ca.pem")?;
        let cert = ca.server(&["localhost"])?.write(&dir, "proxy")?;
        Ok(Stage {
            mysql,
            mongo,
            servers,
            connector: connector(&ca_file)?,
            dir,
            cert,
        })
    }

    /// switchyard's config: `mysql` (mode mysql, primary pool), `mongo` (primary
    /// pool), `tcp` and `tls` (TLS terminated) listeners, each backend with its check.
    pub async fn config(&self, addrs: &Addrs) -> Result<String> {
        let mut text = format!(
            "[admin]\nlisten = \"{}\"\n[shutdown]\ngrace = \"1s\"\n[check]\n{CHECK}\n",
            addrs.admin
        );
        let mysql_check =
            format!("{{ kind = \"mysql\", user = \"{MONITOR_USER}\", password = \"{MONITOR_PASSWORD}\" }}");
        let db: Vec<SocketAddr> = match &*self.mysql {
            Peers::Mysql(cluster) => cluster
                .lock()
                .expect("cluster lock")
                .nodes()
                .iter()
                .map(|n| n.addr())
                .collect(),
            _ => bail!("the soak's MySQL peers are a cluster"),
        };
        let rs: Vec<SocketAddr> = match &*self.mongo {
            Peers::Mongo(set) => {
                let set = set.lock().expect("set lock");
                (0..set.len()).map(|i| set.addr(i)).collect()
            }
            _ => bail!("the soak's MongoDB peers are a replica set"),
        };
        let echo: Vec<SocketAddr> = match &*self.servers {
            Peers::Servers(servers) => servers.lock().await.addrs.clone(),
            _ => bail!("the soak's TCP peers are echo servers"),
        };
        let groups = [
            ("db", &db, mysql_check.as_str(), "role = \"primary\"\n"),
            (
                "rs",
                &rs,
                "{ kind = \"mongo\" }",
                "role = \"primary\"\nset_name = \"rs0\"\n",
            ),
            ("echo", &echo, "{ kind = \"tcp\" }", "policy = \"first\"\n"),
        ];
        for (prefix, members, check, pool) in groups {
            let mut names = Vec::new();
            for (i, addr) in members.iter().enumerate() {
                let _ = write!(
                    text,
                    "[backends.{prefix}{}]\naddress = \"{addr}\"\ncheck = {check}\n",
                    i + 1
                );
                names.push(format!("\"{prefix}{}\"", i + 1));
            }
            let _ = write!(
                text,
                "[pools.{prefix}]\nbackends = [{}]\n{pool}hold_timeout = \"10s\"\nconnect_timeout = \"1s\"\n\n",
                names.join(", ")
            );
        }
        let _ = write!(
            text,
            "[listeners.mysql]\nlisten = \"{}\"\npool = \"db\"\nmode = \"mysql\"\n\
             [listeners.mongo]\nlisten = \"{}\"\npool = \"rs\"\n\
             [listeners.tcp]\nlisten = \"{}\"\npool = \"echo\"\n\
             [listeners.tls]\nlisten = \"{}\"\npool = \"echo\"\n\
             [listeners.tls.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            addrs.mysql,
            addrs.mongo,
            addrs.tcp,
            addrs.tls,
            self.cert.cert.display(),
            self.cert.key.display()
        );
        Ok(text)
    }

    /// Starts `binary` on [`Stage::config`]; returns the process and its addresses
    /// once its admin port answers.
    pub async fn proxy(&self, binary: &Path) -> Result<(std::process::Child, Addrs)> {
        let addrs = Addrs {
            admin: loopback()?,
            mysql: loopback()?,
            mongo: loopback()?,
            tcp: loopback()?,
            tls: loopback()?,
        };
        let path = self.dir.join("switchyard.toml");
        std::fs::write(&path, self.config(&addrs).await?)?;
        let mut command = std::process::Command::new(binary);
        command.arg("run").arg("--config").arg(&path).env("RUST_LOG", "info");
        let mut child = system::spawn_logged(&mut command, &self.dir.join("switchyard.log"))
            .with_context(|| format!("starting {}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addrs.admin).await.is_err() {
            if Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
                system::stop(&mut child, Duration::from_secs(1));
                bail!("switchyard did not open its admin port; see {}", self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((child, addrs))
    }
}

/// A TLS connector trusting only the CA in `ca_file` (ring, as the proxy).
fn connector(ca_file: &Path) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).context("the soak's CA file")? {
        roots.add(cert.context("the soak's CA PEM")?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One sample of process `pid`; `None` once it is gone.
pub fn sample(pid: u32, at_s: f64) -> Option<Sample> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(Sample { at_s, fds, rss_kb })
}
