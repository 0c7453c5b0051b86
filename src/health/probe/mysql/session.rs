//! The monitor's own MySQL client: a login and text queries, and nothing else, over
//! the decoders in [`crate::protocol::mysql::monitor`].
//!
//! ```text
//! connect (L4) → greeting → [TLS: SSLRequest, handshake (L6)] → HandshakeResponse41
//!   → auth replies until OK: plugin switch, caching_sha2 fast OK or full auth
//! query → result sets, rows kept up to MAX_ROWS
//! ```
//!
//! Its own rather than a driver's so that every byte from the server goes through a
//! bounded decoder, and so that the password only ever leaves as a scramble, over TLS,
//! or encrypted with the key pinned in the config ([`PinnedKey`]): full authentication
//! without either fails the check, naming `server_public_key`. A server's own key is
//! never asked for. Plugins: `mysql_native_password`, `caching_sha2_password`,
//! `sha256_password`, and `mysql_clear_password` over TLS only.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::super::{phase, CheckError, Phase};
use super::Columns;
use crate::health::probe::Endpoint;
use crate::protocol::mysql::monitor::{self as wire, AuthReply, ResultHead, ServerError};
use crate::protocol::mysql::scramble;
use crate::protocol::mysql::{header, HEADER};
use crate::stream::Stream;
use crate::tls::{ClientTls, PinnedKey};

/// The largest packet read from a server (monitor answers are a few KiB).
const MAX_PACKET: usize = 1 << 20;
/// Rows kept per result set; more are read and dropped.
const MAX_ROWS: usize = 16;
/// Rows read per result set before the answer is refused.
const MAX_ROWS_READ: usize = 10_000;
/// Result sets read per query.
const MAX_RESULTS: usize = 8;
/// Packets read during the login before it is refused.
const MAX_AUTH_ROUNDS: usize = 6;

/// What a login needs.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// The monitor user.
    pub user: &'a str,
    /// Its password (empty for none).
    pub password: &'a str,
    /// The server's pinned RSA public key, if configured.
    pub pinned: Option<&'a PinnedKey>,
    /// TLS inside the MySQL protocol, if the backend has it.
    pub tls: Option<&'a ClientTls>,
}

/// A logged-in connection.
#[derive(Debug)]
pub struct Session {
    stream: Stream,
}

/// One result set: its rows, column name → value.
pub type Rows = Vec<Columns>;

impl Session {
    /// Connects to `addr` and logs in, every phase under `deadline`.
    pub async fn login(to: Endpoint, login: Login<'_>, deadline: Instant) -> Result<Session, CheckError> {
        let mut tcp = phase(deadline, Phase::Connecting, crate::health::probe::open(to)).await?;
        let (_, payload) = phase(deadline, Phase::LoggingIn, read(&mut tcp)).await?;
        let greeting = wire::greeting(&payload).map_err(malformed)?.map_err(|e| refused(&e))?;
        let (mut stream, seq) = match login.tls {
            None => (Stream::Plain(tcp), 1),
            Some(tls) => {
                if !greeting.offers_tls() {
                    return Err(CheckError::Tls("the server does not offer TLS (CLIENT_SSL)".into()));
                }
                phase(deadline, Phase::LoggingIn, write(&mut tcp, 1, &wire::ssl_request())).await?;
                let stream = phase(deadline, Phase::Handshaking, async {
                    tls.connect(tcp)
                        .await
                        .map(|s| Stream::Client(Box::new(s)))
                        .map_err(|e| CheckError::Tls(e.to_string()))
                })
                .await?;
                (stream, 2)
            }
        };
        let mut auth = Auth::new(login, greeting.nonce.clone());
        let (plugin, data) = auth.first(&greeting.plugin);
        let response = wire::handshake_response(login.user, &data, plugin, login.tls.is_some());
        phase(deadline, Phase::LoggingIn, write(&mut stream, seq, &response)).await?;
        phase(deadline, Phase::LoggingIn, auth.finish(&mut stream)).await?;
        Ok(Session { stream })
    }

    /// Runs `sql` (statements separated by `;`) and returns each statement's rows.
    pub async fn query(&mut self, sql: &str, deadline: Instant) -> Result<Vec<Rows>, CheckError> {
        phase(
            deadline,
            Phase::Requesting,
            write(&mut self.stream, 0, &wire::com_query(sql)),
        )
        .await?;
        phase(deadline, Phase::Reading, read_results(&mut self.stream)).await
    }
}

/// The authentication exchange after the greeting.
struct Auth<'a> {
    login: Login<'a>,
    nonce: Vec<u8>,
    plugin: String,
    switched: bool,
}

