//! The proxy as its own process, for tests that must see the process itself: that
//! it is still alive after a hostile peer, and how many descriptors it holds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{http_get, poll_pause, refused_addr, within};

const LIMIT: Duration = Duration::from_secs(30);

/// A switchyard process started from a config text; killed on drop.
pub struct Spawned {
    child: Child,
    /// Its admin address.
    pub admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Spawned {
    /// Starts `binary` on `config`, whose `{admin}` is replaced by a free loopback
    /// address, and waits until `/health/live` answers. It logs at INFO (`RUST_LOG`),
    /// unless `config` has a `[log]` section: then as that says.
    pub async fn start(binary: &str, name: &str, config: &str) -> Spawned {
        Self::start_with(binary, &[], name, config).await
    }

    /// [`Spawned::start`] with `binary` run through `wrapper` (e.g. `prlimit
    /// --nofile=200:200`). A start whose admin port was taken between choosing it and
    /// binding it is tried again on another port.
    pub async fn start_with(binary: &str, wrapper: &[&str], name: &str, config: &str) -> Spawned {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::launch(binary, wrapper, name, config).await {
                Ok(spawned) => return spawned,
                Err(log) if attempts < 3 && log.contains("Address already in use") => continue,
                Err(log) => panic!("the proxy exited at start:\n{log}"),
            }
        }
    }

    async fn launch(binary: &str, wrapper: &[&str], name: &str, config: &str) -> Result<Spawned, String> {
        let admin = refused_addr();
        let dir = std::env::temp_dir().join(crate::unique(&format!("switchyard-{name}-{}", std::process::id())));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, log) = (dir.join("switchyard.toml"), dir.join("switchyard.log"));
        std::fs::write(&path, config.replace("{admin}", &admin.to_string())).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        // A config with a `[log]` section logs as it says; the others at INFO.
        match config.contains("[log]") {
            true => command.env_remove("RUST_LOG"),
            false => command.env("RUST_LOG", "info"),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the switchyard binary starts");
        let mut spawned = Spawned {
            child,
            admin,
            config: path,
            log,
        };
        within(LIMIT, "the spawned proxy to answer /health/live", async {
            loop {
                if !spawned.alive() {
                    return Err(spawned.log_text());
                }
                let listening = tokio::net::TcpStream::connect(admin).await.is_ok();
                if listening && http_get(admin, "/health/live").await.0 == 200 {
                    return Ok(());
                }
                poll_pause().await;
            }
        })
        .await?;
        Ok(spawned)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How many descriptors the process holds now.
    pub fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// Waits until the process holds at most `baseline` descriptors again (plus `slack`
    /// for the admin request that may be in flight), and returns the count.
    pub async fn await_descriptors_at_most(&self, baseline: usize, slack: usize) -> usize {
        within(LIMIT, "the descriptors to return to their baseline", async {
            loop {
                let now = self.descriptors();
                if now <= baseline + slack {
                    return now;
                }
                poll_pause().await;
            }
        })
        .await
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.admin, "/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// One backend's entry on `/status`.
    pub async fn backend(&self, name: &str) -> serde_json::Value {
        let status = self.status().await;
        status["backends"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no backend {name} on /status: {status}"))
    }

    /// Waits until backend `name` has `status` on `/status`, and returns its entry.
    pub async fn await_backend(&self, name: &str, status: &str) -> serde_json::Value {
        within(LIMIT, &format!("{name} to be {status}"), async {
            loop {
                let backend = self.backend(name).await;
                if backend["status"] == status {
                    return backend;
                }
                poll_pause().await;
            }
        })
        .await
    }

    /// The value of one series on `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Rewrites its config file (`{admin}` replaced as at start) and sends SIGHUP:
    /// the process reloads it.
    pub fn reload_with(&self, config: &str) {
        std::fs::write(&self.config, config.replace("{admin}", &self.admin.to_string())).unwrap();
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGHUP to the proxy");
    }

    /// Its config file.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// What the process has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
