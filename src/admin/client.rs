//! The admin client of the CLI: `switchyard status` fetches `/status` from a running
//! proxy's admin listener and prints a table for humans; `switchyard reload` posts
//! `/config/reload`.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET `path` from `addr` (HTTP/1.1, `Connection: close`), under `limit`.
pub async fn get(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, String), String> {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        limit,
    )
    .await
}

/// POST (no body) to `path` on `addr` with the admin `token`, under `limit`.
pub async fn post(addr: SocketAddr, path: &str, token: Option<&str>, limit: Duration) -> Result<(u16, String), String> {
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    exchange(addr, request, limit).await
}

async fn exchange(addr: SocketAddr, request: String, limit: Duration) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or("not an HTTP response")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("{addr} did not answer within {limit:?}"))?
}

/// The human table for a `/status` document.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let ms = |v: &Value| {
        v.as_f64()
            .map(|us| format!("{:.2}", us / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        out,
        "generation {}{}",
        s(&status["generation"]),
        if status["draining"] == true { "  DRAINING" } else { "" }
    );
    let _ = writeln!(
        out,
        "\n{:<14} {:<8} {:<18} {:<24} {:>12} ALARM",
        "POOL", "ROLE", "POLICY", "ROUTABLE", "CONNECT p99"
    );
    for pool in status["pools"].as_array().into_iter().flatten() {
        let routable: Vec<String> = pool["routable"].as_array().into_iter().flatten().map(s).collect();
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:<18} {:<24} {:>9} ms {}",
            s(&pool["name"]),
            s(&pool["role"]),
            s(&pool["policy"]),
            if routable.is_empty() {
                "(none)".to_string()
            } else {
                routable.join(",")
            },
            ms(&pool["connect_us"]["p99"]),
            pool["alarm"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:<22} {:<8} {:<8} {:<9} {:>10} LAST CHECK",
        "BACKEND", "ADDRESS", "HEALTH", "ROLE", "ADMIN", "CHECK p99"
    );
    for backend in status["backends"].as_array().into_iter().flatten() {
        let last = &backend["last_check"];
        let last = if last.is_null() {
            "not yet".to_string()
        } else if last["ok"] == true {
            format!("ok in {:.1} ms", last["latency"].as_f64().unwrap_or(0.0))
        } else {
            format!("{} {}", s(&last["layer"]), s(&last["error"]))
        };
        let _ = writeln!(
            out,
            "{:<14} {:<22} {:<8} {:<8} {:<9} {:>7} ms {}",
            s(&backend["name"]),
            s(&backend["address"]),
            s(&backend["status"]),
            s(&backend["role"]),
            s(&backend["admin"]),
            ms(&backend["check_us"]["p99"]),
            last
        );
    }
    out
}

/// The lines `switchyard reload` prints for a `/config/reload` answer.
pub fn render_reload(report: &Value) -> String {
    let mut out = format!(
        "applied in {:.1} ms (routing generation {}): {}\n",
        report["took_ms"].as_f64().unwrap_or_default(),
        report["generation"],
        report["summary"].as_str().unwrap_or("-"),
    );
    for tls in report["tls"].as_array().into_iter().flatten() {
        if let Some(error) = tls["error"].as_str() {
            let name = tls["listener"].as_str().or(tls["backend"].as_str()).unwrap_or("-");
            let _ = writeln!(out, "TLS files of {name} kept: {error}");
        }
    }
    out
}
