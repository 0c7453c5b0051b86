//! The Grafana dashboard (`config/grafana-dashboard.json`) against a real Prometheus:
//! Prometheus (Debian's package) scrapes a proxy in front of the scripted MongoDB
//! replica set every second while sessions run, one is held for want of a backend, and
//! an election moves the primary; then every expression of every panel is evaluated
//! through Prometheus' HTTP API and must return series (the quantiles a number, the
//! failover panel the election).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchyard::app::Running;
use switchyard_lab::mongo::ReplicaSet;
use switchyard_lab::system;
use switchyard_test_support::mongo::{set_config, who_answers};
use switchyard_test_support::{await_pool, http_get, metric, poll_pause, proxy, refused_addr, within};
use tokio::io::AsyncReadExt;

const DASHBOARD: &str = include_str!("../config/grafana-dashboard.json");

/// A Prometheus scraping one target every second; stopped on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        system::ensure_packages(&[("prometheus", "prometheus")]).expect("prometheus installed");
        let dir = system::temp_dir("sy-prometheus").unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], system::free_port().unwrap()));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts");
        Prometheus { child, addr, dir }
    }

    /// The instant vector `expr` evaluates to now (`None` while Prometheus does not
    /// answer yet).
    async fn query(&self, expr: &str) -> Option<Vec<serde_json::Value>> {
        tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let (code, body) = http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr))).await;
        if code != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"].as_array().cloned()
    }

    /// Waits (bounded) until `expr` returns series that satisfy `good`; the series.
    async fn await_series(&self, expr: &str, good: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        within(
            Duration::from_secs(30),
            &format!("Prometheus to return series for {expr}"),
            async {
                loop {
                    if let Some(series) = self.query(expr).await {
                        if !series.is_empty() && good(&series) {
                            return series;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            },
        )
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        system::stop(&mut self.child, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every panel's (title, expression).
fn panel_expressions() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().expect("every panel has targets") {
            all.push((
                title.clone(),
                target["expr"].as_str().expect("an expression").to_string(),
            ));
        }
    }
    all
}

fn value(series: &serde_json::Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A session through `listener` that asks `hello` and closes.
async fn one_session(listener: SocketAddr) {
    let (stream, _) = who_answers(listener).await;
    drop(stream);
}

/// A proxy over the set plus a pool whose only backend refuses (listener `dead`).
async fn start_proxy(set: &ReplicaSet) -> Running {
    let dead = format!(
        "\n[backends.gone]\naddress = \"{}\"\ncheck = {{ kind = \"tcp\", interval = \"100ms\" }}\n\
         [pools.dead]\nbackends = [\"gone\"]\nhold_timeout = \"2s\"\n\
         [listeners.dead]\nlisten = \"127.0.0.1:0\"\npool = \"dead\"\n",
        refused_addr()
    );
    let proxy = proxy(&(set_config(set, "set_name = \"rsdash\"") + &dead)).await;
    await_pool(&proxy, "writer", &["m1"]).await;
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_of_the_dashboard_returns_series_from_a_real_prometheus() {
    let mut set = tokio::task::spawn_blocking(|| ReplicaSet::start(3, "rsdash"))
        .await
        .unwrap()
        .expect("replica set starts");
    let proxy = start_proxy(&set).await;
    let prometheus = Prometheus::start(proxy.admin().unwrap());
    prometheus.await_series("up{job=\"switchyard\"} == 1", |_| true).await;

    // Traffic after the first scrape, so every rate has something to show.
    let writer = proxy.listener("writer").unwrap();
    for _ in 0..5 {
        one_session(writer).await;
    }
    let (kept, _) = who_answers(writer).await;
    // A session held for want of a backend, counted while it waits.
    let dead = proxy.listener("dead").unwrap();
    let held = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(dead).await.unwrap();
        let _ = stream.read_to_end(&mut Vec::new()).await;
    });
    within(Duration::from_secs(5), "the held session to be counted", async {
        while metric(&proxy, "switchyard_sessions_held{pool=\"dead\"}").await < 1.0 {
            poll_pause().await;
        }
    })
    .await;
    // The election: the writer pool's primary moves, its old sessions are fenced.
    tokio::task::block_in_place(|| set.elect(Some(1))).unwrap();
    await_pool(&proxy, "writer", &["m2"]).await;
    for _ in 0..5 {
        one_session(writer).await;
    }
    held.await.unwrap();
    drop(kept);

    let failovers = prometheus
        .await_series("sum by (pool) (increase(switchyard_failovers_total[5m]))", |s| {
            s.iter().any(|v| v["metric"]["pool"] == "writer" && value(v) > 0.0)
        })
        .await;
    assert!(!failovers.is_empty());
    // The held session reached Prometheus too, not only the proxy's own page.
    prometheus
        .await_series(
            "max_over_time(switchyard_sessions_held{pool=\"dead\"}[5m]) >= 1",
            |_| true,
        )
        .await;
    for (title, expr) in panel_expressions() {
        let quantile = expr.starts_with("histogram_quantile");
        let series = prometheus
            .await_series(&expr, |s| !quantile || s.iter().any(|v| value(v).is_finite()))
            .await;
        assert!(!series.is_empty(), "panel {title:?}: {expr}");
    }
    proxy.shutdown().await;
}
