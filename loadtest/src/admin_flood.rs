//! `switchyard-drill admin-flood`: does a scrape flood on the admin port move the checks or
//! the routing swaps? One fresh proxy process, 20 HTTP-checked backends (every
//! 100 ms), four of which flip between healthy and not every 500 ms so tables are
//! swapped all along; two phases of the same length, idle and then with 2,000
//! requests a second to `/metrics` and `/status` (half each) over 32 kept-alive
//! connections. Each phase is read off the proxy's own histograms
//! (`switchyard_check_seconds`, `switchyard_swap_seconds`) as the difference of two
//! scrapes, and the flood phase reported as a ratio to the idle one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BACKENDS: usize = 20;
const FLIPPING: usize = 4;
const FLOOD_CONNECTIONS: u64 = 32;

/// A histogram read off `/metrics`, summed over its label sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scraped {
    /// (upper bound, cumulative count), ascending.
    pub buckets: Vec<(f64, f64)>,
    /// The sum of all observations.
    pub sum: f64,
    /// How many observations.
    pub count: f64,
}

impl Scraped {
    /// Reads histogram `name` from Prometheus text.
    pub fn parse(text: &str, name: &str) -> Scraped {
        let mut scraped = Scraped::default();
        let bucket = format!("{name}_bucket");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            if series.starts_with(&bucket) {
                let Some(le) = series.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
                    continue;
                };
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                match scraped.buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, count)) => *count += value,
                    None => scraped.buckets.push((le, value)),
                }
            } else if series.starts_with(&format!("{name}_sum")) {
                scraped.sum += value;
            } else if series.starts_with(&format!("{name}_count")) {
                scraped.count += value;
            }
        }
        scraped.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        scraped
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Scraped) -> Scraped {
        let before = |le: f64| earlier.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
        Scraped {
            buckets: self.buckets.iter().map(|&(le, c)| (le, c - before(le))).collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The mean, in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        if self.count == 0.0 {
            return f64::NAN;
        }
        self.sum / self.count * 1000.0
    }

    /// The upper bound of the bucket holding quantile `q`, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let rank = q * self.count;
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map_or(f64::NAN, |(le, _)| le * 1000.0)
    }
}

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Check round trips.
    pub checks: Scraped,
    /// Check end to table swap.
    pub swaps: Scraped,
    /// Admin requests answered per second (0 when idle).
    pub requests_per_second: f64,
    /// Admin requests that failed.
    pub request_errors: u64,
}

/// A backend whose `GET` answers 200 while `healthy`, else 503.
async fn health_server(healthy: Arc<AtomicBool>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let status = if healthy.load(Ordering::Relaxed) {
                            "200 OK"
                        } else {
                            "503 Unavailable"
                        };
                        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    line.clear();
                }
            });
        }
    });
    Ok(addr)
}

/// One request on a kept-alive connection; the body is read and dropped.
async fn request(stream: &mut BufReader<TcpStream>, path: &str) -> Result<()> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
    stream.get_mut().write_all(head.as_bytes()).await?;
    let (mut line, mut length, mut status) = (String::new(), 0usize, 0u16);
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            bail!("the admin port closed the connection");
        }
        if status == 0 {
            status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    if status != 200 {
        bail!("{path} answered {status}");
    }
    Ok(())
}

/// `/metrics`, through the admin client `switchyard status` uses (bounded in time).
async fn scrape(admin: SocketAddr) -> Result<String> {
    match switchyard::admin::client::get(admin, "/metrics", Duration::from_secs(5)).await {
        Ok((200, body)) => Ok(body),
        Ok((code, _)) => bail!("/metrics answered {code}"),
        Err(e) => bail!("scraping {admin}: {e}"),
    }
}

