//! The part of an HTTP/1.x response a health check needs: status code, where the
//! head ends, and how the body is framed.

use super::Decode;

/// A response head larger than this is refused: a health endpoint has no reason to
/// send one, and the probe must not buffer without bound.
pub const MAX_HEAD: usize = 16 * 1024;

/// The decoded response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Bytes up to and including the blank line; the body starts here.
    pub head_len: usize,
    /// The `Content-Length` header's value, when the head has one.
    pub content_length: Option<usize>,
}

/// Decodes a response head from the start of `buf`.
pub fn decode_response_head(buf: &[u8]) -> Decode<ResponseHead> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Decode::Invalid("response head too large")
        } else if !buf.is_empty() && !b"HTTP/".starts_with(&buf[..buf.len().min(5)]) {
            Decode::Invalid("not an HTTP response")
        } else {
            Decode::Incomplete
        };
    };
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status = match parse_status_line(status_line) {
        Ok(status) => status,
        Err(reason) => return Decode::Invalid(reason),
    };
    let mut content_length = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Decode::Invalid("header line without a colon");
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(length) => content_length = Some(length),
                None => return Decode::Invalid("bad Content-Length"),
            }
        }
    }
    Decode::Done(ResponseHead {
        status,
        head_len: end + 4,
        content_length,
    })
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> Result<u16, &'static str> {
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or("status line is not HTTP/1.x")?;
    let code = rest.get(..3).ok_or("status line too short")?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ') {
        return Err("status code is not three digits");
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err("status code out of range");
    }
    Ok(status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `body` contains `needle` (the probe's `body_contains`).
pub fn contains(body: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || find(body, needle).is_some()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    #[test]
    fn decodes_a_captured_response() {
        let head = match decode_response_head(NGINX) {
            Decode::Done(head) => head,
            other => panic!("{other:?}"),
        };
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length, Some(2));
        assert_eq!(&NGINX[head.head_len..], b"ok");
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let head_end = find(NGINX, b"\r\n\r\n").unwrap() + 4;
        for cut in 0..head_end {
            assert_eq!(decode_response_head(&NGINX[..cut]), Decode::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for bad in [
            &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 999 Nope\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
        ] {
            assert!(
                matches!(decode_response_head(bad), Decode::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn oversized_head_is_invalid() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert!(matches!(decode_response_head(&big), Decode::Invalid(_)));
    }

    #[test]
    fn status_without_reason_phrase() {
        assert!(matches!(
            decode_response_head(b"HTTP/1.0 503\r\n\r\n"),
            Decode::Done(ResponseHead { status: 503, .. })
        ));
    }

    #[test]
    fn body_search() {
        assert!(contains(b"{\"status\":\"ok\"}", b"\"ok\""));
        assert!(!contains(b"degraded", b"ok\""));
    }
}
