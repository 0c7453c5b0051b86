//! The client side of the MySQL protocol, as much as the monitor login needs (pure;
//! the exchange itself is `health::probe::mysql::session`):
//!
//! ```text
//! server ──HandshakeV10──▶ [`Greeting`]: capabilities, 20-byte nonce, auth plugin
//! (TLS) client ──SSLRequest──▶ [`ssl_request`], then the TLS handshake
//! client ──HandshakeResponse41──▶ [`handshake_response`]: user, scramble, plugin
//! server ──▶ [`AuthReply`]: OK, ERR, an auth switch, or more data (caching_sha2)
//! client ──COM_QUERY──▶ [`com_query`]
//! server ──▶ per statement [`ResultHead`], column definitions ([`column_name`]), EOF,
//!           text rows ([`text_row`]), EOF; [`SERVER_MORE_RESULTS_EXISTS`] links them
//! ```
//!
//! Every decoder reads a bounded slice through [`Reader`], never recurses and never
//! panics: a short or inconsistent packet is [`Malformed`]. Counts the peer states
//! (columns) are capped before anything is allocated for them.
//!
//! Reference: MySQL's "Connection Phase", "Text Resultset" and MariaDB's protocol pages.

use super::{CLIENT_PROTOCOL_41, CLIENT_SSL};

/// Capabilities the monitor asks for: long passwords, 4.1 protocol, transactions,
/// secure connection, multi statements and results, plugin auth with length-encoded
/// data. `CLIENT_DEPRECATE_EOF` is not asked for: result sets end with EOF packets.
pub const MONITOR_CAPABILITIES: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
const CLIENT_LONG_PASSWORD: u32 = 0x0001;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_MULTI_STATEMENTS: u32 = 0x0001_0000;
const CLIENT_MULTI_RESULTS: u32 = 0x0002_0000;
const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;

/// Server status flag: another result set follows this one.
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
/// The most columns a monitor result may have (`SHOW SLAVE STATUS` has about 60).
pub const MAX_COLUMNS: u64 = 1024;
/// utf8mb4_general_ci.
const CHARSET: u8 = 45;
/// The largest packet the client says it accepts.
const MAX_PACKET: u32 = 1 << 24;
/// `COM_QUERY`.
const COM_QUERY: u8 = 0x03;

/// Bytes that cannot be the packet the exchange expects; the reason is for the check's
/// error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A bounded cursor over one payload: every read checks what is left.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A reader over `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Reader(payload)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Bytes up to the next NUL, which is consumed.
    fn nul_terminated(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let end = self.0.iter().position(|&b| b == 0).ok_or(Malformed(what))?;
        let text = &self.0[..end];
        self.0 = &self.0[end + 1..];
        Ok(text)
    }

    /// A length-encoded integer; `None` for the NULL marker (0xFB).
    fn lenenc(&mut self, what: &'static str) -> Result<Option<u64>, Malformed> {
        let width = match self.u8(what)? {
            0xFB => return Ok(None),
            small @ 0..=0xFA => return Ok(Some(u64::from(small))),
            0xFC => 2,
            0xFD => 3,
            0xFE => 8,
            0xFF => return Err(Malformed(what)),
        };
        let bytes = self.take(width, what)?;
        Ok(Some(bytes.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))))
    }

    /// A length-encoded string; `None` for SQL NULL.
    fn lenenc_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, Malformed> {
        match self.lenenc(what)? {
            None => Ok(None),
            Some(len) => {
                let len = usize::try_from(len).map_err(|_| Malformed(what))?;
                self.take(len, what).map(Some)
            }
        }
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// What the monitor needs from a server's HandshakeV10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The server's version string.
    pub version: String,
    /// Capability flags, both halves.
    pub capabilities: u32,
    /// The scramble's nonce (20 bytes from a real server).
    pub nonce: Vec<u8>,
    /// The auth plugin the server expects first.
    pub plugin: String,
}

impl Greeting {
    /// Whether the server offers TLS.
    pub fn offers_tls(&self) -> bool {
        self.capabilities & CLIENT_SSL != 0
    }
}