impl<'a> Auth<'a> {
    fn new(login: Login<'a>, nonce: Vec<u8>) -> Self {
        Auth {
            login,
            nonce,
            plugin: String::new(),
            switched: false,
        }
    }

    /// The plugin named in the HandshakeResponse and its data: the server's plugin when
    /// it is one that answers with a scramble, else native (the server then switches).
    fn first(&mut self, offered: &str) -> (&'static str, Vec<u8>) {
        let plugin = match offered {
            "caching_sha2_password" => "caching_sha2_password",
            _ => "mysql_native_password",
        };
        self.plugin = plugin.to_string();
        let data = self.scramble().expect("both plugins answer with a scramble");
        (plugin, data)
    }

    /// Whether the leg is TLS that verified the server: only then is the password
    /// itself sent over it (`insecure = true` TLS is no proof of the server).
    fn trusted_tls(&self) -> bool {
        self.login.tls.is_some_and(ClientTls::verifies_server)
    }

    fn password(&self) -> &[u8] {
        self.login.password.as_bytes()
    }

    /// The scramble of the current plugin, if it answers with one.
    fn scramble(&self) -> Option<Vec<u8>> {
        match self.plugin.as_str() {
            "mysql_native_password" => Some(scramble::scramble_native(&self.nonce, self.password())),
            "caching_sha2_password" => Some(scramble::scramble_sha256(&self.nonce, self.password())),
            _ => None,
        }
    }

    /// The password itself, for a plugin that needs it: over TLS as it is, else
    /// encrypted with the pinned key, else not at all.
    fn password_for_server(&self) -> Result<Vec<u8>, CheckError> {
        if self.trusted_tls() {
            let mut clear = self.password().to_vec();
            clear.push(0);
            return Ok(clear);
        }
        let Some(key) = self.login.pinned else {
            return Err(CheckError::Auth(format!(
                "the server asks for the password itself ({}), which the monitor sends only over verified TLS \
                 or encrypted with a pinned key: set the check's `server_public_key` or the backend's `tls` (not insecure)",
                self.plugin
            )));
        };
        key.encrypt(&scramble::xor_with_nonce(self.password(), &self.nonce))
            .map_err(CheckError::Auth)
    }

    /// Answers the server until it says OK or ERR.
    async fn finish(&mut self, stream: &mut Stream) -> Result<(), CheckError> {
        for _ in 0..MAX_AUTH_ROUNDS {
            let (seq, payload) = read(stream).await?;
            let answer = match wire::auth_reply(&payload).map_err(malformed)? {
                AuthReply::Ok => return Ok(()),
                AuthReply::Err(e) => return Err(refused(&e)),
                AuthReply::Switch { .. } if self.switched => {
                    return Err(CheckError::Protocol("a second auth switch".into()))
                }
                AuthReply::Switch { plugin, nonce } => {
                    self.switched = true;
                    self.plugin = plugin;
                    self.nonce = nonce;
                    self.switched_answer()?
                }
                AuthReply::More(data) => match (self.plugin.as_str(), data.as_slice()) {
                    // Fast authentication succeeded; the OK follows.
                    ("caching_sha2_password", [3]) => continue,
                    ("caching_sha2_password", [4]) => self.password_for_server()?,
                    _ => return Err(CheckError::Protocol("unexpected auth data from the server".into())),
                },
            };
            write(stream, seq.wrapping_add(1), &answer).await?;
        }
        Err(CheckError::Protocol("the login did not end".into()))
    }

    fn switched_answer(&self) -> Result<Vec<u8>, CheckError> {
        if let Some(scramble) = self.scramble() {
            return Ok(scramble);
        }
        match self.plugin.as_str() {
            "sha256_password" if self.password().is_empty() => Ok(vec![0]),
            "sha256_password" => self.password_for_server(),
            "mysql_clear_password" if self.trusted_tls() => self.password_for_server(),
            "mysql_clear_password" => Err(CheckError::Auth(
                "the server asks for the password in clear (mysql_clear_password), which the monitor \
                 sends only over TLS: set the backend's `tls`"
                    .into(),
            )),
            other => Err(CheckError::Auth(format!(
                "the server switched to the auth plugin \"{}\", which the monitor does not support",
                crate::logs::peer(other)
            ))),
        }
    }
}

