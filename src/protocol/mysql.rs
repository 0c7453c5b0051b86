//! The few pieces of the MySQL connection phase the `mysql` listener mode touches
//! (pure; see `proxy::mysql` for the exchange itself):
//!
//! - packet framing: a 3-byte little-endian payload length, a 1-byte sequence id;
//! - the server greeting (HandshakeV10), to set or clear `CLIENT_SSL` in the
//!   capability flags it advertises;
//! - the client's first packet: an SSLRequest (exactly 32 bytes, `CLIENT_SSL` set)
//!   or a HandshakeResponse41, whose first 32 bytes have the same layout
//!   (capabilities, max packet size, charset, filler — where MariaDB keeps its
//!   extended capabilities), so an SSLRequest for the backend is those 32 bytes;
//! - an ERR packet, to refuse a client in words its driver shows.
//!
//! Reference: MySQL's "Connection Phase" and MariaDB's "Connection" protocol pages.

use super::Decode;

pub mod commands;
pub mod monitor;
pub mod scramble;

/// Bytes before each payload.
pub const HEADER: usize = 4;
/// `CLIENT_SSL`: switch to TLS after the SSLRequest.
pub const CLIENT_SSL: u32 = 0x0800;
/// `CLIENT_PROTOCOL_41`: the 4.1+ handshake response; older clients are refused.
pub const CLIENT_PROTOCOL_41: u32 = 0x0200;
/// The largest login packet accepted (real ones are well under 4 KiB; connection
/// attributes included).
pub const MAX_LOGIN_PACKET: usize = 64 * 1024;
/// Length of an SSLRequest payload.
pub const SSL_REQUEST_LEN: usize = 32;
/// `ER_SECURE_TRANSPORT_REQUIRED` (MySQL 5.7+), what a server with
/// `require_secure_transport` answers an insecure client.
pub const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// `ER_HANDSHAKE_ERROR`.
pub const ER_HANDSHAKE_ERROR: u16 = 1043;
/// `ER_ACCESS_DENIED_ERROR`: what a refused login looks like to every client.
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;

const CLIENT_CONNECT_WITH_DB: u32 = 0x0008;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;

/// Client auth plugins that send the password itself (not a scramble) when they
/// believe the connection is encrypted: over a TLS client leg they would hand the
/// password to a plaintext backend leg.
pub const CLEARTEXT_PLUGINS: &[&str] = &["mysql_clear_password", "dialog", "sha256_password"];

/// One packet of the connection phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The sequence id.
    pub seq: u8,
    /// The payload, without its header.
    pub payload: Vec<u8>,
}

impl Packet {
    /// Header and payload, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.payload.len() as u32;
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.extend_from_slice(&len.to_le_bytes()[..3]);
        out.push(self.seq);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Whether this server packet ends the authentication exchange: OK (0x00) or
    /// ERR (0xFF). Everything else (auth switch 0xFE, more data 0x01, ...) asks for
    /// more.
    pub fn ends_login(&self) -> bool {
        matches!(self.payload.first(), Some(0x00 | 0xFF))
    }

    /// Whether this is an ERR packet (first byte 0xFF).
    pub fn is_err(&self) -> bool {
        self.payload.first() == Some(&0xFF)
    }
}

/// Payload length and sequence id from a header.
pub fn header(bytes: [u8; HEADER]) -> (usize, u8) {
    (
        usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16,
        bytes[3],
    )
}

/// One packet from the front of `buf` with its total length, if complete; refuses
/// payloads over [`MAX_LOGIN_PACKET`].
pub fn decode(buf: &[u8]) -> Decode<(Packet, usize)> {
    let Some(head) = buf.first_chunk::<HEADER>() else {
        return Decode::Incomplete;
    };
    let (len, seq) = header(*head);
    if len > MAX_LOGIN_PACKET {
        return Decode::Invalid("login packet too large");
    }
    if buf.len() < HEADER + len {
        return Decode::Incomplete;
    }
    let payload = buf[HEADER..HEADER + len].to_vec();
    Decode::Done((Packet { seq, payload }, HEADER + len))
}

/// Offset of the lower two capability bytes in a HandshakeV10 payload:
/// protocol version (1, = 10), server version (NUL-terminated), connection id (4),
/// auth data part 1 (8), filler (1).
fn greeting_caps_offset(payload: &[u8]) -> Result<usize, &'static str> {
    match payload.first() {
        Some(10) => {}
        Some(_) => return Err("not a protocol 10 greeting"),
        None => return Err("empty greeting"),
    }
    let nul = payload[1..]
        .iter()
        .position(|&b| b == 0)
        .ok_or("greeting without a server version")?;
    let offset = 1 + nul + 1 + 4 + 8 + 1;
    if payload.len() < offset + 2 {
        return Err("greeting too short");
    }
    Ok(offset)
}