/// Reads a HandshakeV10 payload. An ERR packet in its place (a blocked host, too many
/// connections) is returned as such.
pub fn greeting(payload: &[u8]) -> Result<Result<Greeting, ServerError>, Malformed> {
    if payload.first() == Some(&0xFF) {
        return server_error(payload).map(Err);
    }
    let mut r = Reader::new(payload);
    if r.u8("empty greeting")? != 10 {
        return Err(Malformed("not a protocol 10 greeting"));
    }
    let version = text(r.nul_terminated("greeting without a server version")?);
    r.take(4, "greeting too short")?; // connection id
    let mut nonce = r.take(8, "greeting too short")?.to_vec();
    r.take(1, "greeting too short")?; // filler
    let lower = r.u16("greeting too short")?;
    let mut capabilities = u32::from(lower);
    let mut plugin = "mysql_native_password".to_string();
    // Every server since 4.1 sends the rest.
    r.take(3, "greeting too short")?; // charset (1), status (2): not needed
    capabilities |= u32::from(r.u16("greeting too short")?) << 16;
    let auth_len = r.u8("greeting too short")?;
    r.take(10, "greeting too short")?; // reserved (MariaDB: extended capabilities)
    if capabilities & CLIENT_SECURE_CONNECTION != 0 {
        let part2 = usize::from(auth_len).saturating_sub(8).max(13);
        let part2 = r.take(part2, "greeting's nonce cut short")?;
        // The second part ends in a NUL that is not part of the nonce.
        nonce.extend_from_slice(part2.strip_suffix(&[0]).unwrap_or(part2));
    }
    if capabilities & CLIENT_PLUGIN_AUTH != 0 {
        let rest = r.rest();
        let name = rest.iter().position(|&b| b == 0).map_or(rest, |end| &rest[..end]);
        plugin = text(name);
    }
    if capabilities & CLIENT_PROTOCOL_41 == 0 {
        return Err(Malformed("the server does not speak the 4.1 protocol"));
    }
    Ok(Ok(Greeting {
        version,
        capabilities,
        nonce,
        plugin,
    }))
}

/// The SSLRequest that asks the server to switch to TLS (sequence id 1).
pub fn ssl_request() -> Vec<u8> {
    let mut out = Vec::with_capacity(super::SSL_REQUEST_LEN);
    out.extend_from_slice(&(MONITOR_CAPABILITIES | CLIENT_SSL).to_le_bytes());
    out.extend_from_slice(&MAX_PACKET.to_le_bytes());
    out.push(CHARSET);
    out.extend_from_slice(&[0; 23]);
    out
}

/// A HandshakeResponse41 for `user` with `auth` (the plugin's first answer), naming
/// `plugin`; `tls` when it follows an SSLRequest.
pub fn handshake_response(user: &str, auth: &[u8], plugin: &str, tls: bool) -> Vec<u8> {
    let mut out = ssl_request();
    if !tls {
        out[..4].copy_from_slice(&MONITOR_CAPABILITIES.to_le_bytes());
    }
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    lenenc_into(&mut out, auth.len() as u64);
    out.extend_from_slice(auth);
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out
}

/// `COM_QUERY` with `sql`.
pub fn com_query(sql: &str) -> Vec<u8> {
    let mut out = vec![COM_QUERY];
    out.extend_from_slice(sql.as_bytes());
    out
}