/// Reads every result of a query.
async fn read_results(stream: &mut Stream) -> Result<Vec<Rows>, CheckError> {
    let mut results = Vec::new();
    while results.len() < MAX_RESULTS {
        let (_, head) = read(stream).await?;
        let (rows, more) = match wire::result_head(&head).map_err(malformed)? {
            ResultHead::Ok { more } => (Rows::new(), more),
            ResultHead::Err => {
                let e = wire::server_error(&head).map_err(malformed)?;
                return Err(CheckError::Response(format!(
                    "query refused: {} ({})",
                    crate::logs::peer(&e.message),
                    e.code
                )));
            }
            ResultHead::Columns(count) => read_rows(stream, count).await?,
        };
        results.push(rows);
        if !more {
            return Ok(results);
        }
    }
    Err(CheckError::Protocol("too many result sets".into()))
}

/// Column definitions, EOF, rows, EOF: the rows kept and whether more results follow.
async fn read_rows(stream: &mut Stream, count: usize) -> Result<(Rows, bool), CheckError> {
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let (_, definition) = read(stream).await?;
        names.push(wire::column_name(&definition).map_err(malformed)?);
    }
    let (_, eof) = read(stream).await?;
    wire::eof_status(&eof).ok_or_else(|| CheckError::Protocol("no EOF after the column definitions".into()))?;
    let mut rows = Rows::new();
    for _ in 0..MAX_ROWS_READ {
        let (_, packet) = read(stream).await?;
        if let Some(status) = wire::eof_status(&packet) {
            return Ok((rows, status & wire::SERVER_MORE_RESULTS_EXISTS != 0));
        }
        if packet.first() == Some(&0xFF) {
            let e = wire::server_error(&packet).map_err(malformed)?;
            return Err(CheckError::Response(format!(
                "query failed: {} ({})",
                crate::logs::peer(&e.message),
                e.code
            )));
        }
        let values = wire::text_row(&packet, count).map_err(malformed)?;
        if rows.len() < MAX_ROWS {
            rows.push(names.iter().cloned().zip(values).collect());
        }
    }
    Err(CheckError::Protocol("too many rows".into()))
}

/// One packet: its sequence id and payload, at most [`MAX_PACKET`] bytes.
async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(u8, Vec<u8>), CheckError> {
    let mut head = [0u8; HEADER];
    stream.read_exact(&mut head).await.map_err(lost)?;
    let (len, seq) = header(head);
    if len > MAX_PACKET {
        return Err(CheckError::Protocol(format!(
            "a packet of {len} bytes is over the monitor's limit"
        )));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.map_err(lost)?;
    Ok((seq, payload))
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, seq: u8, payload: &[u8]) -> Result<(), CheckError> {
    let packet = crate::protocol::mysql::Packet {
        seq,
        payload: payload.to_vec(),
    };
    stream.write_all(&packet.encode()).await.map_err(lost)?;
    stream.flush().await.map_err(lost)
}

fn lost(e: std::io::Error) -> CheckError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        CheckError::Protocol("the server closed the connection".into())
    } else {
        CheckError::Protocol(format!("connection lost: {e}"))
    }
}

fn malformed(e: wire::Malformed) -> CheckError {
    CheckError::Protocol(e.to_string())
}

/// A server's refusal of the login: credentials and host refusals are auth failures.
fn refused(e: &ServerError) -> CheckError {
    let text = format!("{} ({})", crate::logs::peer(&e.message), e.code);
    match e.code {
        // 1044 no database access, 1045 access denied, 1129 host blocked, 1130 host
        // not allowed, 1698 access denied (unix_socket and the like)
        1044 | 1045 | 1129 | 1130 | 1698 => CheckError::Auth(text),
        _ => CheckError::Response(format!("login refused: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{BackendTls, Verify};

    fn full_auth(tls: Option<&ClientTls>) -> Result<Vec<u8>, CheckError> {
        let login = Login {
            user: "monitor",
            password: "secret",
            pinned: None,
            tls,
        };
        let mut auth = Auth::new(login, b"abcdefghijklmnopqrst".to_vec());
        auth.first("caching_sha2_password");
        auth.password_for_server()
    }

    #[test]
    fn the_password_itself_goes_only_over_tls_that_verified_the_server() {
        let dir = std::env::temp_dir().join(format!("switchyard-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = switchyard_lab::tls::Ca::new("test CA").unwrap();
        let ca_file = ca.write(&dir, "ca").unwrap();
        let verified = ClientTls::new(
            "db",
            &BackendTls::new(Verify::Ca(ca_file), "db.internal", None).unwrap(),
        );
        assert_eq!(full_auth(Some(&verified)).unwrap(), b"secret\0");
        let insecure = ClientTls::new("db", &BackendTls::new(Verify::Insecure, "db.internal", None).unwrap());
        for tls in [Some(&insecure), None] {
            let refused = full_auth(tls).unwrap_err().to_string();
            assert!(refused.contains("server_public_key"), "{refused}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