/// The flood: `rate` requests a second over [`FLOOD_CONNECTIONS`] connections until
/// `until`; returns (answered, failed).
async fn flood(admin: SocketAddr, rate: u64, until: Instant) -> (u64, u64) {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let period = Duration::from_secs_f64(FLOOD_CONNECTIONS as f64 / rate as f64);
    let mut tasks = Vec::new();
    for n in 0..FLOOD_CONNECTIONS {
        let (ok, failed) = (ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let path = if n % 2 == 0 { "/metrics" } else { "/status" };
            let mut ticks = tokio::time::interval(period);
            let mut stream = None;
            while Instant::now() < until {
                ticks.tick().await;
                if stream.is_none() {
                    stream = TcpStream::connect(admin).await.ok().map(BufReader::new);
                }
                let Some(conn) = stream.as_mut() else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(2), request(conn, path)).await {
                    Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        stream = None;
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

async fn phase(admin: SocketAddr, length: Duration, rate: u64) -> Result<Phase> {
    let before = scrape(admin).await?;
    let started = Instant::now();
    let (answered, request_errors) = if rate == 0 {
        tokio::time::sleep(length).await;
        (0, 0)
    } else {
        flood(admin, rate, started + length).await
    };
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape(admin).await?;
    let read = |name: &str| Scraped::parse(&after, name).since(&Scraped::parse(&before, name));
    Ok(Phase {
        checks: read("switchyard_check_seconds"),
        swaps: read("switchyard_swap_seconds"),
        requests_per_second: answered as f64 / elapsed,
        request_errors,
    })
}

/// Runs both phases against `binary`; returns (idle, flood).
pub async fn run(binary: &Path, length: Duration, rate: u64) -> Result<(Phase, Phase)> {
    let flags: Vec<Arc<AtomicBool>> = (0..BACKENDS).map(|_| Arc::new(AtomicBool::new(true))).collect();
    let mut config = String::new();
    let admin = SocketAddr::from(([127, 0, 0, 1], switchyard_lab::system::free_port()?));
    let listen = SocketAddr::from(([127, 0, 0, 1], switchyard_lab::system::free_port()?));
    config +=
        &format!("[admin]\nlisten = \"{admin}\"\n[check]\nkind = \"http\"\ninterval = \"100ms\"\nrise = 1\nfall = 1\n");
    let mut names = Vec::new();
    for (i, flag) in flags.iter().enumerate() {
        let addr = health_server(flag.clone()).await?;
        config += &format!("[backends.b{i}]\naddress = \"{addr}\"\n");
        names.push(format!("\"b{i}\""));
    }
    config += &format!(
        "[pools.app]\nbackends = [{}]\n[listeners.app]\nlisten = \"{listen}\"\npool = \"app\"\n",
        names.join(", ")
    );
    let dir = switchyard_lab::system::temp_dir("sy-admin-flood")?;
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, config)?;
    let mut command = std::process::Command::new(binary);
    command.arg("run").arg("--config").arg(&path);
    let mut proxy = switchyard_lab::system::spawn_logged(&mut command, &dir.join("switchyard.log"))
        .with_context(|| format!("starting {}", binary.display()))?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while scrape(admin).await.is_err() {
            if Instant::now() > deadline {
                bail!("the proxy's admin port did not open");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flipping: Vec<_> = flags.iter().take(FLIPPING).cloned().collect();
        let flipper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    for flag in &flipping {
                        flag.fetch_xor(true, Ordering::Relaxed);
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = phase(admin, length, 0).await?;
        let flooded = phase(admin, length, rate).await?;
        stop.store(true, Ordering::Relaxed);
        let _ = flipper.await;
        Ok((idle, flooded))
    }
    .await;
    switchyard_lab::system::stop(&mut proxy, Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The report line for one run.
pub fn report(idle: &Phase, flooded: &Phase) -> String {
    let ratio = |f: f64, i: f64| f / i;
    format!(
        "admin-flood requests_per_second={:.0} request_errors={} \
         check_mean_ms idle={:.2} flood={:.2} ratio={:.2} check_p99_ms idle={} flood={} \
         swap_mean_ms idle={:.3} flood={:.3} ratio={:.2} swap_p99_ms idle={} flood={} swaps idle={} flood={}",
        flooded.requests_per_second,
        flooded.request_errors,
        idle.checks.mean_ms(),
        flooded.checks.mean_ms(),
        ratio(flooded.checks.mean_ms(), idle.checks.mean_ms()),
        idle.checks.quantile_ms(0.99),
        flooded.checks.quantile_ms(0.99),
        idle.swaps.mean_ms(),
        flooded.swaps.mean_ms(),
        ratio(flooded.swaps.mean_ms(), idle.swaps.mean_ms()),
        idle.swaps.quantile_ms(0.99),
        flooded.swaps.quantile_ms(0.99),
        idle.swaps.count,
        flooded.swaps.count,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_summed_over_labels_and_differenced() {
        let text = "# TYPE x histogram\n\
            x_bucket{backend=\"a\",le=\"0.001\"} 1\nx_bucket{backend=\"a\",le=\"0.01\"} 3\nx_bucket{backend=\"a\",le=\"+Inf\"} 4\n\
            x_sum{backend=\"a\"} 0.05\nx_count{backend=\"a\"} 4\n\
            x_bucket{backend=\"b\",le=\"0.001\"} 0\nx_bucket{backend=\"b\",le=\"0.01\"} 1\nx_bucket{backend=\"b\",le=\"+Inf\"} 1\n\
            x_sum{backend=\"b\"} 0.005\nx_count{backend=\"b\"} 1\n";
        let now = Scraped::parse(text, "x");
        assert_eq!(now.count, 5.0);
        assert_eq!(now.buckets, vec![(0.001, 1.0), (0.01, 4.0), (f64::INFINITY, 5.0)]);
        assert_eq!(now.quantile_ms(0.5), 10.0);
        let earlier = Scraped {
            buckets: vec![(0.001, 1.0), (0.01, 1.0), (f64::INFINITY, 1.0)],
            sum: 0.001,
            count: 1.0,
        };
        let since = now.since(&earlier);
        assert_eq!(since.count, 4.0);
        assert!((since.mean_ms() - 13.5).abs() < 1e-9);
    }
}
