//! Third-party daemons the tests put beside switchyard — HAProxy and nginx — each
//! from a config text, in a throw-away directory, in the foreground (so the child is
//! the daemon itself), stopped by PID when dropped. The packages are installed if
//! they are missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::system;

/// A running HAProxy or nginx.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its directory: the config, the logs, nginx's temp files.
    pub dir: PathBuf,
}

impl Daemon {
    /// HAProxy on `config` (a complete `haproxy.cfg`), once `ready` accepts.
    pub fn haproxy(config: &str, ready: SocketAddr) -> Result<Daemon> {
        system::ensure_packages(&[("haproxy", "haproxy")])?;
        let dir = system::temp_dir("sy-haproxy")?;
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let mut command = Command::new(sbin("haproxy"));
        command.arg("-db").arg("-f").arg(&path);
        Daemon::spawn(command, dir, ready)
    }

    /// nginx with `http` as the body of its `http { }` block, once `ready` accepts.
    pub fn nginx(http: &str, ready: SocketAddr) -> Result<Daemon> {
        system::ensure_packages(&[("nginx", "nginx")])?;
        let dir = system::temp_dir("sy-nginx")?;
        let d = dir.display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{http}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config)?;
        let mut command = Command::new(sbin("nginx"));
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.join("error.log"));
        Daemon::spawn(command, dir, ready)
    }

    fn spawn(mut command: Command, dir: PathBuf, ready: SocketAddr) -> Result<Daemon> {
        let child = system::spawn_logged(&mut command, &dir.join("stdout.log"))?;
        let mut daemon = Daemon { child, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect_timeout(&ready, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                bail!("{command:?} exited with {status}: {}", daemon.log());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("{command:?} did not listen on {ready}: {}", daemon.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    /// Its output and error log so far.
    pub fn log(&self) -> String {
        ["stdout.log", "error.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// nginx's access log so far.
    pub fn access_log(&self) -> Result<String> {
        std::fs::read_to_string(self.dir.join("access.log")).context("nginx's access log")
    }
}

/// `/usr/sbin/NAME` when it exists (root's PATH may lack it), else `NAME`.
pub(crate) fn sbin(name: &str) -> String {
    let path = format!("/usr/sbin/{name}");
    if std::path::Path::new(&path).is_file() {
        path
    } else {
        name.to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        system::stop(&mut self.child, Duration::from_secs(5));
        if std::env::var_os("SWITCHYARD_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