fn lenenc_into(out: &mut Vec<u8>, value: u64) {
    match value {
        0..=0xFA => out.push(value as u8),
        0xFB..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(value as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(value as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

/// An ERR packet's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The error number (1045 access denied, ...).
    pub code: u16,
    /// The server's message.
    pub message: String,
}

/// Reads an ERR payload (0xFF, code, optional `#` and SQLSTATE, message).
pub fn server_error(payload: &[u8]) -> Result<ServerError, Malformed> {
    let mut r = Reader::new(payload);
    if r.u8("empty packet")? != 0xFF {
        return Err(Malformed("not an ERR packet"));
    }
    let code = r.u16("ERR packet too short")?;
    let mut rest = r.rest();
    if rest.first() == Some(&b'#') && rest.len() >= 6 {
        rest = &rest[6..];
    }
    Ok(ServerError {
        code,
        message: text(rest),
    })
}

/// The server's answer during authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    /// Logged in.
    Ok,
    /// Refused.
    Err(ServerError),
    /// Use this plugin, with this nonce.
    Switch {
        /// The plugin's name.
        plugin: String,
        /// Its nonce.
        nonce: Vec<u8>,
    },
    /// Plugin data (0x01 and the rest): caching_sha2's fast-auth result, a public key.
    More(Vec<u8>),
}

/// Reads one packet of the authentication exchange.
pub fn auth_reply(payload: &[u8]) -> Result<AuthReply, Malformed> {
    match payload.first() {
        Some(0x00) => Ok(AuthReply::Ok),
        Some(0xFF) => server_error(payload).map(AuthReply::Err),
        Some(0xFE) => {
            let mut r = Reader::new(&payload[1..]);
            let plugin = text(r.nul_terminated("auth switch without a plugin name")?);
            let nonce = r.rest();
            let nonce = nonce.strip_suffix(&[0]).unwrap_or(nonce).to_vec();
            Ok(AuthReply::Switch { plugin, nonce })
        }
        Some(0x01) => Ok(AuthReply::More(payload[1..].to_vec())),
        Some(_) => Err(Malformed("an unexpected packet during the login")),
        None => Err(Malformed("an empty packet during the login")),
    }
}

/// The first packet of a statement's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultHead {
    /// No rows (an OK packet); `more` when another result follows.
    Ok {
        /// Another result follows.
        more: bool,
    },
    /// The statement failed.
    Err,
    /// A result set of this many columns (at most [`MAX_COLUMNS`]).
    Columns(usize),
}

/// Reads the first packet of a statement's result. ERR payloads are read with
/// [`server_error`].
pub fn result_head(payload: &[u8]) -> Result<ResultHead, Malformed> {
    match payload.first() {
        Some(0x00) => {
            let mut r = Reader::new(&payload[1..]);
            r.lenenc("OK packet too short")?; // affected rows
            r.lenenc("OK packet too short")?; // last insert id
            let status = r.u16("OK packet too short")?;
            Ok(ResultHead::Ok {
                more: status & SERVER_MORE_RESULTS_EXISTS != 0,
            })
        }
        Some(0xFF) => Ok(ResultHead::Err),
        Some(0xFB) => Err(Malformed("the server asked for a local file")),
        _ => match Reader::new(payload).lenenc("empty result head")? {
            Some(n @ 1..=MAX_COLUMNS) => Ok(ResultHead::Columns(n as usize)),
            _ => Err(Malformed("a column count out of range")),
        },
    }
}

/// An EOF packet's status flags (0xFE and fewer than 9 bytes); `None` for any other
/// packet.
pub fn eof_status(payload: &[u8]) -> Option<u16> {
    if payload.first() != Some(&0xFE) || payload.len() >= 9 {
        return None;
    }
    // 0xFE, warnings (2), status (2); a pre-4.1 EOF is the 0xFE alone.
    Some(payload.get(3..5).map_or(0, |s| u16::from_le_bytes([s[0], s[1]])))
}

/// A ColumnDefinition41's name.
pub fn column_name(payload: &[u8]) -> Result<String, Malformed> {
    let mut r = Reader::new(payload);
    for _ in 0..4 {
        // catalog, schema, table, original table
        r.lenenc_bytes("column definition too short")?;
    }
    let name = r
        .lenenc_bytes("column definition too short")?
        .ok_or(Malformed("a column without a name"))?;
    Ok(text(name))
}

/// A text row of `columns` values (`None` for SQL NULL).
pub fn text_row(payload: &[u8], columns: usize) -> Result<Vec<Option<String>>, Malformed> {
    let mut r = Reader::new(payload);
    let mut row = Vec::with_capacity(columns.min(MAX_COLUMNS as usize));
    for _ in 0..columns {
        row.push(r.lenenc_bytes("a row shorter than its columns")?.map(text));
    }
    if !r.rest().is_empty() {
        return Err(Malformed("a row longer than its columns"));
    }
    Ok(row)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