/// The capability flags a greeting advertises (lower and, when present, upper half).
pub fn greeting_capabilities(payload: &[u8]) -> Result<u32, &'static str> {
    let at = greeting_caps_offset(payload)?;
    let lower = u32::from(u16::from_le_bytes([payload[at], payload[at + 1]]));
    // charset (1) and status (2) follow, then the upper half.
    let upper = payload
        .get(at + 5..at + 7)
        .map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])));
    Ok(lower | upper << 16)
}

/// Sets or clears `CLIENT_SSL` in a greeting, in place.
pub fn set_greeting_ssl(payload: &mut [u8], on: bool) -> Result<(), &'static str> {
    let at = greeting_caps_offset(payload)?;
    let mut lower = u16::from_le_bytes([payload[at], payload[at + 1]]);
    if on {
        lower |= CLIENT_SSL as u16;
    } else {
        lower &= !(CLIENT_SSL as u16);
    }
    payload[at..at + 2].copy_from_slice(&lower.to_le_bytes());
    Ok(())
}

/// The capability flags of a client's SSLRequest or HandshakeResponse41.
pub fn client_capabilities(payload: &[u8]) -> Option<u32> {
    payload.first_chunk::<4>().map(|b| u32::from_le_bytes(*b))
}

/// Whether a client's first packet asks to switch to TLS.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == SSL_REQUEST_LEN && client_capabilities(payload).is_some_and(|c| c & CLIENT_SSL != 0)
}

/// Sets or clears `CLIENT_SSL` in a client's SSLRequest or HandshakeResponse41.
pub fn set_client_ssl(payload: &mut [u8], on: bool) {
    if let Some(caps) = client_capabilities(payload) {
        let caps = if on { caps | CLIENT_SSL } else { caps & !CLIENT_SSL };
        payload[..4].copy_from_slice(&caps.to_le_bytes());
    }
}

/// The SSLRequest to send a backend for a client's HandshakeResponse41 (its first
/// 32 bytes, with `CLIENT_SSL`).
pub fn ssl_request_for(response: &[u8]) -> Option<Vec<u8>> {
    let mut request = response.get(..SSL_REQUEST_LEN)?.to_vec();
    set_client_ssl(&mut request, true);
    Some(request)
}

/// The auth plugin a HandshakeResponse41 names (`CLIENT_PLUGIN_AUTH`), if it names one.
pub fn response_plugin(payload: &[u8]) -> Option<&str> {
    let caps = client_capabilities(payload)?;
    let rest = payload.get(SSL_REQUEST_LEN..)?;
    let (_user, rest) = nul_terminated(rest)?;
    let rest = if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let (len, rest) = lenenc(rest)?;
        rest.get(usize::try_from(len).ok()?..)?
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let (&len, rest) = rest.split_first()?;
        rest.get(usize::from(len)..)?
    } else {
        nul_terminated(rest)?.1
    };
    let rest = if caps & CLIENT_CONNECT_WITH_DB != 0 {
        nul_terminated(rest)?.1
    } else {
        rest
    };
    if caps & CLIENT_PLUGIN_AUTH == 0 {
        return None;
    }
    let (plugin, _) = nul_terminated(rest).unwrap_or((rest, &[]));
    std::str::from_utf8(plugin).ok()
}

/// The plugin an AuthSwitchRequest (0xFE, name, NUL, data) switches the client to.
pub fn auth_switch_plugin(payload: &[u8]) -> Option<&str> {
    let rest = payload.strip_prefix(&[0xFE])?;
    let (name, _) = nul_terminated(rest)?;
    std::str::from_utf8(name).ok()
}

/// caching_sha2_password's "perform full authentication": the client answers with
/// the password, in clear if its leg is encrypted, else RSA-encrypted.
pub fn is_full_auth_request(payload: &[u8]) -> bool {
    payload == [0x01, 0x04]
}

fn nul_terminated(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = input.iter().position(|&b| b == 0)?;
    Some((&input[..end], &input[end + 1..]))
}

/// A length-encoded integer.
fn lenenc(input: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = input.split_first()?;
    let width = match first {
        0..=0xfa => return Some((u64::from(first), rest)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = rest.get(..width)?;
    let value = bytes.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Some((value, &rest[width..]))
}

/// An ERR packet payload: 0xFF, code, `#`, SQLSTATE, message.
pub fn err_payload(code: u16, sql_state: &str, message: &str) -> Vec<u8> {
    let mut payload = vec![0xFF];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.push(b'#');
    payload.extend(sql_state.bytes().chain(std::iter::repeat(b'0')).take(5));
    payload.extend_from_slice(message.as_bytes());
    payload
}

#[cfg(test)]
mod tests;
