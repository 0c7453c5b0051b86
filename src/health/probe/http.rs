//! HTTP probe: one HTTP/1.1 request with `Connection: close`, then the status code
//! against the expected range and, optionally, the body against a substring.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{connect, phase};
use crate::config::HttpProbeConfig;
use crate::health::probe::Endpoint;
use crate::health::{CheckError, Phase, Report};
use crate::protocol::http::{contains, decode_response_head, ResponseHead, MAX_HEAD};
use crate::protocol::Decode;
use crate::stream::Stream;
use crate::tls::ClientTls;

/// The most body bytes read when looking for `body_contains`.
const MAX_BODY: usize = 64 * 1024;

/// The HTTP probe: one request per check, on a fresh connection (`Connection: close`).
#[derive(Debug, Clone)]
pub struct HttpProbe {
    config: HttpProbeConfig,
    tls: Option<ClientTls>,
}

impl HttpProbe {
    /// Builds the probe from its config and the backend's TLS, if any.
    pub fn new(config: &HttpProbeConfig, tls: Option<ClientTls>) -> Self {
        HttpProbe {
            config: config.clone(),
            tls,
        }
    }

    /// The request bytes for `addr` (also used by the decoder bench).
    pub fn request(&self, addr: SocketAddr) -> Vec<u8> {
        let host = self.config.host.clone().unwrap_or_else(|| addr.to_string());
        format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.config.method, self.config.path
        )
        .into_bytes()
    }

    /// Checks `addr` once: connect, send the request, then match the status and, when
    /// configured, the body; every phase under `deadline`.
    pub async fn check(&self, to: Endpoint, deadline: Instant) -> Result<Report, CheckError> {
        let mut stream = connect(to, self.tls.as_ref(), deadline).await?;
        let request = self.request(to.addr);
        phase(deadline, Phase::Requesting, async {
            stream
                .write_all(&request)
                .await
                .map_err(|e| CheckError::Protocol(format!("sending the request: {e}")))
        })
        .await?;
        let wants_body = self.config.body_contains.is_some();
        let (head, buf) = phase(deadline, Phase::Reading, read_response(&mut stream, wants_body)).await?;
        if !self.config.expect_status.contains(&head.status) {
            return Err(CheckError::Response(format!(
                "status {} outside {}-{}",
                head.status,
                self.config.expect_status.start(),
                self.config.expect_status.end()
            )));
        }
        if let Some(needle) = &self.config.body_contains {
            if !contains(&buf[head.head_len..], needle.as_bytes()) {
                return Err(CheckError::Response(format!("body lacks {needle:?}")));
            }
        }
        Ok(Report::reachable())
    }
}

/// Reads the head, then (if asked) the body up to its length, EOF or [`MAX_BODY`].
async fn read_response(stream: &mut Stream, wants_body: bool) -> Result<(ResponseHead, Vec<u8>), CheckError> {
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        match decode_response_head(&buf) {
            Decode::Done(head) => break head,
            Decode::Invalid(reason) => return Err(CheckError::Protocol(reason.into())),
            Decode::Incomplete => {}
        }
        if read_some(stream, &mut buf, MAX_HEAD + 1).await? == 0 {
            return Err(CheckError::Protocol(
                "connection closed before the response head".into(),
            ));
        }
    };
    if wants_body {
        let limit = head.head_len + head.content_length.unwrap_or(MAX_BODY).min(MAX_BODY);
        while buf.len() < limit {
            if read_some(stream, &mut buf, limit).await? == 0 {
                break;
            }
        }
    }
    Ok((head, buf))
}

async fn read_some(stream: &mut Stream, buf: &mut Vec<u8>, limit: usize) -> Result<usize, CheckError> {
    let mut chunk = [0u8; 4096];
    let want = chunk.len().min(limit.saturating_sub(buf.len())).max(1);
    let n = stream
        .read(&mut chunk[..want])
        .await
        .map_err(|e| CheckError::Protocol(format!("reading the response: {e}")))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}
